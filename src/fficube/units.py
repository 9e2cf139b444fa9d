"""Sizes as people write them: ``"4GB"``, ``"512 MiB"``, ``2_000_000_000``."""

from __future__ import annotations

import re

__all__ = ["parse_size", "format_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from a number of bytes or a string with a unit (decimal kB/MB/GB/TB, binary KiB/MiB/GiB/TiB).

    Raises
    ------
    ValueError
        If the value is not a positive size.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        size = value
    else:
        match = _SIZE.match(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"not a size: {value!r} (write it like '4GB', '512MiB' or a number of bytes)")
        size = float(match.group(1)) * _UNITS[unit]
    if not size > 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return int(size)


def format_bytes(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as sizes are given)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
