"""The ``fficube`` command: build, update, sector, inspect, verify, demo.

The CLI is the one place that prints and configures logging.  Errors print one line
(``fficube: error: ...``) and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TextIO

from ._version import __version__
from .build import DEFAULT_CONCURRENCY, BuildResult, Progress, build_cube, update_cube
from .cubeinfo import describe_cube
from .cli_view import COMMANDS as VIEW_COMMANDS, add_commands as add_view_commands, add_inspect_plot, plot_after_inspect
from .errors import FficubeError
from .journal import journal_path
from .remote import is_url
from .units import format_bytes
from .sector import ARRAY_INDEX, CAMERAS, CCDS, CubeOutcome, array_target, build_sector, sector_jobs
from .shard import build_shard, finish_cube, parse_shard
from .verify import verify_cube

__all__ = ["main", "ProgressBar"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it


class Terminated(Exception):
    """The process got SIGTERM; the build was cancelled cleanly."""


async def _cancel_on_sigterm(coro):  # type: ignore[no-untyped-def]
    """Run ``coro``; SIGTERM (AWS Batch, spot reclaims, ``kill``) cancels it like Ctrl-C,
    so that its cleanup runs (partial file removed, upload aborted)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    got = []

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


def _storage_options(pairs: list[tuple[str, object]]) -> dict[str, object]:
    options: dict[str, object] = {}
    for key, value in pairs:
        if key == "region_name":  # botocore takes the region through client_kwargs
            options.setdefault("client_kwargs", {})["region_name"] = value  # type: ignore[index]
        else:
            options[key] = value
    return options


def _resume_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted build of this output where it stopped (if there is one)")
    group.add_argument("--restart", action="store_true",
                       help="discard an interrupted build of this output and start over")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fficube", description="Build TESS FFI cubes.")
    parser.add_argument("--version", action="version", version=f"fficube {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build a cube from FFIs")
    build.add_argument("inputs", nargs="+", help="FFI files, directories, globs, or s3://, https://... URLs")
    build.add_argument("-o", "--output", required=True, help="the cube to write: a path or an s3:// URL")
    build.add_argument("--product", choices=["auto", "spoc", "tica"], default="auto")
    build.add_argument("--sector", type=int, help="sector number for the SECTOR keyword")
    build.add_argument("--max-memory", default="4GB", help="memory budget, e.g. 4GB, 512MB (default 4GB)")
    build.add_argument(
        "--concurrency", type=int, default=None,
        help=f"requests in flight at most (default {DEFAULT_CONCURRENCY} for local files, 32 for remote)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing output")
    build.add_argument("--anon", action="store_true", help="access S3 anonymously (public buckets)")
    build.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", type=_storage_option,
        help="fsspec option, repeatable: endpoint_url=..., requester_pays=true, profile=..., region_name=...",
    )
    _resume_options(build)
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")

    update = sub.add_parser("update", help="add new FFIs to a cube (streaming; replaced when complete)")
    update.add_argument("cube", help="the cube: a path or an s3:// URL")
    update.add_argument("inputs", nargs="+", help="new FFIs: files, directories, globs or URLs")
    update.add_argument("-o", "--output", help="write the updated cube here instead of replacing CUBE")
    update.add_argument("--sector", type=int, help="refuse FFIs unless the cube is of this sector")
    update.add_argument("--max-memory", default="4GB", help="memory budget (default 4GB)")
    update.add_argument("--concurrency", type=int, default=None)
    update.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    update.add_argument("--anon", action="store_true", help="read S3 inputs anonymously")
    update.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=_storage_option)
    _resume_options(update)
    update.add_argument("-q", "--quiet", action="store_true")

    inspect = sub.add_parser("inspect", help="describe a cube (reads only its headers and table)")
    inspect.add_argument("cube", help="a path or a URL (s3://...)")
    inspect.add_argument("--anon", action="store_true", help="read S3 anonymously")
    inspect.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=_storage_option)
    add_inspect_plot(inspect)

    sector = sub.add_parser(
        "sector", help="build the cubes of a sector from the archive's layout (AWS Batch array jobs too)",
        description="Builds tess-sSSSS-C-D-cube.fits for each camera/CCD from SOURCE/sSSSS/*/*/C-D/*ffic.fits "
        f"into DEST, skipping cubes already there and resuming interrupted ones. With ${ARRAY_INDEX} set, "
        "builds only camera i // 4 + 1, CCD i % 4 + 1.",
    )
    sector.add_argument("sector", type=int)
    sector.add_argument("--source", required=True, help="FFI archive root, e.g. s3://stpubdata/tess/public/ffi")
    sector.add_argument("--dest", required=True, help="where the cubes go: a directory or an s3:// prefix")
    sector.add_argument("--camera", type=int, action="append", choices=CAMERAS, help="repeatable (default all)")
    sector.add_argument("--ccd", type=int, action="append", choices=CCDS, help="repeatable (default all)")
    sector.add_argument("--max-memory", default="4GB", help="memory budget for all cubes together (default 4GB)")
    sector.add_argument("--parallel", type=int, default=1, help="cubes built at once, sharing --max-memory")
    sector.add_argument("--concurrency", type=int, default=None)
    sector.add_argument("--anon", action="store_true", help="read S3 inputs anonymously")
    sector.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=_storage_option)
    mode = sector.add_mutually_exclusive_group()
    mode.add_argument("--shard", metavar="K/N",
                      help="build only the K-th of N shares of one cube (s3:// only; K may be 'index': "
                           f"${ARRAY_INDEX} + 1); the last shard to finish completes the cube")
    mode.add_argument("--finish", action="store_true", help="complete a sharded cube whose shards are all done")
    sector.add_argument("-q", "--quiet", action="store_true")

    verify = sub.add_parser("verify", help="check a cube: structure, size, time order, checksums (exit 1 if unsound)")
    verify.add_argument("cube", help="a path or a URL (s3://...)")
    verify.add_argument("--anon", action="store_true", help="read S3 anonymously")
    verify.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", type=_storage_option)

    demo = sub.add_parser("demo", help="make a small synthetic sector, build its cube, inspect it")
    demo.add_argument("directory", nargs="?", default="fficube-demo")
    demo.add_argument("--product", choices=["spoc", "tica"], default="spoc")
    demo.add_argument("--n-ffis", type=int, default=24)
    add_view_commands(sub, _storage_option)
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
        storage_options=_storage_options(getattr(args, "storage_option", [])),
        resume=getattr(args, "resume", False), restart=getattr(args, "restart", False),
    )


def _cmd_build(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = asyncio.run(_cancel_on_sigterm(_build(args, out, err)))
    if not args.quiet:
        out.write(f"wrote {result.summary()}\n")
    return 0


def _cmd_update(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = asyncio.run(_cancel_on_sigterm(update_cube(
        args.cube, args.inputs, output=args.output, sector=args.sector, max_memory=args.max_memory,
        concurrency=args.concurrency, overwrite=args.overwrite, progress=None if args.quiet else ProgressBar(err),
        anon=True if args.anon else None, storage_options=_storage_options(args.storage_option),
        resume=args.resume, restart=args.restart,
    )))
    if not args.quiet:
        out.write(f"updated {result.summary()}\n")
    return 0


def _describe(path: str, anon: bool = False, options: list | None = None):  # type: ignore[no-untyped-def]
    return asyncio.run(describe_cube(path, anon=True if anon else None,
                                     storage_options=_storage_options(options or [])))


def _cmd_inspect(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _print_table(_describe(args.cube, args.anon, args.storage_option).rows(), out)
    plot_after_inspect(args, out)
    return 0


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = asyncio.run(_cancel_on_sigterm(verify_cube(
        args.cube, anon=True if args.anon else None, storage_options=_storage_options(args.storage_option),
    )))
    width = max(len(c.name) for c in result.checks)
    for check in result.checks:
        out.write(f"  {check.status:<4}  {check.name.ljust(width)}  {check.detail}\n")
    verdict = "sound" if result.ok else "NOT sound"
    out.write(f"{result.path}: {verdict} ({format_bytes(result.bytes_read)} read)\n")
    return 0 if result.ok else EXIT_ERROR


def _sector_targets(args: argparse.Namespace, err: TextIO) -> tuple[list[int], list[int]]:
    cameras, ccds = args.camera or list(CAMERAS), args.ccd or list(CCDS)
    index = os.environ.get(ARRAY_INDEX)
    if index is not None and not (args.shard or "").startswith("index/"):
        camera, ccd = array_target(index)
        err.write(f"fficube: {ARRAY_INDEX}={index}: camera {camera}, CCD {ccd}\n")
        return [camera], [ccd]
    return cameras, ccds


def _cmd_sector(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cameras, ccds = _sector_targets(args, err)
    jobs = sector_jobs(args.sector, args.source, args.dest, cameras, ccds)
    anon = True if args.anon else None
    options = _storage_options(args.storage_option)
    if args.shard or args.finish:
        if len(jobs) != 1:
            raise ValueError("--shard and --finish work on one cube: give one --camera and one --ccd")
        job = jobs[0]
        if args.finish:
            done = asyncio.run(_cancel_on_sigterm(finish_cube(job.output, anon=anon, storage_options=options)))
            out.write(f"{job.output}: {'complete' if done else 'not all shards are done yet'}\n")
            return 0 if done else EXIT_ERROR
        shard, shards = parse_shard(args.shard, os.environ.get(ARRAY_INDEX))
        result = asyncio.run(_cancel_on_sigterm(build_shard(
            job.inputs, job.output, shard, shards, product="spoc", sector=job.sector, max_memory=args.max_memory,
            concurrency=args.concurrency, anon=anon, storage_options=options,
        )))
        if not args.quiet:
            out.write(result.summary() + "\n")
        return 0

    def done(outcome: CubeOutcome) -> None:
        if not args.quiet:
            err.write(f"fficube: {outcome.job.camera}-{outcome.job.ccd}: {outcome.status}"
                      f"{': ' + outcome.error if outcome.status == 'failed' else ''}\n")

    outcomes = asyncio.run(_cancel_on_sigterm(build_sector(
        jobs, max_memory=args.max_memory, parallel=args.parallel, concurrency=args.concurrency, anon=anon,
        storage_options=options, on_done=done,
    )))
    header = ("cube", "status", "FFIs", "size", "seconds", "requests", "output / reason")
    rows = [header, *(o.row() for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] + "\n")
    failed = [o for o in outcomes if o.status == "failed"]
    out.write(f"sector {args.sector}: {len(outcomes) - len(failed)} of {len(outcomes)} cube(s) done"
              + (f", {len(failed)} failed (run again to retry)" if failed else "") + "\n")
    return EXIT_ERROR if failed else 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .synthetic import SectorSpec, make_sector

    spec = SectorSpec(
        n_ffis=args.n_ffis, product=args.product, shape=(96, 120),
        sector=1 if args.product == "spoc" else 27, no_wcs=(0, 3),
    )
    ffi_dir = os.path.join(args.directory, "ffis")
    out.write(f"writing {spec.n_ffis} synthetic {args.product.upper()} FFIs "
              f"({spec.shape[0]}x{spec.shape[1]}, shuffled, 2 without WCS) to {ffi_dir}\n")
    paths = make_sector(ffi_dir, spec)
    cube = os.path.join(args.directory, f"tess-s{spec.sector:04d}-{spec.camera}-{spec.ccd}-cube.fits")
    # A small budget, so that the demo streams the cube in several blocks.
    build_args = argparse.Namespace(
        inputs=paths, output=cube, product=args.product, sector=spec.sector, max_memory="1.5MB",
        concurrency=None, overwrite=True, quiet=False,
    )
    out.write(f"building {cube} with max_memory=1.5MB\n")
    _cmd_build(build_args, out, err)
    out.write(f"fficube inspect {cube}\n")
    _print_table(_describe(cube).rows(), out)
    return 0


def _left_behind(args: argparse.Namespace) -> str:
    """What an interrupted command left, for its last line."""
    output = getattr(args, "output", None) or getattr(args, "cube", None)
    if not output:
        return "nothing was written"
    if is_url(output):
        return "see above for what was kept"
    if os.path.exists(journal_path(output)):
        return "the work done is saved: run the same command with --resume to continue"
    return "no partial output was left"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="fficube: %(levelname)s: %(message)s", stream=err,
    )
    warnings.formatwarning = lambda message, category, *a, **k: f"fficube: warning: {message}\n"
    command = {
        "build": _cmd_build, "update": _cmd_update, "inspect": _cmd_inspect, "verify": _cmd_verify,
        "sector": _cmd_sector, "demo": _cmd_demo, **VIEW_COMMANDS,
    }[args.command]
    try:
        return command(args, out, err)
    except KeyboardInterrupt:
        err.write(f"\nfficube: interrupted; {_left_behind(args)}\n")
        return EXIT_INTERRUPTED
    except Terminated:
        err.write(f"\nfficube: stopped by SIGTERM; {_left_behind(args)}\n")
        return EXIT_TERMINATED
    except (FficubeError, OSError, ValueError) as exc:
        if args.debug:
            raise
        err.write(f"fficube: error: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
