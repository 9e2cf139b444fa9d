"""Outputs: where a cube goes, one module per kind, each owning its whole lifecycle.

* :mod:`~fficube.sinks.base`: the :class:`Output` and :class:`CubeSink` protocols, and
  the :class:`Span` of the cube's data whose sum seals the cube header;
* :mod:`~fficube.sinks.local`: a local file, through ``<output>.partial`` and a rename
  (or one window of a file that several workers share);
* :mod:`~fficube.sinks.s3`: an S3 object, as one multipart upload (or one window of an
  upload shared by several workers).

:func:`open_output` is the one place that tells the kinds apart.
"""

from __future__ import annotations

from ..errors import OutputError, ResumeError
from ..journal import Journal
from ..sources.fsspec import Filesystems
from ..sources.locations import S3_PROTOCOLS, protocol_or_local
from .base import CubeSink, Output, Span, kept_message
from .local import LocalOutput
from .s3 import S3Output

__all__ = ["CubeSink", "Output", "Span", "kept_message", "open_output", "interrupted_build"]


async def open_output(location: str, filesystems: Filesystems) -> Output:
    """The output at ``location``: a local path or an ``s3://`` URL.

    Raises
    ------
    OutputError
        For a URL of a protocol cubes cannot be written to.
    """
    protocol = protocol_or_local(location)
    if protocol is None:
        return LocalOutput(location)
    if protocol in S3_PROTOCOLS:
        return S3Output(location, await filesystems.get(protocol, output=True), filesystems.stats,
                        filesystems.policy.retry)
    raise OutputError(f"cannot write cubes to {protocol}://; give a local path or an s3:// URL", path=location)


async def interrupted_build(output: Output, *, resume: bool, restart: bool) -> Journal | None:
    """The journal of an interrupted build of ``output`` to continue, if any and asked for.

    With ``restart`` the interrupted build is discarded; without ``resume`` or
    ``restart`` its presence is an error (hours of work are not thrown away silently).

    Raises
    ------
    ResumeError
        If there is an interrupted build and neither flag was given, or its journal
        cannot be read and ``restart`` was not given.
    """
    try:
        journal = await output.load_journal()
    except ValueError as exc:
        if not restart:
            raise ResumeError(f"{exc}; use restart=True to start over", path=output.location) from exc
        await output.discard(None)
        return None
    if journal is None:
        return None
    if restart:
        await output.discard(journal)
        return None
    if not resume:
        raise ResumeError(
            "an interrupted build of this cube is saved here: run the same build with resume=True "
            "to continue it, or restart=True to start over", path=output.location,
        )
    return journal
