"""The ``fficube`` command's entry point: the CLI is imported here, so that Ctrl-C while
the command starts (importing numpy and astropy takes a second) ends in one line, not a
traceback."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main() -> int:
    """Import and run the command line; return its exit status."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("\nfficube: interrupted while starting; nothing was written\n")
        return EXIT_INTERRUPTED
    return run()
