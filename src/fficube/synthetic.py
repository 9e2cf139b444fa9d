"""Synthetic TESS FFIs with realistic headers, for the demo, tests and benchmarks.

The headers follow real SPOC and TICA products (card names, order, comments and
value types; see the project's shared header samples): a one-block SPOC primary
header, an image extension with times, detector keywords and a SIP WCS (left out,
as in about 1.4 % of real FFIs, when ``wcs=False``), and for TICA an image in HDU 0
with a reference-star table in HDU 1.  Pixel values are deterministic in ``seed``.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.time import Time

__all__ = ["SectorSpec", "write_spoc_ffi", "write_tica_ffi", "make_sector", "spoc_name", "tica_name", "star_field"]

FULL_SHAPE = (2078, 2136)  #: rows, cols of a real FFI
CADENCE_DAYS = 30.0 / 1440.0  #: prime-mission FFI cadence
TJD_OFFSET = 2457000.0


#: Time written into CHECKSUM/DATASUM comments, so that a file's bytes depend only on
#: its arguments (golden test files are regenerated bit for bit).
CHECKSUM_STAMP = "2026-01-01T00:00:00"
WCS_PREFIXES = ("WCSAXES", "CTYPE", "CRPIX", "CRVAL", "CD1_", "CD2_", "A_", "B_", "AP_", "BP_")


def _write(hdus: fits.HDUList, path: str | os.PathLike[str], *, sparse: bool = False) -> str:
    """Write with valid, deterministic CHECKSUM and DATASUM cards in every HDU.

    With ``sparse``, only the headers and the data rows that are not all zero are
    written; the rest of the file is a hole (``os.truncate``), so that a benchmark can
    hold thousands of full-size FFIs on a small disk.  The bytes read back are the
    same as those of a file written whole.
    """
    hdus.update_extend()
    for hdu in hdus:
        hdu.add_datasum(when=f"data unit checksum updated {CHECKSUM_STAMP}")
        hdu.add_checksum(when=f"HDU checksum updated {CHECKSUM_STAMP}", override_datasum=True)
    if not sparse:
        hdus.writeto(path, overwrite=True, checksum=False)
        return os.fspath(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = 0
        for hdu in hdus:
            header = hdu.header.tostring().encode("ascii")
            os.pwrite(fd, header, offset)
            offset += len(header)
            if hdu.data is not None:
                data = np.asarray(hdu.data)
                raw = data.astype(data.dtype.newbyteorder(">"), copy=False)
                rows = raw.reshape(raw.shape[0], -1)
                row_bytes = rows.shape[1] * raw.itemsize
                for r in np.flatnonzero(np.any(rows != 0, axis=1)):
                    os.pwrite(fd, rows[r].tobytes(), offset + int(r) * row_bytes)
                offset += -(-raw.nbytes // 2880) * 2880
        os.ftruncate(fd, offset)
    finally:
        os.close(fd)
    return os.fspath(path)


def _iso(tjd: float) -> str:
    return str(Time(tjd + TJD_OFFSET, format="jd", scale="tdb").utc.isot) + "Z"


def spoc_name(start: float, sector: int, camera: int, ccd: int) -> str:
    """A SPOC FFI file name (44 characters) for a start time in TJD."""
    stamp = Time(start + TJD_OFFSET, format="jd", scale="tdb").utc.strftime("%Y%j%H%M%S")
    return f"tess{stamp}-s{sector:04d}-{camera}-{ccd}-0120-s_ffic.fits"


def tica_name(cadence: int, sector: int, camera: int, ccd: int, orbit: int = 1) -> str:
    """A TICA FFI file name."""
    return (
        f"hlsp_tica_tess_ffi_s{sector:04d}-o{orbit}-{cadence:08d}-cam{camera}-ccd{ccd}_tess_v01_img.fits"
    )


def _wcs_cards(rng: np.random.Generator, camera: int, ccd: int, sector: int) -> list[tuple[str, Any, str]]:
    ra = (107.27 + 24.0 * sector + 6.0 * camera) % 360.0
    dec = -70.0 + 5.0 * ccd
    pc = 0.0058 * np.array([[-0.88, -0.41], [0.43, -0.89]])
    cards = [
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN-SIP", "Gnomonic projection + SIP distortions"),
        ("CTYPE2", "DEC--TAN-SIP", "Gnomonic projection + SIP distortions"),
        ("CRVAL1", ra, "RA at CRPIX1, CRPIX2"),
        ("CRVAL2", dec, "DEC at CRPIX1, CRPIX2"),
        ("CRPIX1", 1045.0, "X reference pixel"),
        ("CRPIX2", 1001.0, "Y reference pixel"),
        ("CD1_1", float(pc[0, 0]), "Transformation matrix"),
        ("CD1_2", float(pc[0, 1]), "Transformation matrix"),
        ("CD2_1", float(pc[1, 0]), "Transformation matrix"),
        ("CD2_2", float(pc[1, 1]), "Transformation matrix"),
    ]
    for prefix, inverse in (("A", False), ("B", False), ("AP", True), ("BP", True)):
        cards.append((f"{prefix}_ORDER", 4, ("Inv p" if inverse else "P") + "olynomial order"))
        for p in range(5):
            for q in range(5 - p):
                if p + q < (1 if inverse else 2):
                    continue
                value = float(rng.normal(0.0, 10.0 ** -(3 + 3 * (p + q - 1))))
                cards.append((f"{prefix}_{p}_{q}", value, ("inv " if inverse else "") + "distortion coefficient"))
    cards.append(("A_DMAX", 44.2, "maximum distortion, axis 1"))
    cards.append(("B_DMAX", 44.7, "maximum distortion, axis 2"))
    return cards


#: Gaussian PSF of the synthetic stars: sigma in pixels (TESS's PSF is about 1-2 pixels wide).
PSF_SIGMA = 1.0
#: Pointing jitter of the synthetic stars: sigma of each frame's offset, pixels.
JITTER_SIGMA = 0.15


def star_field(n_stars: int, shape: tuple[int, int], seed: int | Sequence[int]) -> np.ndarray:
    """Fixed positions and fluxes of ``n_stars`` synthetic stars: rows of (row, col, flux).

    Fluxes (e-/s, the whole star) are log-uniform between 300 and 300,000, so a few
    stars are bright and most are faint, as in a real field.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    return np.column_stack([
        rng.uniform(-0.5, rows - 0.5, n_stars),
        rng.uniform(-0.5, cols - 0.5, n_stars),
        10.0 ** rng.uniform(2.5, 5.5, n_stars),
    ])


def _add_stars(image: np.ndarray, stars: np.ndarray, offset: tuple[float, float]) -> None:
    """Add each star's Gaussian PSF, shifted by ``offset`` (row, col) pixels, to ``image``."""
    rows, cols = image.shape
    half = int(np.ceil(5 * PSF_SIGMA))
    norm = 1.0 / (2.0 * np.pi * PSF_SIGMA**2)
    for row, col, flux in stars:
        r0, c0 = row + offset[0], col + offset[1]
        r = np.arange(max(0, int(r0) - half), min(rows, int(r0) + half + 2))
        c = np.arange(max(0, int(c0) - half), min(cols, int(c0) + half + 2))
        if r.size == 0 or c.size == 0:
            continue
        psf = np.exp(-((r[:, None] - r0) ** 2 + (c[None, :] - c0) ** 2) / (2.0 * PSF_SIGMA**2))
        image[r[0] : r[-1] + 1, c[0] : c[-1] + 1] += (flux * norm * psf).astype(np.float32)


def _image(rng: np.random.Generator, shape: tuple[int, int],
           stars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sky of 150 +- 5 e-/s and its uncertainty; with ``stars`` (:func:`star_field`), those
    stars through a Gaussian PSF, moved by this frame's pointing jitter; without, bright
    3 x 3 squares at random places."""
    if stars is not None:
        sky = rng.normal(150.0, 5.0, size=shape).astype(np.float32)
        offset = rng.normal(0.0, JITTER_SIGMA, size=2)
        _add_stars(sky, stars, (float(offset[0]), float(offset[1])))
        return sky, np.sqrt(np.abs(sky)).astype(np.float32)
    return _squares(rng, shape)


def _squares(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    sky = rng.normal(150.0, 5.0, size=shape).astype(np.float32)
    rows, cols = shape
    for _ in range(max(3, rows * cols // 2000)):
        r, c = rng.integers(0, rows), rng.integers(0, cols)
        sky[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2] += np.float32(rng.uniform(500, 50000))
    return sky, np.sqrt(np.abs(sky)).astype(np.float32)


def write_spoc_ffi(
    path: str | os.PathLike[str],
    *,
    start: float,
    sector: int = 1,
    camera: int = 1,
    ccd: int = 1,
    shape: tuple[int, int] = (64, 80),
    wcs: bool = True,
    seed: int = 0,
    ffi_index: int = 0,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    sparse: bool = False,
) -> str:
    """Write a SPOC calibrated FFI (HDU 0 header only, HDU 1 science, HDU 2 uncertainty).

    ``data`` gives the two images (any dtype; written as is, so a test can make scaled
    or integer inputs); by default they are float32 like real FFIs.  With ``sparse``
    (and no ``data``), the images are zero but for three marker rows (first, middle,
    last) that hold the FFI's index, and the file is written sparse (see :func:`_write`).
    """
    rng = np.random.default_rng(seed)
    stop = start + CADENCE_DAYS * 0.9987
    primary = fits.Header(
        [
            ("NEXTEND", 2, "number of standard extensions"),
            ("EXTNAME", "PRIMARY", "name of extension"),
            ("EXTVER", 1, "extension version number (not format version)"),
            ("SIMDATA", False, "file is based on simulated data"),
            ("ORIGIN", "NASA/Ames", "institution responsible for creating this file"),
            ("DATE", "2018-09-03", "file creation date."),
            ("TSTART", start, "observation start time in TJD"),
            ("TSTOP", stop, "observation stop time in TJD"),
            ("DATE-OBS", _iso(start), "TSTART as UTC calendar date"),
            ("DATE-END", _iso(stop), "TSTOP as UTC calendar date"),
            ("CREATOR", "114 FfiExporter", "pipeline job and program used to produce this f"),
            ("PROCVER", "spoc-3.3.31-20180902", "SW version"),
            ("FILEVER", "1.0", "file format version"),
            ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
            ("TELESCOP", "TESS", "telescope"),
            ("INSTRUME", "TESS Photometer", "detector type"),
            ("DATA_REL", 1, "data release version number"),
            ("ASTATE", True, "archive state F indicates single orbit processi"),
            ("SCCONFIG", 120, "spacecraft configuration ID"),
            ("FFIINDEX", ffi_index, "number of FFI cadence interval"),
            ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
            ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
            ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
            ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
            ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
        ]
    )
    image = fits.Header(
        [
            ("INHERIT", True, "inherit the primary header"),
            ("EXTNAME", f"CAMERA.CCD {camera}.{ccd} cal", "extension name"),
            ("EXTVER", 1, "extension version number (not format version)"),
            ("TELESCOP", "TESS", "telescope"),
            ("INSTRUME", "TESS Photometer", "detector type"),
            ("CAMERA", camera, "Camera number"),
            ("CCD", ccd, "CCD chip number"),
            ("IMAGTYPE", "cal", "FFI image type: raw, cal, uncert"),
            ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
            ("TASSIGN", "SPACECRAFT", "where time is assigned"),
            ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
            ("BJDREFI", 2457000, "integer part of BTJD reference date"),
            ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
            ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
            ("TELAPSE", stop - start, "[d] TSTOP - TSTART"),
            ("LIVETIME", (stop - start) * 0.792, "[d] TELAPSE multiplied by DEADC"),
            ("TSTART", start, "observation start time in BTJD"),
            ("TSTOP", stop, "observation stop time in BTJD"),
            ("DATE-OBS", _iso(start), "TSTART as UTC calendar date"),
            ("DATE-END", _iso(stop), "TSTOP as UTC calendar date"),
            ("DEADC", 0.792, "deadtime correction"),
            ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
            ("TIERRELA", 1.16e-05, "[d] relative time error"),
            ("INT_TIME", 1.98, "[s] photon accumulation time per frame"),
            ("READTIME", 0.02, "[s] readout time per frame"),
            ("FRAMETIM", 2.0, "[s] frame time (INT_TIME + READTIME)"),
            ("NUM_FRM", 900, "number of frames per time stamp"),
            ("TIMEDEL", CADENCE_DAYS, "[d] time resolution of data"),
            ("BACKAPP", True, "background is subtracted"),
            ("DEADAPP", True, "deadtime applied"),
            ("VIGNAPP", True, "vignetting or collimator correction applied"),
            ("GAINA", 5.22, "[electrons/count] CCD output A gain"),
            ("GAINB", 5.21, "[electrons/count] CCD output B gain"),
            ("GAINC", 5.21, "[electrons/count] CCD output C gain"),
            ("GAIND", 5.26, "[electrons/count] CCD output D gain"),
            ("READNOIA", 9.95, "[electrons] read noise CCD output A"),
            ("READNOIB", 7.57, "[electrons] read noise CCD output B"),
            ("READNOIC", 7.4, "[electrons] read noise CCD output C"),
            ("READNOID", 9.47, "[electrons] read noise CCD output D"),
            ("NREADOUT", 48, "number of read per cadence"),
            ("FXDOFF", 209715200, "compression fixed offset"),
            ("MEANBLCA", 6466, "[count] FSW mean black level CCD output A"),
            ("MEANBLCB", 6412, "[count] FSW mean black level CCD output B"),
            ("MEANBLCC", 6419, "[count] FSW mean black level CCD output C"),
            ("MEANBLCD", 6408, "[count] FSW mean black level CCD output D"),
            (f"TMOFST{camera}{ccd}", 2.0, "(s) readout delay for camera and ccd"),
            ("BARYCORR", 0.0043 + 1e-4 * np.sin(start), "[d] barycentric time correction"),
            ("DQUALITY", int(rng.integers(0, 2)) * 128, "data quality flags"),
            ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
            ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
            ("MJD-OBS", start + TJD_OFFSET - 2400000.5, "[d] MJD of observation matching DATE-OBS"),
            *(_wcs_cards(np.random.default_rng(sector * 100 + camera * 10 + ccd), camera, ccd, sector) if wcs else []),
        ]
    )
    if data is None and sparse:
        data = (_markers(shape, ffi_index + 1.0), _markers(shape, -(ffi_index + 1.0)))
    science, uncertainty = data if data is not None else _image(rng, shape)
    uncert_header = image.copy()
    uncert_header["EXTNAME"] = f"CAMERA.CCD {camera}.{ccd} uncert"
    uncert_header["IMAGTYPE"] = "uncert"
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(science, header=image),
            fits.ImageHDU(uncertainty, header=uncert_header),
        ]
    )
    return _write(hdus, path, sparse=sparse)


def _markers(shape: tuple[int, int], value: float) -> np.ndarray:
    """Zeros but for the first, middle and last row, which hold ``value`` (plus the column)."""
    image = np.zeros(shape, dtype=np.float32)
    for row in sorted({0, shape[0] // 2, shape[0] - 1}):
        image[row] = value + np.arange(shape[1], dtype=np.float32) / shape[1]
    return image


def tica_header_sample() -> fits.Header:
    """The primary header of a real TICA FFI (sector 27, camera 1, CCD 4), as shipped."""
    text = importlib.resources.files("fficube").joinpath("data/tica_header_sample.txt").read_text()
    return fits.Header.fromstring("".join(line.ljust(80)[:80] for line in text.splitlines()))


def write_tica_ffi(
    path: str | os.PathLike[str],
    *,
    start: float,
    cadence: int = 117591,
    camera: int = 1,
    ccd: int = 1,
    seed: int = 0,
    shape: tuple[int, int] = (64, 80),
    wcs: bool = True,
    data: np.ndarray | None = None,
    stars: int = 20,
) -> str:
    """Write a TICA FFI: the image and its header in HDU 0, reference stars in HDU 1.

    The header is a real TICA header with this FFI's times, cadence, camera and CCD
    (and without its WCS cards when ``wcs=False``).
    """
    rng = np.random.default_rng(seed)
    header = tica_header_sample()
    sample_start = header["STARTTJD"]
    span = header["ENDTJD"] - header["STARTTJD"]
    for key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"):
        del header[key]  # the HDU sets these from the data
    header["STARTTJD"] = start
    header["MIDTJD"] = start + span / 2
    header["ENDTJD"] = start + span
    header["TIME"] = header["TIME"] + round((start - sample_start) * 86400.0, 2)
    header["MJD-BEG"] = start + TJD_OFFSET - 2400000.5
    header["MJD-END"] = start + span + TJD_OFFSET - 2400000.5
    header["CADENCE"] = cadence
    header["CAMNUM"] = camera
    header["CCDNUM"] = ccd
    header["QUAL_BIT"] = int(rng.integers(0, 2)) * 32
    header["SC_ROLL"] = header["SC_ROLL"] + float(rng.normal(0.0, 1e-4))
    if not wcs:
        for key in [k for k in header if k.startswith(WCS_PREFIXES)]:
            del header[key]
    image = data if data is not None else _image(rng, shape)[0]
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="TIC", format="K", array=rng.integers(1, 10**9, stars)),
            fits.Column(name="FLUX", format="E", array=rng.uniform(1e3, 1e5, stars).astype(np.float32)),
            fits.Column(name="BKG", format="E", array=rng.uniform(100, 200, stars).astype(np.float32)),
            fits.Column(name="FLAG", format="I", array=np.zeros(stars, dtype=np.int16)),
        ]
    )
    return _write(fits.HDUList([fits.PrimaryHDU(image, header=header), table]), path)


@dataclass(frozen=True)
class SectorSpec:
    """A synthetic sector/camera/CCD: how many FFIs, what they look like."""

    n_ffis: int = 12
    product: str = "spoc"
    sector: int = 1
    camera: int = 1
    ccd: int = 1
    shape: tuple[int, int] = (64, 80)
    no_wcs: Sequence[int] = (0, 5)  #: time indices of FFIs written without WCS
    first_start: float | None = None  #: TJD; default: sector 1 (SPOC) or 27 (TICA) start
    seed: int = 0
    shuffle: bool = True
    sparse: bool = False  #: SPOC only: zero images with marker rows, written as sparse files
    #: point sources on the sky (:func:`star_field`, fixed for the sector/camera/CCD) moved
    #: by a small pointing jitter in each frame; 0: noise and bright squares
    stars: int = 0

    @property
    def cadence_days(self) -> float:
        """30-minute FFIs for SPOC (prime mission), 10-minute ones for TICA (sector 27 on)."""
        return CADENCE_DAYS if self.product == "spoc" else 10.0 / 1440.0

    @property
    def start(self) -> float:
        if self.first_start is not None:
            return self.first_start
        return 1325.3131 if self.product == "spoc" else 2036.2795


def make_sector(directory: str | os.PathLike[str], spec: SectorSpec = SectorSpec()) -> list[str]:
    """Write ``spec.n_ffis`` FFIs into ``directory``; return their paths (shuffled if asked).

    The FFIs listed in ``spec.no_wcs`` (by time index) have no WCS, so the first file
    in the returned order may not be the template, as in real deliveries.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    field = (star_field(spec.stars, spec.shape, (spec.seed, spec.sector, spec.camera, spec.ccd))
             if spec.stars and not spec.sparse else None)
    for i in range(spec.n_ffis):
        start = spec.start + i * spec.cadence_days
        seed = spec.seed * 100003 + i
        wcs = i not in spec.no_wcs
        sky = _image(np.random.default_rng((seed, 1)), spec.shape, field) if field is not None else None
        if spec.product == "tica":
            cadence = 117591 + i
            path = os.path.join(directory, tica_name(cadence, spec.sector, spec.camera, spec.ccd))
            write_tica_ffi(path, start=start, camera=spec.camera, ccd=spec.ccd,
                           shape=spec.shape, wcs=wcs, seed=seed, cadence=cadence,
                           data=None if sky is None else sky[0])
        else:
            path = os.path.join(directory, spoc_name(start, spec.sector, spec.camera, spec.ccd))
            write_spoc_ffi(path, start=start, sector=spec.sector, camera=spec.camera, ccd=spec.ccd,
                           shape=spec.shape, wcs=wcs, seed=seed, ffi_index=i, sparse=spec.sparse, data=sky)
        paths.append(path)
    if spec.shuffle:
        order = np.random.default_rng(spec.seed).permutation(len(paths))
        paths = [paths[i] for i in order]
    return paths
