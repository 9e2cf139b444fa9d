"""The header scanner: layouts from ranged reads, and malformed files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import scan_one

from fficube.errors import FitsFormatError
from fficube.products import SPOC, TICA
from fficube.synthetic import write_spoc_ffi, write_tica_ffi


@pytest.mark.parametrize("wcs", [True, False])
def test_spoc_layout_matches_astropy(tmp_path: Path, wcs: bool) -> None:
    path = write_spoc_ffi(tmp_path / "a.fits", start=1400.0, shape=(20, 30), wcs=wcs)
    info, stats = scan_one(path)
    with fits.open(path) as hdus:
        for layout, hdu in zip(info.layers, (1, 2), strict=True):
            assert layout.offset == hdus.fileinfo(hdu)["datLoc"]
            assert (layout.rows, layout.cols, layout.bitpix) == (20, 30, -32)
        assert info.start == hdus[1].header["TSTART"]
        assert info.is_template is wcs
        assert fits.Header.fromstring(info.image_header) == hdus[1].header
    assert info.product == "spoc" and (info.camera, info.ccd) == (1, 1)
    # Headers only: far fewer bytes than the file, in a few requests.
    assert stats.bytes_read < 2 * info.layers[0].offset + 2880 * 2
    assert stats.requests <= 3


def test_tica_layout_ignores_the_star_table(tmp_path: Path) -> None:
    path = write_tica_ffi(tmp_path / "t.fits", start=2000.5, shape=(20, 30))
    info, _ = scan_one(path)
    with fits.open(path) as hdus:
        assert [lay.offset for lay in info.layers] == [hdus.fileinfo(0)["datLoc"]]
        assert info.start == hdus[0].header["STARTTJD"]
    assert info.product == "tica" and (info.camera, info.ccd) == (1, 1)


def test_forced_product_mismatch(tmp_path: Path) -> None:
    path = write_tica_ffi(tmp_path / "t.fits", start=2000.5, shape=(8, 8))
    with pytest.raises(FitsFormatError, match="TICA FFI, not SPOC"):
        scan_one(path, SPOC)
    spoc = write_spoc_ffi(tmp_path / "s.fits", start=2000.5, shape=(8, 8))
    with pytest.raises(FitsFormatError, match="SPOC FFI, not TICA"):
        scan_one(spoc, TICA)


def _replace_card(path: Path, key: str, card: str, hdu_start: int) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(f"{key:<8}=".encode(), hdu_start)
    data[at : at + 80] = card.ljust(80).encode()
    path.write_bytes(bytes(data))


BAD = {
    "not fits": (lambda p: p.write_bytes(b"hello world" * 400), "not a FITS file"),
    "empty": (lambda p: p.write_bytes(b""), "not a FITS file"),
    "truncated data": (lambda p: p.write_bytes(p.read_bytes()[:-5000]), r"truncated \(bytes"),
    "truncated header": (lambda p: p.write_bytes(p.read_bytes()[:4000]), "no END card|truncated"),
    "no TSTART": (lambda p: _replace_card(p, "TSTART", "TSTARX  = 1.0", 2880), "no TSTART in HDU 1"),
    "TSTART not a number": (
        lambda p: _replace_card(p, "TSTART", "TSTART  = 'nan'", 2880), "TSTART = 'nan' in HDU 1 is not a finite"
    ),
    "bad NAXIS1": (lambda p: _replace_card(p, "NAXIS1", "NAXIS1  = 'wide'", 2880), "NAXIS1 = 'wide' is not an integer"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_files_are_refused_with_their_name(tmp_path: Path, case: str) -> None:
    path = Path(write_spoc_ffi(tmp_path / "bad.fits", start=1400.0, shape=(40, 30)))
    damage, message = BAD[case]
    damage(path)
    with pytest.raises(FitsFormatError, match=message) as info:
        scan_one(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_tpf_cube_and_compressed_are_not_ffis(tmp_path: Path) -> None:
    tpf = tmp_path / "tpf.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="TIME", format="D", array=np.zeros(3))])]
    ).writeto(tpf)
    with pytest.raises(FitsFormatError, match="HDU 1 is a 'BINTABLE' extension, not an image"):
        scan_one(tpf)

    cube = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 3, 4, 5), np.float32)), fits.ImageHDU()]).writeto(cube)
    with pytest.raises(FitsFormatError, match=r"HDU 1 has NAXIS = 4 \(a cube\)"):
        scan_one(cube)

    packed = tmp_path / "packed.fits"
    image = np.ones((16, 16), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image), fits.CompImageHDU(image)]).writeto(packed)
    with pytest.raises(FitsFormatError, match="tile-compressed"):
        scan_one(packed)


def test_large_headers_are_read_in_growing_chunks(tmp_path: Path) -> None:
    path = write_spoc_ffi(tmp_path / "a.fits", start=1400.0, shape=(10, 10))
    with fits.open(path) as hdus:
        for i in range(1, 3):
            for n in range(400):  # about 11 more header blocks each
                hdus[i].header[f"XTRA{n:04d}"] = n
        hdus.writeto(tmp_path / "big.fits")
    info, stats = scan_one(tmp_path / "big.fits")
    with fits.open(tmp_path / "big.fits") as hdus:
        assert [lay.offset for lay in info.layers] == [hdus.fileinfo(i)["datLoc"] for i in (1, 2)]
    assert stats.requests <= 5


def test_a_local_scan_in_batches_equals_one_file_at_a_time(tmp_path: Path) -> None:
    from helpers import _with_source

    from fficube.scan import SCAN_BATCH, scan

    # Batches of several files; headers of two lengths (with and without WCS); two products.
    paths = [str(write_spoc_ffi(tmp_path / f"s{i:03d}.fits", start=1400.0 + i, shape=(6, 8), wcs=i % 3 != 0))
             for i in range(2 * SCAN_BATCH + 5)]
    seen: list[int] = []
    batched, stats = _with_source(lambda source: scan(paths, source, on_scanned=seen.append))
    single = [scan_one(path) for path in paths]
    assert batched == [info for info, _ in single]
    assert stats.requests == sum(s.requests for _, s in single)
    assert stats.bytes_read == sum(s.bytes_read for _, s in single)
    assert seen == sorted(seen) and seen[-1] == len(paths)
    tica = [str(write_tica_ffi(tmp_path / f"t{i}.fits", start=2000.5 + i, shape=(6, 8))) for i in range(3)]
    assert _with_source(lambda source: scan(tica, source))[0] == [scan_one(path)[0] for path in tica]


def test_a_bad_file_in_a_batch_is_named(tmp_path: Path) -> None:
    from helpers import _with_source

    from fficube.scan import scan

    paths = [str(write_spoc_ffi(tmp_path / f"s{i:03d}.fits", start=1400.0 + i, shape=(6, 8))) for i in range(40)]
    with open(paths[37], "r+b") as f:
        f.truncate(2880 * 3)  # inside the image header
    with pytest.raises(FitsFormatError, match="no END card") as info:
        _with_source(lambda source: scan(paths, source))
    assert info.value.path == paths[37]


def test_a_scan_beyond_the_kept_descriptors_opens_each_file_once_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import os

    from fficube.scan import scan
    from fficube.sources.local import LocalSource

    paths = [str(write_spoc_ffi(tmp_path / f"s{i:03d}.fits", start=1400.0 + i, shape=(6, 8))) for i in range(40)]
    open_before = len(os.listdir("/proc/self/fd"))
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):  # the real open, counted
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    async def run():
        source = LocalSource(4)
        source._max_fds = 3  # as with a low `ulimit -n` and thousands of FFIs
        try:
            with monkeypatch.context() as patch:
                patch.setattr(os, "open", counting_open)
                infos = await scan(paths, source)
            return infos, source.stats, len(os.listdir("/proc/self/fd"))
        finally:
            await source.aclose()

    infos, stats, open_during = asyncio.run(run())
    assert sorted(p for p in opened if p.endswith(".fits")) == sorted(paths)  # each once, for all its reads
    assert infos == [scan_one(path)[0] for path in paths]
    assert open_during - open_before <= 3 + 4  # the kept ones, and perhaps the loop's own
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert stats.requests == sum(scan_one(path)[1].requests for path in paths)


def test_a_second_scan_job_runs_only_while_jobs_mostly_wait() -> None:
    from fficube.scan import waits

    assert waits(elapsed=1.0, cpu=0.2)  # most of the time on the disk
    assert not waits(elapsed=1.0, cpu=0.9)  # parsing: a second job would only take turns
    assert not waits(elapsed=0.0, cpu=0.0)
    assert not waits(elapsed=0.010, cpu=0.004)  # a few ms: the GIL's turn, not the disk
    assert waits(elapsed=0.100, cpu=0.004)


def test_a_scan_whose_reads_wait_runs_a_second_job_and_gives_the_same_result(tmp_path: Path) -> None:
    """Reads that wait (a slow filesystem: each read sleeps) make the scan start a
    second job beside the first; cached files keep one (not asserted: it depends on the
    machine's load).  Either way the result is the file-by-file scan's."""
    import asyncio
    import time

    from fficube.scan import SCAN_JOBS, scan
    from fficube.sources.local import LocalSource

    class SlowDisk(LocalSource):
        """The real local source, each of its blocking reads 5 ms late; jobs counted."""

        running = most = 0

        async def run_blocking(self, job):
            class Late:  # the job's reads, each 5 ms late
                def __init__(self, reads):
                    self.size, self.prefetch, self._read = reads.size, reads.prefetch, reads.read

                def read(self, path, start, stop):
                    time.sleep(0.005)
                    return self._read(path, start, stop)

            def slowly(reads):
                return job(Late(reads))

            SlowDisk.running += 1
            SlowDisk.most = max(SlowDisk.most, SlowDisk.running)
            try:
                return await super().run_blocking(slowly)
            finally:
                SlowDisk.running -= 1

    paths = [str(write_spoc_ffi(tmp_path / f"s{i:03d}.fits", start=1400.0 + i, shape=(6, 8))) for i in range(40)]

    async def run():
        source = SlowDisk(4)
        try:
            return await scan(paths, source)
        finally:
            await source.aclose()

    infos = asyncio.run(run())
    assert SlowDisk.most == SCAN_JOBS == 2
    assert infos == [scan_one(path)[0] for path in paths]
