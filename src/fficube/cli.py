"""The ``fficube`` command: build, update, sector, inspect, verify, demo.

The CLI is the one place that prints and configures logging.  Errors print one line
(``fficube: error: ...``) and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import select
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ._version import __version__
from .access import describe_cube
from .build import build_cube, update_cube
from .cli_view import COMMANDS as VIEW_COMMANDS
from .cli_view import add_commands as add_view_commands
from .cli_view import add_inspect_plot, plot_after_inspect
from .cubeinfo import CubeDescription
from .errors import FficubeError, FficubeWarning, OptionError
from .layout import cube_data_bytes
from .pixelstats import FFI_CHOICES, cube_stats
from .products import CHOICES, PRODUCTS
from .quality import Quality
from .redact import redact
from .report import write_report
from .results import BuildResult, Progress
from .sectors.sector import (
    ARRAY_INDEX,
    CAMERAS,
    CCDS,
    DONE,
    SLURM_ARRAY_INDEX,
    CubeJob,
    CubeOutcome,
    array_index,
    array_target,
    build_sector,
    sector_jobs,
)
from .sectors.shard import build_shard, finish_cube, parse_shard
from .sinks import kept_after_interruption
from .sources.policy import ACCESS_DENIED, ANONYMOUS_DENIED, DEFAULT_LOCAL_CONCURRENCY, DEFAULT_REMOTE_CONCURRENCY
from .units import format_bytes
from .verify import verify_cube

if TYPE_CHECKING:
    from .synthetic import SectorSpec

__all__ = ["main", "ProgressBar"]

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away, as `cat | head` ends


class Terminated(Exception):
    """The process got SIGTERM; the build was cancelled cleanly."""


async def _cancel_on_sigterm(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM (AWS Batch, spot reclaims, ``kill``) cancels it like Ctrl-C,
    so that its cleanup runs (partial file removed, upload aborted)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    got: list[bool] = []

    def terminate() -> None:
        got.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if got:
            raise Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion; SIGTERM and Ctrl-C cancel it cleanly."""
    return asyncio.run(_cancel_on_sigterm(coro))


class ProgressBar:
    """Draws build progress on a terminal (redrawn in place) or as occasional lines."""

    WIDTH = 28

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_draw = 0.0
        self._last_fraction = -1.0
        self._stage = ""

    def __call__(self, p: Progress) -> None:
        if p.stage != self._stage:
            self._stage, self._last_fraction = p.stage, -1.0
        fraction = p.done / p.total if p.total else 1.0
        now = time.monotonic()
        final = p.done == p.total
        if self.tty:
            if not final and now - self._last_draw < 0.1:
                return
        elif not final and fraction - self._last_fraction < 0.1:
            return  # a log file gets about ten lines per stage
        self._last_draw, self._last_fraction = now, fraction
        filled = int(self.WIDTH * fraction)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        if p.stage == "scan":
            text = f"scan  [{bar}] {p.done}/{p.total} files"
        elif p.stage == "stage":
            rate = p.bytes_read / p.elapsed if p.elapsed > 0 else 0.0
            text = (f"stage [{bar}] {p.done}/{p.total} files  {format_bytes(p.bytes_read)} fetched of "
                    f"{format_bytes(p.total_bytes)}  {format_bytes(rate)}/s")
        else:
            rate = p.bytes_read / p.elapsed if p.elapsed > 0 else 0.0
            eta = ""
            if 0 < p.bytes_written < p.total_bytes:
                left = p.elapsed * (p.total_bytes - p.bytes_written) / p.bytes_written
                eta = f"  ETA {int(left) // 60}:{int(left) % 60:02d}"
            text = (
                f"build [{bar}] {p.done}/{p.total} blocks  {format_bytes(p.bytes_written)}"
                f"/{format_bytes(p.total_bytes)}  {format_bytes(rate)}/s{eta}"
            )
        if self.tty:
            self.stream.write("\r" + text.ljust(100)[:100] + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _storage_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it is (true, 3, {...}), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        # The text is not echoed: it may be a secret given without its key.
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


class _StorageOptions(argparse.Action):
    """``--storage-option KEY=VALUE``, repeatable, gathered into one dict of fsspec options."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        key, value = values
        options = dict(getattr(namespace, self.dest) or {})  # a copy: the default is shared
        if key == "region_name":  # botocore takes the region through client_kwargs
            options["client_kwargs"] = {**dict(options.get("client_kwargs") or {}), "region_name": value}
        else:
            options[key] = value
        setattr(namespace, self.dest, options)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default (but not for flags and options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], {}, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return text + " (default: %(default)s)"


def _remote_options(parser: argparse.ArgumentParser, *, anon: str = "read S3 inputs anonymously (public buckets)",
                    ) -> None:
    parser.add_argument("--anon", action="store_true", help=anon)
    parser.add_argument(
        "--storage-option", action=_StorageOptions, default={}, metavar="KEY=VALUE", type=_storage_option,
        help="fsspec option, repeatable: endpoint_url=..., requester_pays=true, profile=..., region_name=...",
    )


def _build_options(parser: argparse.ArgumentParser, what: str, *, sector: str, overwrite: str) -> None:
    """The options builds and updates share (with their own words for ``--sector`` and ``--overwrite``)."""
    parser.add_argument("--sector", type=int, help=sector)
    parser.add_argument("--overwrite", action="store_true", help=overwrite)
    parser.add_argument("--max-memory", default="4GB", help="memory budget, e.g. 4GB, 512MB, 2GiB")
    parser.add_argument(
        "--concurrency", type=int, default=None,
        help=f"requests in flight at most (default: {DEFAULT_LOCAL_CONCURRENCY} for local files, "
             f"{DEFAULT_REMOTE_CONCURRENCY} for remote ones)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help=f"continue an interrupted {what} of this output where it stopped (if there is one)")
    group.add_argument("--restart", action="store_true",
                       help=f"discard an interrupted {what} of this output and start over")
    parser.add_argument("--report", metavar="FILE.json",
                        help="write the quality gate's verdicts (per FFI: file, time, flags, median, NaN "
                             "fraction) to this JSON file (docs/quality.md)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary, no warnings")
    _stats_options(parser, "also write per-pixel statistics over time (MEDIAN, SIGMA, NGOOD, MASK images) to "
                           "this FITS file, made while each block is in memory")


def _stats_options(parser: argparse.ArgumentParser, text: str, *, required: bool = False) -> None:
    if required:
        parser.add_argument("-o", "--output", required=True, metavar="STATS.fits", help=text)
    else:
        parser.add_argument("--pixel-stats", metavar="STATS.fits", help=text)
    parser.add_argument("--stats-ffis", choices=FFI_CHOICES, default="good",
                        help="FFIs the statistics use: good (quality flags 0, no all-zero or constant frame rows) "
                             "or all")


def _stage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", metavar="DIR",
                        help="copy the remote FFIs whole into DIR (local disk, e.g. NVMe) first, in a few large GETs "
                             "each, then build from the copies; they are removed after a successful build")
    parser.add_argument("--keep-stage", action="store_true", help="keep the copies in --stage DIR after the build")


def _parser() -> argparse.ArgumentParser:
    # No abbreviated long options (argparse takes --overwrit for --overwrite): a typo must
    # not replace a cube.
    parser = argparse.ArgumentParser(prog="fficube", description="Build TESS FFI cubes.",
                                     formatter_class=_HelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"fficube {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs (credentials masked)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, **kwargs: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=kwargs.pop("description", text),
                              formatter_class=_HelpFormatter, allow_abbrev=False)

    build = command("build", "build a cube from FFIs")
    build.add_argument("inputs", nargs="+", help="FFI files, directories (searched recursively), globs, "
                                                 "or s3://, https://... URLs and prefixes")
    build.add_argument("-o", "--output", required=True, help="the cube to write: a path or an s3:// URL")
    build.add_argument("--product", choices=CHOICES, default="auto",
                       help="the FFIs' product; auto tells SPOC from TICA by each file's headers")
    _remote_options(build)
    _build_options(build, "build", sector="sector number for the SECTOR keyword (default: undefined)",
                   overwrite="replace an existing output")
    _stage_options(build)

    update = command("update", "add new FFIs to a cube (streaming; replaced when complete)")
    update.add_argument("cube", help="the cube: a path or an s3:// URL")
    update.add_argument("inputs", nargs="+", help="new FFIs: files, directories, globs or URLs")
    update.add_argument("-o", "--output", help="write the updated cube here instead of replacing CUBE")
    _remote_options(update)
    _build_options(update, "update", sector="refuse FFIs unless the cube is of this sector",
                   overwrite="replace an existing --output")

    inspect = command("inspect", "describe a cube (reads only its headers and table)")
    inspect.add_argument("cube", help="a path or a URL (s3://...)")
    _remote_options(inspect, anon="read S3 anonymously")
    add_inspect_plot(inspect)

    sector = command(
        "sector", "build the cubes of a sector from the archive's layout (AWS Batch array jobs too)",
        description="Builds tess-sSSSS-C-D-cube.fits for each camera/CCD from SOURCE/sSSSS/*/*/C-D/*ffic.fits "
        f"into DEST, skipping cubes already there and resuming interrupted ones. With ${ARRAY_INDEX} "
        f"(AWS Batch) or ${SLURM_ARRAY_INDEX} (SLURM) set to i, builds only camera i // 4 + 1, CCD i % 4 + 1 "
        "(AWS Batch's wins if both are set).",
    )
    sector.add_argument("sector", type=int, help="the sector number, e.g. 1")
    sector.add_argument("--source", required=True, help="FFI archive root, e.g. s3://stpubdata/tess/public/ffi")
    sector.add_argument("--dest", required=True, help="where the cubes go: a directory or an s3:// prefix")
    sector.add_argument("--camera", type=int, action="append", choices=CAMERAS,
                        help="a camera to build, repeatable (default: all)")
    sector.add_argument("--ccd", type=int, action="append", choices=CCDS,
                        help="a CCD to build, repeatable (default: all)")
    sector.add_argument("--max-memory", default="4GB", help="memory budget for all cubes together")
    sector.add_argument("--parallel", type=int, default=1, help="cubes built at once, sharing --max-memory")
    sector.add_argument(
        "--concurrency", type=int, default=None,
        help=f"requests in flight per cube (default: {DEFAULT_LOCAL_CONCURRENCY} for local files, "
             f"{DEFAULT_REMOTE_CONCURRENCY} for remote ones)",
    )
    _remote_options(sector)
    mode = sector.add_mutually_exclusive_group()
    mode.add_argument("--shard", metavar="K/N",
                      help="build only the K-th of N windows of one cube, into s3:// or a shared filesystem "
                           "(K may be 'index': the array index + 1); one worker completes the cube once all are done")
    mode.add_argument("--finish", action="store_true", help="complete a sharded cube whose shards are all done")
    again = sector.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue interrupted builds where they stopped (what sector always does)")
    again.add_argument("--restart", action="store_true", help="discard interrupted builds and start them over")
    _stage_options(sector)
    sector.add_argument("-q", "--quiet", action="store_true", help="no per-cube lines, no summary table")

    verify = command("verify", "check a cube: structure, size, time order, checksums (exit 1 if unsound)")
    verify.add_argument("cube", help="a path or a URL (s3://...)")
    verify.add_argument("--quality", action="store_true",
                        help="also run the quality gate on the cube (reads a sample of at most 64 rows): all-zero, "
                             "NaN and constant frames, no WCS, gaps, repeated cadences; flags do not change the "
                             "exit status")
    verify.add_argument("--report", metavar="FILE.json",
                        help="write the quality gate's verdicts to this JSON file (implies --quality)")
    _remote_options(verify, anon="read S3 anonymously")

    stats = command(
        "stats", "per-pixel statistics over time of an existing cube (bounded memory, one pass by row blocks)",
        description="Writes STATS.fits: MEDIAN (nanmedian over time of the science layer), SIGMA (1.4826 x the "
        "median absolute deviation), NGOOD (finite samples) and MASK (bits: 1 no data, 2 constant, 4 sparse) "
        "images with the cube's WCS, and an FFIS table saying which FFIs were used. Any astrocut-format cube.",
    )
    stats.add_argument("cube", help="a path or a URL (s3://...)")
    _stats_options(stats, "the statistics file to write (a path or a URL)", required=True)
    stats.add_argument("--max-memory", default="1GB", help="memory budget: the images and two blocks of rows")
    stats.add_argument("-q", "--quiet", action="store_true", help="no summary")
    _remote_options(stats, anon="read S3 anonymously")

    demo = command("demo", "make a small synthetic sector, build its cube, inspect it")
    demo.add_argument("directory", nargs="?", default="fficube-demo", help="where the FFIs and the cube go")
    demo.add_argument("--product", choices=list(PRODUCTS), default="spoc", help="the product of the synthetic FFIs")
    demo.add_argument("--n-ffis", type=_positive, default=24, help="how many FFIs to make (1 or more)")
    demo.add_argument("--max-memory", default=None,
                      help="memory budget (default: half the cube, at least 1.5MB, so that it streams in blocks)")
    add_view_commands(sub, _remote_options, _HelpFormatter)
    return parser


def _print_table(rows: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label.ljust(width)}  {value}\n")


async def _build(args: argparse.Namespace, out: TextIO, err: TextIO) -> BuildResult:
    return await build_cube(
        args.inputs, args.output, product=args.product, sector=args.sector,
        max_memory=args.max_memory, concurrency=args.concurrency, overwrite=args.overwrite,
        progress=None if args.quiet else ProgressBar(err),
        anon=True if getattr(args, "anon", False) else None,
        storage_options=getattr(args, "storage_option", {}),
        resume=getattr(args, "resume", False), restart=getattr(args, "restart", False),
        stage=getattr(args, "stage", None), keep_stage=getattr(args, "keep_stage", False),
        pixel_stats=getattr(args, "pixel_stats", None), stats_ffis=getattr(args, "stats_ffis", "good"),
    )


def _quality_line(quality: Quality | None, cube: str, report: str | None, *, quiet: bool, out: TextIO,
                  missing: str) -> None:
    """The quality gate's line (and its report, if asked for)."""
    if quality is None:
        if not quiet:
            out.write(f"quality: {missing}\n")
        return
    if report:
        write_report(report, quality.report(cube=cube))
    if not quiet:
        out.write(quality.summary() + (f"; report in {report}" if report else "") + "\n")


def _cmd_build(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = _run(_build(args, out, err))
    if not args.quiet:
        out.write(f"{'' if result.already_complete else 'wrote '}{result.summary()}\n")
    if result.already_complete:
        if getattr(args, "report", None) and not args.quiet:
            out.write(f"quality: nothing was built; fficube verify --quality --report {args.report} "
                      "judges the cube\n")
        return 0
    _quality_line(result.quality, result.output, getattr(args, "report", None), quiet=args.quiet, out=out,
                  missing="not assessed")
    return 0


def _cmd_update(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = _run(update_cube(
        args.cube, args.inputs, output=args.output, sector=args.sector, max_memory=args.max_memory,
        concurrency=args.concurrency, overwrite=args.overwrite, progress=None if args.quiet else ProgressBar(err),
        anon=True if args.anon else None, storage_options=args.storage_option,
        resume=args.resume, restart=args.restart, pixel_stats=args.pixel_stats, stats_ffis=args.stats_ffis,
    ))
    if not args.quiet:
        out.write(f"updated {result.summary()}\n")
    _quality_line(result.quality, result.output, args.report, quiet=args.quiet, out=out, missing="not assessed")
    return 0


def _describe(path: str, anon: bool = False, options: dict[str, object] | None = None) -> CubeDescription:
    return _run(describe_cube(path, anon=True if anon else None, storage_options=options))


def _cmd_inspect(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _print_table(_describe(args.cube, args.anon, args.storage_option).rows(), out)
    plot_after_inspect(args, out)
    return 0


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    quality = bool(args.quality or args.report)
    result = _run(verify_cube(
        args.cube, anon=True if args.anon else None, storage_options=args.storage_option, quality=quality,
    ))
    width = max(len(c.name) for c in result.checks)
    for check in result.checks:
        out.write(f"  {check.status:<4}  {check.name.ljust(width)}  {check.detail}\n")
    verdict = "sound" if result.ok else "NOT sound"
    out.write(f"{result.path}: {verdict} ({format_bytes(result.bytes_read)} read)\n")
    if quality:
        _quality_line(result.quality, result.path, args.report, quiet=False, out=out,
                      missing="not assessed: the cube's structure or size is wrong")
    return 0 if result.ok else EXIT_ERROR


def _cmd_stats(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = _run(cube_stats(args.cube, args.output, stats_ffis=args.stats_ffis, max_memory=args.max_memory,
                             anon=True if args.anon else None, storage_options=args.storage_option))
    if not args.quiet:
        out.write(f"wrote {result.summary()}\n")
    return 0


def _sector_jobs(args: argparse.Namespace, err: TextIO | None = None) -> list[CubeJob]:
    """The cubes a sector command builds: one, picked by an array job's index, or those asked for."""
    cameras, ccds = args.camera or list(CAMERAS), args.ccd or list(CCDS)
    found = array_index()
    if found is not None and not (args.shard or "").startswith("index/"):
        name, index = found
        camera, ccd = array_target(index, name)
        if err is not None:
            err.write(f"fficube: {name}={index}: camera {camera}, CCD {ccd}\n")
        cameras, ccds = [camera], [ccd]
    return sector_jobs(args.sector, args.source, args.dest, cameras, ccds)


def _cmd_sector(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    jobs = _sector_jobs(args, err)
    anon = True if args.anon else None
    options = args.storage_option
    if args.shard or args.finish:
        if len(jobs) != 1:
            raise ValueError("--shard and --finish work on one cube: give one --camera and one --ccd")
        if args.stage or args.restart:
            raise ValueError("--shard and --finish go without --stage (a shard reads only its own rows) and "
                             "without --restart (a shard always continues; delete DEST/CUBE.shards to start over)")
        job = jobs[0]
        if args.finish:
            finish = _run(finish_cube(job.output, anon=anon, storage_options=options))
            out.write(f"{job.output}: {finish.summary()}\n")
            return 0 if finish.complete else EXIT_ERROR
        found = array_index()
        shard, shards = parse_shard(args.shard, found[1] if found else None)
        result = _run(build_shard(
            job.inputs, job.output, shard, shards, product="spoc", sector=job.sector, max_memory=args.max_memory,
            concurrency=args.concurrency, anon=anon, storage_options=options,
        ))
        if not args.quiet:
            out.write(result.summary() + "\n")
        return 0

    def done(outcome: CubeOutcome) -> None:
        if not args.quiet:
            err.write(f"fficube: {outcome.job.camera}-{outcome.job.ccd}: {outcome.status}"
                      f"{': ' + in_cli_words(outcome.error, outcome.options) if outcome.status == 'failed' else ''}\n")

    outcomes = _run(build_sector(
        jobs, max_memory=args.max_memory, parallel=args.parallel, concurrency=args.concurrency, anon=anon,
        storage_options=options, on_done=done, restart=args.restart, stage=args.stage, keep_stage=args.keep_stage,
    ))
    header = ("cube", "status", "FFIs", "size", "seconds", "requests", "output / reason")
    rows = [header, *(o.row() for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row, options in zip(rows, [(), *(o.options for o in outcomes)], strict=True):
        out.write(in_cli_words("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                               + "  " + row[-1], options) + "\n")
    failed = sum(o.status == "failed" for o in outcomes)
    empty = sum(o.status == "no FFIs" for o in outcomes)
    complete = sum(o.status in DONE for o in outcomes)
    out.write(f"sector {args.sector}: {complete} of {len(outcomes) - empty} cube(s) done"
              + (f", {failed} failed (run again to retry)" if failed else "")
              + (f"; {empty} camera/CCD(s) without FFIs in the archive" if empty else "") + "\n")
    return EXIT_ERROR if failed else 0


def _positive(text: str) -> int:
    """A whole number of 1 or more, for ``--n-ffis``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


#: The demo's frames: small enough to build in a moment, large enough to show a sky.
DEMO_SHAPE = (96, 120)
#: Stars on the demo's sky (a Gaussian PSF, a little pointing jitter from frame to frame).
DEMO_STARS = 40


def demo_budget(n_ffis: int, layers: int) -> int:
    """The demo's default memory budget: half its cube (at least 1.5 MB), so that the build
    streams in several blocks whatever the number of FFIs."""
    rows, cols = DEMO_SHAPE
    return max(1_500_000, cube_data_bytes((rows, cols, n_ffis, layers)) // 2)


def demo_spec(product: str = "spoc", n_ffis: int = 24) -> SectorSpec:
    """The synthetic sector ``fficube demo`` builds (``docs/make_figures.py`` builds it too)."""
    from .synthetic import SectorSpec

    # Two FFIs without WCS show the quality gate's no_wcs flag, as long as one keeps a
    # WCS for the cube's template.
    no_wcs = tuple(i for i in (0, 3) if i < n_ffis - 1)
    return SectorSpec(n_ffis=n_ffis, product=product, shape=DEMO_SHAPE, sector=1 if product == "spoc" else 27,
                      no_wcs=no_wcs, stars=DEMO_STARS)


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .synthetic import make_sector

    spec = demo_spec(args.product, args.n_ffis)
    no_wcs = spec.no_wcs
    ffi_dir = os.path.join(args.directory, "ffis")
    out.write(f"writing {spec.n_ffis} synthetic {args.product.upper()} FFIs "
              f"({spec.shape[0]}x{spec.shape[1]}, shuffled, {len(no_wcs)} without WCS) to {ffi_dir}\n")
    paths = make_sector(ffi_dir, spec)
    cube = os.path.join(args.directory, f"tess-s{spec.sector:04d}-{spec.camera}-{spec.ccd}-cube.fits")
    budget = args.max_memory or f"{demo_budget(spec.n_ffis, PRODUCTS[args.product].layers) / 1e6:.1f}MB"
    build_args = argparse.Namespace(
        inputs=paths, output=cube, product=args.product, sector=spec.sector, max_memory=budget,
        concurrency=None, overwrite=True, quiet=False,
    )
    out.write(f"building {cube} with --max-memory {budget}\n")
    _cmd_build(build_args, out, err)
    out.write(f"fficube inspect {cube}\n")
    _print_table(_describe(cube).rows(), out)
    return 0


def _left_behind(args: argparse.Namespace) -> str:
    """What an interrupted command left, for its last line: what is on disk now."""
    if args.command == "sector":
        return _sector_left_behind(args)
    output = getattr(args, "output", None) or getattr(args, "cube", None)
    if not output:
        return "nothing was written"
    kept = kept_after_interruption(output)
    if kept is None:
        return "see above for what was kept"
    if kept:
        return "the work done is saved: run the same command with --resume to continue"
    return "no partial output was left"


def _sector_left_behind(args: argparse.Namespace) -> str:
    if args.shard or args.finish:
        return "a shard keeps its recorded work: run the same command again to continue"
    kept = {f"{j.camera}-{j.ccd}": kept_after_interruption(j.output) for j in _sector_jobs(args)}
    if None in kept.values():
        return "see above for what was kept; run the same command again to continue"
    saved = [cube for cube, answer in kept.items() if answer]
    if not saved:
        return "no partial cube was left"
    return (f"the work done on {len(saved)} cube(s) ({', '.join(saved)}) is saved: run the same command again "
            "to continue (sector resumes interrupted cubes; --resume may be given)")


#: Library keywords whose command-line option has another name (its argparse ``dest``).
_DESTS = {"storage_options": "storage_option"}
#: The library's advice that names options, as the command line gives it.
_ADVICE = {
    ACCESS_DENIED: (
        "access denied (HTTP 403): the server refused this request. For a public bucket read anonymously "
        "(--anon); otherwise check your credentials (environment, AWS profile, instance role); "
        "a requester-pays bucket needs --storage-option requester_pays=true"
    ),
    ANONYMOUS_DENIED: (
        "access denied (HTTP 403) to an anonymous request: this object is not public. Read it with "
        "credentials (without --anon); a requester-pays bucket also needs --storage-option requester_pays=true"
    ),
}


@functools.cache
def _flags() -> dict[str, str]:
    """Each command-line option's flag by its argparse ``dest`` (``max_memory`` -> ``--max-memory``)."""
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags: dict[str, str] = {}
    for parser in subparsers.choices.values():
        for action in parser._actions:
            if action.option_strings:
                names = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
                flags.setdefault(action.dest, names[0])
    return flags


def flag(option: str) -> str | None:
    """The command line's flag for the library's keyword ``option``; None if it has none
    (an option of the Python API only)."""
    return _flags().get(_DESTS.get(option, option))


def in_cli_words(text: str, options: Iterable[str] = ()) -> str:
    """A library message as the command line says it, secrets masked.

    ``options`` are the keywords the message names (an error's ``options``): each is
    shown as its flag (``overwrite=True`` -> ``--overwrite``, ``max_memory = 1 kB`` ->
    ``--max-memory 1 kB``), and the library's advice (:data:`_ADVICE`) in command-line words.
    """
    for option in options:
        name = flag(option)
        if name is not None:
            for said, told in ((f"{option}=True", name), (f"{option} = ", f"{name} "), (f"{option}=", f"{name} "),
                               (f"{option}: ", f"{name}: ")):
                text = text.replace(said, told)
    for said, told in _ADVICE.items():
        text = text.replace(said, told)
    return redact(text)


def error_text(exc: BaseException) -> str:
    """An error's message as the command line says it: an option error names the flag."""
    if isinstance(exc, OptionError):
        return redact(f"{flag(exc.option) or exc.option}: {exc.detail}")
    return in_cli_words(str(exc), getattr(exc, "options", ()))


class _Formatter(logging.Formatter):
    """Log lines (any logger's: fsspec's too) and their tracebacks, in command-line words, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return in_cli_words(super().format(record), getattr(record, "options", ()))


def _configure_output(err: TextIO, debug: bool, quiet: bool) -> None:
    """Where logs and warnings go: ``err``, one line each (the CLI is the one place that configures them)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "fficube_cli", False)]:
        root.removeHandler(handler)  # an earlier main() in this process (tests)
    handler = logging.StreamHandler(err)
    handler.fficube_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter("fficube: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    warnings.formatwarning = lambda message, category, *a, **k: (
        f"fficube: warning: {in_cli_words(str(message), getattr(message, 'options', ()))}\n")
    warnings.simplefilter("ignore" if quiet else "default", FficubeWarning)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported with its subcommand's usage."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parse(argv)
        _configure_output(err, args.debug, getattr(args, "quiet", False))
    except KeyboardInterrupt:
        err.write("\nfficube: interrupted while starting; nothing was written\n")
        return EXIT_INTERRUPTED
    command = {
        "build": _cmd_build, "update": _cmd_update, "inspect": _cmd_inspect, "verify": _cmd_verify,
        "sector": _cmd_sector, "demo": _cmd_demo, "stats": _cmd_stats, **VIEW_COMMANDS,
    }[args.command]
    try:
        return command(args, out, err)
    except KeyboardInterrupt:
        err.write(f"\nfficube: interrupted; {_left_behind(args)}\n")
        return EXIT_INTERRUPTED
    except Terminated:
        err.write(f"\nfficube: stopped by SIGTERM; {_left_behind(args)}\n")
        return EXIT_TERMINATED
    except BrokenPipeError as exc:
        if not _reader_gone(out):
            return _report(exc, args, err)
        return EXIT_BROKEN_PIPE
    except (FficubeError, OSError, ValueError) as exc:
        return _report(exc, args, err)


def _report(exc: BaseException, args: argparse.Namespace, err: TextIO) -> int:
    """Print an error for people (and with ``--debug`` its traceback, secrets masked)."""
    if args.debug:  # the traceback, but with no secret in it either
            err.write(in_cli_words("".join(traceback.format_exception(exc)), getattr(exc, "options", ())))
    err.write(f"fficube: error: {error_text(exc)}\n")
    return EXIT_ERROR


def _reader_gone(out: TextIO) -> bool:
    """Whether ``out`` is a pipe whose reader has gone (``fficube inspect ... | head``).

    A pipe without a reader reports an error condition to ``poll`` (a broken pipe
    raised by anything else, a socket say, leaves ``out`` healthy).  Then the output is
    pointed at /dev/null, so that Python's own flush at exit does not fail again, and
    the command ends quietly, as ``cat`` does.
    """
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a real file (a test's StringIO)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
