"""Synchronous twins of the async API: each runs its coroutine with ``asyncio.run``.

``fficube.make_cube`` is :func:`make_cube`; the update's twin is ``fficube.sync.update_cube``
(``fficube.update_cube`` is the async one).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from . import build as _async
from .errors import EventLoopError

__all__ = ["make_cube", "update_cube"]

P = ParamSpec("P")
T = TypeVar("T")


def _run(async_fn: Callable[P, Coroutine[Any, Any, T]], name: str) -> Callable[P, T]:
    def decorate(sync_fn: Callable[P, Any]) -> Callable[P, T]:
        @functools.wraps(sync_fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                running = False
            else:
                running = True
            if not running:  # outside the except block: errors carry no stray context
                return asyncio.run(async_fn(*args, **kwargs))
            raise EventLoopError(
                f"{name}() cannot run inside a running event loop; "
                f"use 'await fficube.{async_fn.__name__}(...)' instead"
            )

        return wrapper

    return decorate


@_run(_async.build_cube, "make_cube")
def make_cube(*args: Any, **kwargs: Any) -> _async.BuildResult:
    """Build a cube; the same arguments as :func:`fficube.build_cube`, run to completion."""
    raise AssertionError("replaced by the wrapper")


@_run(_async.update_cube, "fficube.sync.update_cube")
def update_cube(*args: Any, **kwargs: Any) -> _async.BuildResult:
    """Update a cube; the same arguments as :func:`fficube.update_cube`, run to completion."""
    raise AssertionError("replaced by the wrapper")
