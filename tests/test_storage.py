"""Retries decided by failure kind (fficube.storage.is_transient) and carried out by retrying."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from botocore.exceptions import ClientError

from fficube.storage import IOStats, RetryPolicy, is_transient, retrying


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def http_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(request_info=None, history=(), status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [client_error(503, "ServiceUnavailable"), client_error(500, "InternalError"), client_error(400, "RequestTimeout"),
     client_error(503, "SlowDown"), client_error(429, "TooManyRequests"), http_error(502), http_error(429),
     ConnectionResetError("reset"), TimeoutError(), aiohttp.ServerDisconnectedError()],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [client_error(403, "AccessDenied"), client_error(404, "NoSuchKey"), client_error(416, "InvalidRange"),
     http_error(403), http_error(404), FileNotFoundError("x"), PermissionError("x"), ValueError("x"),
     asyncio.CancelledError()],
)
def test_permanent_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_cause_decides_for_the_error_raised_from_it() -> None:
    try:
        try:
            raise client_error(503, "SlowDown")
        except ClientError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        assert is_transient(outer)


async def test_retrying_retries_transient_failures_and_counts_them() -> None:
    stats, calls = IOStats(), []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "done"

    assert await retrying(flaky, policy=RetryPolicy(base=0.0), stats=stats, what="read") == "done"
    assert len(calls) == 3 and stats.retries == 2


async def test_retrying_gives_up_after_its_attempts_and_at_once_on_permanent_failures() -> None:
    stats, calls = IOStats(), []

    async def down() -> None:
        calls.append(1)
        raise client_error(503, "ServiceUnavailable")

    with pytest.raises(ClientError):
        await retrying(down, policy=RetryPolicy(attempts=4, base=0.0), stats=stats, what="read")
    assert len(calls) == 4 and stats.retries == 3

    async def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        await retrying(missing, policy=RetryPolicy(base=0.0), stats=IOStats(), what="read")
    assert len(calls) == 1
