"""The interface every protocol plugin implements, and what a protocol sees.

A protocol owns everything about itself: which dataset capability it needs (``task``), which
images it reads and which features it asks methods for (``images``, ``view``, ``extract``),
its metrics (``evaluate``), its one-line summary, its tables and figures (with the paper's
numbers where they exist). The harness only iterates the registered protocols, so adding one
is one file in ``protocols/``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Protocol as TypingProtocol

import numpy as np
import torch

from harness.config import Config
from harness.datasets.base import FaceDataset, ImageSet
from harness.stats import Estimate

if TYPE_CHECKING:  # only for type hints: the method interface does not need protocols
    from harness.method import Method


class Features(TypingProtocol):
    """Frozen features of one method on one dataset (computed once, then read from the cache).

    Attributes:
        method: the method (for what it declares: ``parts()``, ``depth_fov``...).
    """

    method: "Method"

    def get(self, split: str, flip: bool = False) -> torch.Tensor:
        """Features (N, ...) of the images ``Protocol.images(dataset, split)``; ``flip=True``
        gives those of the horizontally flipped images."""
        ...


@dataclasses.dataclass(frozen=True)
class Measure:
    """A number the protocol's tables show, as a statistic of one result's per-item outcomes.

    Attributes:
        statistic: (outcomes, item weights (B, n)) -> the number under each weighting (B,);
            weights of ones give the number itself (``harness.stats.bootstrap_weights``).
        correct: outcomes -> per-item correctness, where the number is its mean (an accuracy):
            two rows are then compared by the exact McNemar test, else by the paired bootstrap.
        higher_is_better: which way the best row of a column lies.
        scale: how the number is shown (100: a fraction in percent).
        bounds: the values the number can take (an interval is clipped to them: a rate's to [0, 1]).
    """

    statistic: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]
    correct: Optional[Callable[[dict[str, np.ndarray]], np.ndarray]] = None
    higher_is_better: bool = True
    scale: float = 100.0
    bounds: tuple[float, float] = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Shown:
    """What a table knows of one measure in one cell: its estimate (None where the results hold
    no per-item outcomes) and whether it is its column's best or not significantly different."""

    estimate: Optional[Estimate] = None
    best: bool = False
    tie: bool = False


#: The mark of a row not significantly different from its column's best (explained in footers).
TIE_MARK = "≈"


class Protocol:
    """Base class of registered protocols.

    Attributes:
        task: the dataset capability needed (a name in ``FaceDataset.tasks``).
        view: the features asked of methods (``Method.encode``'s ``view``).
        version: bump when a change alters the numbers; it is part of every cell's identity.
        table: file stem and title of the protocol's main table.
        metric: column label of the main table's cells.
        paper: the paper's numbers in percent: (method, variant) -> {dataset: (value, spread)}.
        note: a line for the footer of tables that show this protocol (e.g. what ± means).
        unit: what its intervals' bootstrap resamples (said in footers): see ``resampling``.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    view: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Config: ClassVar[type[Config]] = Config
    table: ClassVar[tuple[str, str]] = ("", "")
    metric: ClassVar[str] = "acc"
    paper: ClassVar[dict[tuple[str, str], dict[str, tuple[float, float]]]] = {}
    note: ClassVar[str] = ""
    unit: ClassVar[str] = "test images"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    # --- what to run ----------------------------------------------------------------------
    @classmethod
    def supports(cls, method: type["Method"]) -> bool:
        """Whether the protocol can evaluate this method (e.g. only methods that predict depth)."""
        return True

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        """The images of ``split`` whose features ``Features.get(split)`` returns."""
        raise NotImplementedError

    def extract(self, method: "Method", x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """What the protocol reads from a method for a batch (default: its ``view`` features)."""
        return method.encode(x, self.view, index)

    def feature_key(self, method: "Method") -> str:
        """Names what ``extract`` reads, in the feature-cache key: protocols that read the same
        thing share cached features (default: the method's name for the view's features)."""
        return f"view:{method.feature_view(self.view)}"

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        """Metrics of the protocol (JSON-able; fractions, not percent)."""
        raise NotImplementedError

    # --- reporting --------------------------------------------------------------------------
    @classmethod
    def main_metric(cls, metrics: dict) -> float:
        """The headline number of one result (a fraction), for summaries and figures."""
        return float(metrics["accuracy"])

    @classmethod
    def floors(cls, metrics: dict) -> dict[str, float]:
        """Baselines that one result scores besides the method (``{label: value}``, on
        ``main_metric``'s scale), drawn as floor lines in the table's bar chart; none by default."""
        return {}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        """One line for the log when a cell finishes."""
        return f"accuracy {100 * cls.main_metric(metrics):.2f}"

    @classmethod
    def cell(cls, records: list[dict], stats: Optional[dict[str, Shown]] = None) -> str:
        """A table cell from the result records of one row and dataset (seeds); ``stats`` holds
        each measure's interval and rank in the column."""
        if not records:
            return ""
        main = (stats or {}).get(cls.main_measure(records[0]["metrics"]))
        return shown(mean_sd([cls.main_metric(r["metrics"]) for r in records]), main) + f" (n={len(records)})"

    # --- statistics (harness.compare) -----------------------------------------------------------
    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        """The numbers of a result that get intervals and paired tests, by metric name, computed
        from the per-item outcomes ``evaluate`` returns under ``"outcomes"`` (stored beside the
        metrics, ``harness.compare.pack``). None by default: a protocol without outcomes shows
        bare numbers."""
        return {}

    @classmethod
    def main_measure(cls, metrics: dict) -> str:
        """The measure of ``main_metric`` ('' for none): its interval is the error bar of charts."""
        return "accuracy"

    @classmethod
    def resampling(cls, outcomes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """How the bootstrap resamples a result's items (``harness.stats.bootstrap_weights``'s
        ``strata`` and ``clusters``; default: every item on its own, e.g. test images)."""
        return {}

    @classmethod
    def paper_cell(cls, numbers: tuple[float, float]) -> str:
        return f"{numbers[0]:.2f}±{numbers[1]:.2f}"

    @classmethod
    def tables(cls, grid: Any) -> dict[str, tuple[str, str]]:
        """Markdown tables of this protocol's results: ``{file stem: (title, body)}`` (``grid`` is a
        ``harness.tables.Grid``); by default one table, rows = methods, columns = datasets."""
        body = grid.protocol_table(cls)
        return {cls.table[0]: (cls.table[1], body)} if body else {}

    @classmethod
    def figures(cls, grid: Any, folder: Path) -> list[Path]:
        """Figures of this protocol's results, written under ``folder``; returns their paths.

        Tables made by ``grid.table`` get a bar chart from the harness (``<table stem>.png``);
        draw here what only this protocol knows (ROC curves, heatmaps: ``harness.plots``). A
        figure named ``<table stem>-<anything>.png`` at the top of ``folder`` is embedded under
        that table in its markdown (and ``<table stem>.png`` for a table laid out otherwise).
        """
        return []


def mean_sd(values: list[float] | np.ndarray, scale: float = 100.0, digits: int = 2) -> str:
    """``mean±sd`` (sd over seeds, ddof 1) of fractions, in percent; just the mean for one value."""
    a = scale * np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f}" if len(a) == 1 else f"{a.mean():.{digits}f}±{a.std(ddof=1):.{digits}f}"


def shown(text: str, stat: Optional[Shown], scale: float = 100.0, digits: int = 1) -> str:
    """A cell's number with its interval ``[low, high]``, in bold where it is its column's best,
    marked ``TIE_MARK`` where it is not significantly different from the best."""
    if stat is None or stat.estimate is None:
        return text
    e = stat.estimate
    text = f"{text} [{scale * e.low:.{digits}f}, {scale * e.high:.{digits}f}]"
    return f"**{text}**" if stat.best else f"{text} {TIE_MARK}" if stat.tie else text


def seeded_generator(seed: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)
