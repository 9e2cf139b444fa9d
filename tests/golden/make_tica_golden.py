"""Regenerate the golden TICA cubes with astrocut 1.2.x, and check its cutouts of ours.

astrocut removed ``TicaCubeFactory`` after 1.2, and 1.2 cannot share an environment
with current astrocut, so this script makes a throwaway virtual environment with
astrocut 1.2.x, and there:

1. builds each case of ``tests/tica_cases.py`` with ``TicaCubeFactory``;
2. with ``--write``, stores those cubes as ``tests/golden/tica/<case>.fits``;
3. builds the same inputs with fficube (this environment), cuts a TPF from both cubes
   with astrocut 1.2.x's ``cube_cut(product="TICA")`` and compares them.

    python tests/golden/make_tica_golden.py --write      # regenerate the golden files
    python tests/golden/make_tica_golden.py              # only check (the test runs this)

Exit status 0 when every cutout from our cube equals the one from astrocut's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import fficube  # noqa: E402
from tica_cases import CASES, SECTORS, case_inputs  # noqa: E402

ASTROCUT = "astrocut>=1.2,<1.3"

BUILD_AND_CUT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astrocut import TicaCubeFactory, CutoutFactory
job = json.loads(sys.argv[1])
TicaCubeFactory().make_cube(job["paths"], job["reference"], sector=job["sector"], verbose=False)
with fits.open(job["wcs_from"]) as ffi:
    header = ffi[0].header
    target = WCS(header).pixel_to_world(header["NAXIS1"] / 2, header["NAXIS2"] / 2)
tpfs = {}
for name in ("reference", "ours"):
    tpfs[name] = CutoutFactory().cube_cut(job[name], target, 5, product="TICA",
                                          output_path=job["out"] + "/" + name, verbose=False)
report = {}
with fits.open(tpfs["ours"]) as a, fits.open(tpfs["reference"]) as b:
    for column in ("TIME", "FLUX", "FLUX_ERR", "QUALITY"):
        report[column] = bool(np.array_equal(a[1].data[column], b[1].data[column], equal_nan=True))
    report["aperture"] = bool(np.array_equal(a[2].data, b[2].data))
    report["rows"] = len(a[1].data)
    report["finite_flux"] = bool(np.isfinite(a[1].data["FLUX"]).all())
print(json.dumps(report))
"""


def astrocut12_python(venv_dir: Path) -> Path:
    """A Python with astrocut 1.2.x, made once in ``venv_dir``."""
    python = venv_dir / "bin" / "python"
    check = [str(python), "-c", "import astrocut, sys; sys.exit(not astrocut.__version__.startswith('1.2'))"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    shutil.rmtree(venv_dir, ignore_errors=True)
    venv.create(venv_dir, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", ASTROCUT], check=True)
    subprocess.run(check, check=True)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="store the reference cubes as golden files")
    parser.add_argument("--venv", type=Path, default=HERE.parent.parent / ".venv-astrocut12")
    args = parser.parse_args()

    python = astrocut12_python(args.venv)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="fficube-tica-golden-") as tmp:
        work = Path(tmp)
        for name in CASES:
            paths = case_inputs(name, work / "ffis")
            ours = work / f"{name}-ours.fits"
            fficube.make_cube(paths, ours, product="tica", sector=SECTORS[name], max_memory="1GB")
            job = {
                "paths": paths, "sector": SECTORS[name], "reference": str(work / f"{name}-astrocut.fits"),
                "ours": str(ours), "wcs_from": max(paths), "out": str(work / name),
            }
            done = subprocess.run([str(python), "-c", BUILD_AND_CUT, json.dumps(job)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 2
            report = json.loads(done.stdout.strip().splitlines()[-1])
            ok = all(v for k, v in report.items() if k != "rows") and report["rows"] == CASES[name].n_ffis
            failures += not ok
            print(f"{name}: cutout from fficube's cube {'equals' if ok else 'DIFFERS FROM'} astrocut 1.2's: {report}")
            if args.write:
                (HERE / "tica").mkdir(exist_ok=True)
                shutil.copy(job["reference"], HERE / "tica" / f"{name}.fits")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
