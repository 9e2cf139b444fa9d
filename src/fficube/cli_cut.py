"""``fficube cut``: target pixel files from a cube, for one position or a CSV list.

Registered by :func:`fficube.cli_view.add_commands` like the other views.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Callable
from typing import Any, TextIO

from .errors import OptionError

__all__ = ["add_command", "cmd_cut", "read_targets"]


def add_command(sub: Any, remote_options: Callable[[argparse.ArgumentParser], None],
                formatter: type[argparse.HelpFormatter]) -> None:
    """Register ``cut`` on the main parser's subcommands."""
    cut = sub.add_parser(
        "cut", formatter_class=formatter, allow_abbrev=False,
        help="cut target pixel files (TPFs, as astrocut's cube_cut) for a position or a CSV list of them",
        description="TPFs with astrocut's structure and values, plus a WCS for each image column. Reads the "
        "headers, the table and, once, each cube row the cutouts span (one ranged read per run of columns).",
    )
    cut.add_argument("cube", help="a path or a URL (s3://...)")
    cut.add_argument("--ra", type=float, help="right ascension of the target, degrees (ICRS)")
    cut.add_argument("--dec", type=float, help="declination of the target, degrees (ICRS)")
    cut.add_argument("--targets", metavar="FILE.csv",
                     help="a CSV file with a header row naming columns ra, dec and optionally name: one TPF per row")
    cut.add_argument("--size", required=True,
                     help="pixels: N for N x N, or NxM (N columns, M rows, as astrocut's cutout_size)")
    cut.add_argument("-o", "--output", metavar="TPF.fits", help="the TPF of the --ra/--dec target")
    cut.add_argument("--out-dir", metavar="DIR",
                     help="folder for the TPFs (named NAME.fits from the CSV's name, else as astrocut names them); "
                          "default: the current folder")
    cut.add_argument("--max-memory", default="1GB", help="memory for rows read and TPFs being built")
    cut.add_argument("--concurrency", type=int, default=None,
                     help="requests in flight at most (default: 4 for a local cube, 32 for a remote one)")
    cut.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    remote_options(cut)


def read_targets(path: str) -> list[Any]:
    """The targets of a CSV file with ``ra``, ``dec`` and optionally ``name`` columns.

    Raises
    ------
    OptionError
        If the file lacks those columns or a row's position is not a number.
    """
    from .views.cut import Target

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        if "ra" not in fields or "dec" not in fields:
            raise OptionError("targets", f"{path}: the header row must name the columns ra and dec "
                                         f"(and optionally name); it has {', '.join(fields) or 'none'}")
        targets = []
        for line, row in enumerate(reader, start=2):
            try:
                ra, dec = float(row[fields["ra"]]), float(row[fields["dec"]])
            except (TypeError, ValueError):
                raise OptionError("targets", f"{path}, line {line}: ra and dec must be numbers (degrees), "
                                             f"not {row[fields['ra']]!r}, {row[fields['dec']]!r}") from None
            if not (math.isfinite(ra) and math.isfinite(dec)):
                raise OptionError("targets", f"{path}, line {line}: ra and dec must be finite")
            name = (row.get(fields["name"]) or "").strip() if "name" in fields else ""
            targets.append(Target(ra, dec, name or None))
    if not targets:
        raise OptionError("targets", f"{path}: no targets (only a header row)")
    return targets


class _Progress:
    """``cut 12/60`` on one line of stderr, rewritten as TPFs are done."""

    def __init__(self, err: TextIO, quiet: bool) -> None:
        self.err, self.quiet, self.shown = err, quiet, False

    def __call__(self, done: int, total: int) -> None:
        if not self.quiet:
            self.err.write(f"\rcut {done}/{total} TPFs")
            self.err.flush()
            self.shown = True

    def end(self) -> None:
        if self.shown:
            self.err.write("\n")


def cmd_cut(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import sync
    from .views.cut import Target

    if args.targets is not None:
        if args.ra is not None or args.dec is not None or args.output:
            raise OptionError("targets", "give --targets FILE.csv (with --out-dir) or --ra/--dec (with -o), not both")
        targets = read_targets(args.targets)
        out_dir, file_names = args.out_dir or ".", None
    elif args.ra is None or args.dec is None:
        raise OptionError("ra", "give a target: --ra DEG --dec DEG, or --targets FILE.csv")
    else:
        targets = [Target(args.ra, args.dec)]
        if args.output and args.out_dir:
            raise OptionError("output", "give -o TPF.fits or --out-dir DIR, not both")
        out_dir = os.path.dirname(args.output) or "." if args.output else args.out_dir or "."
        file_names = [os.path.basename(args.output)] if args.output else None
    progress = _Progress(err, args.quiet)
    try:
        report = sync.cut_targets(
            args.cube, targets, args.size, out_dir=out_dir, file_names=file_names, max_memory=args.max_memory,
            anon=True if args.anon else None, storage_options=dict(args.storage_option),
            concurrency=args.concurrency, progress=progress,
        )
    finally:
        progress.end()
    for path in report.paths if len(targets) == 1 else ():
        out.write(f"wrote {args.output or path}\n")  # the file as the user named it
    if not args.quiet:
        out.write(f"cut {report.summary()}\n")
    for target, reason in report.failed:
        err.write(f"fficube: error: {target.label} is outside the cube's footprint: {reason}\n")
    return 1 if report.failed else 0
