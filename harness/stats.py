"""Intervals and paired tests for benchmark numbers: plain functions of per-item outcomes.

Every number a table shows is a statistic of one result's per-item outcomes (a test image's
prediction, a pair's decision, a person's residuals), so its sampling error is estimated the
same way everywhere: a bootstrap over the protocol's resampling unit (images; pairs within
their folds; people), vectorised as item *weights* (how often each item was drawn), so a
statistic is computed for all replicates at once (``statistic(weights) -> (B,)``).

With several seeds (independent trainings measured on the same items), the seed mean's
interval adds the two sources of error in quadrature: the item bootstrap of the seed mean (every
seed resampled with the same items) and the seed spread, sd / sqrt(seeds). See docs/statistics.md.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np

from harness.lazy import lazy

sps = lazy("scipy.stats")  # imported when a table needs it: it takes longer than planning a large sweep

LEVEL = 0.95  #: every interval's coverage
POWER = 0.80  #: the power of the minimum detectable difference
BOOTSTRAP = 1000  #: replicates of every bootstrap
BOOTSTRAP_SEED = 0  #: fixed, so that tables regenerate byte for byte and paired rows share draws

Statistic = Callable[[np.ndarray], np.ndarray]  # item weights (B, n) -> one value per replicate (B,)


def z_quantile(level: float = LEVEL) -> float:
    """The two-sided normal quantile of ``level`` (1.96 for 95 %)."""
    return float(sps.norm.ppf(0.5 + level / 2))


def bootstrap_weights(n: int, strata: Optional[np.ndarray] = None, clusters: Optional[np.ndarray] = None,
                      replicates: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each of ``n`` items is drawn in each bootstrap replicate: (replicates, n) counts.

    Units (each item, or each ``clusters`` id with all its items) are drawn with replacement,
    as many as there are, within each ``strata`` value (e.g. a verification fold), so every
    replicate keeps the strata's sizes. The same arguments give the same weights: two methods
    measured on the same items are resampled together (a paired bootstrap).
    """
    units = np.arange(n) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    n_units = int(units.max()) + 1 if n else 0
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    unit_stratum = np.zeros(n_units, dtype=strata.dtype)
    unit_stratum[units] = strata  # a cluster lies in one stratum (people are not split across folds)
    rng = np.random.default_rng(seed)
    counts = np.zeros((replicates, n_units))
    for s in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == s)
        drawn = rng.integers(0, len(members), size=(replicates, len(members)))  # units drawn, per replicate
        flat = (drawn + len(members) * np.arange(replicates)[:, None]).ravel()
        counts[:, members] = np.bincount(flat, minlength=replicates * len(members)).reshape(replicates, len(members))
    return counts[:, units]


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap replicates (nan ones left out)."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A number with its interval: the mean over seeds, the sd over seeds (0 for one seed), the
    ``LEVEL`` interval (test-set sampling and seed spread), its standard error, and the seeds."""

    mean: float
    sd: float
    low: float
    high: float
    se: float
    seeds: int


def estimate(points: Sequence[float], replicates: np.ndarray, level: float = LEVEL,
             bounds: tuple[float, float] = (-math.inf, math.inf)) -> Estimate:
    """The seed mean of one measure with its interval.

    Args:
        points: the measure on each seed's result, on all items.
        replicates: (seeds, B) the measure on each seed's result under the same item weights.
        bounds: the values the measure can take (a rate: 0 and 1); the interval is clipped to them.

    The item part is the percentile interval of the seed mean's replicates; with several seeds,
    each side is widened in quadrature by z * sd / sqrt(seeds) (the seed spread, independent of
    which items were drawn).
    """
    points = np.asarray(points, dtype=float)
    k = len(points)
    mean = float(points.mean())
    boot = np.asarray(replicates, dtype=float).reshape(k, -1).mean(0)
    lo, hi = percentile_interval(boot, level)
    sd = float(points.std(ddof=1)) if k > 1 else 0.0
    seed_half = z_quantile(level) * sd / math.sqrt(k)
    item_se = float(np.nanstd(boot, ddof=1)) if np.isfinite(boot).sum() > 1 else math.nan
    low = max(mean - math.hypot(mean - lo, seed_half), bounds[0])
    high = min(mean + math.hypot(hi - mean, seed_half), bounds[1])
    return Estimate(mean, sd, low, high, math.sqrt(item_se**2 + sd**2 / k), k)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of two classifiers' per-item correctness: the items only
    one of them gets right are a fair coin's tosses under the null (binomial, p = 1/2)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    return 1.0 if n == 0 else float(min(1.0, 2 * sps.binom.cdf(min(only_a, only_b), n, 0.5)))


def bootstrap_p(difference: float, replicates: np.ndarray) -> float:
    """Two-sided p-value of a paired difference from its bootstrap replicates: twice the smaller
    share of replicates on either side of 0 (with the +1 of an exact Monte-Carlo test)."""
    d = np.asarray(replicates, dtype=float)
    d = d[np.isfinite(d)]
    if not len(d) or (difference == 0 and np.all(d == 0)):
        return 1.0
    below, above = (d <= 0).sum(), (d >= 0).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(d) + 1)))


def normal_p(difference: float, se: float) -> float:
    """Two-sided p-value of a difference with a normal standard error (1 when both are 0)."""
    if not se > 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * sps.norm.sf(abs(difference) / se))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for the number of comparisons (same order)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def minimum_detectable(se: float, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at ``1 - level`` detects with ``power``,
    for a difference estimated with standard error ``se``: (z_(1-alpha/2) + z_power) * se."""
    return float((z_quantile(level) + sps.norm.ppf(power)) * se)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Row a minus row b on the same items: the difference of seed means with its interval,
    the p-value (of the test named), the per-seed p-values, and the minimum detectable difference."""

    difference: Estimate
    p: float
    test: str
    per_seed: tuple[float, ...]
    per_seed_test: str
    detectable: float


def compare(a_points: Sequence[float], b_points: Sequence[float], a_replicates: np.ndarray, b_replicates: np.ndarray,
            per_seed: Sequence[float] = (), per_seed_test: str = "paired bootstrap", level: float = LEVEL) -> Comparison:
    """Compare two rows measured on the same items (replicates drawn with the same weights).

    One seed each: the per-seed test (exact McNemar or the paired bootstrap, given in
    ``per_seed``), and the paired bootstrap's interval. Several: the difference of seed means,
    its variance the paired item bootstrap's plus each row's seed variance / seeds; a normal test.
    """
    a, b = np.asarray(a_points, dtype=float), np.asarray(b_points, dtype=float)
    boot_a = np.asarray(a_replicates, dtype=float).reshape(len(a), -1).mean(0)
    boot_b = np.asarray(b_replicates, dtype=float).reshape(len(b), -1).mean(0)
    diff = float(a.mean() - b.mean())
    boot = boot_a - boot_b
    item_se = float(np.nanstd(boot, ddof=1)) if np.isfinite(boot).sum() > 1 else 0.0
    seed_var = sum(x.var(ddof=1) / len(x) for x in (a, b) if len(x) > 1)
    se = math.sqrt(item_se**2 + seed_var)
    lo, hi = percentile_interval(boot, level)
    seed_half = z_quantile(level) * math.sqrt(seed_var)
    interval = Estimate(diff, 0.0, diff - math.hypot(diff - lo, seed_half), diff + math.hypot(hi - diff, seed_half), se,
                        min(len(a), len(b)))
    if len(a) == 1 and len(b) == 1:
        p = per_seed[0] if per_seed else bootstrap_p(diff, boot)
        test = per_seed_test
    else:
        p, test = normal_p(diff, se), "normal test, variance = paired item bootstrap + seed variances"
    return Comparison(interval, p, test, tuple(per_seed), per_seed_test, minimum_detectable(se, level))


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of per-item ``values`` under each replicate's item weights (B, n) -> (B,); items
    whose value is not defined (nan) are left out, as the point estimate leaves them out."""
    values = np.asarray(values, dtype=float)
    defined = np.isfinite(values)
    total = weights @ defined.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights @ np.where(defined, values, 0.0)) / np.where(total > 0, total, 1), np.nan)
