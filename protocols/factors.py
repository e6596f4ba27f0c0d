"""The paper's Table 5 measured: which factors each part of a representation carries.

The paper's Table 5 ("disentangling capabilities") is a table of check marks: which factors
(identity, expression, light, pose, texture, shape) each method separates. Real faces carry no
ground truth for them; the synthetic world does, so here each is a number. For every named part
of a method's features (``Method.parts``: LatentFace ``Z_id_t``, ``dZ_t``, ``Z_id_s``, ``dZ_s``,
``light``, ``pose``; Unsup3D ``Z_t``, ``Z_s``, ``light``, ``pose``; a baseline ``all``), fit on
the FER train split's people and score on held-out people:

- identity: 10-fold verification accuracy of the cosine score on the held-out people's pairs
  (threshold chosen on the training folds), and leave-one-out nearest-neighbour identification;
- expression: 7-class linear probe accuracy (the ``fer`` probe);
- pose (yaw, pitch, roll), light (ambient and direction), texture (skin, lip, eye and hair
  colour), shape (the person's head and face shape parameters): R^2 of a ridge regression on
  the standardised part (ridge strength by cross-validation over the training people only).

A part earns a check mark for a factor where it predicts the factor clearly above chance (by
``accuracy_margin`` binomial standard errors, or R^2 above ``r2_margin``) and better than every
other part of its method (by ``separation``); a one-part method can only show that the factor is
present. Then, per method, DCI disentanglement and completeness (Eastwood & Williams, ICLR 2018)
from an importance matrix of code dimensions x factors: absolute coefficients of ridge
regressions of each standardised factor column on the standardised code, fit on the training
people only and summing to 1 per column (disentanglement over the five factors, completeness per
factor column); identity is
left out of DCI (it is the person's texture and shape together). Ridge rather than lasso
coefficients: a sparse fit leaves a noise code one tiny coefficient, which D scores as perfectly
disentangled (measured on 2,000 samples of 51 factor columns: 51 random codes got D 0.94 and 266
random codes 1.0 with lasso at the universal penalty, 266 random codes 1.0 with cross-validated
lasso, against 0.03-0.04 with ridge; codes that are the factors permuted get 1.0 either way).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from harness import plots
from harness.config import Config, at_least, between
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.errors import BenchError
from harness.protocol import Features, Measure, Protocol, mean_sd, shown
from harness.stats import weighted_mean
from harness.registry import register_protocol
from protocols.fer import FERConfig, predict, train_probe
from protocols.verification import best_threshold, cosine_scores

#: Table 5's columns, in the paper's order.
FACTORS = ("identity", "expression", "light", "pose", "texture", "shape")
#: Regressed factors: the extras they come from and which of their columns.
REGRESSED = {"light": ("light", [0, 2, 3, 4]), "pose": ("pose", [0, 1, 2]), "texture": ("texture", None), "shape": ("shape", None)}
#: Factors of the DCI importance matrix (identity is texture and shape together).
DCI_FACTORS = ("expression", "light", "pose", "texture", "shape")
RIDGE_ALPHAS = np.logspace(-2, 6, 17)


@dataclasses.dataclass(frozen=True)
class FactorsConfig(Config):
    """Attributes:
    probe_epochs: epochs of the expression probe (the ``fer`` probe's other settings).
    accuracy_margin: binomial standard errors above chance that count as clearly above chance.
    r2_margin: R^2 above which a regression counts as clearly above chance (chance is 0).
    separation: how much better than every other part of its method a part must be for a check.
    """

    probe_epochs: int = 20
    accuracy_margin: float = 3.0
    r2_margin: float = 0.1
    separation: float = 0.01

    RULES = {"probe_epochs": at_least(1), "accuracy_margin": at_least(0), "r2_margin": between(0, 1), "separation": at_least(0)}


# --- scores of one part --------------------------------------------------------------------------------
def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Columns scaled by the training set's mean and sd (constant columns stay zero)."""
    mean, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [(a - mean) / sd for a in (train, *others)]


class GroupedRidge:
    """Ridge regressions of targets on one design, with one strength for the targets of a fit
    chosen by K-fold cross-validation over *people* (``groups``), on the training set only.

    Plain leave-one-out would leave a person's other images in training and pick strengths that
    memorise people, which generalise badly to the held-out people the factors are scored on.
    The design is decomposed once per fold (SVD), so every target and strength costs a product.
    """

    def __init__(self, x: np.ndarray, groups: np.ndarray, alphas: np.ndarray = RIDGE_ALPHAS, folds: int = 5) -> None:
        self.x, self.alphas = x, alphas
        people = np.unique(groups)
        order = np.random.default_rng(0).permutation(len(people))
        fold_of_person = dict(zip(people[order], np.arange(len(people)) % folds))
        self.fold = np.array([fold_of_person[g] for g in groups])
        self.splits = [(self.fold != k, self._svd(x[self.fold != k])) for k in range(min(folds, len(people)))]
        self.full = self._svd(x)

    @staticmethod
    def _svd(x: np.ndarray) -> tuple[np.ndarray, ...]:
        mean = x.mean(0)
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        return mean, u, s, vt

    @staticmethod
    def _coef(svd: tuple[np.ndarray, ...], y: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (D, T) and intercepts (T,) for targets y (N, T), each with its own alpha."""
        mean, u, s, vt = svd
        y_mean = y.mean(0)
        shrink = s[:, None] / (s[:, None] ** 2 + alpha[None, :])  # (r, T)
        coef = vt.T @ (shrink * (u.T @ (y - y_mean)))
        return coef, y_mean - mean @ coef

    def fit(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (D, T) and intercepts (T,) on the whole training set, at the strength with
        the least cross-validated error summed over the targets (one strength per factor: per
        column, noise columns would each pick their own and weigh unevenly in importances)."""
        errors = np.zeros(len(self.alphas))
        for keep, svd in self.splits:
            for i, alpha in enumerate(self.alphas):
                coef, intercept = self._coef(svd, y[keep], np.full(y.shape[1], alpha))
                errors[i] += ((y[~keep] - self.x[~keep] @ coef - intercept) ** 2).sum()
        return self._coef(self.full, y, np.full(y.shape[1], self.alphas[errors.argmin()]))


def residual_shares(ridge: GroupedRidge, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Each test image's part of the held-out R^2's residual, so that R^2 (the mean over target
    columns of 1 - residual / total sum of squares) is 1 - their mean: its squared error per
    column over the column's total, summed and scaled by images / columns. ``ridge`` holds the
    standardised training design; targets are standardised with training statistics."""
    train_y, test_y = standardise(train_y, test_y)
    coef, intercept = ridge.fit(train_y)
    residual = (test_y - test_x @ coef - intercept) ** 2
    total = ((test_y - test_y.mean(0)) ** 2).sum(0)
    return (residual / np.maximum(total, 1e-12)).sum(1) * len(test_y) / test_y.shape[1]


def fold_mean(values: np.ndarray, fold: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean over folds of each fold's weighted mean of ``values`` (nan: not a fold's item),
    under item weights (B, n) -> (B,); weights of ones give the 10-fold accuracy."""
    folds = np.unique(fold[np.isfinite(values)])
    return np.mean([weighted_mean(np.where(fold == k, values, np.nan), weights) for k in folds], axis=0)


def verification_correct(f: torch.Tensor, pairs: PairList) -> np.ndarray:
    """Whether the cosine score decides each pair right, each fold's threshold chosen on the other folds."""
    scores, same = cosine_scores(f, pairs), pairs.same.numpy()
    correct = np.zeros(len(pairs), dtype=bool)
    for k in range(pairs.n_folds):
        test = (pairs.fold == k).numpy()
        threshold, _ = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] > threshold) == same[test]
    return correct


def nearest_neighbour_correct(f: torch.Tensor, identities: torch.Tensor) -> np.ndarray:
    """Whether each image's most cosine-similar other image shows the same person."""
    fn = torch.nn.functional.normalize(f.float(), dim=1)
    sim = fn @ fn.T
    sim.fill_diagonal_(-math.inf)
    return (identities[sim.argmax(1)] == identities).numpy()


def expression_correct(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                       n_classes: int, epochs: int, seed: int) -> np.ndarray:
    """Whether the expression probe classifies each test image right."""
    probe = train_probe(train_x.float(), train_y, n_classes, FERConfig(epochs=epochs), seed)
    return (predict(probe, test_x.float()) == test_y).numpy()


#: Every score of a part, and the items its outcomes are on: 0 pairs, 1 the pairs' images, 2 test images.
SCORES = {"identity": 0, "identity_nn": 1, "expression": 2, **{factor: 2 for factor in REGRESSED}}


def factor_items(pairs: PairList, pair_images: ImageSet, test: ImageSet) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """A result's items -- the pairs, then the pairs' images, then the test images -- by each
    one's person (a pair: its first image's) and verification fold (-1: a test image): the
    bootstrap resamples people, verification people within their folds. Also the three sizes."""
    pair_people = pair_images.identities.numpy()
    first = pair_people[pairs.left.numpy()]
    fold_of = dict(zip(first.tolist(), pairs.fold.tolist()))
    person = np.concatenate([first, pair_people, test.identities.numpy()])
    fold = np.concatenate([pairs.fold.numpy(), [fold_of.get(p, -1) for p in pair_people.tolist()], np.full(len(test), -1)])
    return {"person": person, "fold": fold}, (len(pairs), len(pair_images), len(test))


def placed(values: np.ndarray, which: int, sizes: tuple[int, ...]) -> np.ndarray:
    """Per-item values of item set ``which`` in the whole item list (nan elsewhere)."""
    out = np.full(sum(sizes), np.nan)
    start = sum(sizes[:which])
    out[start : start + sizes[which]] = values
    return out


def regression_targets(images: ImageSet) -> dict[str, np.ndarray]:
    """The regressed factors of a split: name -> (N, columns)."""
    out = {}
    for name, (extra, columns) in REGRESSED.items():
        if extra not in images.extras:
            raise BenchError(f"factors: the dataset has no {extra!r} ground truth; use it on synthetic data")
        value = images.extras[extra].double().numpy()
        out[name] = value[:, columns] if columns is not None else value
    return out


# --- DCI ---------------------------------------------------------------------------------------------
def importance_matrix(codes: np.ndarray, targets: dict[str, np.ndarray], groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code dims, target columns) importances: the absolute coefficients of ridge regressions of
    each standardised target column on the standardised codes (one strength per factor by
    cross-validation over people, ``GroupedRidge``), each column summing to 1; and each column's
    factor index."""
    (x,) = standardise(codes)
    ridge = GroupedRidge(x, groups)
    ys = [standardise(y)[0] for y in targets.values()]
    columns = np.concatenate([np.full(y.shape[1], g) for g, y in enumerate(ys)])
    importance = np.abs(np.concatenate([ridge.fit(y)[0] for y in ys], axis=1))
    # each column's importances sum to 1, as tree importances do (Eastwood & Williams; and
    # disentanglement_lib): factors fit with other ridge strengths stay comparable
    return importance / np.maximum(importance.sum(0, keepdims=True), 1e-12), columns


def entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of distributions along ``axis`` with logarithms of ``base`` (0 log 0 = 0)."""
    logs = np.log(np.where(p > 0, p, 1.0)) / math.log(base)
    return -(p * logs).sum(axis)


def dci(importance: np.ndarray, groups: np.ndarray) -> dict:
    """DCI disentanglement and completeness (Eastwood & Williams 2018) of an importance matrix R
    (codes x target columns; ``groups`` gives each column's factor).

    Disentanglement: per code, D_j = 1 - H_K(p_j) over the K factors, p_j its importance per
    factor (the mean over the factor's columns), weighted by the code's share of all importance.
    Completeness: per target column, C = 1 - H_codes(its importance over the codes), weighted by
    the column's share. Codes or columns with no importance count as 0 (weight 0).
    """
    codes = importance.shape[0]
    factors = int(groups.max()) + 1
    by_factor = np.stack([importance[:, groups == g].mean(1) for g in range(factors)], axis=1)
    row = by_factor.sum(1)
    if row.sum() <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "per_code": np.zeros(codes), "weight": np.zeros(codes), "by_factor": by_factor}
    p_code = by_factor / np.where(row > 0, row, 1.0)[:, None]
    per_code = np.where(row > 0, 1 - entropy(p_code, max(factors, 2), axis=1), 0.0)
    weight = row / row.sum()
    col = importance.sum(0)
    p_column = importance / np.where(col > 0, col, 1.0)[None, :]
    per_column = np.where(col > 0, 1 - entropy(p_column, max(codes, 2), axis=0), 0.0)
    return {
        "disentanglement": float((weight * per_code).sum()),
        "completeness": float((col / col.sum() * per_column).sum()),
        "per_code": per_code,
        "weight": weight,
        "by_factor": by_factor,
    }


# --- the protocol ------------------------------------------------------------------------------------
@register_protocol("factors")
class Factors(Protocol):
    """Per part x factor scores, check marks and DCI: the measured Table 5."""

    task = "factors"
    view = "parts"
    Config = FactorsConfig
    table = ("table5_factors", "Table 5 measured: the best part for each factor (score, part; ✓ = clearly above chance and better than the method's other parts)")
    metric = "DCI disentanglement"
    unit = "people (a pair goes with its first image's person; verification people within their folds)"
    version = "2"  # 2: the nearest-neighbour identification chance counts only the people in the pairs
    note = (
        "Factors: identity = 10-fold cosine verification accuracy on held-out people; expression = 7-class probe "
        "accuracy; light, pose, texture, shape = held-out R^2 (percent); D, C = DCI disentanglement and completeness "
        "(0-1; fit on the training people, so no test-set interval); a one-part method can only show that a factor is present."
    )

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        return dataset.verification()[0] if split == "pairs" else dataset.fer_split(split)

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        train, test = dataset.fer_split("train"), dataset.fer_split("test")
        pair_images, pairs = dataset.verification()
        x_train, x_test, x_pairs = features.get("train"), features.get("test"), features.get("pairs")
        parts = features.method.parts()
        train_targets, test_targets = regression_targets(train), regression_targets(test)
        n_classes = len(train.class_names)
        per_part = {}
        people = train.identities.numpy()
        outcomes, sizes = factor_items(pairs, pair_images, test)  # per item: what a paired comparison needs
        for name, cols in parts.items():
            tr, te, pa = x_train[:, cols], x_test[:, cols], x_pairs[:, cols]
            design, held_out = standardise(tr.double().numpy(), te.double().numpy())
            ridge = GroupedRidge(design, people)
            items = {
                "identity": verification_correct(pa, pairs),
                "identity_nn": nearest_neighbour_correct(pa, pair_images.identities),
                "expression": expression_correct(tr, train.labels, te, test.labels, n_classes, self.cfg.probe_epochs, seed),
                **{factor: residual_shares(ridge, train_targets[factor], held_out, test_targets[factor]) for factor in REGRESSED},
            }
            outcomes.update({f"{name}/{score}": placed(values, SCORES[score], sizes) for score, values in items.items()})
            scores = {score: float(self.measures({"parts": {name: {}}})[f"{name}/{score}"].statistic(outcomes, np.ones((1, sum(sizes))))[0])
                      for score in SCORES}
            per_part[name] = {**scores, "width": int(tr.shape[1])}
        counts = pair_images.identities.unique(return_counts=True)[1].double()
        chance = {
            "identity": 0.5,
            # the chance that another image, drawn at random, shows the same person
            "identity_nn": float((counts * (counts - 1)).sum() / (len(pair_images) * (len(pair_images) - 1))),
            "expression": 1 / n_classes,
        }
        margins = {
            "identity": self.cfg.accuracy_margin * math.sqrt(0.25 / len(pairs)),
            "expression": self.cfg.accuracy_margin * math.sqrt(chance["expression"] * (1 - chance["expression"]) / len(test)),
        }
        checks = {}
        for factor in FACTORS:
            ranked = sorted(per_part, key=lambda p: per_part[p][factor], reverse=True)
            best = ranked[0]
            value = per_part[best][factor]
            above = value > chance.get(factor, 0.0) + margins.get(factor, self.cfg.r2_margin)
            separated = all(value - per_part[p][factor] >= self.cfg.separation for p in ranked[1:])
            checks[factor] = {"part": best, "score": value, "check": bool(above and separated)}
        # DCI over every code dimension of the parts view, fit on the training people only
        dci_targets = {"expression": np.eye(n_classes)[train.labels.numpy()], **{f: train_targets[f] for f in DCI_FACTORS[1:]}}
        result = dci(*importance_matrix(x_train.double().numpy(), dci_targets, people))
        share = result["by_factor"] / max(result["by_factor"].sum(), 1e-12)
        codes = np.arange(x_train.shape[1])
        dci_parts = {}
        for name, cols in parts.items():
            idx = codes[cols]
            w = result["weight"][idx]
            dci_parts[name] = {
                "disentanglement": float((w * result["per_code"][idx]).sum() / w.sum()) if w.sum() > 0 else 0.0,
                "importance": dict(zip(DCI_FACTORS, share[idx].sum(0).round(6).tolist())),
            }
        return {
            "parts": per_part,
            "chance": chance,
            "checks": checks,
            "disentanglement": result["disentanglement"],
            "completeness": result["completeness"],
            "dci_parts": dci_parts,
            "embedding_size": int(x_train.shape[1]),
            "n_train": int(len(x_train)),
            "n_test": int(len(x_test)),
            "n_pairs": int(len(pairs)),
            "outcomes": outcomes,
        }

    @classmethod
    def main_metric(cls, metrics: dict) -> float:
        return float(metrics["disentanglement"])

    @classmethod
    def main_measure(cls, metrics: dict) -> str:
        return ""  # D: fit on the training people, no test-set interval

    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        """Every part's scores (``part/score``): identity as the 10-fold accuracy over pairs, the
        nearest-neighbour and expression accuracies (exact McNemar), R^2 as 1 - the mean residual share.
        D and C are fit on the training people: no test-set interval."""
        out = {}
        for part in metrics["parts"]:
            for score in SCORES:
                key = f"{part}/{score}"
                if score == "identity":
                    out[key] = Measure(lambda o, w, key=key: fold_mean(o[key], o["fold"], w))
                elif score in REGRESSED:
                    out[key] = Measure(lambda o, w, key=key: 1 - weighted_mean(o[key], w), bounds=(-math.inf, 1.0))
                else:
                    out[key] = Measure(lambda o, w, key=key: weighted_mean(o[key], w), correct=lambda o, key=key: o[key] > 0)
        return out

    @classmethod
    def resampling(cls, outcomes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"clusters": outcomes["person"], "strata": outcomes["fold"]}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        best = "  ".join(f"{f} {100 * c['score']:.1f} ({c['part']}{' ✓' if c['check'] else ''})" for f, c in metrics["checks"].items())
        return f"{best}  D {metrics['disentanglement']:.2f} C {metrics['completeness']:.2f}"

    @classmethod
    def tables(cls, grid) -> dict[str, tuple[str, str]]:
        """Table 5 in the paper's layout (one row per method), and every part x factor score."""
        rows = grid.rows(protocols=[cls.name])
        main, detail = [], []
        several = len(grid.columns(cls.name, rows)) > 1
        ranks = {dataset: cls.ranks(grid, rows, dataset) for dataset in grid.columns(cls.name, rows)}
        for key in rows:
            for dataset in grid.columns(cls.name, [key]):
                records = grid.records(key, cls.name, dataset)
                label = grid.label(key) + (f" ({dataset})" if several else "")
                first = records[0]["metrics"]
                best, every = ranks[dataset]
                cells = []
                for factor in FACTORS:
                    part = first["checks"][factor]["part"]
                    score = shown(mean_sd([r["metrics"]["parts"][part][factor] for r in records]), best[factor].get(key))
                    checks = sum(r["metrics"]["checks"][factor]["check"] for r in records)
                    mark = " ✓" if checks == len(records) else (f" ✓{checks}/{len(records)}" if checks else "")
                    cells.append(f"{score} {part}{mark}")
                d = mean_sd([r["metrics"]["disentanglement"] for r in records], scale=1)
                c = mean_sd([r["metrics"]["completeness"] for r in records], scale=1)
                main.append([label, *cells, d, c, first["embedding_size"], len(records)])
                for part, scores in first["parts"].items():
                    values = [shown(mean_sd([r["metrics"]["parts"][part][f] for r in records]), every[f].get((key, part)))
                              for f in ("identity", "identity_nn", *FACTORS[1:])]
                    part_d = mean_sd([r["metrics"]["dci_parts"][part]["disentanglement"] for r in records], scale=1)
                    detail.append([label, part, scores["width"], *values, part_d])
        headers = ["Method", *[f.capitalize() for f in FACTORS], "D", "C", "Embedding size", "n"]
        detail_headers = ["Method", "Part", "Width", "Identity (verif.)", "Identity (NN)", *[f.capitalize() for f in FACTORS[1:]], "Part D"]
        return {
            cls.table[0]: (cls.table[1], tabulate(main, headers=headers, tablefmt="github")),
            "table5_factors_parts": (
                "Table 5 measured, every part x factor (percent; D = DCI disentanglement of the part's codes)",
                tabulate(detail, headers=detail_headers, tablefmt="github"),
            ),
        }

    @classmethod
    def ranks(cls, grid, rows: list, dataset: str) -> tuple[dict[str, dict], dict[str, dict]]:
        """Intervals and marks per factor column on one dataset: of each method's best part (the
        main table's cells, by row), and of every part (the part table's, by (row, part))."""
        cells = {key: records for key in rows if (records := grid.records(key, cls.name, dataset))}
        best = {factor: grid.stats.rank(cls, {key: (rs, f"{rs[0]['metrics']['checks'][factor]['part']}/{factor}") for key, rs in cells.items()})
                for factor in FACTORS}
        every = {score: grid.stats.rank(cls, {(key, part): (rs, f"{part}/{score}") for key, rs in cells.items() for part in rs[0]["metrics"]["parts"]})
                 for score in SCORES}
        return best, every

    @classmethod
    def figures(cls, grid, folder: Path) -> list[Path]:
        """A heatmap per result (part x factor scores over chance, and each part's DCI importance
        share), and per dataset one of every method's parts, under the part x factor table."""
        out = [path for r in grid.records_of(cls.name) if (path := heatmap(r, folder / r["cell"]["dataset"]))]
        rows = grid.rows(protocols=[cls.name])
        for dataset in grid.columns(cls.name, rows):
            labels, scores = [], []
            for key in rows:
                records = grid.records(key, cls.name, dataset)
                for part in records[0]["metrics"]["parts"] if records else []:
                    labels.append(f"{grid.label(key)}: {part}")
                    scores.append(np.mean([above_chance(r["metrics"], part) for r in records], axis=0))
            if labels:
                out.append(plots.heatmap(
                    np.array(scores), labels, FACTORS, folder / f"table5_factors_parts-{dataset}.png",
                    f"Every part's score above chance on {dataset} (1 = perfect; mean over seeds)",
                    vmin=-0.2, vmax=1.0, cmap="magma",
                ))
        return out


def above_chance(metrics: dict, part: str) -> list[float]:
    """A part's score per factor with accuracies rescaled so that chance is 0 and perfect 1 (R^2 as is)."""
    chance = metrics["chance"]
    return [(metrics["parts"][part][f] - chance.get(f, 0.0)) / (1 - chance.get(f, 0.0)) for f in FACTORS]


def heatmap(record: dict, folder: Path) -> Path | None:
    """PNG: left, each part's score per factor (accuracies rescaled so chance = 0 and perfect = 1,
    R^2 as is); right, the share of DCI importance each part holds per factor."""
    png = plots.result_png(record, folder, "factors")
    if png is None:
        return None
    plt = plots.pyplot()
    m = record["metrics"]
    parts = list(m["parts"])
    scaled = np.array([above_chance(m, p) for p in parts])
    share = np.array([[m["dci_parts"][p]["importance"][f] for f in DCI_FACTORS] for p in parts])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.5 * len(parts) + 2.2), gridspec_kw={"width_ratios": [6, 5]})
    for ax, values, columns, title, vmin in (
        (left, scaled, FACTORS, "score above chance (1 = perfect)", -0.2),
        (right, share, DCI_FACTORS, f"DCI importance share (D {m['disentanglement']:.2f}, C {m['completeness']:.2f})", 0.0),
    ):
        im = ax.imshow(values, cmap="magma", vmin=vmin, vmax=max(1e-6, values.max()) if ax is right else 1.0, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        ax.set_yticks(range(len(parts)), parts)
        for i in range(len(parts)):
            for j in range(len(columns)):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 0.6 * (im.norm.vmax or 1) else "white")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
    c = record["cell"]
    fig.suptitle(f"{c['method']} [{c['variant']}] on {c['dataset']}, seed {c['seed']}", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, png, dpi=90)
