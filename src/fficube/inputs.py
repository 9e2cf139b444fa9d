"""Turn what the user gave (paths, directories, globs, URLs, prefixes) into a list of files.

Each file comes with its :class:`Version` (size, and mtime or ETag), which says
whether it changed between two runs of a build.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

from .errors import DuplicateInputWarning, InputError, LeftOutInputWarning, NoInputsError
from .products import PRODUCTS, Product
from .sources import open_source
from .sources.base import ByteSource, IOStats
from .sources.fsspec import Filesystems, fs_request
from .sources.locations import is_url, protocol_of, protocol_or_local
from .sources.policy import describe_failure, is_not_found
from .versions import Version, local_version, remote_version

__all__ = ["InputsLike", "Inputs", "resolve_inputs", "Version", "local_version", "remote_version", "version_of"]

InputsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


async def version_of(path: str, filesystems: Filesystems, *, output: bool = False) -> Version:
    """The version of the file at ``path`` now (``output``: asked with the output's credentials)."""
    protocol = protocol_or_local(path)
    if protocol is None:
        return local_version(path)
    fs = await filesystems.get(protocol, output=output)
    return remote_version(await fs_request(fs, "info", path, stats=filesystems.stats))


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _warn_left_out(place: str, names: Iterable[str], product: Product | None) -> None:
    """Warn that a directory or prefix searched for ``product`` holds FFIs of other products,
    left out (as ``product="auto"`` would refuse the mix): nothing is dropped unsaid."""
    if product is None:
        return
    others = [p for p in PRODUCTS.values() if p is not product]
    names = [posixpath.basename(n) for n in names]
    counts = [(p, sum(fnmatch.fnmatch(n, p.file_pattern) for n in names)) for p in others]
    left = ", ".join(f"{n} {p.name.upper()} FFI(s) ({p.file_pattern})" for p, n in counts if n)
    if left:
        asked = f"{product.name.upper()} FFIs ({product.file_pattern})"
        warnings.warn(f"{place}: {left} left out: only {asked} were asked for", LeftOutInputWarning, stacklevel=4)


def _directory_files(directory: str, product: Product | None) -> list[str]:
    products = [product] if product else list(PRODUCTS.values())
    found: dict[str, list[str]] = {}
    for p in PRODUCTS.values():
        # Searched recursively, as a remote prefix is: an archive's layout nests FFIs
        # in folders (sSSSS/YYYY/DDD/C-D/).
        pattern = os.path.join(glob.escape(directory), "**", p.file_pattern)
        found[p.name] = [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]
    files = sorted({f for p in products for f in found[p.name]})
    if not files:
        patterns = ", ".join(p.file_pattern for p in products)
        raise NoInputsError(f"no FFI files ({patterns}) in this directory or below it", path=directory)
    _warn_left_out(directory, (f for fs in found.values() for f in fs), product)
    return files


@dataclass(frozen=True)
class Inputs:
    """The files of a build: local paths, or URLs of one protocol with their versions."""

    paths: list[str]
    protocol: str | None = None  #: ``None`` for local files
    versions: dict[str, Version] = field(default_factory=dict)  #: URLs' sizes and ETags

    @property
    def sizes(self) -> dict[str, int]:
        """Each listed file's size."""
        return {path: version.size for path, version in self.versions.items()}

    @property
    def etags(self) -> dict[str, str]:
        """Each listed file's ETag as an HTTP entity tag, quoted (files without one are left out).

        The quotes are part of the tag (RFC 9110): S3 takes an ``If-Match`` without them,
        but stricter servers of the same API (nginx serving a bucket's files, measured)
        answer 412 to every read.
        """
        return {path: f'"{v.tag.removeprefix("etag:")}"' for path, v in self.versions.items()
                if v.tag.startswith("etag:")}

    async def source(self, filesystems: Filesystems, concurrency: int | None = None) -> ByteSource:
        """The byte source that reads these files: listed sizes cost no request, and reads
        of remote files are pinned to their listed version (ETag)."""
        return await open_source(self.protocol, filesystems, concurrency, sizes=self.sizes, etags=self.etags)

    def version(self, path: str) -> Version:
        """A file's size and mtime (local) or ETag (remote, as listed)."""
        return self.versions[path] if self.protocol else local_version(path)


def _local_files(items: list[str], product: Product | None) -> list[str]:
    files: list[str] = []
    for item in items:
        if os.path.isdir(item):
            files.extend(_directory_files(item, product))
        elif os.path.exists(item):
            files.append(item)
        elif _is_pattern(item):
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m))
            if not matches:
                raise NoInputsError("the pattern matches no file", path=item)
            files.extend(matches)
        else:
            raise InputError("no such file or directory", path=item)
    return files


async def resolve_inputs(
    inputs: InputsLike, product: Product | None = None, filesystems: Filesystems | None = None
) -> Inputs:
    """Expand ``inputs`` into files, in the order given (patterns and directories sorted).

    Local directories contribute the files matching the product's name pattern
    (``*ffic.fits`` for SPOC, ``*_img.fits`` for TICA); remote prefixes are searched
    recursively with the same patterns; globs work on both.  A file given twice is
    used once, with a :class:`DuplicateInputWarning`.

    Raises
    ------
    NoInputsError
        If nothing is given, or a pattern, directory or prefix yields no file.
    InputError
        If a named file does not exist, or local paths and URLs (or two protocols) mix.
    """
    items = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs]
    if not items:
        raise NoInputsError("no inputs given")
    protocols = {protocol_of(i) if is_url(i) else None for i in items}
    if len(protocols) > 1:
        kinds = ", ".join(sorted(p + "://" if p else "local paths" for p in protocols))
        raise InputError(f"the inputs mix {kinds}; give the FFIs of one cube from one place")
    protocol = protocols.pop()
    versions: dict[str, Version] = {}
    if protocol is None:
        files = _local_files(items, product)
    else:
        own = filesystems is None  # listing only: open a session just for it
        filesystems = filesystems or Filesystems()
        try:
            fs = await filesystems.get(protocol)
            files = []
            for item in items:
                found, found_versions = await _remote_files(item, fs, product, filesystems.stats)
                files.extend(found)
                versions.update(found_versions)
        finally:
            if own:
                await filesystems.aclose()
    seen: set[str] = set()
    unique: list[str] = []
    for f in files:
        key = f if protocol else os.path.realpath(f)
        if key in seen:
            warnings.warn(f"{f}: given more than once; used once", DuplicateInputWarning, stacklevel=3)
            continue
        seen.add(key)
        unique.append(f)
    return Inputs(unique, protocol, versions)


def _matches_product(name: str, products: Iterable[Product]) -> bool:
    return any(fnmatch.fnmatch(name, p.file_pattern) for p in products)


async def _remote_files(
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
        except Exception as exc:
            # An HTTP server's 403 reaches us as "not found" from some filesystems:
            # the status in the cause decides, so that "access denied" says so.
            if is_not_found(exc):
                raise InputError("no such object or prefix", path=url) from exc
            anonymous = bool(getattr(fs, "anon", False))
            raise InputError(f"cannot list: {describe_failure(exc, anonymous=anonymous)}", path=url) from exc

    if any(ch in url for ch in "*?["):
        found = await request("glob", detail=True)
        files = {full(p): remote_version(i) for p, i in found.items() if i.get("type") == "file"}
        if not files:
            raise NoInputsError("the pattern matches no object", path=url)
        return sorted(files), files
    info = await request("info")
    if info.get("type") == "directory":
        found = await request("find", detail=True)
        objects = [p for p, i in found.items() if i.get("type") == "file"]
        files = {full(p): remote_version(found[p]) for p in objects
                 if _matches_product(posixpath.basename(p), products)}
        if not files:
            patterns = ", ".join(p.file_pattern for p in products)
            raise NoInputsError(f"no FFI objects ({patterns}) under this prefix", path=url)
        _warn_left_out(url, objects, product)
        return sorted(files), files
    return [url], {url: remote_version(info)}
