"""``fficube plot``: one figure to check a cube at a glance.

Left, a thumbnail of one frame on WCS axes (from the sky's zscale level to the 99.5th
percentile, asinh stretch); right,
sharing the time axis, the start times against FFI number with gaps marked, each
FFI's level (median of a pixel sample), the quality bits (``DQUALITY``, TICA's
``QUAL_BIT``) and a quality report's flags.  The numbers come from
:func:`fficube.views.overview.read_overview`, which reads a bounded number of rows.

matplotlib is optional (``pip install 'fficube[plot]'``) and imported on first use.
The figure is drawn on matplotlib's Agg canvas, never through pyplot, so no window
opens and no global state changes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..access import require
from ..errors import InputError, OutputError, os_reason
from ..report import QualityReport
from ..sync import run
from ..units import format_bytes
from .overview import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, CubeOverview, bit_label, read_overview

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

__all__ = ["PlotResult", "draw_overview", "plot_cube"]

_EXTRA = "plot"
#: Font size of the flag panels' labels, points.
_LABEL_SIZE = 9
#: Width of the thumbnail in the figure, inches (about what its half leaves beside the
#: axis labels and the colour bar).
_THUMB_WIDTH = 7.0
#: Widths of the figure's two columns: the thumbnail, the time panels.
_WIDTHS = (1.3, 1.0)


@dataclass(frozen=True)
class PlotResult:
    """A drawn overview: the figure, its thumbnail image, its panels, and the numbers."""

    overview: CubeOverview
    figure: Figure
    image: AxesImage  #: the thumbnail (``image.get_array()`` is the frame's pixels drawn)
    #: "thumbnail", "colorbar", "coverage", "level", "quality", "report"; with statistics "median", "mask"
    axes: dict[str, Axes]


def _every(n: int, what: str) -> str:
    if n == 1:
        return f"every {what}"
    suffix = {2: "nd", 3: "rd"}.get(n, "th")
    return f"every {n}{suffix} {what}"


def _wcs(overview: CubeOverview) -> Any:
    if overview.wcs_header is None:
        return None
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():  # date and SIP cards astropy fixes: not the viewer's business
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(overview.wcs_header, relax=True)
        except Exception:  # a WCS astropy cannot use: draw on pixel axes instead
            return None
    return wcs if wcs.has_celestial else None


def _time_panel(ax: Axes, o: CubeOverview) -> None:
    for gap in o.gaps:
        ax.axvspan(gap.start, gap.stop, color="tab:red", alpha=0.12, lw=0)
    ax.axvline(o.starts[o.frame], color="tab:orange", lw=1, ls="--")
    ax.ticklabel_format(axis="x", useOffset=False)  # times in full: 1325.5, not +1.325e3


def draw_overview(o: CubeOverview, stats: str | os.PathLike[str] | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> PlotResult:
    """Draw the overview figure of ``o`` (see the module); with ``stats`` (a file that
    ``fficube stats`` or ``--pixel-stats`` wrote) a row below shows its MEDIAN and MASK.

    Raises
    ------
    MissingExtraError
        If matplotlib is not installed (``pip install 'fficube[plot]'``).
    """
    require("matplotlib", _EXTRA, "fficube plot")
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows, cols, n, layers = o.shape
    # The figure's height follows the image's shape, so that the thumbnail fills its
    # half of the figure (its width, or its height for a cube taller than wide).
    height = round(min(11.0, max(6.5, _THUMB_WIDTH * rows / cols + 1.6)), 1)
    stats_height = round(min(8.0, max(4.5, 7.0 * rows / cols / 2 + 1.2)), 1) if stats is not None else 0.0
    fig = Figure(figsize=(15, height + stats_height), layout="constrained")
    FigureCanvasAgg(fig)
    top: Any = fig  # the overview's part: the figure, or its upper subfigure
    bottom: Any = None
    if stats is not None:
        parts: Any = fig.subfigures(2, 1, height_ratios=[height, stats_height])
        top, bottom = parts
    grid = top.add_gridspec(4, 2, width_ratios=_WIDTHS)
    wcs = _wcs(o)
    axes: dict[str, Axes] = {}

    # Thumbnail: each sampled pixel drawn over the block of pixels it stands for.
    thumb = top.add_subplot(grid[:, 0], projection=wcs) if wcs is not None else top.add_subplot(grid[:, 0])
    axes["thumbnail"] = thumb
    rs, cs = o.plan.row_step, o.plan.col_step
    extent = (o.thumbnail_cols[0] - cs / 2, o.thumbnail_cols[-1] + cs / 2,
              o.thumbnail_rows[0] - rs / 2, o.thumbnail_rows[-1] + rs / 2)
    finite = np.isfinite(o.thumbnail)
    norm = None
    if finite.any() and np.ptp(o.thumbnail[finite]) > 0:
        # The lower limit is zscale's, which follows the sky background; the upper one
        # the 99.5th percentile, so that the stars keep their shapes (zscale's upper
        # limit would saturate them); an asinh stretch shows the faint ones too.
        pixels = o.thumbnail[finite]
        low = ZScaleInterval().get_limits(pixels)[0]
        high = max(float(np.percentile(pixels, 99.5)), low + 1e-6)
        norm = ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(0.01))
    image = thumb.imshow(o.thumbnail, origin="lower", extent=extent, norm=norm, cmap="gray",
                         interpolation="nearest")
    thumb.set_xlim(-0.5, cols - 0.5)
    thumb.set_ylim(-0.5, rows - 0.5)
    if wcs is not None:
        wcs_axes: Any = thumb  # astropy's WCSAxes, which matplotlib's types do not know
        coords = wcs_axes.coords
        coords[0].set_axislabel("RA")
        coords[1].set_axislabel("Dec")
        coords.grid(color="white", alpha=0.25, ls=":")
        source = "its own" if o.wcs_row == o.frame else f"FFI {o.wcs_row}'s"
        wcs_note = f"WCS: {source} info-table row"
    else:
        thumb.set_xlabel("column")
        thumb.set_ylabel("row")
        wcs_note = "no WCS in the info table"
    unit = f" ({o.unit})" if o.unit else ""
    colorbar = top.colorbar(image, ax=thumb, fraction=0.04, pad=0.01, label=f"flux{unit}, asinh stretch")
    axes["colorbar"] = colorbar.ax
    sampled = f"{_every(rs, 'row')}, {_every(cs, 'column')}"
    thumb.set_title(f"frame {o.frame}: {o.files[o.frame]}\n{o.time_columns[0]} {o.starts[o.frame]:.5f}; "
                    f"{sampled}; {wcs_note}", fontsize=9)

    # Time coverage against FFI number, gaps marked between the FFIs they separate.
    cover = top.add_subplot(grid[0, 1])
    axes["coverage"] = cover
    index = np.arange(n)
    cover.plot(index, o.starts, ".", ms=3, color="tab:blue")
    cover.plot([o.frame], [o.starts[o.frame]], "o", mfc="none", color="tab:orange")
    for gap in o.gaps:
        cover.axvline(gap.after + 0.5, color="tab:red", lw=1)
    cadence = f"median cadence {o.cadence * 1440:.1f} min" if np.isfinite(o.cadence) else "one FFI"
    cover.set_title(f"time coverage: {n} FFIs, {cadence}, {len(o.gaps)} gap(s) > 1.5 cadences", fontsize=9)
    cover.ticklabel_format(axis="y", useOffset=False)
    cover.xaxis.set_major_locator(MaxNLocator(integer=True))
    cover.set_xlabel("FFI number")
    cover.set_ylabel(f"{o.time_columns[0]} ({o.time_scale})")

    level = top.add_subplot(grid[1, 1])
    axes["level"] = level
    # The line breaks at gaps: no level is known there.
    cut = [g.after + 1 for g in o.gaps]
    level.plot(np.insert(o.starts, cut, np.nan), np.insert(o.levels, cut, np.nan), ".-", ms=3, lw=0.6,
               color="tab:green")
    _time_panel(level, o)
    if o.no_level.size:  # an FFI without a finite pixel has no level: marked, not left out
        level.plot(o.starts[o.no_level], np.full(o.no_level.size, 0.05), "x", ms=7, mew=1.5, color="tab:red",
                   transform=level.get_xaxis_transform(), clip_on=False, label="no finite pixel (all NaN)")
        level.legend(loc="upper right", fontsize=8)
    level.set_ylabel(f"median flux{unit}")
    level.set_title(f"per-FFI level: median of {o.level_pixels} pixels from {len(o.plan.rows)} rows", fontsize=9)

    quality = top.add_subplot(grid[2, 1], sharex=level)
    axes["quality"] = quality
    _time_panel(quality, o)
    bits = o.set_bits
    if o.quality_column is None:
        quality.text(0.5, 0.5, "no DQUALITY / QUAL_BIT column in the info table", ha="center", va="center",
                     transform=quality.transAxes)
        quality.set_yticks([])
    elif not bits:
        quality.text(0.5, 0.5, f"no {o.quality_column} bit set", ha="center", va="center",
                     transform=quality.transAxes)
        quality.set_yticks([])
    else:
        ffi, bit = np.array(bits).T
        quality.plot(o.starts[ffi], bit, "s", ms=3, color="tab:purple")
        used = sorted(set(bit.tolist()))
        quality.set_yticks(used, [bit_label(o.quality_column, b) for b in used], fontsize=_LABEL_SIZE)
        quality.set_ylim(min(used) - 0.7, max(used) + 0.7)
    quality.set_ylabel(f"{o.quality_column or 'quality'} flags")
    quality.set_title(f"{o.quality_column or 'quality'}: {len({f for f, _ in bits})} FFI(s) with bits set",
                      fontsize=9)

    report = top.add_subplot(grid[3, 1], sharex=level)
    axes["report"] = report
    _time_panel(report, o)
    if o.report is None:
        report.text(0.5, 0.5, "no quality report (--report FILE.json)", ha="center", va="center",
                    transform=report.transAxes)
        report.set_yticks([])
        report.set_title("quality report", fontsize=9)
    else:
        names = list(dict.fromkeys(flag for _, flag in o.report_flags))  # flags of this cube's FFIs
        if o.report_flags:
            ffi = np.array([f for f, _ in o.report_flags])
            y = np.array([names.index(flag) for _, flag in o.report_flags])
            report.plot(o.starts[ffi], y, "D", ms=3, color="tab:red")
        if names:
            report.set_yticks(range(len(names)), names, fontsize=_LABEL_SIZE)
            report.set_ylim(-0.7, len(names) - 0.3)
        else:
            report.text(0.5, 0.5, "no flags", ha="center", va="center", transform=report.transAxes)
        flagged = len({f for f, _ in o.report_flags})
        extra = f"; {len(o.report_unmatched)} entries match no FFI" if o.report_unmatched else ""
        report.set_title(f"quality report {os.path.basename(o.report.source)}: {flagged} FFI(s) flagged{extra}",
                         fontsize=9)
    report.set_xlabel(f"{o.time_columns[0]} ({o.time_scale}, days)")

    sector = "?" if o.sector in (None, "") or not isinstance(o.sector, (int, str)) else o.sector
    top.suptitle(f"{os.path.basename(o.path)}: {o.product.upper()}, sector {sector}, camera {o.camera} "
                 f"CCD {o.ccd}, {rows} x {cols} pixels, {n} FFIs, {layers} layer(s)", fontsize=11)
    fig.text(0.005, 0.003, f"read {format_bytes(o.bytes_read)} in {o.requests} requests "
             f"({o.header_requests} headers/table + {len(o.plan.rows)} rows; rows bounded by {o.plan.reason})",
             fontsize=7, color="0.4")
    if stats is not None:
        _stats_panels(bottom, os.fspath(stats), storage_options, axes, o.unit)
    return PlotResult(overview=o, figure=fig, image=image, axes=axes)


#: Colours of the MASK panel, by the lowest bit set (``fficube.pixelstats``): none, NO_DATA,
#: CONSTANT, SPARSE.
_MASK_COLOURS = {0: (0.12, 0.12, 0.12), 1: (0.84, 0.15, 0.16), 2: (1.0, 0.84, 0.0), 4: (0.09, 0.75, 0.81)}


def mask_colours(mask: np.ndarray) -> np.ndarray:
    """The RGB image of a ``MASK``: each pixel the colour of its lowest bit set (none: dark)."""
    lowest = np.where(mask == 0, 0, mask & -mask.astype(np.int16))
    rgb = np.zeros((*mask.shape, 3))
    for bit, colour in _MASK_COLOURS.items():
        rgb[lowest == bit] = colour
    return rgb


def _stats_panels(sub: Any, path: str, storage_options: Mapping[str, Any] | None, axes: dict[str, Axes],
                  unit: str | None) -> None:
    """The MEDIAN (same stretch as the thumbnail) and MASK images of a statistics file, on its WCS."""
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.patches import Patch

    from ..pixelstats import MASK_BITS
    from ..sources.locations import is_url

    try:
        opened = (fits.open(path, use_fsspec=True, fsspec_kwargs=dict(storage_options or {})) if is_url(path)
                  else fits.open(path))
    except OSError as exc:
        raise InputError(f"cannot read the statistics file: {os_reason(exc)}", path=path) from exc
    with opened as hdus:
        if "MEDIAN" not in hdus or "MASK" not in hdus:
            raise InputError("not a statistics file (no MEDIAN and MASK images)", path=path)
        median = np.asarray(hdus["MEDIAN"].data, dtype=np.float32)
        mask = np.asarray(hdus["MASK"].data, dtype=np.uint8)
        header = hdus["MEDIAN"].header.copy()
        used, choice = hdus[0].header.get("NUSED"), hdus[0].header.get("STATFFIS", "?")
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header) if "CTYPE1" in header else None
    grid = sub.add_gridspec(1, 2)
    finite = median[np.isfinite(median)]
    norm = None
    if finite.size and np.ptp(finite) > 0:
        low = ZScaleInterval().get_limits(finite)[0]
        norm = ImageNormalize(vmin=low, vmax=max(float(np.percentile(finite, 99.5)), low + 1e-6),
                              stretch=AsinhStretch(0.01))
    left = sub.add_subplot(grid[0, 0], projection=wcs) if wcs is not None else sub.add_subplot(grid[0, 0])
    shown = left.imshow(median, origin="lower", norm=norm, cmap="gray", interpolation="nearest")
    unit = header.get("BUNIT") or unit  # the cube's, as the thumbnail's colour bar says it
    sub.colorbar(shown, ax=left, fraction=0.04, pad=0.01,
                 label=f"median flux{f' ({unit})' if unit else ''}, asinh stretch")
    left.set_title(f"MEDIAN over time of {used} FFIs ({choice})", fontsize=9)
    right = sub.add_subplot(grid[0, 1], projection=wcs) if wcs is not None else sub.add_subplot(grid[0, 1])
    right.imshow(mask_colours(mask), origin="lower", interpolation="nearest")
    legend = [Patch(color=_MASK_COLOURS[bit], label=f"{MASK_BITS[bit].split(':')[0]} ({bit}): "
                                                     f"{int(np.count_nonzero(mask & bit))} px")
              for bit in MASK_BITS]
    right.legend(handles=legend, loc="upper right", fontsize=8, framealpha=0.85)
    right.set_title(f"MASK: {int(np.count_nonzero(mask))} of {mask.size} pixels flagged", fontsize=9)
    for ax in (left, right):
        if wcs is not None:
            ax.coords[0].set_axislabel("RA")
            ax.coords[1].set_axislabel("Dec")
        else:
            ax.set_xlabel("column")
            ax.set_ylabel("row")
    axes["median"], axes["mask"] = left, right
    sub.suptitle(f"per-pixel statistics: {os.path.basename(path)}", fontsize=11)


def plot_cube(
    cube: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    frame: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    report: str | os.PathLike[str] | QualityReport | None = None,
    dpi: int = 100,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    stats: str | os.PathLike[str] | None = None,
) -> PlotResult:
    """Read a sample of ``cube`` (local or URL) and draw its overview figure.

    Parameters
    ----------
    cube, frame, max_rows, max_bytes, report, anon, storage_options
        What to read, as for :func:`fficube.views.overview.read_overview` (the thumbnail's
        FFI, the limits of the rows read, a quality report whose flags to show).
    output
        Where to save the figure (the format follows the extension: PNG, PDF, SVG...);
        None to only return it.
    dpi
        Resolution of a saved raster figure.
    stats
        A per-pixel statistics file (``fficube stats``, ``--pixel-stats``): its MEDIAN
        and MASK images are drawn below the overview.

    Returns
    -------
    PlotResult
        The figure, its thumbnail image and the numbers drawn (with the requests and
        bytes read).

    Raises
    ------
    MissingExtraError
        If matplotlib is not installed (``pip install 'fficube[plot]'``); raised
        before anything is read.
    InputError
        If ``frame`` is out of range or the report does not fit its schema.
    OutputError
        If the figure cannot be saved at ``output``.
    """
    require("matplotlib", _EXTRA, "fficube plot")
    overview = run(read_overview(
        cube, frame=frame, report=report, anon=anon, storage_options=storage_options,
        max_rows=max_rows, max_bytes=max_bytes,
    ))
    result = draw_overview(overview, stats, storage_options)
    if output is not None:
        target = os.fspath(output)
        try:
            result.figure.savefig(target, dpi=dpi)
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot save the figure: {os_reason(exc)}", path=target) from exc
    return result
