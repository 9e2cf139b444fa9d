"""The quality report that ``fficube plot --report`` reads: the one definition.

A quality gate (not part of fficube yet) judges each FFI of a cube and writes its
verdict as JSON.  The minimal schema fficube reads is::

    {
      "ffis": [
        {"file": "tess2018206192942-s0001-1-1-0120-s_ffic.fits", "time": 1325.3131, "flags": ["scattered_light"]},
        {"file": "tess2018206195942-s0001-1-1-0120-s_ffic.fits", "time": 1325.3339, "flags": []}
      ]
    }

``ffis``
    A list with one object per judged FFI (FFIs left out have no flags).
``file``
    The FFI's file name as in the cube's ``FFI_FILE`` column (a path or URL is
    reduced to its base name).
``time``
    The FFI's start time as in the cube's table (``TSTART`` for SPOC, ``STARTTJD`` for
    TICA), in days; used to find the FFI when no FFI has that file name.
``flags``
    Short names of what the gate found (an empty list: nothing).

Other keys, at the top or in an entry, are ignored, so that a gate may say more.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ReportEntry", "QualityReport", "parse_report", "read_report", "match_report", "TIME_TOLERANCE"]

#: How close (days) a report's time must be to an FFI's start time to name it: about
#: a second, far below any cadence and far above rounding in JSON.
TIME_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One FFI's verdict."""

    file: str
    time: float
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QualityReport:
    """A quality gate's verdicts, in the report's order."""

    source: str
    entries: tuple[ReportEntry, ...]

    @property
    def flag_names(self) -> list[str]:
        """Every flag used, in order of first use."""
        return list(dict.fromkeys(f for e in self.entries for f in e.flags))


def parse_report(data: Any, *, source: str) -> QualityReport:
    """Check a decoded report against the schema (see the module) and return it.

    Raises
    ------
    InputError
        Naming the first entry that does not fit the schema.
    """
    if not isinstance(data, dict) or not isinstance(data.get("ffis"), list):
        raise InputError('a quality report is a JSON object with a list "ffis"', path=source)
    entries = []
    for i, item in enumerate(data["ffis"]):
        where = f'"ffis"[{i}]'
        if not isinstance(item, dict):
            raise InputError(f"{where} is not an object", path=source)
        file, time, flags = item.get("file"), item.get("time"), item.get("flags")
        if not isinstance(file, str) or not file:
            raise InputError(f'{where}: "file" must be a file name', path=source)
        if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
            raise InputError(f'{where}: "time" must be a number (the FFI\'s start time)', path=source)
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise InputError(f'{where}: "flags" must be a list of strings', path=source)
        entries.append(ReportEntry(file=posixpath.basename(file.replace("\\", "/")), time=float(time),
                                   flags=tuple(flags)))
    return QualityReport(source=source, entries=tuple(entries))


def read_report(path: str | os.PathLike[str]) -> QualityReport:
    """Read and check a quality report (JSON file).

    Raises
    ------
    InputError
        If the file cannot be read, is not JSON or does not fit the schema.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise InputError(f"cannot read the quality report: {exc.strerror or exc}", path=source) from exc
    except ValueError as exc:
        raise InputError(f"the quality report is not JSON: {exc}", path=source) from exc
    return parse_report(data, source=source)


def match_report(
    report: QualityReport, files: Sequence[str], starts: np.ndarray
) -> tuple[list[tuple[int, str]], list[ReportEntry]]:
    """Pair a report's flags with the cube's FFIs.

    An entry names the FFI with its file name, else the FFI whose start time is within
    :data:`TIME_TOLERANCE` of its time.

    Returns
    -------
    flags
        (FFI index, flag) pairs.
    unmatched
        Entries that name no FFI of the cube.
    """
    by_name = {name: i for i, name in enumerate(files)}
    pairs: list[tuple[int, str]] = []
    unmatched: list[ReportEntry] = []
    for entry in report.entries:
        index = by_name.get(entry.file)
        if index is None and len(starts):
            nearest = int(np.nanargmin(np.abs(starts - entry.time))) if np.isfinite(starts).any() else -1
            if nearest >= 0 and abs(starts[nearest] - entry.time) <= TIME_TOLERANCE:
                index = nearest
        if index is None:
            unmatched.append(entry)
        else:
            pairs.extend((index, flag) for flag in entry.flags)
    return pairs, unmatched
