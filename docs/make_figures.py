"""Make the documentation's figure and example report from a real build of the demo.

    python docs/make_figures.py [OUT_DIR]

builds the sector ``fficube demo`` builds in a temporary folder, with its per-pixel
statistics, writes the quality gate's report of that build
(``quality-report.example.json``), draws ``fficube plot``'s figure of the cube with that
report (``demo-cube.png``) and the same with the statistics (``pixel-stats.png``), into
``OUT_DIR`` (default: this folder, ``docs/``).  The figures' PNG metadata name the
report's SHA-256 and the MEDIAN image's, so a test can tell that the committed figures
show what the code makes.
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
STATS_FIGURE = "pixel-stats.png"
CUBE = "tess-s0001-1-1-cube.fits"


def report_digest(path: Path) -> str:
    """The SHA-256 of a report file, as the figure's metadata names it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def median_digest(stats: Path) -> str:
    """The SHA-256 of a statistics file's MEDIAN image (its bytes as stored)."""
    from astropy.io import fits

    with fits.open(stats) as hdus:
        return hashlib.sha256(hdus["MEDIAN"].data.tobytes()).hexdigest()


def make(out_dir: Path = DOCS) -> tuple[Path, Path, Path]:
    """Build the demo's cube, write its report and figures into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, figure, stats_figure = out_dir / REPORT, out_dir / FIGURE, out_dir / STATS_FIGURE
    with tempfile.TemporaryDirectory() as work:
        paths = make_sector(Path(work) / "ffis", demo_spec())
        cube, stats = Path(work) / CUBE, Path(work) / "stats.fits"
        result = fficube.make_cube(paths, cube, sector=1, pixel_stats=stats)
        assert result.quality is not None
        write_report(report, result.quality.report(cube=CUBE))
        drawn = fficube.plot_cube(cube, report=report)
        drawn.figure.savefig(figure, dpi=100, metadata={
            "Title": f"fficube plot {CUBE} --report {REPORT}",
            "Description": f"made by docs/make_figures.py; quality report sha256 {report_digest(report)}",
        })
        drawn = fficube.plot_cube(cube, report=report, stats=stats)
        drawn.figure.savefig(stats_figure, dpi=80, metadata={
            "Title": f"fficube plot {CUBE} --report {REPORT} --stats stats.fits",
            "Description": f"made by docs/make_figures.py; MEDIAN sha256 {median_digest(stats)}",
        })
    return report, figure, stats_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DOCS)
    report, figure, stats_figure = make(parser.parse_args().out_dir)
    print(f"wrote {report}, {figure} and {stats_figure}")


if __name__ == "__main__":
    main()
