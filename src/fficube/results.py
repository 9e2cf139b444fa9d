"""What a build reports: :class:`Progress` while it runs, a :class:`BuildResult` at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .quality import Quality
from .sinks.base import CubeSink
from .sources.base import ByteSource
from .units import format_bytes

__all__ = ["Progress", "BuildResult", "Reporter"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report, passed to the ``progress`` callback.

    ``stage`` is ``"stage"`` (a staged build's fetch: ``done``/``total`` count files,
    ``bytes_read`` the bytes fetched, ``total_bytes`` the inputs' size), ``"scan"``
    (``done``/``total`` count files) or ``"write"`` (``done``/``total`` count blocks).
    """

    stage: str
    done: int
    total: int
    bytes_read: int
    bytes_written: int
    total_bytes: int  #: size of the finished cube (0 while scanning)
    elapsed: float


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did."""

    output: str
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    n_ffis: int
    blocks: int
    block_rows: int
    bytes_read: int
    bytes_written: int
    requests: int  #: read requests, retries included
    retries: int  #: transient failures retried (reads and uploads)
    seconds: float
    product: str
    max_in_flight: int = 0  #: most read requests in flight at once (hedges included)
    hedges: int = 0  #: slow reads sent a second time (see :class:`fficube.sources.policy.HedgePolicy`)
    resumed_rows: int = 0  #: cube rows an interrupted build had already written
    cube_bytes: int = 0  #: size of the finished cube (``bytes_written`` is this run's share)
    #: A resumed build found the cube already complete (and checked it): nothing was built.
    already_complete: bool = False
    #: What the quality gate found (None: the gate was off, or nothing was built);
    #: ``quality.summary()`` is one line, ``quality.report()`` the JSON report.
    quality: Quality | None = None
    staged: int = 0  #: a staged build: inputs fetched into the stage directory by this run
    staged_reused: int = 0  #: a staged build: inputs found there already (checked), not fetched again
    stage_requests: int = 0  #: GETs of the staging (``requests`` counts the build's reads)
    stage_bytes: int = 0  #: bytes the staging fetched
    #: Where the per-pixel statistics were written (None: not asked for)
    pixel_stats: str | None = None
    #: Cube rows whose statistics were made from the finished cube (a resumed build's
    #: rows written before the interruption), and the bytes that took.
    stats_rows_reread: int = 0
    stats_bytes_reread: int = 0

    @property
    def read_rate(self) -> float:
        """Bytes read per second."""
        return self.bytes_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_request(self) -> float:
        """Mean bytes per read request (retries and hedges count as requests)."""
        return self.bytes_read / self.requests if self.requests else 0.0

    def summary(self) -> str:
        """One line for people."""
        rows, cols, n, layers = self.shape
        if self.already_complete:
            return (f"{self.output}: already complete, nothing to do: {self.product.upper()} cube "
                    f"{rows}x{cols}x{n}x{layers} ({format_bytes(self.cube_bytes)}) of the {n} FFIs given; "
                    "checked structure, size, table and header checksums")
        return (
            f"{self.output}: {self.product.upper()} cube {rows}x{cols}x{n}x{layers} "
            f"({format_bytes(self.cube_bytes or self.bytes_written)}) from {self.n_ffis} FFIs in {self.seconds:.1f} s, "
            f"{self.blocks} block(s); read {format_bytes(self.bytes_read)} in {self.requests} requests "
            f"of {format_bytes(self.mean_request)} on average ({format_bytes(self.read_rate)}/s), "
            f"{self.retries} retried" + (f", {self.hedges} hedged" if self.hedges else "")
            + (f"; resumed with {self.resumed_rows} of {rows} rows already written, "
               f"{format_bytes(self.bytes_written)} written now" if self.resumed_rows else "")
            + self._staging()
            + (f"; pixel statistics in {self.pixel_stats}" if self.pixel_stats else "")
            + (f" ({self.stats_rows_reread} rows read again from the cube)" if self.stats_rows_reread else "")
        )

    def _staging(self) -> str:
        if not (self.staged or self.staged_reused):
            return ""
        per_ffi = f" ({self.stage_requests / self.staged:.1f} per FFI)" if self.staged else ""
        return (f"; staged {self.staged + self.staged_reused} FFIs first: fetched {self.staged} "
                f"({format_bytes(self.stage_bytes)} in {self.stage_requests} GETs{per_ffi}), "
                f"{self.staged_reused} already staged")


class Reporter:
    """Sends :class:`Progress` reports; bytes come from the sources and, once set, the sink."""

    def __init__(
        self, progress: Callable[[Progress], None] | None, sources: Sequence[ByteSource], started: float
    ) -> None:
        self.progress, self.sources, self.started = progress, list(sources), started
        self.sink: CubeSink | None = None

    def __call__(self, stage: str, done: int, total: int, total_bytes: int) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    stage, done, total, sum(s.stats.bytes_read for s in self.sources),
                    self.sink.bytes_written if self.sink else 0, total_bytes, time.monotonic() - self.started,
                )
            )
