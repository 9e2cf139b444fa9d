"""Synchronous twins of the async API: each runs its coroutine with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from .build import BuildResult, build_cube
from .errors import EventLoopError

__all__ = ["make_cube"]

P = ParamSpec("P")
T = TypeVar("T")


def _run(async_fn: Callable[P, Coroutine[Any, Any, T]], name: str) -> Callable[P, T]:
    def decorate(sync_fn: Callable[P, Any]) -> Callable[P, T]:
        @functools.wraps(sync_fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(async_fn(*args, **kwargs))
            raise EventLoopError(
                f"{name}() cannot run inside a running event loop; "
                f"use 'await fficube.{async_fn.__name__}(...)' instead"
            )

        return wrapper

    return decorate


@_run(build_cube, "make_cube")
def make_cube(*args: Any, **kwargs: Any) -> BuildResult:
    """Build a cube; the same arguments as :func:`fficube.build_cube`, run to completion."""
    raise AssertionError("replaced by the wrapper")
