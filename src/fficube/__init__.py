"""fficube: build TESS full-frame-image cubes with a bounded-memory asyncio pipeline.

The pipeline's stages are modules: :mod:`~fficube.inputs` (what to read),
:mod:`~fficube.scan` (headers by byte range), :mod:`~fficube.plan` (pure planning),
:mod:`~fficube.fetch` (row ranges into a slab pool), :mod:`~fficube.assemble` (slabs
into blocks) and :mod:`~fficube.write` (blocks into a sink of :mod:`~fficube.sinks`),
run by :mod:`~fficube.pipeline`.  :func:`build_cube` is the async entry point;
:func:`make_cube` is its synchronous twin.
"""

from . import sync
from ._version import __version__
from .astrocut_compat import CubeFactory, TicaCubeFactory
from .build import build_cube, update_cube
from .errors import (
    DuplicateInputWarning,
    EventLoopError,
    FficubeError,
    FficubeWarning,
    FitsFormatError,
    InputError,
    MemoryBudgetError,
    MixedInputError,
    NoInputsError,
    OptionError,
    OutputError,
    OutputExistsError,
    ReadError,
    ResumeError,
    TemplateWarning,
)
from .results import BuildResult, Progress
from .sync import make_cube
from .verify import Check, Verification, verify_cube

__all__ = [
    "__version__",
    "sync",
    "build_cube",
    "update_cube",
    "make_cube",
    "verify_cube",
    "Verification",
    "Check",
    "CubeFactory",
    "TicaCubeFactory",
    "BuildResult",
    "Progress",
    "FficubeError",
    "InputError",
    "NoInputsError",
    "FitsFormatError",
    "MixedInputError",
    "MemoryBudgetError",
    "ReadError",
    "OutputError",
    "OutputExistsError",
    "OptionError",
    "EventLoopError",
    "ResumeError",
    "FficubeWarning",
    "DuplicateInputWarning",
    "TemplateWarning",
]
