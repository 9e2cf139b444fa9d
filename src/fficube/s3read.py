"""S3 reads through obstore (Rust's ``object_store``): the same GETs for a fraction of the CPU.

A build from S3 makes thousands of ranged GETs.  Through s3fs each one goes through
botocore's generic machinery (event hooks, user-agent and header objects, response
parsing with date parsing), measured at 2.3-3.5 ms of client CPU per 256 kB GET;
obstore signs and sends the same request from Rust for 0.8-1.1 ms, If-Match
included (``benchmarks/bench_s3_cpu.py``; README, Benchmarks).  At the thousands of GETs
per second a fast instance can take, that is the difference between a few cores of
client CPU and one.

Only the reads of inputs move here: listing, existence checks and the upload of the
cube stay with s3fs (few, large requests).  :func:`store_options` translates the
s3fs options the user gave (``anon``, ``endpoint_url``, ``key``/``secret``/``token``,
``requester_pays``, ``profile``, ``client_kwargs={"region_name": ...}``); credentials
come from botocore's own chain (environment, profile, instance or task role), as
s3fs's do.  Options it cannot translate, or no credentials, keep the reads on s3fs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .storage import RemoteSource

if TYPE_CHECKING:
    from obstore.store import S3Credential, S3Store

__all__ = ["ObstoreSource", "store_options", "StoreFailure", "available"]

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
    :func:`fficube.storage.is_transient` and ``describe_failure`` can judge it."""

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


def store_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``S3Store`` keyword arguments for s3fs ``options`` (bucket, region and
    credentials aside); None if some option has no equivalent.

    Pure: no credentials are looked up here.
    """
    if not set(options) <= KNOWN:
        return None
    client_kwargs = dict(options.get("client_kwargs") or {})
    config_kwargs = dict(options.get("config_kwargs") or {})
    if not set(client_kwargs) <= {"region_name", "endpoint_url"} or not set(config_kwargs) <= CLIENT_TUNING:
        return None
    out: dict[str, Any] = {"retry_config": {"max_retries": 0}}  # retries are fficube's, counted and bounded
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        out["endpoint"] = str(endpoint)
        out["virtual_hosted_style_request"] = False
        if str(endpoint).startswith("http://"):
            out["client_options"] = {"allow_http": True}
    if client_kwargs.get("region_name"):
        out["region"] = str(client_kwargs["region_name"])
    if options.get("requester_pays"):
        out["request_payer"] = True
    if options.get("anon"):
        out["skip_signature"] = True
    elif options.get("key") and options.get("secret"):
        out["access_key_id"], out["secret_access_key"] = str(options["key"]), str(options["secret"])
        if options.get("token"):
            out["session_token"] = str(options["token"])
    return out


class _BotocoreCredentials:
    """Credentials from botocore's chain, handed to obstore when it asks."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> S3Credential:
        frozen = self.credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key, "token": frozen.token,
                "expires_at": dt.datetime.now(dt.UTC) + CREDENTIAL_REUSE}


def _botocore_session(profile: str | None) -> Any:
    import botocore.session

    return botocore.session.Session(profile=profile)


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

    def __init__(self, fs: Any, base: dict[str, Any], credentials: Any, region: str | None,
                 concurrency: int = 32, **kwargs: Any) -> None:
        super().__init__(concurrency, **kwargs)
        self.fs = fs  #: the s3fs filesystem of the same options (to find a bucket's region)
        self._base, self._credentials, self._region = base, credentials, region
        self.anonymous = bool(base.get("skip_signature"))
        self._stores: dict[str, S3Store] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, fs: Any, options: Mapping[str, Any], concurrency: int, **kwargs: Any) -> ObstoreSource | None:
        """The source for s3fs ``fs`` made with ``options``, or None to keep reads on s3fs."""
        base = store_options(options) if available() else None
        if base is None:
            return None
        credentials = None
        region = base.pop("region", None) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        signed_by_chain = not base.get("skip_signature") and "access_key_id" not in base
        if signed_by_chain or region is None:
            session = await asyncio.to_thread(_botocore_session, options.get("profile"))
            if signed_by_chain:
                credentials = await asyncio.to_thread(session.get_credentials)
                if credentials is None:
                    return None  # s3fs decides what no credentials means
            region = region or session.get_config_variable("region")
        if region is None and "endpoint" in base:
            region = "us-east-1"  # a custom endpoint (MinIO, moto...): the region only enters the signature
        return cls(fs, base, credentials, region, concurrency, **kwargs)

    async def _store(self, bucket: str) -> S3Store:
        if bucket not in self._stores:
            async with self._lock:
                if bucket not in self._stores:
                    from obstore.store import S3Store

                    region = self._region or await _bucket_region(self.fs, bucket) or "us-east-1"
                    options = dict(self._base)
                    if "endpoint" not in options:  # AWS: virtual-hosted style, as botocore uses it
                        options["virtual_hosted_style_request"] = "." not in bucket
                    provider = _BotocoreCredentials(self._credentials) if self._credentials is not None else None
                    self._stores[bucket] = S3Store(bucket, region=region, credential_provider=provider, **options)
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
