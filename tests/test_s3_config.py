"""S3 configured the ways the AWS tools document: environment variables, profiles of
``~/.aws/config`` (by ``AWS_PROFILE`` and by ``profile=``), a credentials file alone, and
storage options.  Each case builds from ``s3://`` into ``s3://`` and inspects and
verifies the cube there, against the moto server behind the counting proxy, with no
storage option where the case has none; the proxy checks that obstore made the reads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from helpers import run_cli, without_build_stamps

import fficube
from fficube.sources.obstore import bucket_options, store_options
from fficube.sources.s3settings import S3Settings, resolve_s3_settings

KEY, SECRET = "testing", "testing"
#: An endpoint nothing listens on: a setting that must lose to another.
DEAD = "http://127.0.0.1:9"


@dataclasses.dataclass
class Case:
    """How one user sets S3 up: environment variables, config and credentials files, options."""

    env: dict[str, str] = dataclasses.field(default_factory=dict)
    config: str = ""  #: ~/.aws/config ({endpoint} is the proxy's URL)
    credentials: str = ""  #: ~/.aws/credentials
    options: list[str] = dataclasses.field(default_factory=list)  #: --storage-option KEY=VALUE ({endpoint}...)
    key_in_env: bool = False  #: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set


PROFILE_CONFIG = "[profile lab]\nendpoint_url = {endpoint}\nregion = eu-west-3\n"
LAB_CREDENTIALS = f"[lab]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"

CASES = {
    # MinIO, Ceph, LocalStack and on-premises stores are used so.
    "AWS_ENDPOINT_URL": Case(env={"AWS_ENDPOINT_URL": "{endpoint}"}, key_in_env=True),
    # The service's own variable wins over the global one.
    "AWS_ENDPOINT_URL_S3": Case(env={"AWS_ENDPOINT_URL_S3": "{endpoint}", "AWS_ENDPOINT_URL": DEAD}, key_in_env=True),
    "AWS_PROFILE": Case(env={"AWS_PROFILE": "lab"}, config=PROFILE_CONFIG, credentials=LAB_CREDENTIALS),
    "profile=": Case(config=PROFILE_CONFIG, credentials=LAB_CREDENTIALS, options=["profile=lab"]),
    # A profile's services section names the endpoint of S3 alone.
    "services section": Case(
        env={"AWS_PROFILE": "lab"}, credentials=LAB_CREDENTIALS,
        config="[profile lab]\nservices = lab-store\n\n[services lab-store]\ns3 =\n  endpoint_url = {endpoint}\n"),
    "credentials file only": Case(env={"AWS_ENDPOINT_URL": "{endpoint}"},
                                  credentials=f"[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"),
    "storage options": Case(options=["endpoint_url={endpoint}", f"key={KEY}", f"secret={SECRET}"]),
    # An explicit endpoint wins over the environment's.
    "option over environment": Case(env={"AWS_ENDPOINT_URL": DEAD, "AWS_ENDPOINT_URL_S3": DEAD},
                                     options=["endpoint_url={endpoint}"], key_in_env=True),
}


def configure(case: Case, endpoint: str, home: Path, monkeypatch) -> list[str]:
    """Set the environment and files of ``case``; the command line's storage options."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    if case.key_in_env:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    # The files a user keeps in ~/.aws, and nothing of this machine's own.
    config, credentials = home / "config", home / "credentials"
    config.write_text(case.config.format(endpoint=endpoint))
    credentials.write_text(case.credentials)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for here
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(endpoint=endpoint))
    return [a for option in case.options for a in ("--storage-option", option.format(endpoint=endpoint))]


@pytest.fixture(scope="module")
def ffis(tmp_path_factory) -> list[str]:
    from fficube.synthetic import SectorSpec, make_sector

    return make_sector(tmp_path_factory.mktemp("ffis"), SectorSpec(n_ffis=4, shape=(40, 44), no_wcs=(1,)))


@pytest.fixture(scope="module")
def local_cube(ffis, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("local") / "cube.fits"
    fficube.make_cube(ffis, out, sector=1)
    return without_build_stamps(out.read_bytes())


@pytest.mark.parametrize("name", list(CASES))
def test_s3_configured_as_users_do_builds_inspects_and_verifies(name, s3, proxy, ffis, local_cube, tmp_path,
                                                                 monkeypatch) -> None:
    case = list(CASES).index(name)  # the parametrized tests share a bucket (its name is cut short)
    s3.upload(ffis, f"in/{case}")
    p = proxy()
    options = configure(CASES[name], p.url, tmp_path, monkeypatch)
    key = f"out/{case}/tess-s0001-1-1-cube.fits"
    cube = f"s3://{s3.bucket}/{key}"

    code, out, err = run_cli("build", f"s3://{s3.bucket}/in/{case}/", "-o", cube, "--sector", "1", "-q", *options)
    assert code == 0, err
    built = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert without_build_stamps(built) == local_cube
    # Every ranged read went through the proxy, signed, and obstore made it.
    assert p.state.ranged_gets > 0 and p.state.unsigned == 0
    assert set(p.state.ranged_get_clients) == {"object_store"}, p.state.ranged_get_clients

    code, out, err = run_cli("inspect", cube, *options)
    assert code == 0, err
    assert re.search(r"shape\s+40 rows x 44 cols x 4 FFIs", out), out
    reads = p.state.ranged_gets
    code, out, err = run_cli("verify", cube, *options)
    assert code == 0 and f"{cube}: sound" in out, out + err
    assert p.state.ranged_gets > reads and set(p.state.ranged_get_clients) == {"object_store"}


def test_a_sector_over_a_bucket_named_by_the_environment(s3, proxy, tmp_path, monkeypatch) -> None:
    from helpers import make_archive

    made = make_archive(tmp_path, [(1, 1)])
    for path in made[(1, 1)]:
        s3.client.upload_file(path, s3.bucket, "ffi/" + str(Path(path).relative_to(tmp_path / "ffi")))
    p = proxy()
    configure(CASES["AWS_ENDPOINT_URL"], p.url, tmp_path, monkeypatch)
    code, out, err = run_cli("sector", "1", "--source", f"s3://{s3.bucket}/ffi", "--dest", f"s3://{s3.bucket}/cubes",
                             "--camera", "1", "--ccd", "1", "-q")
    assert code == 0, err
    assert "1 of 1 cube(s) done" in out, out
    fficube.make_cube(made[(1, 1)], tmp_path / "ref.fits", sector=1)
    built = s3.client.get_object(Bucket=s3.bucket, Key="cubes/tess-s0001-1-1-cube.fits")["Body"].read()
    assert without_build_stamps(built) == without_build_stamps((tmp_path / "ref.fits").read_bytes())
    assert set(p.state.ranged_get_clients) == {"object_store"}


# ------------------------------------------------------------------------------------
# The resolution itself, without a server


def test_settings_follow_botocore_order(tmp_path, monkeypatch) -> None:
    configure(Case(config=PROFILE_CONFIG, credentials=LAB_CREDENTIALS), "http://store.lab:9000", tmp_path,
              monkeypatch)
    assert resolve_s3_settings({}).endpoint_url is None  # AWS itself
    lab = resolve_s3_settings({"profile": "lab"})
    assert (lab.endpoint_url, lab.region, lab.endpoint_from) == ("http://store.lab:9000", "eu-west-3", "profile 'lab'")
    assert lab.credentials.get_frozen_credentials().access_key == KEY
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://global:1")
    assert resolve_s3_settings({"profile": "lab"}).endpoint_url == "http://global:1"  # the environment wins
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:1")
    assert resolve_s3_settings({"profile": "lab"}).endpoint_from == "AWS_ENDPOINT_URL_S3"
    explicit = resolve_s3_settings({"profile": "lab", "endpoint_url": "http://mine:2",
                                    "client_kwargs": {"region_name": "ap-south-1"}})
    assert (explicit.endpoint_url, explicit.region) == ("http://mine:2", "ap-south-1")
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert resolve_s3_settings({"profile": "lab"}).endpoint_url is None
    anonymous = resolve_s3_settings({"anon": True, "profile": "lab"})
    assert anonymous.anonymous and anonymous.credentials is None


def test_an_unknown_profile_is_one_clear_error(tmp_path, monkeypatch) -> None:
    configure(Case(config=PROFILE_CONFIG), "http://x", tmp_path, monkeypatch)
    with pytest.raises(fficube.OptionError, match="S3 profile 'nope' is in no AWS config or credentials file"):
        resolve_s3_settings({"profile": "nope"})
    monkeypatch.setenv("AWS_PROFILE", "gone")
    code, _out, err = run_cli("inspect", "s3://bucket/cube.fits")
    assert code == 1 and "S3 profile 'gone' is in no AWS config" in err, err


def test_obstore_is_given_every_setting_outright() -> None:
    custom = store_options(S3Settings(endpoint_url="http://minio:9000", static_credentials=("k", "s", "t"),
                                      requester_pays=True))
    assert custom == {"retry_config": {"max_retries": 0}, "skip_signature": False, "request_payer": True,
                      "endpoint": "http://minio:9000", "aws_endpoint_url_s3": "http://minio:9000",
                      "virtual_hosted_style_request": False, "client_options": {"allow_http": True},
                      "access_key_id": "k", "secret_access_key": "s", "session_token": "t"}
    assert store_options(S3Settings(endpoint_url="https://ceph.lab"))["client_options"] == {"allow_http": False}
    aws = store_options(S3Settings(anonymous=True))
    assert aws == {"retry_config": {"max_retries": 0}, "skip_signature": True, "request_payer": False}
    # On AWS: virtual-hosted (path-style for dotted names), and an endpoint of the
    # environment's that the settings do not use is overridden, never taken up.
    assert bucket_options(aws, "stpubdata", "us-east-1", {}) == {**aws, "region": "us-east-1",
                                                                 "virtual_hosted_style_request": True}
    assert bucket_options(aws, "a.b", "us-west-2", {})["virtual_hosted_style_request"] is False
    overridden = bucket_options(aws, "stpubdata", "us-east-1", {"AWS_ENDPOINT": "http://elsewhere"})
    assert overridden["endpoint"] == overridden["aws_endpoint_url_s3"] == "https://stpubdata.s3.us-east-1.amazonaws.com"
    assert bucket_options(custom, "b", "us-east-1", {"AWS_ENDPOINT": "http://x"})["endpoint"] == "http://minio:9000"
