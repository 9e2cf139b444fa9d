"""The TICA inputs behind the golden cubes: regenerated bit for bit by the tests."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from fficube.synthetic import CHECKSUM_STAMP, SectorSpec, make_sector

CASES: dict[str, SectorSpec] = {
    # Shuffled, two FFIs without WCS, 23 rows (prime: blocks divide unevenly).
    "shuffled": SectorSpec(n_ffis=7, product="tica", sector=27, shape=(23, 30), no_wcs=(0, 3), seed=11),
    # In time order, another camera/CCD, every FFI with WCS.
    "ordered": SectorSpec(n_ffis=5, product="tica", sector=27, camera=2, ccd=3, shape=(20, 26), no_wcs=(),
                          seed=12, shuffle=False),
    # Several COMMENT and HISTORY cards in every FFI: a cutout copies the joined text into
    # a TPF header card, which must take it.
    "commentary": SectorSpec(n_ffis=4, product="tica", sector=27, camera=3, ccd=1, shape=(18, 24), no_wcs=(),
                             seed=13, shuffle=False),
}
SECTORS = {"shuffled": None, "ordered": 27, "commentary": 27}  # sector passed to make_cube


def case_inputs(name: str, directory: Path) -> list[str]:
    """Write the case's FFIs into ``directory``; the input order for make_cube."""
    paths = make_sector(directory / name, CASES[name])
    if name == "commentary":
        for i, path in enumerate(sorted(paths)):
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
                header = hdus[0].header
                header.add_comment(f"second comment of FFI {i}: calibration notes wrapped over cards")
                header.add_comment("third comment")
                header.add_history(f"history line one of FFI {i}")
                header.add_history("history line two")
                # The checksums' time stamp is fixed: the golden cube's bytes must not depend on the day.
                for hdu in hdus:
                    hdu.add_checksum(when=f"HDU checksum updated {CHECKSUM_STAMP}", override_datasum=True)
                hdus.writeto(path, overwrite=True, checksum=False)
    if name == "shuffled":
        # First in input order: a later FFI with WCS (TICA's template is the first input;
        # the earliest FFI, without WCS, comes second).
        first, earliest = sorted(paths)[2], min(paths)
        paths = [first, earliest, *(p for p in paths if p not in (first, earliest))]
    return paths
