"""Conformance suites for the kinds of storage, in the manner of zarr's ``StoreTests``.

:class:`OutputTests` runs an output kind (its :class:`~fficube.sinks.base.Output`,
:class:`~fficube.sinks.base.CubeSink` and :class:`~fficube.sinks.base.Shards`) through
what fficube asks of every kind: a build read back as the same cube, an existing cube
refused or replaced, an interrupted build kept, resumed or discarded, the lock, and a
cube built by several workers.  :class:`SourceTests` does the same for byte sources.
Each kind is a subclass that says where its files go; a new kind is done when its
subclasses pass.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import budget_for_rows, cancel_after_blocks, without_build_stamps

import fficube
from fficube.errors import InputError, OutputError, OutputExistsError, ReadError, ResumeError
from fficube.sectors.shard import build_shard, finish_cube
from fficube.sinks import complete_cube, kept_after_interruption, open_output, open_shards
from fficube.sinks.s3 import MIN_PART, PART_BUFFERS
from fficube.sources import Filesystems, open_location
from fficube.sources.base import BatchReads, ByteSource, read_batch
from fficube.sources.memory import STORE
from fficube.synthetic import SectorSpec, make_sector

SHAPE = (60, 70)


@pytest.fixture(scope="module")
def ffis(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_sector(tmp_path_factory.mktemp("ffis"), SectorSpec(n_ffis=6, shape=SHAPE, no_wcs=(1,)))


@pytest.fixture(scope="module")
def reference(ffis: list[str], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The cube of ``ffis``, built locally in one go, without its build stamps."""
    path = tmp_path_factory.mktemp("reference") / "cube.fits"
    fficube.make_cube(ffis, path, sector=1)
    return without_build_stamps(path.read_bytes())


def _memory_place() -> Iterator[Callable[[str], str]]:
    root = f"mem://{uuid.uuid4().hex}/"
    yield lambda name: root + name
    for name in STORE.names(root):
        STORE.delete(name)


# ------------------------------------------------------------------------------------
# Outputs


class OutputTests:
    """What every output kind does.  A subclass provides the fixtures ``place`` (a name ->
    a location of the kind, fresh for each test) and ``options`` (``build_cube``'s
    storage keyword arguments), and says what the kind can do."""

    #: The kind's lock refuses a second build of one output while the first runs.
    locks = True
    #: A build cancelled after some blocks keeps them (a kind that keeps only what its
    #: store acknowledged keeps nothing if the store had not answered yet).
    keeps_every_recorded_block = True
    #: Memory the kind's sink holds at the budgets of these tests (``Output.reserve``).
    reserved = 0

    @pytest.fixture
    def budget(self, ffis: list[str]) -> int:
        """A budget for blocks of 4 rows: 15 blocks."""
        return budget_for_rows(ffis, 4, reserved=self.reserved)

    @pytest.fixture
    def place(self) -> Callable[[str], str]:
        raise NotImplementedError

    @pytest.fixture
    def options(self) -> dict[str, Any]:
        return {}

    async def read_back(self, location: str, options: dict[str, Any]) -> bytes:
        """The cube at ``location`` as fficube reads it (its source for the location)."""
        async with Filesystems(**options) as filesystems:
            source = await open_location(location, filesystems, output=True)
            try:
                return await source.read(location, 0, await source.size(location))
            finally:
                await source.aclose()

    async def journal(self, location: str, options: dict[str, Any]) -> Any:
        async with Filesystems(**options) as filesystems:
            return await (await open_output(location, filesystems)).load_journal()

    async def test_a_build_reads_back_as_the_same_cube(self, place, options, ffis, budget, reference) -> None:
        location = place("cube.fits")
        async with Filesystems(**options) as filesystems:
            out = await open_output(location, filesystems)
            assert out.location == location and not await out.exists()
            await out.check(ffis, overwrite=False)
        result = await fficube.build_cube(ffis, location, sector=1, max_memory=budget, **options)
        assert result.output == location and result.blocks > 1
        assert without_build_stamps(await self.read_back(location, options)) == reference
        async with Filesystems(**options) as filesystems:
            out = await open_output(location, filesystems)
            assert await out.exists() and await out.load_journal() is None
            there = await complete_cube(location, filesystems)
            assert there.cube is not None and there.problem == "" and there.cube.shape[2] == len(ffis)
        assert kept_after_interruption(location) is not True
        assert (await fficube.verify_cube(location, **options)).ok

    async def test_an_existing_cube_is_kept_without_overwrite_and_replaced_with_it(self, place, options, ffis,
                                                                                  reference) -> None:
        location = place("cube.fits")
        await fficube.build_cube(ffis[:4], location, sector=1, **options)
        first = await self.read_back(location, options)
        with pytest.raises(OutputExistsError, match="overwrite"):
            await fficube.build_cube(ffis, location, sector=1, **options)
        async with Filesystems(**options) as filesystems:
            with pytest.raises(OutputExistsError):
                await (await open_output(location, filesystems)).check(ffis, overwrite=False)
        assert await self.read_back(location, options) == first
        await fficube.build_cube(ffis, location, sector=1, overwrite=True, **options)
        assert without_build_stamps(await self.read_back(location, options)) == reference
        # Resuming a build that finished checks the cube there and writes nothing.
        again = await fficube.build_cube(ffis, location, sector=1, resume=True, **options)
        assert again.already_complete and again.bytes_written == 0

    async def test_the_output_is_not_one_of_the_inputs(self, place, options) -> None:
        location = place("cube.fits")
        async with Filesystems(**options) as filesystems:
            with pytest.raises(InputError, match="one of the inputs"):
                await (await open_output(location, filesystems)).check([location], overwrite=True)

    async def test_an_interrupted_build_is_kept_and_resumed_to_the_same_cube(self, place, options, ffis, budget,
                                                                             reference) -> None:
        location = place("cube.fits")
        await cancel_after_blocks(6, lambda progress: fficube.build_cube(
            ffis, location, sector=1, max_memory=budget, progress=progress, **options))
        async with Filesystems(**options) as filesystems:
            assert not await (await open_output(location, filesystems)).exists()
        journal = await self.journal(location, options)
        if self.keeps_every_recorded_block:
            assert journal is not None and journal.progress is not None
            assert kept_after_interruption(location) in (True, None)
        if journal is not None:  # hours of work are not thrown away by accident
            assert kept_after_interruption(location) is not False
            with pytest.raises(ResumeError, match="resume=True"):
                await fficube.build_cube(ffis, location, sector=1, max_memory=budget, **options)
        result = await fficube.build_cube(ffis, location, sector=1, max_memory=budget, resume=True, **options)
        assert (result.resumed_rows > 0) == (journal is not None)
        assert without_build_stamps(await self.read_back(location, options)) == reference
        assert await self.journal(location, options) is None
        assert kept_after_interruption(location) is not True

    async def test_restart_discards_an_interrupted_build(self, place, options, ffis, budget, reference) -> None:
        location = place("cube.fits")
        await cancel_after_blocks(6, lambda progress: fficube.build_cube(
            ffis, location, sector=1, max_memory=budget, progress=progress, **options))
        result = await fficube.build_cube(ffis, location, sector=1, max_memory=budget, restart=True, **options)
        assert result.resumed_rows == 0
        assert without_build_stamps(await self.read_back(location, options)) == reference
        assert await self.journal(location, options) is None

    async def test_a_second_build_of_one_output_at_once_is_refused(self, place, options) -> None:
        if not self.locks:
            pytest.skip("this kind has no lock that dies with its process")
        async with Filesystems(**options) as filesystems:
            out = await open_output(place("cube.fits"), filesystems)
            async with out.lock():
                with pytest.raises(OutputError, match="building this cube|running right now"):
                    async with out.lock():
                        pass
            async with out.lock():  # released: taken again
                pass

    async def test_workers_build_one_cube_together(self, place, options, ffis, reference) -> None:
        location = place("cube.fits")
        inputs = str(Path(ffis[0]).parent / "*ffic.fits")
        firsts = [await build_shard(inputs, location, k, 3, sector=1, **options) for k in (1, 2)]
        assert [r.finish.status for r in firsts] == ["waiting", "waiting"]
        last = await build_shard(inputs, location, 3, 3, sector=1, **options)
        assert last.finished
        assert without_build_stamps(await self.read_back(location, options)) == reference
        async with Filesystems(**options) as filesystems:
            shards = await open_shards(location, filesystems)
            assert await shards.plan() is None and await shards.journal(1) is None  # cleaned up
            assert (await finish_cube(location, filesystems=filesystems)).status == "complete"


class TestLocalOutput(OutputTests):
    @pytest.fixture
    def place(self, tmp_path: Path) -> Callable[[str], str]:
        return lambda name: str(tmp_path / "cubes" / name)


class TestS3Output(OutputTests):
    locks = False
    keeps_every_recorded_block = False  # parts S3 had not acknowledged at the cancel are not kept
    reserved = (PART_BUFFERS + 1) * MIN_PART  # part 1, the part filling and one in flight

    @pytest.fixture
    def place(self, s3) -> Callable[[str], str]:
        return lambda name: f"s3://{s3.bucket}/cubes/{name}"

    @pytest.fixture
    def options(self, s3) -> dict[str, Any]:
        return {"storage_options": s3.options}


class TestMemoryOutput(OutputTests):
    @pytest.fixture
    def place(self) -> Iterator[Callable[[str], str]]:
        yield from _memory_place()


# ------------------------------------------------------------------------------------
# Sources


DATA = bytes(range(256)) * 40  # 10,240 bytes, each offset recognisable


class SourceTests:
    """What every byte source does.  A subclass provides the fixtures ``put`` (name, bytes
    -> the location of a new file of the kind holding them) and ``options``."""

    @pytest.fixture
    def put(self) -> Callable[[str, bytes], str]:
        raise NotImplementedError

    @pytest.fixture
    def options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    async def open(self, options) -> Any:
        async with Filesystems(**options) as filesystems:
            opened: list[ByteSource] = []

            async def make(location: str, concurrency: int | None = None) -> ByteSource:
                opened.append(await open_location(location, filesystems, concurrency))
                return opened[-1]

            yield make
            for source in opened:
                await source.aclose()

    async def test_sizes_and_ranges(self, put, open) -> None:
        location = put("a.bin", DATA)
        source = await open(location)
        assert isinstance(source, ByteSource) and source.concurrency >= 1
        assert await source.size(location) == len(DATA)
        for start, stop in ((0, 1), (100, 2980), (len(DATA) - 7, len(DATA)), (5000, 5000)):
            assert await source.read(location, start, stop) == DATA[start:stop]
            buf = bytearray(stop - start)
            await source.readinto(location, start, memoryview(buf))
            assert buf == DATA[start:stop]

    async def test_a_read_past_the_end_is_short_and_a_readinto_an_error(self, put, open) -> None:
        location = put("a.bin", DATA)
        source = await open(location)
        assert await source.read(location, len(DATA) - 10, len(DATA) + 100) == DATA[-10:]
        buf = memoryview(bytearray(100))
        with pytest.raises(ReadError, match="truncated") as caught:
            await source.readinto(location, len(DATA) - 10, buf)
        assert caught.value.path == location

    async def test_a_missing_file_is_a_read_error_naming_it(self, put, open) -> None:
        location = put("a.bin", DATA)[: -len("a.bin")] + "missing.bin"
        source = await open(location)
        for attempt in (source.size(location), source.read(location, 0, 10),
                        source.readinto(location, 0, memoryview(bytearray(10)))):
            with pytest.raises(ReadError) as caught:
                await attempt
            assert caught.value.path == location

    async def test_a_batch_fills_every_buffer(self, put, open) -> None:
        locations = [put(f"{k}.bin", DATA[k:]) for k in range(3)]
        source = await open(locations[0])
        wanted = [(loc, start, 100 + 10 * k) for k, loc in enumerate(locations) for start in (0, 4000)]
        bufs = [memoryview(bytearray(n)) for _, _, n in wanted]
        requests = [(loc, start, buf) for (loc, start, _), buf in zip(wanted, bufs, strict=True)]
        await read_batch(source, requests)
        for (loc, start, n), buf in zip(wanted, bufs, strict=True):
            k = locations.index(loc)
            assert bytes(buf) == DATA[k:][start : start + n]
        if isinstance(source, BatchReads):
            again = [memoryview(bytearray(len(b))) for b in bufs]
            await source.readinto_batch([(loc, start, b) for (loc, start, _), b in zip(wanted, again, strict=True)])
            assert [bytes(b) for b in again] == [bytes(b) for b in bufs]

    async def test_stats_count_what_was_read(self, put, open) -> None:
        location = put("a.bin", DATA)
        source = await open(location, 2)
        before = source.stats.requests
        await source.read(location, 10, 1010)
        await source.readinto(location, 2000, memoryview(bytearray(500)))
        assert source.stats.bytes_read == 1500
        assert source.stats.requests - before >= 2
        await asyncio.gather(*(source.read(location, k * 100, k * 100 + 100) for k in range(20)))
        assert source.stats.bytes_read == 3500
        assert source.stats.max_in_flight <= 2 * (1 + 1)  # within the concurrency (and one hedge each)


class TestLocalSource(SourceTests):
    @pytest.fixture
    def put(self, tmp_path: Path) -> Callable[[str, bytes], str]:
        def put(name: str, data: bytes) -> str:
            (tmp_path / name).write_bytes(data)
            return str(tmp_path / name)

        return put


class TestS3Source(SourceTests):
    @pytest.fixture
    def put(self, s3) -> Callable[[str, bytes], str]:
        def put(name: str, data: bytes) -> str:
            s3.client.put_object(Bucket=s3.bucket, Key=f"files/{name}", Body=data)
            return f"s3://{s3.bucket}/files/{name}"

        return put

    @pytest.fixture
    def options(self, s3) -> dict[str, Any]:
        return {"storage_options": s3.options}


class TestFsspecMemorySource(SourceTests):
    @pytest.fixture
    def put(self) -> Iterator[Callable[[str, bytes], str]]:
        import fsspec

        fs = fsspec.filesystem("memory")
        root = f"memory://conformance-{uuid.uuid4().hex}/"

        def put(name: str, data: bytes) -> str:
            fs.pipe(root + name, data)
            return root + name

        yield put
        fs.rm(root, recursive=True)


class TestMemorySource(SourceTests):
    @pytest.fixture
    def put(self) -> Iterator[Callable[[str, bytes], str]]:
        places = _memory_place()
        place = next(places)

        def put(name: str, data: bytes) -> str:
            STORE.put(place(name), data)
            return place(name)

        yield put
        next(places, None)  # removes what the test put
