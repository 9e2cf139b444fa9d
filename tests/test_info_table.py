"""The info table's columns from image headers (fficube.info_table), pure."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits

from fficube.info_table import ColumnSpec, column_values, template_columns


def header(cards: dict[str, object], comments: list[str] = ()) -> fits.Header:  # type: ignore[assignment]
    h = fits.Header()
    for key, value in cards.items():
        h[key] = value
    for text in comments:
        h.add_comment(text)
    return h


def test_template_columns_follow_the_template_cards_and_types() -> None:
    template = header({"CAMERA": 2, "EXPOSURE": 1.98, "DATE-OBS": "2018-07-25", "SIMPLE": True}, ["a"])
    template["CAMERA"] = (2, "camera number")
    columns = template_columns(template)
    assert [(c.name, c.kind) for c in columns] == [
        ("CAMERA", "J"), ("EXPOSURE", "D"), ("DATE-OBS", "A"), ("SIMPLE", "J"), ("COMMENT", "A")]
    assert columns[0].comment == "camera number"


def test_column_values_fill_missing_values_and_size_strings_by_the_longest() -> None:
    columns = [ColumnSpec("CAMERA", "J", ""), ColumnSpec("EXPOSURE", "D", ""),
               ColumnSpec("OBJECT", "A", "")]
    headers = [header({"CAMERA": 1, "EXPOSURE": 2.5, "OBJECT": "ab"}), header({"OBJECT": "a much longer value"})]
    values = column_values(columns, headers, ["first.fits", "second-longer-name.fits"])
    assert values["CAMERA"].tolist() == [1, 0] and values["CAMERA"].dtype == np.int32
    assert values["EXPOSURE"][0] == 2.5 and np.isnan(values["EXPOSURE"][1])
    assert values["OBJECT"].tolist() == [b"ab", b"a much longer value"] and values["OBJECT"].dtype == "S19"
    assert values["FFI_FILE"].tolist() == [b"first.fits", b"second-longer-name.fits"]


def test_large_integers_widen_the_column_instead_of_wrapping() -> None:
    columns = [ColumnSpec("BIG", "J", "")]
    values = column_values(columns, [header({"BIG": 1}), header({"BIG": 2**40})], ["a", "b"])
    assert values["BIG"].dtype == np.int64 and values["BIG"].tolist() == [1, 2**40]


def test_commentary_cards_are_joined_and_bad_numbers_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    columns = [ColumnSpec("COMMENT", "A", ""), ColumnSpec("GAIN", "D", ""), ColumnSpec("NREADS", "J", "")]
    headers = [header({"GAIN": "high", "NREADS": "many"}, ["line one", "line two"])]
    with caplog.at_level(logging.WARNING, logger="fficube"):
        values = column_values(columns, headers, ["x.fits"])
    assert values["COMMENT"].tolist() == [b"line one line two"]  # printable: a cutout copies it into a card
    assert np.isnan(values["GAIN"][0]) and values["NREADS"][0] == 0
    assert "x.fits: GAIN = 'high' is not a number" in caplog.text and "NREADS" in caplog.text
