"""Cubes and an S3 proxy for the tests of the views (plot, manifest, xarray)."""

from __future__ import annotations

from pathlib import Path

import pytest

import fficube
from s3_proxy import S3Proxy


def build(paths: list[str], out: Path, *, sector: int = 1) -> str:
    """A cube of ``paths`` at ``out`` (several blocks: a small budget)."""
    fficube.make_cube(paths, out, sector=sector, max_memory="1MB", overwrite=True)
    return str(out)


@pytest.fixture
def spoc_cube(sector, tmp_path: Path) -> str:
    # 30 columns: chunks of 3, 5, 6, 10 or 15 columns cut a 10-column cutout in places.
    return build(sector(n_ffis=7, shape=(26, 30), no_wcs=(1,)), tmp_path / "tess-s0001-1-1-cube.fits")


@pytest.fixture
def tica_cube(sector, tmp_path: Path) -> str:
    return build(sector(n_ffis=5, product="tica", sector=27, shape=(22, 30), no_wcs=(0,)),
                 tmp_path / "tess-s0027-1-1-cube.fits", sector=27)


@pytest.fixture
def proxy(s3):
    """``proxy()`` starts a counting proxy in front of the moto server; closed after the test."""
    running: list[S3Proxy] = []

    def start(**faults) -> S3Proxy:
        p = S3Proxy((s3.host, s3.port), **faults)
        running.append(p)
        return p

    yield start
    for p in running:
        p.close()


def make_public(s3, key: str) -> None:
    """Let anonymous clients read ``key``, as the TESS bucket does."""
    s3.client.put_bucket_acl(Bucket=s3.bucket, ACL="public-read")
    s3.client.put_object_acl(Bucket=s3.bucket, Key=key, ACL="public-read")
