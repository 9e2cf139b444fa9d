"""A whole sector: the 16 camera/CCD cubes, found in the archive's layout and built in turn.

The archive keeps SPOC FFIs as ``{source}/s{SSSS}/{YYYY}/{DDD}/{camera}-{ccd}/*ffic.fits``
(``s3://stpubdata/tess/public/ffi`` is such a source), and cubes are named
``tess-s{SSSS}-{camera}-{ccd}-cube.fits`` (cutout tools derive TPF names from it).
:func:`build_sector` builds each cube at ``{dest}/{name}``, skipping cubes already
at the destination (cubes appear only when complete) and resuming interrupted ones,
so running it again after a failure finishes the job.

In an array job, the array index picks the one camera/CCD that a job builds
(:func:`array_target`): an array of 16 builds a sector.  The index is AWS Batch's
``AWS_BATCH_JOB_ARRAY_INDEX`` or SLURM's ``SLURM_ARRAY_TASK_ID`` (AWS Batch's wins
when both are set; :func:`array_index`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .build import build_cube
from .errors import FficubeError
from .remote import Filesystems, is_url
from .results import BuildResult, Progress
from .sinks import open_output
from .units import parse_size

__all__ = [
    "CubeJob", "CubeOutcome", "sector_jobs", "array_index", "array_target", "build_sector", "cube_name",
    "ARRAY_INDEX", "SLURM_ARRAY_INDEX", "ARRAY_VARIABLES",
]

ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"
SLURM_ARRAY_INDEX = "SLURM_ARRAY_TASK_ID"
#: The variables that hold an array job's index, the one that wins first.
ARRAY_VARIABLES = (ARRAY_INDEX, SLURM_ARRAY_INDEX)
CAMERAS = CCDS = (1, 2, 3, 4)


def cube_name(sector: int, camera: int, ccd: int) -> str:
    return f"tess-s{sector:04d}-{camera}-{ccd}-cube.fits"


def array_index(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The array job's index variable and value (AWS Batch's if set, else SLURM's), or None."""
    environ = os.environ if environ is None else environ
    for name in ARRAY_VARIABLES:
        if environ.get(name) is not None:
            return name, environ[name]
    return None


def array_target(index: int | str, variable: str = ARRAY_INDEX) -> tuple[int, int]:
    """The camera/CCD of array job ``index``: 0 -> 1-1, 1 -> 1-2, ..., 15 -> 4-4."""
    try:
        i = int(index)
    except ValueError:
        i = -1
    if not 0 <= i < 16:
        raise ValueError(f"{variable} = {index} is not a camera/CCD index (0 to 15)")
    return i // 4 + 1, i % 4 + 1


def _join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


@dataclass(frozen=True, slots=True)
class CubeJob:
    """One camera/CCD of a sector: where its FFIs are and where its cube goes."""

    sector: int
    camera: int
    ccd: int
    inputs: str  #: a glob in the archive's layout
    output: str


def sector_jobs(
    sector: int, source: str, dest: str, cameras: Sequence[int] = CAMERAS, ccds: Sequence[int] = CCDS
) -> list[CubeJob]:
    """The cubes of ``sector`` for the given cameras and CCDs, in camera/CCD order."""
    jobs = []
    for camera in cameras:
        for ccd in ccds:
            pattern = _join(source, f"s{sector:04d}", "*", "*", f"{camera}-{ccd}", "*ffic.fits")
            jobs.append(CubeJob(sector, camera, ccd, pattern, _join(dest, cube_name(sector, camera, ccd))))
    return jobs


@dataclass(frozen=True, slots=True)
class CubeOutcome:
    """What happened to one cube of a sector run."""

    job: CubeJob
    status: str  #: "built", "resumed", "skipped" (already there) or "failed"
    seconds: float = 0.0
    result: BuildResult | None = None
    error: str = ""

    def row(self) -> tuple[str, ...]:
        """A summary table row: camera-CCD, status, FFIs, size, seconds, requests, detail."""
        r = self.result
        return (
            f"{self.job.camera}-{self.job.ccd}", self.status,
            str(r.n_ffis) if r else "-", f"{r.bytes_written / 1e9:.2f} GB" if r else "-",
            f"{self.seconds:.1f}", str(r.requests) if r else "-", self.error or self.job.output,
        )


async def build_sector(
    jobs: Sequence[CubeJob],
    *,
    max_memory: int | float | str = "4GB",
    parallel: int = 1,
    concurrency: int | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: Callable[[CubeJob, Progress], None] | None = None,
    on_done: Callable[[CubeOutcome], None] | None = None,
) -> list[CubeOutcome]:
    """Build the cubes of ``jobs``, ``parallel`` at a time within ``max_memory`` in all.

    A cube already at its output is skipped; an interrupted one is resumed.  A cube
    that fails does not stop the others: its outcome says why.  Cancellation stops
    all (their work is kept for the next run).
    """
    budget = parse_size(max_memory)
    parallel = max(1, min(parallel, len(jobs) or 1))
    share = budget // parallel  # each cube's budget: the total stays within max_memory
    slots = asyncio.Semaphore(parallel)
    filesystems = Filesystems(anon=anon, storage_options=storage_options)

    async def one(job: CubeJob) -> CubeOutcome:
        async with slots:
            started = time.monotonic()
            try:
                if await (await open_output(job.output, filesystems)).exists():
                    outcome = CubeOutcome(job, "skipped", error="already at the destination")
                else:
                    result = await build_cube(
                        job.inputs, job.output, product="spoc", sector=job.sector, max_memory=share,
                        concurrency=concurrency, anon=anon, storage_options=storage_options, resume=True,
                        progress=(lambda p: progress(job, p)) if progress else None,
                    )
                    status = "resumed" if result.resumed_rows else "built"
                    outcome = CubeOutcome(job, status, time.monotonic() - started, result)
            except (FficubeError, OSError, ValueError) as exc:
                outcome = CubeOutcome(job, "failed", time.monotonic() - started, error=str(exc))
            if on_done is not None:
                on_done(outcome)
            return outcome

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(job)) for job in jobs]
        return [t.result() for t in tasks]
    finally:
        await asyncio.shield(filesystems.aclose())
