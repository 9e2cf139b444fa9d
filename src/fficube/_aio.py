"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["first_error", "run_tasks", "task_group", "closing"]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=_Closable)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that caused a task group to fail.

    ``asyncio.TaskGroup`` wraps failures in an ``ExceptionGroup``; callers of fficube
    want the one error that stopped the build (a file that could not be read, say),
    not the group, and not the ``CancelledError`` of the tasks stopped because of it.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else group


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` that re-raises the first real error unwrapped, for tasks
    that start more tasks (see :func:`run_tasks`)."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        exc = first_error(group)
        # Keep the error's own cause (``raise ... from backend_error``); hide the group.
        exc.__suppress_context__ = True
        raise exc  # noqa: B904 (the group is hidden on purpose; the cause is the error's own)


async def run_tasks(coros: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Run coroutines in one task group; re-raise the first real error unwrapped."""
    async with task_group() as tg:
        for coro in coros:
            tg.create_task(coro)


@asynccontextmanager
async def closing(resource: C) -> AsyncIterator[C]:
    """Use ``resource`` and close it at the end, even when the block is cancelled.

    The close is shielded: a cancelled build must still release its threads,
    descriptors and sessions before the cancellation goes on.
    """
    try:
        yield resource
    finally:
        await asyncio.shield(resource.aclose())
