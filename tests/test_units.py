"""Sizes as people write them (fficube.units)."""

from __future__ import annotations

import pytest

from fficube.units import format_bytes, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GB", 4 * 10**9), ("512 MiB", 512 * 2**20), ("1.5MB", 1_500_000), ("2e3", 2000), (" 7 kib ", 7 * 1024),
     (2_000_000, 2_000_000), (3.5e9, 3_500_000_000), ("10b", 10), ("1TB", 10**12)],
)
def test_parse_size_reads_units(text: str | int | float, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "", "4 parsecs", "-1GB", 0, -5, True, "GB", "1.2.3MB"])
def test_parse_size_refuses_what_is_not_a_positive_size(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)  # type: ignore[arg-type]


def test_format_bytes_uses_decimal_units() -> None:
    assert [format_bytes(n) for n in (999, 1000, 1_234_567, 4 * 10**9, 3 * 10**12)] == [
        "999 B", "1.0 kB", "1.2 MB", "4.0 GB", "3.0 TB"]
