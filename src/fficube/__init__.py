"""fficube: build TESS full-frame-image cubes with a bounded-memory asyncio pipeline.

The pipeline's stages are modules: :mod:`~fficube.inputs` (what to read),
:mod:`~fficube.scan` (headers by byte range), :mod:`~fficube.plan` (pure planning),
:mod:`~fficube.fetch` (row ranges into a slab pool), :mod:`~fficube.assemble` (slabs
into blocks) and :mod:`~fficube.write` (blocks into a sink of :mod:`~fficube.sinks`),
run by :mod:`~fficube.pipeline`.  :func:`build_cube` is the async entry point;
:func:`make_cube` is its synchronous twin.

The public names are loaded on first use (PEP 562): ``import fficube`` is quick, and
the ``fficube`` command can answer Ctrl-C during start-up with one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Each public name and the module that defines it.
_HOMES = {
    "sync": None,  # a module of its own
    "build_cube": "build", "update_cube": "build",
    "make_cube": "sync", "make_stats": "sync",
    "cube_stats": "pixelstats", "StatsResult": "pixelstats",
    "verify_cube": "verify", "Verification": "verify", "Check": "verify",
    "CubeFactory": "astrocut_compat", "TicaCubeFactory": "astrocut_compat", "CutoutFactory": "astrocut_compat",
    "BuildResult": "results", "Progress": "results",
    "cut_cube": "views.cut",
    "open_dataset": "views.dataset", "cube_refs": "views.refs", "make_refs": "views.refs", "plot_cube": "views.plot",
    **dict.fromkeys(
        ["FficubeError", "InputError", "NoInputsError", "FitsFormatError", "MixedInputError", "MemoryBudgetError",
         "OutsideFootprintError",
         "ReadError", "OutputError", "OutputExistsError", "OptionError", "EventLoopError", "ResumeError",
         "MissingExtraError", "FficubeWarning", "DuplicateInputWarning", "LeftOutInputWarning", "TemplateWarning"],
        "errors",
    ),
}

__all__ = ["__version__", *_HOMES]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fficube' has no attribute {name!r}")
    home = _HOMES[name]
    module = importlib.import_module(f".{home or name}", __name__)
    value = module if home is None else getattr(module, name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and editors see
    from . import sync
    from .astrocut_compat import CubeFactory, CutoutFactory, TicaCubeFactory
    from .build import build_cube, update_cube
    from .errors import (
        DuplicateInputWarning,
        EventLoopError,
        FficubeError,
        FficubeWarning,
        FitsFormatError,
        InputError,
        LeftOutInputWarning,
        MemoryBudgetError,
        MissingExtraError,
        MixedInputError,
        NoInputsError,
        OptionError,
        OutputError,
        OutputExistsError,
        OutsideFootprintError,
        ReadError,
        ResumeError,
        TemplateWarning,
    )
    from .pixelstats import StatsResult, cube_stats
    from .results import BuildResult, Progress
    from .sync import make_cube, make_stats
    from .verify import Check, Verification, verify_cube
    from .views.cut import cut_cube
    from .views.dataset import open_dataset
    from .views.plot import plot_cube
    from .views.refs import cube_refs, make_refs
