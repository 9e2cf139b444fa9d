"""Quality reports: the one definition of their JSON schema, its writer and its reader.

fficube's quality gate (:mod:`fficube.quality`: ``fficube build/update --report``,
``fficube verify --quality --report``) writes a report; ``fficube plot --report``
reads one, fficube's or any other gate's.  The minimal schema is::

    {
      "ffis": [
        {"file": "tess2018206192942-s0001-1-1-0120-s_ffic.fits", "time": 1325.3131, "flags": ["all_zero"]},
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
    Short names of what the gate found (an empty list: nothing).  fficube's gate uses
    ``all_zero``, ``all_nonfinite``, ``constant``, ``bad_but_marked_good``, ``no_wcs``,
    ``gap_before`` and ``repeated_cadence`` (defined in :mod:`fficube.quality`); other
    gates may use any names.

Optional keys of an entry, which fficube's gate writes:

``median``
    The median of the FFI's sampled pixels (finite ones), or ``null``.
``nan_fraction``
    The share of its sampled pixels that are not finite, or ``null``.

Other keys, at the top or in an entry, are ignored by the reader (the top-level ones
are kept in :attr:`QualityReport.meta`), so that a gate may say more; fficube's gate
adds ``gate``, ``cube``, ``product``, ``summary`` (counts per flag, cadence), ``sample``
(which pixels) and ``notes`` at the top.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, OutputError, os_reason

__all__ = ["ReportEntry", "QualityReport", "parse_report", "read_report", "match_report", "report_document",
           "write_report", "TIME_TOLERANCE"]

#: How close (days) a report's time must be to an FFI's start time to name it: about
#: a second, far below any cadence and far above rounding in JSON.
TIME_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One FFI's verdict."""

    file: str
    time: float
    flags: tuple[str, ...]
    median: float | None = None  #: median of the sampled pixels (None: not given, or none finite)
    nan_fraction: float | None = None  #: non-finite share of the sampled pixels (None: not given)


@dataclass(frozen=True, slots=True)
class QualityReport:
    """A quality gate's verdicts, in the report's order."""

    source: str
    entries: tuple[ReportEntry, ...]
    #: The report's other top-level keys (fficube's gate: ``summary``, ``sample``, ``notes``...).
    meta: Mapping[str, Any] = field(default_factory=dict)

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
        numbers = {key: _optional_number(item, key, where, source) for key in ("median", "nan_fraction")}
        entries.append(ReportEntry(file=posixpath.basename(file.replace("\\", "/")), time=float(time),
                                   flags=tuple(flags), **numbers))
    meta = {key: value for key, value in data.items() if key != "ffis"}
    return QualityReport(source=source, entries=tuple(entries), meta=meta)


def _optional_number(item: Mapping[str, Any], key: str, where: str, source: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f'{where}: "{key}" must be a number or null', path=source)
    return float(value)


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN: a NaN (or infinite) number is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def report_document(entries: Sequence[ReportEntry], **top: Any) -> dict[str, Any]:
    """A report as a JSON-ready dict: the ``top`` keys, then ``ffis`` (NaN numbers as null).

    Entries carry ``median`` and ``nan_fraction`` when they have them.
    """
    ffis = []
    for entry in entries:
        item: dict[str, Any] = {"file": entry.file, "time": entry.time, "flags": list(entry.flags)}
        if entry.median is not None or entry.nan_fraction is not None:
            item["median"] = _json_number(entry.median)
            item["nan_fraction"] = _json_number(entry.nan_fraction)
        ffis.append(item)
    return {**{k: _json_ready(v) for k, v in top.items() if k != "ffis"}, "ffis": ffis}


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_report(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write a report (a :func:`report_document`) as JSON: one line per FFI, readable by eye and by
    :func:`read_report`.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    target = os.fspath(path)
    head = [f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}," for k, v in document.items() if k != "ffis"]
    ffis = ",\n".join(f"    {json.dumps(item, allow_nan=False)}" for item in document.get("ffis", []))
    text = "\n".join(["{", *head, '  "ffis": [' + (f"\n{ffis}\n  " if ffis else "") + "]", "}"]) + "\n"
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise OutputError(f"cannot write the quality report: {os_reason(exc)}", path=target) from exc


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
        raise InputError(f"cannot read the quality report: {os_reason(exc)}", path=source) from exc
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
