"""Synchronous twins of the async API, for scripts and notebooks.

``fficube.make_cube`` is :func:`make_cube` (the twin of :func:`fficube.build_cube`);
``fficube.sync.update_cube``, ``verify_cube``, ``describe_cube``, ``cut_cube`` and
``cut_targets`` are the twins of the async functions of the same names.  Each takes exactly the arguments of its
async original (its signature is the original's, for editors and type checkers).

Where the calling thread runs no event loop (a script), the coroutine runs with
``asyncio.run``.  Where it does (a Jupyter cell: the kernel's loop is running), the
coroutine runs on an event loop of its own in a worker thread while the caller
waits, as fsspec and zarr do; Ctrl-C (a kernel interrupt) cancels it there, its
clean-up runs, and ``KeyboardInterrupt`` reaches the caller, as in a script.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from .access import describe_cube as _describe_cube
from .build import build_cube as _build_cube
from .build import update_cube as _update_cube
from .errors import EventLoopError
from .pixelstats import cube_stats as _cube_stats
from .verify import verify_cube as _verify_cube
from .views.cut import cut_cube as _cut_cube
from .views.cut import cut_targets as _cut_targets

__all__ = ["make_cube", "update_cube", "verify_cube", "describe_cube", "make_stats", "cut_cube", "cut_targets", "run"]

P = ParamSpec("P")
T = TypeVar("T")

#: Name prefix of the threads that run fficube's coroutines for a caller whose thread has a loop.
THREAD_NAME = "fficube-sync"


class _Runner:
    """Runs one coroutine on a fresh event loop in a worker thread, cancellable from the caller."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.started = threading.Event()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        async def main() -> Any:
            self.loop, self.task = asyncio.get_running_loop(), asyncio.current_task()
            self.started.set()
            return await self.coro

        try:
            self.result = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.started.set()
            self.done.set()

    def cancel(self) -> None:
        self.started.wait()
        if self.loop is not None and self.task is not None:
            try:
                self.loop.call_soon_threadsafe(self.task.cancel)
            except RuntimeError:  # the loop has already closed: nothing left to cancel
                pass


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, whether or not this thread runs a loop.

    Raises
    ------
    EventLoopError
        If called from a coroutine that fficube itself is running for a synchronous
        caller (a progress callback calling a sync twin): that would stall the build
        it is called from.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:
        # Outside the except clause: an error of the build must not be shown as raised
        # "during handling of" the RuntimeError that said there was no loop.
        return asyncio.run(coro)  # no loop in this thread: a script
    if threading.current_thread().name.startswith(THREAD_NAME):
        coro.close()
        raise EventLoopError("a synchronous fficube function cannot be called from inside a running fficube "
                             "call (a progress callback, say); use the async function with 'await' instead")
    runner = _Runner(coro)
    thread = threading.Thread(target=runner, name=f"{THREAD_NAME}-{id(runner):x}", daemon=True)
    thread.start()
    # Waits on an Event, not on Thread.join: a join interrupted by Ctrl-C can leave the
    # thread looking finished while it runs (CPython's tstate lock), and the clean-up
    # must really be over before KeyboardInterrupt goes on.
    try:
        while not runner.done.wait(0.1):  # a timed wait, so that Ctrl-C reaches this thread promptly
            pass
    except KeyboardInterrupt:
        runner.cancel()
        runner.done.wait()  # let the build clean up (partial files, uploads) before going on
        thread.join()
        raise
    thread.join()
    if runner.error is not None:
        raise runner.error
    result: T = runner.result
    return result


def _twin(async_fn: Callable[P, Coroutine[Any, Any, T]], name: str) -> Callable[P, T]:
    """The synchronous twin of ``async_fn``: the same parameters, run with :func:`run`."""

    @functools.wraps(async_fn)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        # A warning raised inside the coroutine would point into asyncio's event loop: it
        # is held and raised again here, at the caller's line, under the caller's filters
        # (a filter that makes it an error has already raised it, inside).
        held: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                try:
                    return run(async_fn(*args, **kwargs))
                finally:
                    held = list(caught)
        finally:
            for warning in held:
                warnings.warn(warning.message, warning.category, stacklevel=2)

    twin.__name__ = twin.__qualname__ = name
    twin.__doc__ = (
        f"Synchronous twin of :func:`fficube.{async_fn.__name__}`: the same arguments, run to completion "
        f"(also from a thread whose event loop is running, such as a notebook cell).\n\n"
        + (async_fn.__doc__ or "")
    )
    return twin


make_cube = _twin(_build_cube, "make_cube")
update_cube = _twin(_update_cube, "update_cube")
verify_cube = _twin(_verify_cube, "verify_cube")
describe_cube = _twin(_describe_cube, "describe_cube")
make_stats = _twin(_cube_stats, "make_stats")
cut_cube = _twin(_cut_cube, "cut_cube")
cut_targets = _twin(_cut_targets, "cut_targets")
