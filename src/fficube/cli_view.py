"""The viewing commands of the ``fficube`` command line: ``refs``.

Kept apart from :mod:`fficube.cli`, which only registers them (:func:`add_commands`)
and dispatches to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from .units import format_bytes, parse_size

__all__ = ["add_commands", "COMMANDS"]


def _access_options(parser: argparse.ArgumentParser, storage_option: Callable[[str], Any]) -> None:
    parser.add_argument("--anon", action="store_true", help="read S3 anonymously (public buckets)")
    parser.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", type=storage_option,
        help="fsspec option, repeatable: endpoint_url=..., requester_pays=true, profile=..., region_name=...",
    )


def add_commands(sub: Any, storage_option: Callable[[str], Any]) -> None:
    """Register ``refs`` on the main parser's subcommands."""
    from .refs import DEFAULT_CHUNK_BYTES

    refs = sub.add_parser(
        "refs", help="write a reference manifest: the cube as a Zarr group, readable in place by xarray",
        description="A JSON manifest in fsspec's reference format (version 1) whose chunks are byte ranges "
        "of the cube: open it with xarray and fsspec, no fficube needed.",
    )
    refs.add_argument("cube", help="a path or a URL (s3://...)")
    refs.add_argument("-o", "--output", required=True, help="the manifest (JSON): a path or a URL")
    refs.add_argument("--chunk-size", default=str(DEFAULT_CHUNK_BYTES),
                      help=f"largest chunk of the data (default {format_bytes(DEFAULT_CHUNK_BYTES)})")
    _access_options(refs, storage_option)


def _options(args: argparse.Namespace) -> tuple[bool | None, dict[str, object]]:
    from .cli import _storage_options

    return (True if args.anon else None), _storage_options(args.storage_option)


def cmd_refs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .refs import make_refs

    anon, options = _options(args)
    refs = make_refs(args.cube, args.output, anon=anon, storage_options=options, chunk_bytes=parse_size(args.chunk_size))
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


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = {"refs": cmd_refs}
