"""Intervals and paired comparisons of stored results: result files + the protocols' declared
measures (``Protocol.measures``, ``Protocol.resampling``) -> ``harness.stats``.

A result file of format 2 keeps its per-item outcomes under ``"outcomes"``, each array packed
as one line of text (``pack``); a result of format 1 (no ``"format"`` key) has none, and every
interval or comparison involving it says that it cannot be computed (``--rerun`` adds them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import numpy as np

from harness import stats
from harness.config import config_hash
from harness.protocol import TIE_MARK, Protocol, Shown

#: The result format a new result file has: 2 = per-item outcomes under "outcomes".
FORMAT = 2
#: Why a result of format 1 cannot be compared (one line, for tables and --compare).
NO_OUTCOMES = "made before results kept per-item outcomes (result format 1); running their cells with --rerun adds them"
#: The level at which a column's rows count as significantly different from its best.
ALPHA = 1 - stats.LEVEL


def pack(outcomes: dict[str, Any]) -> dict[str, str]:
    """Per-item outcome arrays as compact text: comma-separated numbers, integers exact, floats
    to 7 significant digits (a float32's precision), ``nan`` where not defined."""
    out = {}
    for name, values in outcomes.items():
        a = np.asarray(values)
        if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
            out[name] = ",".join(map(str, a.astype(np.int64).tolist()))
        else:
            out[name] = ",".join(f"{v:.7g}" for v in a.astype(float).tolist())
    return out


def unpack(record: dict) -> Optional[dict[str, np.ndarray]]:
    """A result's per-item outcomes as arrays, or None for a result without them."""
    packed = record.get("outcomes")
    if not packed:
        return None
    return {name: np.array(text.split(","), dtype=float) if text else np.zeros(0) for name, text in packed.items()}


def items_key(record: dict, outcomes: dict[str, np.ndarray]) -> str:
    """What identifies a result's test items: its dataset's fingerprint and the number of items
    (results on the same split of the same data are on the same items, in the same order)."""
    n = len(next(iter(outcomes.values()))) if outcomes else 0
    return config_hash({"dataset": record["config"]["dataset"], "n": n})


@dataclasses.dataclass
class Stats:
    """Bootstrap replicates of stored results, each computed once (a store's tables and a
    comparison reuse them). Results on the same items share their bootstrap draws."""

    weights: dict = dataclasses.field(default_factory=dict)
    replicates: dict = dataclasses.field(default_factory=dict)
    unpacked: dict = dataclasses.field(default_factory=dict)

    def outcomes(self, record: dict) -> Optional[dict[str, np.ndarray]]:
        """``unpack``, once per result."""
        memo = record.get("_path") or id(record)
        if memo not in self.unpacked:
            self.unpacked[memo] = unpack(record)
        return self.unpacked[memo]

    def draws(self, protocol: type[Protocol], record: dict, key: str) -> Optional[tuple[float, np.ndarray]]:
        """A measure of one result: (its value on all items, its bootstrap replicates); None
        when the result has no outcomes or the protocol no such measure."""
        memo = (record.get("_path") or id(record), key)
        if memo not in self.replicates:
            outcomes = self.outcomes(record)
            measure = protocol.measures(record["metrics"]).get(key) if outcomes is not None else None
            if measure is None:
                self.replicates[memo] = None
            else:
                n = len(next(iter(outcomes.values())))
                where = (protocol.name, items_key(record, outcomes))
                if where not in self.weights:
                    self.weights[where] = stats.bootstrap_weights(n, **protocol.resampling(outcomes))
                point = float(measure.statistic(outcomes, np.ones((1, n)))[0])
                self.replicates[memo] = (point, measure.statistic(outcomes, self.weights[where]))
        return self.replicates[memo]

    def estimate(self, protocol: type[Protocol], records: list[dict], key: str) -> Optional[stats.Estimate]:
        """The seed mean of a measure with its interval; None unless every result has outcomes."""
        draws = [self.draws(protocol, r, key) for r in records]
        if not records or any(d is None for d in draws):
            return None
        bounds = protocol.measures(records[0]["metrics"])[key].bounds
        return stats.estimate([d[0] for d in draws], np.stack([d[1] for d in draws]), bounds=bounds)

    def compare(self, protocol: type[Protocol], a: list[dict], b: list[dict], key: str,
                key_b: Optional[str] = None) -> Union[stats.Comparison, str]:
        """Row ``a`` minus row ``b`` on one measure (``key_b``: another measure of ``b``'s on the
        same items, e.g. another part), or why they cannot be compared."""
        key_b = key_b or key
        draws_a = [self.draws(protocol, r, key) for r in a]
        draws_b = [self.draws(protocol, r, key_b) for r in b]
        if not a or not b:
            return "no results"
        if any(d is None for d in draws_a + draws_b):
            missing = [r for r, d in zip(a + b, draws_a + draws_b) if d is None]
            if any(self.outcomes(r) is None for r in missing):
                return NO_OUTCOMES
            return f"the protocol {protocol.name} has no measure {key!r} for these results"
        if len({items_key(r, self.outcomes(r)) for r in a + b}) > 1:
            return "the results were measured on different test items (another dataset, split or size)"
        measure_a, measure_b = protocol.measures(a[0]["metrics"])[key], protocol.measures(b[0]["metrics"])[key_b]
        exact = measure_a.correct is not None and measure_b.correct is not None
        by_seed_b = {r["cell"]["seed"]: (r, d) for r, d in zip(b, draws_b)}
        per_seed = []
        for r, (point_a, boot_a) in zip(a, draws_a):
            if r["cell"]["seed"] not in by_seed_b:
                continue
            other, (point_b, boot_b) = by_seed_b[r["cell"]["seed"]]
            if exact:
                per_seed.append(stats.mcnemar_exact(measure_a.correct(self.outcomes(r)), measure_b.correct(self.outcomes(other))))
            else:
                per_seed.append(stats.bootstrap_p(point_a - point_b, boot_a - boot_b))
        return stats.compare([d[0] for d in draws_a], [d[0] for d in draws_b], np.stack([d[1] for d in draws_a]),
                             np.stack([d[1] for d in draws_b]), per_seed, "exact McNemar" if exact else "paired bootstrap")

    def column(self, protocol: type[Protocol], cells: dict[Any, list[dict]]) -> dict[Any, dict[str, Shown]]:
        """Each row's ``Shown`` per measure in one table column (rows -> their records): see ``rank``."""
        out: dict[Any, dict[str, Shown]] = {row: {} for row in cells}
        first = next((rs for rs in cells.values() if rs), None)
        for key, measure in protocol.measures(first[0]["metrics"]).items() if first else ():
            ranked = self.rank(protocol, {row: (rs, key) for row, rs in cells.items() if rs}, measure.higher_is_better)
            for row, shown in ranked.items():
                out[row][key] = shown
        return out

    def rank(self, protocol: type[Protocol], cells: dict[Any, tuple[list[dict], str]], higher_is_better: bool = True) -> dict[Any, Shown]:
        """Rows (-> their records and the measure shown for them) of one column: each row's
        interval, the best row by mean, and the rows whose paired test against it is not
        significant after Holm's correction over the column's comparisons."""
        known = {row: e for row, (rs, key) in cells.items() if (e := self.estimate(protocol, rs, key)) is not None}
        if not known:
            return {}
        sign = 1 if higher_is_better else -1
        best = max(known, key=lambda row: sign * known[row].mean)
        others = [row for row in known if row != best]
        tests = [self.compare(protocol, cells[best][0], cells[row][0], cells[best][1], cells[row][1]) for row in others]
        testable = [(row, t) for row, t in zip(others, tests) if isinstance(t, stats.Comparison)]
        adjusted = dict(zip([row for row, _ in testable], stats.holm([t.p for _, t in testable])))
        return {row: Shown(e, best=row == best, tie=row in adjusted and adjusted[row] >= ALPHA) for row, e in known.items()}


def footer_lines(protocols: list[type[Protocol]], records: list[dict]) -> list[str]:
    """What a table's intervals and marks mean, for its footer, and which results have none."""
    with_measures = [p for p in protocols if any(p.measures(r["metrics"]) for r in records if r["cell"]["protocol"] == p.name and "outcomes" in r)]
    lines = []
    if with_measures:
        units = {p.unit for p in with_measures}
        units = units.pop() if len(units) == 1 else "; ".join(f"{p.name}: {p.unit}" for p in with_measures)
        lines += [
            f"[low, high]: {round(100 * stats.LEVEL)} % interval, percentile bootstrap ({stats.BOOTSTRAP} replicates) over {units}; "
            f"with several seeds each side is widened in quadrature by {stats.z_quantile():.2f} x sd over seeds / sqrt(seeds).",
            f"**Bold**: the best row of a column; {TIE_MARK}: not significantly different from it (paired tests on the same "
            f"items at {ALPHA:.2f}, Holm-corrected over the column: exact McNemar for accuracies, else the paired bootstrap; "
            "with several seeds a normal test whose variance adds the seed variances). Methods: docs/statistics.md.",
        ]
    old = sum(1 for r in records if r.get("format", 1) < FORMAT)
    if old:
        lines.append(f"Intervals and comparisons cannot be computed for {old} of these results: {NO_OUTCOMES}.")
    return lines


# --- run_bench.py --compare a,b ---------------------------------------------------------------------
def interval_text(e: stats.Estimate, scale: float) -> str:
    return f"[{scale * e.low:.2f}, {scale * e.high:.2f}]"


def report(grid: Any, rows: tuple[Any, Any], protocols: list[type[Protocol]], datasets: Optional[list[str]]) -> list[str]:
    """``--compare``: per protocol, dataset and measure both rows have results for, each row's
    value with its interval, the difference (first minus second) with its interval, the p-value
    and its test, and the smallest difference these items could detect at 80 % power; one line
    per protocol and dataset where that cannot be computed. ``grid`` is a ``harness.tables.Grid``;
    returns the lines (none: nothing in common)."""
    a, b = rows
    lines = []
    for protocol in protocols:
        common = [d for d in grid.columns(protocol.name, [a]) if d in grid.columns(protocol.name, [b])]
        for dataset in (d for d in common if datasets is None or d in datasets):
            records = grid.records(a, protocol.name, dataset), grid.records(b, protocol.name, dataset)
            heading = f"{protocol.name} / {dataset} ({len(records[0])} and {len(records[1])} seeds)"
            measures = protocol.measures(records[0][0]["metrics"])
            missing = NO_OUTCOMES if any(grid.stats.outcomes(r) is None for rs in records for r in rs) else (
                "" if measures else f"the protocol {protocol.name} keeps no per-item outcomes")
            if missing:
                values = " vs ".join(f"{grid.label(row)} {100 * sum(map(protocol.main_metric, (r['metrics'] for r in rs))) / len(rs):.2f}"
                                     for row, rs in zip(rows, records))
                lines.append(f"{heading}: {values} ({protocol.metric.split(' / ')[0]}); cannot be compared: {missing}")
                continue
            lines.append(f"{heading}:")
            for key, measure in measures.items():
                lines.append(f"  {key}: " + describe(grid, protocol, rows, records, key, measure.scale))
    return lines


def describe(grid: Any, protocol: type[Protocol], rows: tuple, records: tuple, key: str, scale: float) -> str:
    """One measure's comparison line."""
    estimates = [grid.stats.estimate(protocol, rs, key) for rs in records]
    values = " vs ".join(f"{grid.label(row)} {scale * e.mean:.2f} {interval_text(e, scale)}" for row, e in zip(rows, estimates))
    result = grid.stats.compare(protocol, records[0], records[1], key)
    if isinstance(result, str):
        return f"{values}; cannot be compared: {result}"
    d = result.difference
    per_seed = f"; per seed, {result.per_seed_test}: {', '.join(f'{p:.3g}' for p in result.per_seed)}" if d.seeds > 1 else ""
    return (f"{values}; difference {scale * d.mean:+.2f} {interval_text(d, scale)}, p = {result.p:.3g} "
            f"({result.test}{per_seed}); detectable at 80 % power: {scale * result.detectable:.2f}")
