"""Cloud I/O against a real S3 server (moto over HTTP on 127.0.0.1), with faults injected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import fsspec
import pytest
from cube_compare import assert_verifies
from helpers import budget_for_rows, data_and_header_bytes, without_build_stamps
from s3_proxy import nth_ranged_get, part, upload_part

import fficube
from fficube.journal import Journal
from fficube.sinks.s3 import MAX_PARTS, MIN_PART, PART_BUFFERS, UploadProgress, part_size_for
from fficube.sources.policy import HedgePolicy

SHAPE = (60, 70)


@pytest.fixture
def ffis(sector):
    return sector(n_ffis=6, shape=SHAPE, no_wcs=(1,))


@pytest.fixture
def local_cube(ffis, tmp_path: Path) -> bytes:
    fficube.make_cube(ffis, tmp_path / "local.fits", sector=1, max_memory=budget_for_rows(ffis, 7))
    return without_build_stamps((tmp_path / "local.fits").read_bytes())


def object_bytes(s3, key: str) -> bytes:
    return s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def uploaded_parts(s3, key: str) -> list[int]:
    """Part numbers uploaded so far to the (one) upload in progress of ``key``."""
    uploads = [u for u in s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) if u["Key"] == key]
    if not uploads:
        return []
    parts = s3.client.list_parts(Bucket=s3.bucket, Key=key, UploadId=uploads[0]["UploadId"])
    return sorted(part["PartNumber"] for part in parts.get("Parts", []))


def journal_parts(s3, key: str) -> list[int]:
    """The part numbers the journal object ``key`` records (none if there is no journal yet)."""
    try:
        raw = object_bytes(s3, key)
    except s3.client.exceptions.NoSuchKey:
        return []
    return sorted(UploadProgress.of(Journal.decode(raw, key, UploadProgress.from_json)).parts)


def no_uploads_left(s3) -> bool:
    return not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")


def test_s3_to_local(s3, ffis, local_cube, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "s0001/2018/206/1-1")
    result = fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget_for_rows(ffis, 7, remote=True),
                               storage_options=s3.options)
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube
    assert result.blocks == 9


def test_s3_reads_each_byte_once(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=4, shape=(600, 800), no_wcs=(2,))
    urls = s3.upload(paths, "once")
    result = fficube.make_cube(urls, tmp_path / "c.fits", max_memory=budget_for_rows(paths, 38, remote=True),
                               storage_options=s3.options)
    data, header = data_and_header_bytes(paths)
    assert result.blocks == 16
    assert data <= result.bytes_read <= 1.01 * (data + header)
    # two ranges per FFI per block, a few header reads (and a hedge, if one lagged)
    assert result.requests - result.hedges <= 2 * 4 * 16 + 3 * 4


def test_local_to_s3_and_s3_to_s3(s3, ffis, local_cube) -> None:
    out = f"s3://{s3.bucket}/cubes/tess-s0001-1-1-cube.fits"
    # Part 1, the part filling and (at such a small budget) one part in flight: 5 MiB each.
    budget = budget_for_rows(ffis, 7, reserved=(PART_BUFFERS + 1) * MIN_PART)
    result = fficube.make_cube(ffis, out, sector=1, max_memory=budget, storage_options=s3.options)
    assert result.block_rows == 7
    assert without_build_stamps(object_bytes(s3, "cubes/tess-s0001-1-1-cube.fits")) == local_cube
    urls = s3.upload(ffis, "in")
    out2 = f"s3://{s3.bucket}/cubes/again.fits"
    result = fficube.make_cube(urls, out2, sector=1, max_memory=budget, storage_options=s3.options)
    assert without_build_stamps(object_bytes(s3, "cubes/again.fits")) == local_cube
    assert result.bytes_written == len(local_cube) and no_uploads_left(s3)
    with pytest.raises(fficube.OutputExistsError, match="again.fits: already exists"):
        fficube.make_cube(urls, out2, storage_options=s3.options)


def test_large_cube_uploads_in_several_parts(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(400, 500), no_wcs=())  # 12.8 MB cube: 3 parts of 5 MiB
    out = f"s3://{s3.bucket}/big.fits"
    seen: list[fficube.Progress] = []
    fficube.make_cube(paths, out, max_memory="60MB", storage_options=s3.options, progress=seen.append)
    # The last report comes once the upload is complete: part 1, sealed last, included.
    head = s3.client.head_object(Bucket=s3.bucket, Key="big.fits")
    last = seen[-1]
    assert last.stage == "write" and last.done == last.total
    assert last.bytes_written == last.total_bytes == head["ContentLength"]
    fficube.make_cube(paths, tmp_path / "big.fits", max_memory="60MB")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    local = without_build_stamps((tmp_path / "big.fits").read_bytes())
    assert without_build_stamps(object_bytes(s3, "big.fits")) == local


def test_a_missing_output_bucket_is_refused_before_any_input_is_read(s3, ffis, tmp_path: Path) -> None:
    """A mistyped bucket is named at once, in fficube's words: the broken input after
    the good ones is never scanned (its error would come first otherwise)."""
    broken = tmp_path / "broken-ffic.fits"
    broken.write_bytes(b"not a FITS file " * 200)
    with pytest.raises(fficube.OutputError, match=r"no such bucket: no-such-bucket-x \(check the URL") as caught:
        fficube.make_cube([*ffis, str(broken)], "s3://no-such-bucket-x/cube.fits", storage_options=s3.options)
    assert "s3://no-such-bucket-x/cube.fits" in str(caught.value) and "max retries" not in str(caught.value)
    # A bucket that exists is not refused (the build goes on to the broken input).
    with pytest.raises(fficube.InputError, match="broken-ffic.fits"):
        fficube.make_cube([*ffis, str(broken)], f"s3://{s3.bucket}/ok.fits", storage_options=s3.options)


def test_part_sizes_respect_s3_limits() -> None:
    assert part_size_for(10**6) == MIN_PART
    for total in (45 * 10**9, 135 * 10**9, 430 * 10**9, 5 * 10**12):
        size = part_size_for(total)
        assert -(-total // size) <= MAX_PARTS and size % 2**20 == 0 and size >= MIN_PART
    assert 40 * 2**20 <= part_size_for(430 * 10**9) <= 44 * 2**20


def test_prefix_and_glob_listing(s3, ffis, local_cube, tmp_path: Path) -> None:
    s3.upload(ffis[:3], "ffi/s0001/2018/206/1-1")
    s3.upload(ffis[3:], "ffi/s0001/2018/207/1-1")
    s3.client.put_object(Bucket=s3.bucket, Key="ffi/s0001/2018/206/1-1/README.txt", Body=b"not an FFI")
    budget = budget_for_rows(ffis, 7)
    for name, inputs in {
        "prefix": f"s3://{s3.bucket}/ffi/s0001/",
        "glob": f"s3://{s3.bucket}/ffi/s0001/*/*/1-1/*.fits",
    }.items():
        result = fficube.make_cube(inputs, tmp_path / f"{name}.fits", sector=1, max_memory=budget,
                                   storage_options=s3.options)
        assert result.n_ffis == 6, name
        assert without_build_stamps((tmp_path / f"{name}.fits").read_bytes()) == local_cube, name
    with pytest.raises(fficube.NoInputsError, match=rf"s3://{s3.bucket}/ffi/s0002/\*\.fits: the pattern matches no object"):
        fficube.make_cube(f"s3://{s3.bucket}/ffi/s0002/*.fits", tmp_path / "x.fits", storage_options=s3.options)


def test_anonymous_requests_are_unsigned(s3, ffis, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "public")
    p = proxy()
    with pytest.raises(fficube.InputError, match="access denied"):  # not public yet
        fficube.make_cube(urls, tmp_path / "anon.fits", anon=True, storage_options={"endpoint_url": p.url})
    # Make it public, as the TESS bucket is: anonymous reads and listing.
    s3.client.put_bucket_acl(Bucket=s3.bucket, ACL="public-read")
    for url in urls:
        s3.client.put_object_acl(Bucket=s3.bucket, Key=url.split("/", 3)[3], ACL="public-read")
    p.state.signed = p.state.requests = 0
    fficube.make_cube(urls, tmp_path / "anon.fits", anon=True, storage_options={"endpoint_url": p.url})
    assert p.state.requests > 2 and p.state.signed == 0
    # Public input, private output: the output is written with credentials.
    p.state.signed = p.state.unsigned = 0
    fficube.make_cube(urls, f"s3://{s3.bucket}/private/cube.fits", anon=True, storage_options={"endpoint_url": p.url})
    assert p.state.unsigned > 2 and p.state.signed >= 3  # exists check, create, part(s), complete
    fficube.make_cube(urls, tmp_path / "signed.fits", storage_options={"endpoint_url": p.url})
    assert p.state.signed > 0


def test_transient_faults_are_retried_and_the_cube_is_identical(s3, ffis, local_cube, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "faulty")
    p = proxy(fail_503=0.2, fail_drop=0.1)
    options = {"endpoint_url": p.url}
    budget = budget_for_rows(ffis, 7)
    result = fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget, storage_options=options)
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube
    out = f"s3://{s3.bucket}/faulty-cube.fits"
    result2 = fficube.make_cube(urls, out, sector=1, max_memory=budget + (PART_BUFFERS + 1) * MIN_PART,
                                storage_options=options)
    assert without_build_stamps(object_bytes(s3, "faulty-cube.fits")) == local_cube
    assert p.state.faults >= 10 and result.retries > 0 and result2.retries > 0
    # Every 503 is retried by fficube; a dropped keep-alive connection may be retried
    # by the HTTP layer below it already.
    assert p.state.faults_503 <= result.retries + result2.retries <= p.state.faults
    assert no_uploads_left(s3)


def test_missing_object_fails_at_once_with_its_url(s3, ffis, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "some")
    missing = f"s3://{s3.bucket}/some/tess2018206192942-s0001-1-1-0120-s_ffic-missing.fits"
    p = proxy()
    started = time.monotonic()
    with pytest.raises(fficube.InputError, match=f"{missing}: no such object"):
        fficube.make_cube([*urls, missing], tmp_path / "c.fits", storage_options={"endpoint_url": p.url})
    assert time.monotonic() - started < 5
    asked = [path for path in p.state.paths if "ffic-missing" in path]
    assert len(asked) <= 2, asked  # no retries (s3fs may try HEAD, then a listing)
    assert not (tmp_path / "c.fits").exists()


def test_requests_in_flight_never_exceed_concurrency(s3, ffis, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "conc")
    p = proxy(latency=0.02)  # so that concurrent requests overlap at the server
    result = fficube.make_cube(urls, tmp_path / "c.fits", concurrency=3, max_memory=budget_for_rows(ffis, 7),
                               storage_options={"endpoint_url": p.url})
    assert 2 <= p.state.max_in_flight <= 3
    assert result.max_in_flight <= 3


async def interrupt_upload(paths: list[str], s3, proxy, key: str) -> object:
    """Build ``paths`` into ``key`` until the journal records a part, then cancel the build;
    part 3 is held at the proxy, so the build cannot finish first.  Returns the proxy."""
    p = proxy(hang=part(3))
    task = asyncio.create_task(  # 20 MB: many blocks beside the 5 MiB part buffers
        fficube.build_cube(paths, f"s3://{s3.bucket}/{key}", max_memory="20MB", storage_options={"endpoint_url": p.url})
    )
    while not await asyncio.to_thread(journal_parts, s3, f"{key}.journal"):
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return p


async def test_cancelled_upload_keeps_its_parts_and_resumes(s3, sector, proxy, tmp_path: Path) -> None:
    paths = await asyncio.to_thread(sector, n_ffis=8, shape=(400, 500), no_wcs=())
    out = f"s3://{s3.bucket}/cancelled.fits"
    p = await interrupt_upload(paths, s3, proxy, "cancelled.fits")
    assert p.state.hung == 1
    assert uploaded_parts(s3, "cancelled.fits") == [2]  # part 1 (the headers) goes last; 3 never arrived
    assert not no_uploads_left(s3)
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cancelled")["Contents"]] == [
        "cancelled.fits.journal"
    ]
    with pytest.raises(fficube.ResumeError, match="resume=True"):
        await fficube.build_cube(paths, out, storage_options=s3.options)

    result = await fficube.build_cube(paths, out, max_memory="30MB", storage_options=s3.options, resume=True)
    assert result.resumed_rows > 0
    assert no_uploads_left(s3)
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cancelled")["Contents"]] == [
        "cancelled.fits"
    ]
    await fficube.build_cube(paths, tmp_path / "local.fits", max_memory="30MB")
    cube = tmp_path / "from-s3.fits"
    cube.write_bytes(object_bytes(s3, "cancelled.fits"))
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "local.fits").read_bytes())
    assert_verifies(cube)


async def test_restart_discards_the_interrupted_upload(s3, sector, proxy) -> None:
    paths = await asyncio.to_thread(sector, n_ffis=8, shape=(400, 500), no_wcs=())
    out = f"s3://{s3.bucket}/restarted.fits"
    await interrupt_upload(paths, s3, proxy, "restarted.fits")
    assert not no_uploads_left(s3)
    result = await fficube.build_cube(paths, out, max_memory="20MB", storage_options=s3.options, restart=True)
    assert result.resumed_rows == 0 and no_uploads_left(s3)
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]] == ["restarted.fits"]


async def test_cancelled_before_any_part_leaves_nothing(s3, sector) -> None:
    paths = await asyncio.to_thread(sector, n_ffis=8, shape=(400, 500), no_wcs=())
    task: asyncio.Task | None = None

    def cancel(p: fficube.Progress) -> None:
        if p.stage == "write" and p.done == 1:
            task.cancel()

    task = asyncio.create_task(fficube.build_cube(
        paths, f"s3://{s3.bucket}/early.fits", max_memory="20MB", storage_options=s3.options, progress=cancel,
    ))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert no_uploads_left(s3)
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket)


def test_other_fsspec_urls_http_and_memory(s3, ffis, local_cube, tmp_path: Path) -> None:
    budget = budget_for_rows(ffis, 7)
    # Any server that answers ranged GETs: moto serves objects over plain HTTP too.
    for url in s3.upload(ffis, "http"):
        s3.client.put_object_acl(Bucket=s3.bucket, Key=url.split("/", 3)[3], ACL="public-read")
    http_urls = [f"{s3.url}/{s3.bucket}/http/{Path(p).name}" for p in ffis]
    fficube.make_cube(http_urls, tmp_path / "http.fits", sector=1, max_memory=budget)
    assert without_build_stamps((tmp_path / "http.fits").read_bytes()) == local_cube
    memory = fsspec.filesystem("memory")
    mem_urls = []
    for p in ffis:
        url = f"memory://fficube-test/{Path(p).name}"
        memory.pipe(url, Path(p).read_bytes())
        mem_urls.append(url)
    try:
        fficube.make_cube(mem_urls, tmp_path / "mem.fits", sector=1, max_memory=budget)
        assert without_build_stamps((tmp_path / "mem.fits").read_bytes()) == local_cube
    finally:
        memory.rm("memory://fficube-test", recursive=True)


def test_mixed_locations_and_unsupported_outputs(s3, ffis, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "mix")
    with pytest.raises(fficube.InputError, match="the inputs mix local paths, s3://"):
        fficube.make_cube([ffis[0], urls[1]], tmp_path / "c.fits", storage_options=s3.options)
    with pytest.raises(fficube.OutputError, match="cannot write cubes to memory://"):
        fficube.make_cube(ffis, "memory://x/cube.fits")


def test_s3_output_memory_is_part_of_the_budget(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(400, 500), no_wcs=())
    # Enough for a local build; not with two 5 MiB upload buffers on top.
    budget = budget_for_rows(paths, 10)
    fficube.make_cube(paths, tmp_path / "local.fits", max_memory=budget)
    with pytest.raises(fficube.MemoryBudgetError, match="MB of upload buffers"):
        fficube.make_cube(paths, f"s3://{s3.bucket}/tight.fits", max_memory=budget, storage_options=s3.options)
    assert no_uploads_left(s3)


# -- Speed where it counts: the wire, parallel parts, tail latency, broken answers ----------


def test_reads_on_the_wire_reach_the_concurrency_asked_for(s3, sector, proxy, tmp_path: Path) -> None:
    # botocore's default pool of 10 connections capped this at 10, whatever was asked.
    urls = s3.upload(sector(n_ffis=24, shape=(64, 80), no_wcs=()), "wire")  # 48 reads of the one block
    p = proxy(latency=0.5)  # every request held long enough for all of a round to overlap
    result = fficube.make_cube(urls, tmp_path / "c.fits", concurrency=16, max_memory="64MB",
                               storage_options={"endpoint_url": p.url})
    # 16 reads on the wire, and a few hedges beside them if some of the reads lagged
    # (within the hedge budget: see test_hedging)
    assert 16 <= p.state.max_in_flight_by["GET"] <= 16 + result.hedges
    assert 16 <= result.max_in_flight <= 16 + result.hedges
    assert result.hedges <= HedgePolicy().allowed(result.requests)


def test_an_upload_of_many_parts_has_several_in_flight_and_the_same_cube(s3, sector, proxy, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(700, 1000), no_wcs=())  # 45 MB: 9 parts of 5 MiB
    fficube.make_cube(paths, tmp_path / "local.fits", max_memory="300MB")
    p = proxy(latency=0.3)  # parts overlap only if they are sent before the previous one is answered
    result = fficube.make_cube(paths, f"s3://{s3.bucket}/many.fits", max_memory="300MB",
                               storage_options={"endpoint_url": p.url})
    parts = [path for path in p.state.paths if path.startswith("PUT") and "partNumber=" in path]
    assert len(parts) == 9
    assert p.state.max_in_flight_by["UploadPart"] >= 2
    assert without_build_stamps(object_bytes(s3, "many.fits")) == without_build_stamps(
        (tmp_path / "local.fits").read_bytes())
    assert result.bytes_written == result.cube_bytes and no_uploads_left(s3)


def test_503s_on_upload_part_are_retried_and_the_cube_is_identical(s3, sector, proxy, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(700, 1000), no_wcs=())
    fficube.make_cube(paths, tmp_path / "local.fits", max_memory="300MB")
    p = proxy(fail_503=0.5, faults_for=upload_part)
    result = fficube.make_cube(paths, f"s3://{s3.bucket}/retried.fits", max_memory="300MB",
                               storage_options={"endpoint_url": p.url})
    assert p.state.faults_503 >= 2 and result.retries >= p.state.faults_503
    assert without_build_stamps(object_bytes(s3, "retried.fits")) == without_build_stamps(
        (tmp_path / "local.fits").read_bytes())
    assert no_uploads_left(s3)


def test_get_bodies_cut_mid_transfer_are_read_again(s3, ffis, local_cube, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "cut")
    p = proxy(fail_cut=0.3, faults_for=lambda command, path: command == "GET")
    result = fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget_for_rows(ffis, 7),
                               storage_options={"endpoint_url": p.url})
    # each cut read is tried again, unless a hedge sent for it answered first
    assert p.state.cuts >= 5 and result.retries + result.hedges >= p.state.cuts
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube


def test_a_get_that_never_answers_is_hedged(s3, ffis, local_cube, proxy, tmp_path: Path) -> None:
    urls = s3.upload(ffis, "hang")
    p = proxy(hang=nth_ranged_get(len(ffis) * 2 + 3))  # a data read of the first block
    result = fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget_for_rows(ffis, 7),
                               storage_options={"endpoint_url": p.url})
    assert p.state.hung == 1 and result.hedges >= 1
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube
    assert "hedged" in result.summary()


def test_a_store_slow_for_every_get_is_asked_twice_only_within_the_hedge_budget(
    s3, ffis, local_cube, proxy, tmp_path: Path
) -> None:
    """Every GET held 2.5 s: the first reads outlast the initial threshold (2 s), and
    every one of them would be sent again; the budget lets a few go.  Counted at the
    proxy, the GETs beyond one per distinct request stay within the budget's share."""
    urls = s3.upload(ffis, "budget")
    p = proxy(slow=1.0, slow_seconds=2.5)
    result = fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget_for_rows(ffis, 30),
                               storage_options={"endpoint_url": p.url})
    distinct = len(p.state.ranged_get_sizes)
    assert p.state.slowed == p.state.ranged_gets and result.hedges >= 1 and result.retries == 0
    assert p.state.ranged_gets - distinct <= HedgePolicy().allowed(distinct) < distinct // 2
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube


def test_reads_pin_the_version_with_a_quoted_entity_tag(s3, ffis, local_cube, proxy, tmp_path: Path) -> None:
    """If-Match carries the listed ETag as an entity tag, quotes included: a server that
    holds to RFC 9110 (nginx serving a bucket's files does) answers 412 otherwise."""
    urls = s3.upload(ffis, "strict")
    p = proxy(strict_if_match=True)
    fficube.make_cube(urls, tmp_path / "c.fits", sector=1, max_memory=budget_for_rows(ffis, 7),
                      storage_options={"endpoint_url": p.url})
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == local_cube
    etags = {s3.client.head_object(Bucket=s3.bucket, Key=url.split("/", 3)[3])["ETag"] for url in urls}
    assert p.state.if_match and set(p.state.if_match) == etags


def test_the_proxy_draws_each_slow_get_on_its_own_or_a_slow_range_at_every_attempt() -> None:
    from s3_proxy import ProxyState

    keys = [f"GET /b/f{i}.fits bytes={i}-{i + 9}" for i in range(4000)]
    tail = ProxyState(upstream=("127.0.0.1", 1), slow=0.01)
    first = [k for k in keys if tail.is_slow(k)]
    again = [k for k in first if tail.is_slow(k)]  # their second attempts (hedges, retries)
    assert 20 <= len(first) <= 60 and len(again) <= 2  # about 1%, and a second try is rarely slow too
    server = ProxyState(upstream=("127.0.0.1", 1), slow=0.01, slow_every_attempt=True)
    slow = [k for k in keys if server.is_slow(k)]
    assert 20 <= len(slow) <= 60 and all(server.is_slow(k) for k in slow)
