"""Shared fixtures: synthetic sectors written by astropy, astrocut as the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from fficube.synthetic import SectorSpec, make_sector


@pytest.fixture
def sector(tmp_path: Path):
    """Factory: ``sector(**SectorSpec fields)`` writes FFIs and returns their paths."""

    def make(**fields) -> list[str]:
        spec = SectorSpec(**fields)
        return make_sector(tmp_path / f"ffis-{spec.product}-{spec.seed}-{spec.n_ffis}", spec)

    return make


# ------------------------------------------------------------------------------------
# S3: a real moto server over HTTP on 127.0.0.1, a fresh bucket per test


@pytest.fixture(scope="session")
def moto_server():
    import os

    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield host, port
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3(moto_server, request):
    """A bucket on the moto server: ``s3.bucket``, ``s3.url``, ``s3.client``, ``s3.options``."""
    import re
    import types

    import boto3

    host, port = moto_server
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-bkt"
    client.create_bucket(Bucket=bucket)

    def upload(paths, prefix: str) -> list[str]:
        urls = []
        for path in paths:
            key = f"{prefix.rstrip('/')}/{Path(path).name}"
            client.upload_file(str(path), bucket, key)
            urls.append(f"s3://{bucket}/{key}")
        return urls

    return types.SimpleNamespace(
        bucket=bucket, url=url, client=client, options={"endpoint_url": url}, upload=upload, host=host, port=port
    )


@pytest.fixture
def proxy(s3):
    """``proxy(**faults)`` starts a counting (and fault-injecting) proxy in front of the moto
    server; all are closed after the test."""
    from s3_proxy import S3Proxy

    running: list[S3Proxy] = []

    def start(**faults) -> S3Proxy:
        p = S3Proxy((s3.host, s3.port), **faults)
        running.append(p)
        return p

    yield start
    for p in running:
        p.close()


@pytest.fixture
def spoc_cube(sector, tmp_path: Path) -> str:
    """A small SPOC cube in several blocks (30 columns: chunks of 3, 5, 6, 10 or 15 columns
    cut a 10-column cutout in places)."""
    from helpers import build

    return build(sector(n_ffis=7, shape=(26, 30), no_wcs=(1,)), tmp_path / "tess-s0001-1-1-cube.fits")


@pytest.fixture
def tica_cube(sector, tmp_path: Path) -> str:
    """A small TICA cube."""
    from helpers import build

    return build(sector(n_ffis=5, product="tica", sector=27, shape=(22, 30), no_wcs=(0,)),
                 tmp_path / "tess-s0027-1-1-cube.fits", sector=27)
