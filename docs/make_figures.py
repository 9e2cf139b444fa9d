"""Make the documentation's figure and example report from a real build of the demo.

    python docs/make_figures.py [OUT_DIR]

builds the sector ``fficube demo`` builds in a temporary folder, writes the quality
gate's report of that build (``quality-report.example.json``) and draws ``fficube
plot``'s figure of the cube with that report (``demo-cube.png``), into ``OUT_DIR``
(default: this folder, ``docs/``).  The figure's PNG metadata names the report's
SHA-256, so a test can tell that the committed figure shows the committed report.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import fficube
from fficube.cli import demo_spec
from fficube.report import write_report
from fficube.synthetic import make_sector

DOCS = Path(__file__).resolve().parent
REPORT = "quality-report.example.json"
FIGURE = "demo-cube.png"
CUBE = "tess-s0001-1-1-cube.fits"


def report_digest(path: Path) -> str:
    """The SHA-256 of a report file, as the figure's metadata names it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make(out_dir: Path = DOCS) -> tuple[Path, Path]:
    """Build the demo's cube, write its report and figure into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, figure = out_dir / REPORT, out_dir / FIGURE
    with tempfile.TemporaryDirectory() as work:
        paths = make_sector(Path(work) / "ffis", demo_spec())
        cube = Path(work) / CUBE
        result = fficube.make_cube(paths, cube, sector=1)
        assert result.quality is not None
        write_report(report, result.quality.report(cube=CUBE))
        drawn = fficube.plot_cube(cube, report=report)
        drawn.figure.savefig(figure, dpi=100, metadata={
            "Title": f"fficube plot {CUBE} --report {REPORT}",
            "Description": f"made by docs/make_figures.py; quality report sha256 {report_digest(report)}",
        })
    return report, figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DOCS)
    report, figure = make(parser.parse_args().out_dir)
    print(f"wrote {report} and {figure}")


if __name__ == "__main__":
    main()
