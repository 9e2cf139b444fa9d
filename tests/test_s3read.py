"""S3 reads through obstore: which options carry over, errors, and the choice of client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import without_build_stamps

import fficube
from fficube.sources import open_source
from fficube.sources.fsspec import Filesystems, FsspecSource
from fficube.sources.obstore import ObstoreSource, StoreFailure, carries_over, translate
from fficube.sources.policy import describe_failure, is_not_found, is_transient


def test_s3fs_options_carry_over_or_keep_the_reads_on_s3fs() -> None:
    assert carries_over({"anon": True})
    assert carries_over({"endpoint_url": "http://127.0.0.1:5000", "key": "k", "secret": "s", "token": "t",
                         "requester_pays": True, "profile": "lab", "client_kwargs": {"region_name": "us-west-2"},
                         "config_kwargs": {"max_pool_connections": 50, "retries": {"total_max_attempts": 1}}})
    # Options obstore has no word for: s3fs keeps the reads, with everything the user asked.
    assert not carries_over({"use_ssl": False})
    assert not carries_over({"client_kwargs": {"verify": False}})
    assert not carries_over({"config_kwargs": {"s3": {"addressing_style": "path"}}})


def test_obstore_errors_keep_their_http_meaning() -> None:
    from obstore import exceptions as errors

    missing = translate(errors.NotFoundError("Object at location x not found"))
    assert is_not_found(missing) and not is_transient(missing) and describe_failure(missing) == "no such object (404)"
    denied = translate(errors.PermissionDeniedError("denied"))
    assert "access denied (HTTP 403)" in describe_failure(denied) and not is_transient(denied)
    slow = translate(errors.GenericError("Server returned non-2xx status code: 503 Service Unavailable: ...\n\n"
                                         "Debug source:\nGeneric {...}"))
    assert isinstance(slow, StoreFailure) and slow.status == 503 and is_transient(slow)
    assert "Debug source" not in str(slow)
    reset = translate(errors.GenericError("error sending request: connection reset"))
    assert reset.status is None and is_transient(reset)  # no answer at all: worth another try
    assert translate(errors.PreconditionError("Request precondition failure")).status == 412


async def test_s3_reads_use_obstore_unless_an_option_needs_s3fs(s3) -> None:
    async with Filesystems(storage_options=s3.options) as filesystems:
        assert isinstance(await open_source("s3", filesystems), ObstoreSource)
    async with Filesystems(anon=True, storage_options=s3.options) as filesystems:
        assert isinstance(await open_source("s3", filesystems), ObstoreSource)
    async with Filesystems(storage_options={**s3.options, "use_ssl": False}) as filesystems:
        assert isinstance(await open_source("s3", filesystems), FsspecSource)
    async with Filesystems() as filesystems:
        assert isinstance(await open_source("memory", filesystems), FsspecSource)


def test_s3fs_and_obstore_reads_give_the_same_cube(s3, sector, proxy, tmp_path: Path) -> None:
    urls = s3.upload(sector(n_ffis=6, shape=(60, 80), no_wcs=(1,)), "both")
    p = proxy()
    fast = fficube.make_cube(urls, tmp_path / "fast.fits", sector=1, storage_options={"endpoint_url": p.url})
    slow = fficube.make_cube(urls, tmp_path / "slow.fits", sector=1,
                             storage_options={"endpoint_url": p.url, "use_ssl": False})
    assert without_build_stamps((tmp_path / "fast.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "slow.fits").read_bytes())
    # the same reads (a hedge is a second request of one of them, sent if a read lagged)
    assert fast.requests - fast.hedges == slow.requests - slow.hedges and fast.bytes_read == slow.bytes_read


async def test_an_object_replaced_during_a_build_stops_it_through_obstore_too(s3, sector, tmp_path: Path) -> None:
    paths = await asyncio.to_thread(sector, n_ffis=4, shape=(60, 80), no_wcs=())
    urls = s3.upload(paths, "pinned")
    async with Filesystems(storage_options=s3.options) as filesystems:
        found = await fficube.inputs.resolve_inputs(urls, None, filesystems)
        source = await found.source(filesystems)
        assert isinstance(source, ObstoreSource)
        assert len(await source.read(urls[0], 0, 2880)) == 2880
        s3.client.upload_file(paths[1], s3.bucket, urls[0].split(f"{s3.bucket}/", 1)[1])  # a new version
        with pytest.raises(fficube.ReadError, match="changed since it was listed"):
            await source.read(urls[0], 0, 2880)


async def test_a_large_read_is_streamed_into_its_buffer_chunk_by_chunk(s3) -> None:
    from fficube.sources import obstore as s3read

    data = bytes(range(256)) * (9 * 2**20 // 256)  # 9 MiB: nine chunks or more
    await asyncio.to_thread(s3.client.put_object, Bucket=s3.bucket, Key="big.bin", Body=data)
    url = f"s3://{s3.bucket}/big.bin"
    async with Filesystems(storage_options=s3.options) as filesystems:
        source = await open_source("s3", filesystems, sizes={url: len(data)})
        assert isinstance(source, ObstoreSource)
        buf = bytearray(len(data) - 1000)
        await source.readinto(url, 1000, memoryview(buf))
        assert buf == data[1000:] and source.stats.requests == 1 and len(buf) > 8 * s3read.STREAM_CHUNK
        with pytest.raises(fficube.ReadError, match="truncated"):
            await source.readinto(url, len(data) - 10, memoryview(bytearray(20)))


def test_an_anonymous_read_of_a_private_object_says_it_is_not_public(s3, sector, tmp_path: Path) -> None:
    urls = s3.upload(sector(n_ffis=2, shape=(30, 36), no_wcs=()), "private")
    for options in ({}, {"use_ssl": False}):  # obstore, and s3fs
        with pytest.raises(fficube.InputError, match="anonymous request: this object is not public"):
            fficube.make_cube(urls, tmp_path / "c.fits", anon=True, storage_options={**s3.options, **options})
