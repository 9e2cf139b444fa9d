"""Credentials never reach messages, logs, journals or cubes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from astropy.io import fits
from helpers import budget_for_rows, cancel_after_blocks, run_cli

import fficube
from fficube.redact import file_name, redact, redact_options


def ours(caplog) -> str:
    """What fficube logged (the moto server logs the requests it serves, secrets and all)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("fficube"))


SECRETS = ("SIGSECRET123", "CREDSECRET456", "PASSWORD789", "TOKENSECRET000")


def test_redact_masks_user_info_and_secret_parameters() -> None:
    url = ("https://alice:PASSWORD789@host.example/tess/a.fits?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=CREDSECRET456&X-Amz-Signature=SIGSECRET123&x-id=GetObject&token=TOKENSECRET000")
    text = redact(f"cannot read {url}: 403")
    assert not any(s in text for s in SECRETS)
    assert "https://***@host.example/tess/a.fits?X-Amz-Algorithm=AWS4-HMAC-SHA256" in text
    assert "x-id=GetObject" in text and text.endswith(" 403")  # masks run to the next space: safe first
    assert redact("s3://bucket/key/a.fits and /local/path.fits") == "s3://bucket/key/a.fits and /local/path.fits"
    shown = redact_options({"key": "AKID", "secret": "S", "client_kwargs": {"aws_session_token": "T", "region_name": "r"},
                            "endpoint_url": "http://u:PASSWORD789@h"})
    assert shown == {"key": "***", "secret": "***", "client_kwargs": {"aws_session_token": "***", "region_name": "r"},
                     "endpoint_url": "http://***@h"}
    assert file_name("https://h/x/tess-ffic.fits?X-Amz-Signature=SIGSECRET123") == "tess-ffic.fits"
    assert file_name("/data/tess-ffic.fits") == "tess-ffic.fits"


def test_errors_about_secret_urls_show_no_secret(s3, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fficube")
    url = (f"http://alice:PASSWORD789@{s3.host}:{s3.port}/{s3.bucket}/missing_ffic.fits"
           "?X-Amz-Credential=CREDSECRET456&X-Amz-Signature=SIGSECRET123")
    with pytest.raises(fficube.InputError) as info:
        fficube.make_cube([url], tmp_path / "c.fits")
    assert "missing_ffic.fits" in str(info.value)
    code, _, err = run_cli("build", url, "-o", str(tmp_path / "c.fits"))
    assert code == 1 and "missing_ffic.fits" in err
    everything = str(info.value) + err + ours(caplog)
    assert not any(s in everything for s in SECRETS), everything


async def test_presigned_inputs_leave_no_signature_behind(s3, sector, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="fficube")
    paths = await asyncio.to_thread(sector, n_ffis=4, shape=(30, 40))
    keys = [k.split("/", 3)[3] for k in s3.upload(paths, "signed")]
    urls = [
        s3.client.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=600)
        for key in keys
    ]
    assert all("Signature=" in u for u in urls)
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 5)
    await cancel_after_blocks(2, lambda progress: fficube.build_cube(urls, out, max_memory=budget, progress=progress))
    journal = Path(f"{out}.journal").read_text()
    signature = urls[0].split("Signature=")[1].split("&")[0]
    assert "Signature=***" in journal and signature not in journal
    await fficube.build_cube(urls, out, resume=True)
    with fits.open(out) as cube:
        assert sorted(cube[2].data["FFI_FILE"]) == sorted(Path(p).name for p in paths)
    assert signature.encode() not in out.read_bytes() and signature not in ours(caplog)
