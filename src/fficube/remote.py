"""Remote locations: fsspec URLs for inputs and outputs, one session per build.

:class:`Filesystems` opens at most one filesystem per protocol for a build, with the
user's ``anon`` and ``storage_options``, and closes their sessions at the end.  s3fs's
and botocore's own retries are turned off, so that every retry goes through
:func:`fficube.storage.retrying`, where it is bounded, backed off and counted.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec

from .errors import InputError, NoInputsError
from .journal import Version, remote_version
from .products import PRODUCTS, Product
from .storage import IOStats, describe_failure, fs_request

__all__ = ["is_url", "protocol_of", "Filesystems", "resolve_remote", "S3_PROTOCOLS"]

S3_PROTOCOLS = ("s3", "s3a")


def is_url(path: str) -> bool:
    """True for ``proto://...`` locations other than local files."""
    return "://" in path and not path.startswith("file://")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


class Filesystems:
    """The fsspec filesystems of one build, opened on first use, closed by :meth:`aclose`."""

    def __init__(self, *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        self.stats = IOStats()  #: listing and existence requests
        self.anon = anon
        self.storage_options = dict(storage_options or {})
        self._open: dict[str, Any] = {}
        self._sessions: list[Any] = []

    def options_for(self, protocol: str, *, output: bool = False) -> dict[str, Any]:
        """The keyword arguments the filesystem of ``protocol`` is created with.

        ``anon`` applies to inputs only: a cube read from a public bucket is written
        to the user's own bucket with the user's credentials.
        """
        cls = fsspec.get_filesystem_class(protocol)
        options = dict(self.storage_options)
        if protocol in S3_PROTOCOLS:
            if self.anon is not None and not output:
                options["anon"] = self.anon
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("retries", {"mode": "standard", "total_max_attempts": 1})
            options["config_kwargs"] = config
        if getattr(cls, "async_impl", False):
            options["asynchronous"] = True
        options["skip_instance_cache"] = True  # a session of our own, closed by us
        return options

    async def get(self, protocol: str, *, output: bool = False) -> Any:
        """The filesystem for ``protocol`` (for the output: without ``anon``), session open."""
        options = self.options_for(protocol, output=output)
        key = repr(sorted(options.items()))
        if key not in self._open:  # one session per distinct filesystem
            cls = fsspec.get_filesystem_class(protocol)
            fs = cls(**options)
            if protocol in S3_PROTOCOLS:
                fs.retries = 1  # one attempt per call: fficube retries, visibly and bounded
            if getattr(cls, "async_impl", False) and hasattr(fs, "set_session"):
                self._sessions.append(await fs.set_session())
            self._open[key] = fs
        return self._open[key]

    async def aclose(self) -> None:
        sessions, self._sessions, self._open = self._sessions, [], {}
        for session in sessions:
            close = getattr(session, "close", None)
            if close is not None:
                await close()


def _matches_product(name: str, products: Iterable[Product]) -> bool:
    return any(fnmatch.fnmatch(name, p.file_pattern) for p in products)


async def resolve_remote(
    url: str, fs: Any, product: Product | None, stats: IOStats
) -> tuple[list[str], dict[str, Version]]:
    """Files behind one URL: an object, a prefix (searched recursively) or a glob.

    Returns the URLs, sorted, and their versions: sizes (so that scanning needs no
    extra request) and ETags (so that a resumed build knows whether they changed).

    Raises
    ------
    NoInputsError
        If a prefix or pattern yields no FFI.
    InputError
        If a named object does not exist.
    """
    protocol = protocol_of(url)
    products = [product] if product else list(PRODUCTS.values())

    def full(path: str) -> str:
        return path if "://" in path else f"{protocol}://{path}"

    async def request(name: str, **kwargs: Any) -> Any:
        try:
            return await fs_request(fs, name, url, stats=stats, **kwargs)
        except FileNotFoundError as exc:
            raise InputError("no such object or prefix", path=url) from exc
        except Exception as exc:
            raise InputError(f"cannot list: {describe_failure(exc)}", path=url) from exc

    if any(ch in url for ch in "*?["):
        found = await request("glob", detail=True)
        files = {full(p): remote_version(i) for p, i in found.items() if i.get("type") == "file"}
        if not files:
            raise NoInputsError("the pattern matches no object", path=url)
        return sorted(files), files
    info = await request("info")
    if info.get("type") == "directory":
        found = await request("find", detail=True)
        files = {
            full(p): remote_version(i) for p, i in found.items()
            if i.get("type") == "file" and _matches_product(posixpath.basename(p), products)
        }
        if not files:
            patterns = ", ".join(p.file_pattern for p in products)
            raise NoInputsError(f"no FFI objects ({patterns}) under this prefix", path=url)
        return sorted(files), files
    return [url], {url: remote_version(info)}
