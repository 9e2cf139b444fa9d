"""A whole sector: the 16 camera/CCD cubes, found in the archive's layout and built in turn.

The archive keeps SPOC FFIs as ``{source}/s{SSSS}/{YYYY}/{DDD}/{camera}-{ccd}/*ffic.fits``
(``s3://stpubdata/tess/public/ffi`` is such a source), and cubes are named
``tess-s{SSSS}-{camera}-{ccd}-cube.fits`` (cutout tools derive TPF names from it).
:func:`build_sector` lists the sector's FFIs once, then builds each cube at
``{dest}/{name}``, skipping cubes complete at the destination (checked, not just
found) and resuming interrupted ones, so running it again after a failure finishes
the job.

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

from ..build import build_cube
from ..cubeinfo import CubeInfo
from ..errors import FficubeError, NoInputsError, OptionError
from ..inputs import resolve_inputs
from ..products import get_product
from ..results import BuildResult, Progress
from ..sinks import complete_cube, open_output
from ..sources.fsspec import Filesystems
from ..sources.locations import is_url
from ..units import format_bytes, parse_size

__all__ = [
    "CubeJob", "CubeOutcome", "sector_jobs", "sector_inventory", "array_index", "array_target", "build_sector",
    "cube_name", "ARRAY_INDEX", "SLURM_ARRAY_INDEX", "ARRAY_VARIABLES", "DONE",
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
    source: str = ""  #: the archive's root


def _pattern(source: str, sector: int, folder: str) -> str:
    return _join(source, f"s{sector:04d}", "*", "*", folder, "*ffic.fits")


def sector_jobs(
    sector: int, source: str, dest: str, cameras: Sequence[int] = CAMERAS, ccds: Sequence[int] = CCDS
) -> list[CubeJob]:
    """The cubes of ``sector`` for the given cameras and CCDs, in camera/CCD order."""
    return [
        CubeJob(sector, camera, ccd, _pattern(source, sector, f"{camera}-{ccd}"),
                _join(dest, cube_name(sector, camera, ccd)), source)
        for camera in cameras for ccd in ccds
    ]


async def sector_inventory(sector: int, source: str, filesystems: Filesystems) -> dict[tuple[int, int], int]:
    """How many FFIs each camera/CCD of ``sector`` has under ``source`` (one listing).

    Raises
    ------
    NoInputsError
        If the sector has no FFI there at all (a wrong source or sector number).
    InputError
        If the source cannot be listed (access denied...).
    """
    pattern = _pattern(source, sector, "*-*")
    try:
        found = await resolve_inputs(pattern, get_product("spoc"), filesystems)
    except NoInputsError:
        raise NoInputsError(f"no FFIs of sector {sector} here: {pattern} matches nothing; check the source "
                            "(the archive's root, holding sSSSS/YYYY/DDD/C-D/ folders) and the sector number",
                            path=source) from None
    counts: dict[tuple[int, int], int] = {}
    for path in found.paths:
        folder = os.path.basename(os.path.dirname(path))  # C-D (local paths and URLs alike)
        camera, _, ccd = folder.partition("-")
        if camera.isdigit() and ccd.isdigit():
            counts[int(camera), int(ccd)] = counts.get((int(camera), int(ccd)), 0) + 1
    return counts


#: Statuses of a cube that is at its destination, complete, after the run.
DONE = ("built", "resumed", "rebuilt", "skipped")


@dataclass(frozen=True, slots=True)
class CubeOutcome:
    """What happened to one cube of a sector run."""

    job: CubeJob
    #: "built", "resumed", "rebuilt" (what was there was not complete), "skipped" (complete
    #: there already), "no FFIs" (none in the archive for this camera/CCD) or "failed"
    status: str
    seconds: float = 0.0
    result: BuildResult | None = None
    error: str = ""  #: why it failed, or what was wrong with the cube that was rebuilt
    options: tuple[str, ...] = ()  #: the options ``error`` names (:attr:`fficube.errors.FficubeError.options`)
    n_ffis: int = 0  #: the cube's FFIs (also for a skipped cube)
    cube_bytes: int = 0  #: the cube's size (also for a skipped cube)

    def row(self) -> tuple[str, ...]:
        """A summary table row: camera-CCD, status, FFIs, size, seconds, GETs or reads, detail."""
        r = self.result
        n_ffis = r.n_ffis if r else self.n_ffis
        size = (r.cube_bytes or r.bytes_written) if r else self.cube_bytes
        requests = (r.stage_requests if r.staged else r.requests) if r else None
        detail = self.job.output if self.status in ("built", "resumed") else self.error
        return (
            f"{self.job.camera}-{self.job.ccd}", self.status, str(n_ffis) if n_ffis else "-",
            format_bytes(size) if size else "-", f"{self.seconds:.1f}",
            str(requests) if requests is not None else "-", detail,
        )


async def _complete_at(job: CubeJob, filesystems: Filesystems) -> tuple[CubeInfo | None, str]:
    """The cube at ``job.output`` if it is there and complete; else None and what is wrong
    with what is there ("" if nothing is).  Cheap: headers and table by range, the sealed
    checksum; no data read (:func:`~fficube.verify.check_cube`)."""
    if not await (await open_output(job.output, filesystems)).exists():
        return None, ""
    there = await complete_cube(job.output, filesystems)
    if there.cube is None:
        return None, f"the cube there was not complete ({there.problem})"
    return there.cube, ""


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
    restart: bool = False,
    stage: str | None = None,
    keep_stage: bool = False,
) -> list[CubeOutcome]:
    """Build the cubes of ``jobs``, ``parallel`` at a time within ``max_memory`` in all.

    The sector's FFIs are listed first, once: a source without any FFI of the sector is
    an error (:class:`~fficube.errors.NoInputsError`); a camera/CCD without FFIs is
    reported as ``"no FFIs"``.  A cube at its output is skipped if it is complete
    (checked cheaply, as ``verify`` would but without reading data) and of as many
    FFIs as the archive has; otherwise it is rebuilt.  Interrupted builds are resumed
    (``restart``: discarded and started over).  ``stage`` and ``keep_stage`` are passed
    to :func:`~fficube.build.build_cube`.  A cube that fails does not stop the others:
    its outcome says why.  Cancellation stops all (their work is kept for the next run).
    """
    if stage is not None and any(not is_url(job.inputs) for job in jobs):
        raise OptionError("stage", "the source is local: there is nothing to stage")
    budget = parse_size(max_memory)
    parallel = max(1, min(parallel, len(jobs) or 1))
    share = budget // parallel  # each cube's budget: the total stays within max_memory
    slots = asyncio.Semaphore(parallel)
    filesystems = Filesystems(anon=anon, storage_options=storage_options)

    async def one(job: CubeJob, available: int) -> CubeOutcome:
        async with slots:
            started = time.monotonic()
            try:
                outcome = await _one(job, available, started)
            except (FficubeError, OSError, ValueError) as exc:
                outcome = CubeOutcome(job, "failed", time.monotonic() - started, error=str(exc),
                                      options=getattr(exc, "options", ()))
            if on_done is not None:
                on_done(outcome)
            return outcome

    async def _one(job: CubeJob, available: int, started: float) -> CubeOutcome:
        if not available:
            return CubeOutcome(job, "no FFIs", error=f"the archive has no FFIs of camera {job.camera}, "
                                                      f"CCD {job.ccd} in this sector")
        cube, wrong = await _complete_at(job, filesystems)
        if cube is not None and cube.shape[2] == available:
            return CubeOutcome(job, "skipped", error="complete at the destination", n_ffis=cube.shape[2],
                               cube_bytes=cube.size)
        if cube is not None:
            wrong = f"the cube there has {cube.shape[2]} FFIs, the archive {available}"
        result = await build_cube(
            job.inputs, job.output, product="spoc", sector=job.sector, max_memory=share,
            concurrency=concurrency, anon=anon, storage_options=storage_options, resume=not restart,
            restart=restart, overwrite=bool(wrong), stage=stage, keep_stage=keep_stage,
            progress=(lambda p: progress(job, p)) if progress else None,
        )
        status = "rebuilt" if wrong else "resumed" if result.resumed_rows else "built"
        return CubeOutcome(job, status, time.monotonic() - started, result, error=wrong)

    try:
        inventories: dict[tuple[int, str], dict[tuple[int, int], int]] = {}
        for job in jobs:
            if (job.sector, job.source) not in inventories:
                inventories[job.sector, job.source] = await sector_inventory(job.sector, job.source, filesystems)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(job, inventories[job.sector, job.source].get((job.camera, job.ccd), 0)))
                     for job in jobs]
        return [t.result() for t in tasks]
    finally:
        await asyncio.shield(filesystems.aclose())
