"""fficube: build TESS full-frame-image cubes with a bounded-memory asyncio pipeline.

The pipeline's stages are modules: :mod:`~fficube.scan` (headers by byte range),
:mod:`~fficube.plan` (pure planning), :mod:`~fficube.fetch` (row ranges into a slab
pool), :mod:`~fficube.assemble` (slabs into blocks), :mod:`~fficube.write` (blocks into
the cube) and :mod:`~fficube.info_table`.  :func:`build_cube` runs them; :func:`make_cube`
is its synchronous twin.
"""

from .astrocut_compat import CubeFactory, TicaCubeFactory
from .build import BuildResult, Progress, build_cube, update_cube
from .errors import (
    EventLoopError,
    FficubeError,
    FitsFormatError,
    InputError,
    MemoryBudgetError,
    MixedInputError,
    NoInputsError,
    OutputError,
    OutputExistsError,
    ReadError,
    ResumeError,
    MissingExtraError,
)
from .inputs import DuplicateInputWarning, FficubeWarning, TemplateWarning
from . import sync
from .sync import make_cube
from .verify import Check, Verification, verify_cube
from .dataset import open_dataset
from .refs import cube_refs, make_refs
from .plot import plot_cube

from ._version import __version__

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
    "EventLoopError",
    "ResumeError",
    "FficubeWarning",
    "DuplicateInputWarning",
    "TemplateWarning",
    "open_dataset",
    "cube_refs",
    "make_refs",
    "plot_cube",
    "MissingExtraError",
]
