"""The figures of `metarun-report` as inline SVG: matplotlib's SVG backend, never pyplot.

matplotlib is optional (`pip install matplotlib`) and imported only inside the functions that draw, so the page's
module imports without it and the command says how to install it before reading a single run. Text stays text (in
the system's sans-serif where DejaVu Sans is missing): half the bytes of glyph paths, and found by the browser's
search. Every id in a figure gets the figure's name as a prefix, since the figures share one document and
`url(#id)` there means the document's first element of that id.
No torch here.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from metarun.report.plots import require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Line:
    """One run's curve in a panel: points, and optionally a band (low, high) around them."""

    label: str
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: Sequence[Line]
    log: bool = False  # a log axis where every value is positive (losses span orders of magnitude)
    empty: str = "no rows logged"  # said in the panel when no line has a point
    zero_line: bool = False


@dataclass(frozen=True)
class Interval:
    """A row of a forest plot: a difference and its 95% CI (nan bounds: none)."""

    label: str
    diff: float
    low: float
    high: float
    main: bool  # the pair's verdict (bold); otherwise one seed's difference (small, grey)


def _figure(cols: int, size: tuple[float, float]) -> tuple[Figure, Any]:
    require_matplotlib("metarun-report")
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasSVG(fig)
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def to_svg(fig: Figure, name: str, title: str) -> str:
    """The figure as an `<svg>` element for an HTML page: no XML prologue (its DOCTYPE names a DTD by URL), no
    metadata, ids prefixed by `name`, a `<title>` for screen readers, and the same bytes for the same figure."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Path coordinates in points to 1/100: matplotlib writes 6 decimals, which made the page twice as large.
    text = re.sub(r'\bd="([^"]*)"', lambda m: 'd="' + re.sub(r"(\.\d\d)\d+", r"\1", m[1]) + '"', text)
    text = re.sub(r"font-family: 'DejaVu Sans'(?=[;\"])", "font-family: 'DejaVu Sans', sans-serif", text)  # mathtext's
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", name) + "-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m[1]}{prefix}{m[2]}", text)
    label = _escape(title)
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1).replace(
        ">", f"><title>{label}</title>", 1)


def plain(text: str) -> str:
    """Text that matplotlib draws as written: a `$` (an unresolved `${...}` in a setting) would start mathtext."""
    return text.replace("$", r"\$")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# ----------------------------------------------------------------------------- forest plot


def forest(rows: Sequence[Interval], xlabel: str, name: str, title: str) -> str:
    """Differences A − B with their 95% CIs, one row each, top to bottom, and the line of no difference."""
    # A pair's row (two lines of label) takes more height than a seed's.
    steps = [1.6 if row.main and i else 1.0 for i, row in enumerate(rows)]
    ys = -np.cumsum(steps)
    fig, (ax,) = _figure(1, (9.5, 1.1 + 0.27 * sum(steps)))
    for y, row in zip(ys, rows, strict=True):
        color, width = ("C0", 2.2) if row.main else ("0.45", 1.0)
        if not (math.isnan(row.low) or math.isnan(row.high)):
            ax.hlines(y, row.low, row.high, color=color, linewidth=width)
        ax.plot([row.diff], [y], marker="D" if row.main else "o", markersize=6 if row.main else 4, color=color)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(ys, [plain(row.label) for row in rows], fontsize="small")
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_fontweight("bold" if row.main else "normal")
    ax.set_ylim(ys[-1] - 0.7, ys[0] + 0.7)
    ax.set_xlabel(plain(xlabel))
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig, name, title)


# ----------------------------------------------------------------------------- panels of curves


def panels(items: Sequence[Panel], name: str, title: str, width: float = 11.0) -> str:
    """Panels side by side, one colour per run (the same run the same colour in every panel), one legend."""
    fig, axes = _figure(len(items), (width, 3.3))
    colours = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(
        line.label for panel in items for line in panel.lines))}
    for ax, panel in zip(axes, items, strict=True):
        _draw(ax, panel, colours)
    if colours:
        handles, labels = next((ax.get_legend_handles_labels() for ax in axes if ax.lines), ([], []))
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize="small")
    fig.suptitle(plain(title), fontsize="medium")
    return to_svg(fig, name, title)


def _draw(ax: Any, panel: Panel, colours: dict[str, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    drawn = [line for line in panel.lines if len(line.x)]
    for line in drawn:
        colour = colours[line.label]
        if line.low is not None and line.high is not None:
            ax.fill_between(line.x, line.low, line.high, color=colour, alpha=0.18, linewidth=0)
        ax.plot(line.x, line.y, color=colour, linewidth=1.2, label=plain(line.label),
                marker="o" if len(line.x) <= 30 else None, markersize=2.5)
    if panel.log and drawn and all(np.all(line.y > 0) for line in drawn):
        ax.set_yscale("log")
    if panel.zero_line:
        ax.axhline(0.0, color="grey", linewidth=0.6)
    if not drawn:
        ax.text(0.5, 0.5, panel.empty, ha="center", va="center", transform=ax.transAxes, fontsize="small",
                color="0.4", wrap=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    ax.set_title(plain(panel.title), fontsize="small")
    ax.set_xlabel("iteration", fontsize="small")
    ax.set_ylabel(plain(panel.ylabel), fontsize="small")
    ax.tick_params(labelsize="small")
    ax.grid(alpha=0.3)
