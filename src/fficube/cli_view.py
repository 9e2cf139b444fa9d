"""The viewing commands of the ``fficube`` command line: ``plot``, ``refs``, ``cut``
(:mod:`fficube.cli_cut`) and ``inspect --plot``.

Kept apart from :mod:`fficube.cli`, which only registers them (:func:`add_commands`)
and dispatches to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from .cli_cut import add_command as add_cut_command
from .cli_cut import cmd_cut
from .units import format_bytes, parse_size

__all__ = ["add_commands", "add_inspect_plot", "COMMANDS", "plot_after_inspect"]


def _plot_options(parser: argparse.ArgumentParser) -> None:
    from .views.overview import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS

    parser.add_argument("--frame", type=int, default=None,
                        help="FFI shown in the thumbnail, 0-based, in time order (default: the middle one)")
    parser.add_argument("--report", metavar="FILE.json",
                        help="a quality report whose per-FFI flags to show (see docs/quality.md)")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                        help="cube rows read at most, one request each")
    # Sizes are parsed by the command, as --max-memory is: a bad one is a one-line error.
    parser.add_argument("--max-bytes", default=f"{DEFAULT_MAX_BYTES // 10**6}MB",
                        help="bytes of rows read at most; at least one row is read")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of a PNG (100: 1500 x 900 pixels)")
    parser.add_argument("--stats", metavar="STATS.fits",
                        help="a per-pixel statistics file (fficube stats, --pixel-stats): draw its MEDIAN and MASK "
                             "below the overview")


def add_inspect_plot(inspect: argparse.ArgumentParser) -> None:
    """``fficube inspect CUBE --plot FILE``: the figure of ``fficube plot`` as well."""
    inspect.add_argument("--plot", metavar="FILE",
                         help="also draw the cube's overview figure into FILE (PNG, PDF, SVG)")
    _plot_options(inspect)


def add_commands(sub: Any, remote_options: Callable[[argparse.ArgumentParser], None],
                 formatter: type[argparse.HelpFormatter]) -> None:
    """Register ``plot``, ``refs`` and ``cut`` on the main parser's subcommands (``remote_options``
    adds ``--anon`` and ``--storage-option`` as the other commands have them)."""
    from .views.refs import DEFAULT_CHUNK_BYTES

    plot = sub.add_parser(
        "plot", formatter_class=formatter, allow_abbrev=False,
        help="draw a cube's overview: time coverage, quality, a thumbnail, levels (reads a sample)",
        description="One figure: start times against FFI number with gaps marked, DQUALITY bits, a quality "
        "report's flags, a thumbnail of one frame on WCS axes, and each FFI's median level. Reads the "
        "headers, the table and at most min(rows, --max-rows, --max-bytes / row size) cube rows, one request "
        "each, and prints the count.",
    )
    plot.add_argument("cube", help="a path or a URL (s3://...)")
    plot.add_argument("-o", "--output", required=True, help="the figure file (PNG, PDF, SVG...)")
    _plot_options(plot)
    remote_options(plot)

    refs = sub.add_parser(
        "refs", formatter_class=formatter, allow_abbrev=False,
        help="write a reference manifest: the cube as a Zarr group, readable in place by xarray",
        description="A JSON manifest in fsspec's reference format (version 1) whose chunks are byte ranges "
        "of the cube: open it with xarray and fsspec, no fficube needed.",
    )
    refs.add_argument("cube", help="a path or a URL (s3://...)")
    refs.add_argument("-o", "--output", required=True, help="the manifest (JSON): a path or a URL")
    refs.add_argument("--chunk-size", default=f"{DEFAULT_CHUNK_BYTES // 2**20}MiB",
                      help="largest chunk of the data")
    remote_options(refs)
    add_cut_command(sub, remote_options, formatter)


def _options(args: argparse.Namespace) -> tuple[bool | None, dict[str, object]]:
    return (True if args.anon else None), dict(args.storage_option)


def _draw(args: argparse.Namespace, output: str, out: TextIO) -> None:
    from .views.plot import plot_cube

    anon, options = _options(args)
    result = plot_cube(
        args.cube, output, frame=args.frame, report=args.report, anon=anon, storage_options=options,
        max_rows=args.max_rows, max_bytes=parse_size(args.max_bytes), dpi=args.dpi, stats=args.stats,
    )
    o = result.overview
    out.write(f"wrote {output}: frame {o.frame} of {o.n_ffis} ({o.files[o.frame]})\n")
    out.write(f"read {format_bytes(o.bytes_read)} in {o.requests} requests: {o.header_requests} for headers "
              f"and table, {len(o.sample_rows)} for rows (at most {o.row_request_bound}: "
              f"{o.bound_reason})\n")
    for note in o.notes:
        out.write(f"note: {note}\n")


def cmd_plot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _draw(args, args.output, out)
    return 0


def plot_after_inspect(args: argparse.Namespace, out: TextIO) -> None:
    """The ``--plot`` part of ``fficube inspect`` (nothing without ``--plot``)."""
    if getattr(args, "plot", None):
        _draw(args, args.plot, out)


def cmd_refs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .views.refs import make_refs

    anon, options = _options(args)
    refs = make_refs(args.cube, args.output, anon=anon, storage_options=options,
                     chunk_bytes=parse_size(args.chunk_size))
    shape = json_shape(refs)
    out.write(f"wrote {args.output}: {len(refs['refs'])} references; cube {shape[0]} rows x {shape[1]} "
              f"columns, chunks of 1 row x {shape[2]} columns x {shape[3]} FFIs x {shape[4]} layers\n")
    return 0


def json_shape(refs: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(rows, cols, columns per chunk, FFIs, layers) of a manifest's cube array."""
    import json

    meta = json.loads(refs["refs"]["cube/.zarray"])
    rows, cols, n, layers = meta["shape"]
    return rows, cols, meta["chunks"][1], n, layers


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = {
    "plot": cmd_plot, "refs": cmd_refs, "cut": cmd_cut,
}
