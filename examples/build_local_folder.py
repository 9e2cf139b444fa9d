"""Build a cube from a folder of SPOC (or TICA) FFIs on local disk.

    python examples/build_local_folder.py FFI_DIR tess-s0001-1-1-cube.fits --sector 1

With no arguments it makes a small synthetic sector first, so that it runs anywhere.
"""

import argparse
import logging
import shutil
import tempfile

import fficube


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ffi_dir", nargs="?")
    parser.add_argument("output", nargs="?", default="tess-s0001-1-1-cube.fits")
    parser.add_argument("--sector", type=int)
    parser.add_argument("--max-memory", default="2GB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # fficube logs the plan

    ffi_dir = args.ffi_dir
    made = None  # a synthetic sector made here, removed at the end
    if not ffi_dir:
        from fficube.synthetic import SectorSpec, make_sector

        ffi_dir = made = tempfile.mkdtemp(prefix="fficube-example-")
        make_sector(ffi_dir, SectorSpec(n_ffis=10, shape=(64, 80)))
        args.sector = 1

    def show(p: fficube.Progress) -> None:
        if p.stage == "write" and p.done:
            print(f"block {p.done}/{p.total}: {p.bytes_written / 1e6:.1f} of {p.total_bytes / 1e6:.1f} MB")

    try:
        result = fficube.make_cube(
            ffi_dir, args.output, sector=args.sector, max_memory=args.max_memory, overwrite=True, progress=show
        )
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print(result.summary())


if __name__ == "__main__":
    main()
