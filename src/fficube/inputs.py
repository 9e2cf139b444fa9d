"""Turn what the user gave (paths, directories, globs, URLs, prefixes) into a list of files."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from .errors import InputError, NoInputsError
from .journal import Version, local_version
from .products import PRODUCTS, Product

if TYPE_CHECKING:
    from .remote import Filesystems

__all__ = [
    "InputsLike", "Inputs", "resolve_inputs", "DuplicateInputWarning", "FficubeWarning", "TemplateWarning",
]

InputsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


class FficubeWarning(UserWarning):
    """Base class of fficube's warnings."""


class DuplicateInputWarning(FficubeWarning):
    """The same file was given more than once; it is used once."""


class TemplateWarning(FficubeWarning):
    """The info-table template has no WCS, so cutout tools will find none in the cube."""


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _directory_files(directory: str, product: Product | None) -> list[str]:
    products = [product] if product else list(PRODUCTS.values())
    found: set[str] = set()
    for p in products:
        found.update(glob.glob(os.path.join(glob.escape(directory), p.file_pattern)))
    if not found:
        patterns = ", ".join(p.file_pattern for p in products)
        raise NoInputsError(f"no FFI files ({patterns}) in this directory", path=directory)
    return sorted(found)


@dataclass(frozen=True)
class Inputs:
    """The files of a build: local paths, or URLs of one protocol with their versions."""

    paths: list[str]
    protocol: str | None = None  #: ``None`` for local files
    versions: dict[str, Version] = field(default_factory=dict)  #: URLs' sizes and ETags

    @property
    def sizes(self) -> dict[str, int]:
        return {path: version.size for path, version in self.versions.items()}

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
    from .remote import Filesystems, is_url, protocol_of, resolve_remote

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
                found, found_versions = await resolve_remote(item, fs, product, filesystems.stats)
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
