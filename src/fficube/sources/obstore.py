"""S3 reads through obstore (Rust's ``object_store``): the same GETs for a fraction of the CPU.

A build from S3 makes thousands of ranged GETs.  Through s3fs each one goes through
botocore's generic machinery (event hooks, user-agent and header objects, response
parsing with date parsing), measured at 2.3-3.5 ms of client CPU per 256 kB GET;
obstore signs and sends the same request from Rust for 0.8-1.1 ms, If-Match
included (``benchmarks/bench_s3_cpu.py``; README, Benchmarks).  At the thousands of GETs
per second a fast instance can take, that is the difference between a few cores of
client CPU and one.

Only the reads of inputs move here: listing, existence checks and the upload of the
cube stay with s3fs (few, large requests).  Both clients work from one
:class:`~fficube.sources.s3settings.S3Settings`, resolved from the storage options and the AWS
configuration (:mod:`fficube.sources.s3settings`): :func:`store_options` gives obstore every
setting outright, so that obstore's own reading of ``AWS_*`` variables cannot differ
from botocore's.  Options obstore has no word for (:func:`carries_over`), or no
credentials, keep the reads on s3fs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .remote import RemoteSource
from .s3settings import OBSTORE_ENDPOINT_VARIABLES, S3Settings

if TYPE_CHECKING:
    from obstore.store import S3Credential, S3Store

__all__ = ["ObstoreSource", "carries_over", "store_options", "bucket_options", "StoreFailure", "available"]

#: s3fs options :func:`store_options` knows how to carry over.
KNOWN = frozenset({"anon", "endpoint_url", "key", "secret", "token", "requester_pays", "profile", "client_kwargs",
                   "config_kwargs", "asynchronous", "skip_instance_cache"})
#: botocore ``config_kwargs`` that only tune the client s3fs makes (pool, retries, timeouts).
CLIENT_TUNING = frozenset({"retries", "max_pool_connections", "connect_timeout", "read_timeout"})
STATUS = re.compile(r"status code: (\d{3})")
#: How long obstore may use credentials before asking botocore again (which refreshes
#: instance-role and SSO credentials itself when they are about to expire).
CREDENTIAL_REUSE = dt.timedelta(minutes=5)
#: Chunks a large read is copied into its buffer in: a read never holds more than
#: about this much beside the buffer, however large the read.
STREAM_CHUNK = 2**20


def available() -> bool:
    """Whether obstore can be imported here."""
    try:
        import obstore  # noqa: F401
    except ImportError:
        return False
    return True


class StoreFailure(OSError):
    """An obstore error with the HTTP status it reported (None: no answer), so that
    :func:`fficube.sources.policy.is_transient` and ``describe_failure`` can judge it."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def translate(exc: Exception) -> Exception:
    """An obstore exception as a builtin-typed one that carries its HTTP status."""
    from obstore import exceptions as errors

    status: int | None
    if isinstance(exc, FileNotFoundError | errors.NotFoundError):
        status = 404
    elif isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
        status = 403
    elif isinstance(exc, errors.PreconditionError):
        status = 412
    else:
        found = STATUS.search(str(exc))
        status = int(found.group(1)) if found else None
    message = str(exc).split("\n\nDebug source:", 1)[0]  # the Rust debug dump is for obstore's developers
    return StoreFailure(message, status)


def carries_over(options: Mapping[str, Any]) -> bool:
    """Whether obstore can make the requests s3fs ``options`` describe (else the reads stay on s3fs).

    Pure: no configuration is read here.
    """
    if not set(options) <= KNOWN:
        return False
    client_kwargs = dict(options.get("client_kwargs") or {})
    config_kwargs = dict(options.get("config_kwargs") or {})
    return set(client_kwargs) <= {"region_name", "endpoint_url"} and set(config_kwargs) <= CLIENT_TUNING


def store_options(settings: S3Settings) -> dict[str, Any]:
    """The ``S3Store`` keyword arguments for resolved S3 ``settings`` (bucket, region and
    refreshable credentials aside: :func:`bucket_options`).

    obstore reads ``AWS_*`` variables by itself; every setting that one could change is
    given here outright, so that the settings, not obstore's own reading of the
    environment, decide.  Pure.
    """
    out: dict[str, Any] = {
        "retry_config": {"max_retries": 0},  # retries are fficube's, counted and bounded
        "skip_signature": settings.anonymous,
        "request_payer": settings.requester_pays,
    }
    endpoint = settings.endpoint_url
    if endpoint:
        # A custom endpoint: path-style (its host names no bucket), plain HTTP if it says so.
        # ``aws_endpoint_url_s3`` as well, since obstore prefers it to ``endpoint``.
        out["endpoint"] = out["aws_endpoint_url_s3"] = endpoint
        out["virtual_hosted_style_request"] = False
        out["client_options"] = {"allow_http": endpoint.startswith("http://")}
    if settings.static_credentials is not None:
        key, secret, token = settings.static_credentials
        out["access_key_id"], out["secret_access_key"] = key, secret
        if token:
            out["session_token"] = token
    return out


def bucket_options(base: Mapping[str, Any], bucket: str, region: str,
                   environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The ``S3Store`` keyword arguments for ``bucket`` in ``region``, from :func:`store_options`'s ``base``.

    On AWS itself requests go virtual-hosted, as botocore sends them (path-style for a
    bucket whose name has dots, which no certificate covers).  If the environment names
    an endpoint that obstore would take up although the settings have none (botocore
    was told to ignore it, ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, or does not read
    it, ``AWS_ENDPOINT``), the bucket's AWS endpoint is given outright.  Pure.
    """
    options = {**base, "region": region}
    if "endpoint" in base:
        return options
    virtual = "." not in bucket
    options["virtual_hosted_style_request"] = virtual
    if any(environ.get(v) for v in OBSTORE_ENDPOINT_VARIABLES):
        host = f"{bucket}.s3.{region}.amazonaws.com" if virtual else f"s3.{region}.amazonaws.com"
        options["endpoint"] = options["aws_endpoint_url_s3"] = f"https://{host}"
    return options


class _BotocoreCredentials:
    """Credentials from botocore's chain, handed to obstore when it asks."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> S3Credential:
        frozen = self.credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key, "token": frozen.token,
                "expires_at": dt.datetime.now(dt.UTC) + CREDENTIAL_REUSE}


async def _bucket_region(fs: Any, bucket: str) -> str | None:
    """The region S3 says ``bucket`` is in (one HEAD, answered even when it is refused)."""
    try:
        response = await fs.s3.head_bucket(Bucket=bucket)
    except Exception as exc:  # a 301 or 403 still names the region
        response = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


class ObstoreSource(RemoteSource):
    """Reads ``s3://`` byte ranges with obstore, one ``S3Store`` per bucket.

    Build it with :meth:`open`, which returns None when the reads should stay on s3fs.
    """

    def __init__(self, fs: Any, settings: S3Settings, concurrency: int = 32, **kwargs: Any) -> None:
        super().__init__(concurrency, **kwargs)
        self.fs = fs  #: the s3fs filesystem of the same settings (to find a bucket's region)
        self.settings = settings
        self._base = store_options(settings)
        self.anonymous = settings.anonymous
        self._stores: dict[str, S3Store] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, fs: Any, options: Mapping[str, Any], settings: S3Settings, concurrency: int,
                   **kwargs: Any) -> ObstoreSource | None:
        """The source for s3fs ``fs`` made with ``options`` and ``settings``, or None to
        keep the reads on s3fs (an option obstore has no word for; no credentials found,
        where s3fs decides what that means)."""
        if not available() or not carries_over(options):
            return None
        if settings.signed and settings.credentials is None:
            return None
        return cls(fs, settings, concurrency, **kwargs)

    async def _region(self, bucket: str) -> str:
        """The region to sign for: on AWS the bucket's own (its HEAD says, whatever region is
        configured: a request signed for another is refused), else the configured one."""
        found = None if self.settings.endpoint_url else await _bucket_region(self.fs, bucket)
        # A custom endpoint (MinIO, moto...) without a region: it only enters the signature.
        return found or self.settings.region or "us-east-1"

    async def _store(self, bucket: str) -> S3Store:
        if bucket not in self._stores:
            async with self._lock:
                if bucket not in self._stores:
                    from obstore.store import S3Store

                    options = bucket_options(self._base, bucket, await self._region(bucket))
                    credentials = self.settings.credentials
                    provider = _BotocoreCredentials(credentials) if credentials is not None else None
                    self._stores[bucket] = S3Store(bucket, credential_provider=provider, **options)
        return self._stores[bucket]

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        bucket, _, key = path.split("://", 1)[-1].partition("/")
        return bucket, key

    async def _range(self, path: str, start: int, stop: int, etag: str | None) -> Any:
        import obstore

        bucket, key = self._split(path)
        store = await self._store(bucket)
        try:
            if etag is None:
                return await obstore.get_range_async(store, key, start=start, end=stop)
            result = await obstore.get_async(store, key, options={"range": (start, stop), "if_match": etag})
            return await result.bytes_async()
        except Exception as exc:
            raise translate(exc) from exc

    async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
        import obstore

        bucket, key = self._split(path)
        store = await self._store(bucket)
        options: dict[str, Any] = {"range": (start, start + len(buf))}
        if etag is not None:
            options["if_match"] = etag
        filled = 0
        try:
            result = await obstore.get_async(store, key, options=options)  # type: ignore[arg-type]
            if len(buf) <= STREAM_CHUNK:
                # One chunk at most: the whole body in one call costs a third less CPU
                # per GET than a stream (each chunk, and the stream's end, is another
                # future handed from obstore's threads to the event loop).
                data = memoryview(await result.bytes_async())
                if len(data) > len(buf):
                    raise StoreFailure(f"more bytes than the {len(buf)} asked for", None)
                buf[: len(data)] = data
                return len(data)
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                if filled + len(chunk) > len(buf):
                    raise StoreFailure(f"more bytes than the {len(buf)} asked for", None)
                buf[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        except StoreFailure:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return filled

    async def _size(self, path: str) -> int:
        import obstore

        bucket, key = self._split(path)
        store = await self._store(bucket)
        try:
            meta = await obstore.head_async(store, key)
        except Exception as exc:
            raise translate(exc) from exc
        return int(meta["size"])
