"""Figures drawn from stored numbers: grouped bar charts of tables, ROC curves, heatmaps.

Every function takes plain numbers (no result files, no registries), so protocols can draw their
own figures with them in ``Protocol.figures``. PNGs are written atomically and without a
software-version stamp, so the same numbers give the same bytes and regenerated figures do not
show up as changed in git. A figure records in its PNG a key of what it was drawn from (its
numbers and this module's code) and is not drawn again while that key is unchanged: drawing is
most of the time a regeneration of tables takes.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import inspect
import struct
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from harness.io import atomic_path

#: (mean over seeds, low and high end of its error bar) of one bar; nan ends: no error bar.
Stat = tuple[float, float, float]


def stat(values: Sequence[float], interval: Optional[tuple[float, float]] = None) -> Optional[Stat]:
    """The ``Stat`` of some values: the error bar is ``interval`` where given, else mean ± the sd
    over seeds (ddof 1; none for one value); None for no values."""
    if not len(values):
        return None
    mean = float(np.mean(values))
    if interval is not None:  # the interval's estimate may differ from the mean in the last digits stored
        return mean, min(interval[0], mean), max(interval[1], mean)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
    return mean, mean - sd, mean + sd


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported late: the CLI starts faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: The PNG text field holding what a figure was drawn from, and the key of the figure being drawn.
KEY_FIELD = "Source"
_drawing: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("drawing", default=None)


def save(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically, reproducibly) and close it."""
    metadata = {"Software": None, **({KEY_FIELD: _drawing.get()} if _drawing.get() else {})}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=metadata)
    pyplot().close(fig)
    return Path(path)


def _canonical(value: Any) -> Any:
    """``value`` as nested tuples of exact reprs (arrays by their bytes, floats unrounded)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return tuple((repr(k), _canonical(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    return repr(value)


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def png_text(path: Path) -> dict[str, str]:
    """The text fields of a PNG (read from its chunks before the image data; {} if unreadable)."""
    fields = {}
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return {}
            while True:
                length, kind = struct.unpack(">I4s", handle.read(8))
                if kind in (b"IDAT", b"IEND"):
                    return fields
                data = handle.read(length)
                handle.read(4)  # CRC
                if kind == b"tEXt":
                    key, _, text = data.partition(b"\0")
                    fields[key.decode("latin-1")] = text.decode("latin-1")
    except (OSError, struct.error):
        return {}


def drawn_once(draw: Callable[..., Path]) -> Callable[..., Path]:
    """Skip drawing when the PNG at ``path`` was drawn from the same arguments by the same code."""
    signature = inspect.signature(draw)

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        path = Path(bound.arguments["path"])
        inputs = {k: v for k, v in bound.arguments.items() if k != "path"}
        key = hashlib.sha256(repr((_code_key(), draw.__name__, _canonical(inputs))).encode()).hexdigest()
        if path.exists() and png_text(path).get(KEY_FIELD) == key:
            return path
        token = _drawing.set(key)
        try:
            return draw(*args, **kwargs)
        finally:
            _drawing.reset(token)

    return wrapper


def result_png(record: dict, folder: Path, kind: str = "") -> Optional[Path]:
    """Where a figure of one result file goes, ``<folder>/<result>[-<kind>].png``, or None when
    one newer than the result file is there already (only new results are drawn again)."""
    src = Path(record["_path"])
    png = Path(folder) / (f"{src.stem}-{kind}.png" if kind else f"{src.stem}.png")
    return None if png.exists() and png.stat().st_mtime >= src.stat().st_mtime else png


@dataclasses.dataclass
class Bars:
    """What a grouped bar chart shows, in the units of its y axis.

    Attributes:
        title: the chart's title.
        ylabel: the y axis label.
        groups: one group of bars per column (dataset), left to right.
        series: one bar per group for each entry (a method row), ``None`` where it has no result.
        floors: sanity baselines, drawn as horizontal lines across each group instead of bars.
        paper: the paper's number for a series in a group (``None``: none), drawn as a marker.
    """

    title: str
    ylabel: str
    groups: list[str]
    series: dict[str, list[Optional[Stat]]]
    floors: dict[str, list[Optional[Stat]]] = dataclasses.field(default_factory=dict)
    paper: dict[str, list[Optional[float]]] = dataclasses.field(default_factory=dict)


@drawn_once
def bar_chart(bars: Bars, path: Path) -> Path:
    """A grouped bar chart: bars = mean over seeds with error bars (``Stat``), floors as dashed lines,
    the paper's numbers as black diamonds; the legend sits right of the axes."""
    plt = pyplot()
    n_groups, n_series = len(bars.groups), max(len(bars.series), 1)
    width = min(0.8 / n_series, 0.3)  # a lone bar stays a bar, not a block
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 + 0.42 * n_series * n_groups) + 3.2, 4.2))
    colors = plt.get_cmap("tab10" if n_series <= 10 else "tab20").colors
    x0 = np.arange(n_groups, dtype=float)
    paper_shown = False
    for i, (label, stats) in enumerate(bars.series.items()):
        xs = x0 - width * n_series / 2 + width * (i + 0.5)
        have = [g for g, s in enumerate(stats) if s is not None]
        mean = [stats[g][0] for g in have]
        err = np.array([[stats[g][0] - stats[g][1] for g in have], [stats[g][2] - stats[g][0] for g in have]]).reshape(2, -1)
        ax.bar(xs[have], mean, width * 0.9, yerr=err, capsize=2, color=colors[i % len(colors)], label=label,
               error_kw={"elinewidth": 0.8, "ecolor": "0.2"})
        for g, m in zip(have, mean):  # the value (72.3, 1.06), so the chart reads without the table
            ax.text(xs[g], m / 2, f"{m:.1f}" if abs(m) >= 10 else f"{m:.2f}", ha="center", va="center", rotation=90, fontsize=7, color="white")
        marks = [(xs[g], v) for g, v in enumerate(bars.paper.get(label, [])) if v is not None and stats[g] is not None]
        if marks:
            ax.plot(*zip(*marks), "D", color="black", markersize=5, label=None if paper_shown else "paper", zorder=3)
            paper_shown = True
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for j, (label, stats) in enumerate(bars.floors.items()):
        have = [g for g, s in enumerate(stats) if s is not None]
        for g in have:  # one legend entry per floor
            ax.hlines(stats[g][0], x0[g] - 0.45, x0[g] + 0.45, colors="0.25", linestyles=styles[j % len(styles)],
                      linewidth=1.3, label=f"{label} (floor)" if g == have[0] else None)
    ax.set_xticks(x0, bars.groups)
    ax.set_xlim(-0.5, n_groups - 0.5)
    ax.set_ylabel(bars.ylabel)
    ax.set_ylim(0, None)
    ax.set_title(textwrap.fill(bars.title, 90), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, path)


@drawn_once
def roc_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str) -> Path:
    """ROC curves: ``{label: (false accept rates, true accept rates)}``, one line each.

    The false accept rate is on a log axis (where verification is compared, TAR@FAR=1e-3...);
    points at FAR 0 cannot be drawn there and are left out.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
        ax.plot(far[far > 0], tar[far > 0], label=label, linewidth=1.2)
    lowest = min((f for far, _ in curves.values() for f in far if f > 0), default=1e-3)
    grid = np.logspace(np.log10(lowest), 0, 50)
    ax.plot(grid, grid, color="0.6", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, path)


@drawn_once
def heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: Path, title: str, *,
            xlabel: str = "", ylabel: str = "", vmin: float | None = None, vmax: float | None = None,
            cmap: str = "Blues", fmt: str = "{:.2f}") -> Path:
    """A matrix with its values written in the cells (confusion matrices, factor x part tables)."""
    plt = pyplot()
    matrix = np.asarray(matrix, dtype=float)
    label_width = 0.07 * max(map(len, rows), default=0)  # inches for the row labels
    fig, ax = plt.subplots(figsize=(1.8 + label_width + 0.6 * len(columns), 1.3 + 0.5 * len(rows)))
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(columns)), columns, rotation=45 if max(map(len, columns), default=0) > 4 else 0, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            r, g, b, _ = im.cmap(im.norm(matrix[i, j]))
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5  # dark text on light cells, whatever the colour map
            ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=7, color="black" if light else "white")
    ax.set_title(textwrap.fill(title, int(6 * (1.8 + label_width + 0.6 * len(columns)))), fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save(fig, path)


@drawn_once
def curves(steps: dict[str, list[float]], epochs: dict[str, list[float]], path: Path, title: str) -> Path:
    """Training curves: one panel per loss term, per-step values (thin) and per-epoch means
    (dots at each epoch's last step); ``steps`` and ``epochs`` also hold their x values under
    ``"step"``."""
    plt = pyplot()
    names = [k for k in steps if k != "step"]
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = np.asarray(steps[name], dtype=float)
        ax.plot(steps["step"], values, linewidth=0.7, color="tab:blue", alpha=0.6, label="step")
        if name in epochs and epochs[name]:
            ax.plot(epochs["step"], epochs[name], "o-", color="tab:orange", markersize=3, linewidth=1, label="epoch mean")
        if len(values) and np.all(values > 0) and values.max() > 20 * values.min():
            ax.set_yscale("log")  # losses spanning decades read better on a log axis
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)
