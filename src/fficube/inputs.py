"""Turn what the user gave (paths, directories, glob patterns) into a list of files."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from typing import Union

from .errors import InputError, NoInputsError
from .products import PRODUCTS, Product

__all__ = ["InputsLike", "resolve_inputs", "DuplicateInputWarning", "FficubeWarning", "TemplateWarning"]

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


def resolve_inputs(inputs: InputsLike, product: Product | None = None) -> list[str]:
    """Expand ``inputs`` into files, in the order given (patterns and directories sorted).

    A directory contributes the files matching the product's name pattern
    (``*ffic.fits`` for SPOC, ``*_img.fits`` for TICA).  A file given twice is used
    once, with a :class:`DuplicateInputWarning`.

    Raises
    ------
    NoInputsError
        If nothing is given, or a pattern or directory yields no file.
    InputError
        If a named file does not exist.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise NoInputsError("no inputs given")
    files: list[str] = []
    for item in map(os.fspath, items):
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
    seen: dict[str, str] = {}
    unique: list[str] = []
    for f in files:
        key = os.path.realpath(f)
        if key in seen:
            warnings.warn(f"{f}: given more than once; used once", DuplicateInputWarning, stacklevel=3)
            continue
        seen[key] = f
        unique.append(f)
    return unique
