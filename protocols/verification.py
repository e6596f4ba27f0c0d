"""10-fold face verification (paper Section 3.5; LFW View 2 and SLLFW conventions).

The dataset's own folds are used: train on 9, test on the 10th, ten times. Three modes:

- ``pair-linear`` (default): a linear classifier on [|f1-f2|, |f1+f2|, f1*f2], the pair feature
  of the paper's released code, trained over all training pairs for several epochs;
- ``pair-linear-legacy``: the released code's loop as it actually ran -- 300 updates, each on
  one random minibatch of 128 pairs, Adam 1e-4, on [|f1-f2|, |f1+f2|, |f1*f2|] -- to reproduce
  its numbers;
- ``cosine``: cosine similarity with the threshold that maximises accuracy on the training
  folds, searched exactly over the midpoints between consecutive training scores.

The spread over folds is recorded as the sample sd (``accuracy_std``, ddof 1), its standard
error (``accuracy_sem``, what the paper says it reports) and ``np.std`` with ddof 0
(``accuracy_std_ddof0``, what the released script prints). ``configs/released.toml`` sets the
rest of the released evaluation: ``pair-linear-legacy`` with ``flip_concat``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tabulate import tabulate
from torch import nn

from harness import plots
from harness.config import Config, at_least, choice, positive
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.protocol import Features, Measure, Protocol, Shown, mean_sd, seeded_generator, shown
from harness.stats import weighted_mean
from harness.registry import SUITES, register_protocol

MODES = ("pair-linear", "pair-linear-legacy", "cosine")
#: The paper's Table 2 (accuracy, spread over folds), by (method, variant) and our dataset names.
PAPER_TABLE2: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("simclr", "default"): {"lfw": (63.38, 2.53), "sllfw": (54.40, 2.45)},
    ("mae", "default"): {"lfw": (62.60, 2.75), "sllfw": (53.05, 2.25)},
    ("temporal", "default"): {"lfw": (65.95, 2.89), "sllfw": (57.03, 3.14)},
    ("sslfer", "default"): {"lfw": (62.38, 2.88), "sllfw": (54.55, 2.33)},
    ("pcl", "default"): {"lfw": (67.50, 2.31), "sllfw": (58.12, 0.89)},
    ("unsup3d", "default"): {"lfw": (71.37, 1.99), "sllfw": (58.70, 1.62)},
    ("facecycle", "default"): {"lfw": (71.20, 1.90), "sllfw": (59.60, 2.73)},
    ("latentface", "rdm-both"): {"lfw": (72.05, 2.57), "sllfw": (59.72, 1.33)},
    ("fabnet", "default"): {"lfw": (69.57, 1.54), "sllfw": (56.62, 2.13)},
    ("tcae", "default"): {"lfw": (71.32, 1.67), "sllfw": (58.05, 1.96)},
}


@dataclasses.dataclass(frozen=True)
class VerificationConfig(Config):
    """Attributes:
    mode: ``pair-linear``, ``pair-linear-legacy`` or ``cosine`` (see the module docstring).
    epochs, lr, batch_size, weight_decay: training of ``pair-linear``.
    flip_concat: concatenate each image's features with those of its mirror image (released code).
    """

    mode: str = "pair-linear"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    flip_concat: bool = False

    RULES = {"mode": choice(*MODES), "epochs": at_least(1), "lr": positive, "batch_size": at_least(1), "weight_decay": at_least(0)}


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold t maximising the accuracy of ``score > t`` on (scores, same), exactly.

    Candidates are the midpoints between consecutive distinct sorted scores plus one below the
    minimum and one above the maximum; ties go to the smallest threshold. Returns (t, accuracy).
    """
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(np.int64)
    distinct = np.unique(s)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1.0]])
    # for threshold t: correct = negatives with score <= t + positives with score > t
    below = np.searchsorted(s, candidates, side="right")  # number of scores <= t
    neg_below = np.concatenate([[0], np.cumsum(1 - y)])[below]
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[below]
    correct = neg_below + pos_above
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / len(y))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """True accept rate at a false accept rate of at most ``far``.

    The threshold is the (k+1)-th highest impostor score with k = floor(far * impostors), and a
    pair is accepted when its score is strictly above it, so at most k impostors are accepted.
    Where far * impostors < 1, that is the share of genuine pairs above every impostor.
    """
    negatives = np.sort(scores[~same])[::-1]
    k = int(np.floor(far * len(negatives) + 1e-9))
    threshold = negatives[k] if k < len(negatives) else -np.inf
    return float((scores[same] > threshold).mean())


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a genuine pair outscores an impostor pair (ties half)."""
    pos, neg = scores[same], scores[~same]
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def roc_points(scores: np.ndarray, same: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """The ROC curve (FAR, TAR at every distinct threshold, from (0, 0) to (1, 1)), thinned to
    about ``max_points`` points spread evenly in log FAR (for plotting)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tar = np.r_[0.0, np.cumsum(y)[last] / max(y.sum(), 1)]
    far = np.r_[0.0, np.cumsum(~y)[last] / max((~y).sum(), 1)]
    if len(far) > max_points:
        grid = np.r_[0.0, np.logspace(np.log10(max(far[far > 0].min(), 1e-6)), 0, max_points - 1)]
        keep = np.unique(np.r_[0, np.searchsorted(far, grid, side="right") - 1, len(far) - 1])
        far, tar = far[keep], tar[keep]
    return {"far": [round(float(v), 6) for v in far], "tar": [round(float(v), 6) for v in tar]}


#: false accept rates reported per fold, and the one only the pooled test folds resolve.
FOLD_FARS = (1e-2, 1e-1)
POOLED_FAR = 1e-3


def roc_metrics(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict:
    """TAR at FAR 1e-2 and 1e-1 per fold (mean, sd), TAR at FAR 1e-3 over the pooled test-fold
    scores (one fold's 300 impostors cannot resolve 1e-3), ROC AUC per fold and pooled, and the
    pooled ROC curve."""
    folds = np.unique(fold)
    out: dict = {}
    for far in FOLD_FARS:
        per_fold = np.array([tar_at_far(scores[fold == k], same[fold == k], far) for k in folds])
        out[f"tar_at_far_{far:g}"] = float(per_fold.mean())
        out[f"tar_at_far_{far:g}_std"] = float(per_fold.std(ddof=1)) if len(folds) > 1 else 0.0
    out[f"tar_at_far_{POOLED_FAR:g}_pooled"] = tar_at_far(scores, same, POOLED_FAR)
    aucs = np.array([roc_auc(scores[fold == k], same[fold == k]) for k in folds])
    out.update(
        auc=float(aucs.mean()),
        auc_std=float(aucs.std(ddof=1)) if len(folds) > 1 else 0.0,
        auc_pooled=roc_auc(scores, same),
        roc=roc_points(scores, same),
    )
    return out


# --- the same numbers under bootstrap weights (B, n): how often each pair was drawn -------------------------
def weighted_tar_at_far(scores: np.ndarray, same: np.ndarray, far: float, w: np.ndarray) -> np.ndarray:
    """``tar_at_far`` with each pair counted as often as its weight says (B replicates at once):
    the threshold is the (k+1)-th highest impostor score counting repeats, k = floor(far * impostors)."""
    impostors, genuine = np.flatnonzero(~same), np.flatnonzero(same)
    order = impostors[np.argsort(-scores[impostors], kind="stable")]
    ranked, counted = scores[order], np.cumsum(w[:, order], axis=1)  # impostors at or above each rank
    k = np.floor(far * counted[:, -1] + 1e-9)
    first_above = (counted <= k[:, None]).sum(1)
    threshold = np.where(first_above < len(ranked), ranked[np.minimum(first_above, len(ranked) - 1)], -np.inf)
    drawn = w[:, genuine]
    with np.errstate(invalid="ignore"):  # a replicate of a small fold may draw no genuine pair: nan
        return np.einsum("bn,bn->b", drawn, scores[genuine][None, :] > threshold[:, None]) / drawn.sum(1)


def weighted_auc(scores: np.ndarray, same: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``roc_auc`` with each pair counted as often as its weight says (B replicates at once)."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], same[order], w[:, order]
    impostors = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * ~y, axis=1)], axis=1)
    below = impostors[:, np.searchsorted(s, s, side="left")]
    ties = impostors[:, np.searchsorted(s, s, side="right")] - below
    genuine = w * y
    with np.errstate(invalid="ignore"):  # a replicate of a small fold may draw no pair of a kind: nan
        return (genuine * (below + 0.5 * ties)).sum(1) / (genuine.sum(1) * (w * ~y).sum(1))


def per_fold(statistic: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray], o: dict[str, np.ndarray],
             w: np.ndarray) -> np.ndarray:
    """The mean over folds of ``statistic(outcomes of the fold, weights of the fold)``."""
    folds = [o["fold"] == k for k in np.unique(o["fold"])]
    return np.mean([statistic({name: v[f] for name, v in o.items()}, w[:, f]) for f in folds], axis=0)


def weighted_accuracy(o: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    return weighted_mean((o["decision"] > 0) == (o["same"] > 0), w)


def weighted_tar(far: float) -> Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]:
    return lambda o, w: weighted_tar_at_far(o["score"], o["same"] > 0, far, w)


#: Table 2's numbers as statistics of the per-pair outcomes (``Protocol.measures``).
VERIFICATION_MEASURES = {
    "accuracy": Measure(lambda o, w: per_fold(weighted_accuracy, o, w)),
    **{f"tar_at_far_{far:g}": Measure(lambda o, w, far=far: per_fold(weighted_tar(far), o, w)) for far in FOLD_FARS},
    f"tar_at_far_{POOLED_FAR:g}_pooled": Measure(weighted_tar(POOLED_FAR)),
    "auc": Measure(lambda o, w: per_fold(lambda f, fw: weighted_auc(f["score"], f["same"] > 0, fw), o, w)),
}


def cosine_scores(f: torch.Tensor, pairs: PairList) -> np.ndarray:
    """The cosine similarity of each pair's two feature vectors."""
    fn = nn.functional.normalize(f.float(), dim=1)
    return (fn[pairs.left] * fn[pairs.right]).sum(1).numpy()


def pair_features(f: torch.Tensor, pairs: PairList, legacy: bool) -> torch.Tensor:
    a, b = f[pairs.left], f[pairs.right]
    prod = (a * b).abs() if legacy else a * b
    return torch.cat([(a - b).abs(), (a + b).abs(), prod], dim=1)


def train_pair_linear(x: torch.Tensor, y: torch.Tensor, cfg: VerificationConfig, seed: int, legacy: bool) -> nn.Module:
    """A Linear(->2) pair classifier: all pairs for ``epochs`` epochs, or the legacy 300 updates."""
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 2)
    gen = seeded_generator(seed, 3)
    loss_fn = nn.CrossEntropyLoss()
    if legacy:  # released code: "300 epochs", each one random minibatch of 128 pairs
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batches = (torch.randperm(len(x), generator=gen)[:128] for _ in range(300))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batches = (
            order[i : i + cfg.batch_size]
            for order in (torch.randperm(len(x), generator=gen) for _ in range(cfg.epochs))
            for i in range(0, len(x), cfg.batch_size)
        )
    for idx in batches:
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return model


@register_protocol("verification")
class Verification(Protocol):
    """Mean, spread and per-fold accuracy over the dataset's official folds."""

    task = "verification"
    view = "verification"
    Config = VerificationConfig
    table = ("table2_verification", "Table 2: face verification, 10-fold accuracy")
    paper = PAPER_TABLE2
    unit = "pairs, within their folds"
    version = "2"  # 2: TAR at FAR, ROC AUC and the ROC curve from the test-fold scores
    note = (
        "Verification: accuracy ± is the spread over the 10 folds (sd, ddof 1), seed sd the sd of the mean"
        " over seeds; TAR and AUC ± is the sd over seeds. Suite tables: accuracy, mean over seeds; Mean: the"
        " unweighted mean over the sets; LFW paper: the paper's LFW number (its own face crop, not the .bin's)."
    )

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        return dataset.verification()[0]

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        _, pairs = dataset.verification()
        f = features.get("pairs").float()
        if self.cfg.flip_concat:
            f = torch.cat([f, features.get("pairs", flip=True).float()], dim=1)
        same = pairs.same.numpy()
        # what each fold's model reads, built once: the pairs' cosine scores, or their pair features
        x = cosine_scores(f, pairs) if self.cfg.mode == "cosine" else pair_features(f, pairs, self.cfg.mode == "pair-linear-legacy")
        scores = np.zeros(len(pairs))  # each pair's score from the classifier of its test fold
        decision = np.zeros(len(pairs), dtype=bool)  # and whether it called the pair the same person
        accuracies, thresholds = [], []
        for k in range(pairs.n_folds):
            test = (pairs.fold == k).numpy()
            scores[test], threshold = self.fold_scores(x, pairs.same, test, seed + k)
            if self.cfg.mode == "cosine":
                thresholds.append(threshold)
            decision[test] = scores[test] > threshold
            accuracies.append(float((decision[test] == same[test]).mean()))
        acc = np.array(accuracies)
        metrics = {
            "accuracy": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            # the spread as the released identity_test.py prints it (np.std, ddof 0)
            "accuracy_std_ddof0": float(acc.std(ddof=0)),
            "accuracy_sem": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else 0.0,
            "fold_accuracies": accuracies,
            "n_pairs": int(len(pairs)),
            "feature_dim": int(f.shape[1]),
            **roc_metrics(scores, same, pairs.fold.numpy()),
        }
        if thresholds:
            metrics["fold_thresholds"] = thresholds
        # per pair, in the dataset's order: what a paired comparison needs
        metrics["outcomes"] = {"score": scores, "decision": decision, "same": same, "fold": pairs.fold.numpy()}
        return metrics

    def fold_scores(self, x: np.ndarray | torch.Tensor, same: torch.Tensor, test: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        """Scores of one fold's test pairs (higher = more likely the same person) from a model fit
        on the other folds, and the threshold above which a pair is called the same person; ``x``
        holds every pair's cosine score or pair features."""
        if self.cfg.mode == "cosine":
            threshold, _ = best_threshold(x[~test], same.numpy()[~test])
            return x[test], threshold
        legacy = self.cfg.mode == "pair-linear-legacy"
        train_x = x[~test]
        # standardise with training-fold statistics; the released code fed raw features
        mean, std = (0.0, 1.0) if legacy else (train_x.mean(0), train_x.std(0) + 1e-6)
        model = train_pair_linear((train_x - mean) / std, same[~test].long(), self.cfg, seed, legacy)
        with torch.no_grad():
            logits = model((x[test] - mean) / std)
        # the log-odds of "same"; > 0 is exactly the classifier's argmax decision
        return (logits[:, 1] - logits[:, 0]).numpy().astype(np.float64), 0.0

    @classmethod
    def summary(cls, metrics: dict) -> str:
        released = f" (ddof 0, as the release prints it: {100 * metrics['accuracy_std_ddof0']:.2f})" if "accuracy_std_ddof0" in metrics else ""
        return f"accuracy {100 * metrics['accuracy']:.2f}  sd over folds {100 * metrics['accuracy_std']:.2f}{released}"

    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        """Accuracy (mean over folds), and the ROC view's numbers of results from version 2 on."""
        return VERIFICATION_MEASURES if "auc" in metrics else {"accuracy": VERIFICATION_MEASURES["accuracy"]}

    @classmethod
    def resampling(cls, outcomes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"strata": outcomes["fold"]}  # every fold keeps its pairs: accuracy is a mean over folds

    @classmethod
    def cell(cls, records: list[dict], stats: Optional[dict[str, Shown]] = None) -> str:
        """Mean accuracy, ± the spread over the 10 folds, its interval, and the sd over seeds when there are several."""
        if not records:
            return ""
        acc = 100 * np.array([r["metrics"]["accuracy"] for r in records])
        fold_sd = 100 * np.mean([r["metrics"]["accuracy_std"] for r in records])
        seeds = f", seed sd {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
        return shown(f"{acc.mean():.2f}±{fold_sd:.2f}", (stats or {}).get("accuracy")) + f" (n={len(acc)}{seeds})"

    @classmethod
    def tables(cls, grid) -> dict[str, tuple[str, str]]:
        """Table 2 (accuracy, with the paper's column) and its ROC view: TAR at each FAR and the
        AUC of the same scores (results from before version 2 have none)."""
        out = super().tables(grid)
        rows = grid.rows(protocols=[cls.name])
        headers, body = ["Method"], [[grid.label(k)] for k in rows]
        for dataset in grid.columns(cls.name, rows):
            headers += [f"{dataset} {name}" for name, _ in ROC_COLUMNS]
            stats = grid.column_stats(cls, dataset, rows)
            for line, key in zip(body, rows):
                records = [r for r in grid.records(key, cls.name, dataset) if "auc" in r["metrics"]]
                line += [roc_cell(records, metric, stats[key].get(metric)) for _, metric in ROC_COLUMNS]
        if any(cell for line in body for cell in line[1:]):
            out[f"{cls.table[0]}_roc"] = (
                "Table 2, ROC view: true accept rate at a false accept rate, and ROC AUC",
                tabulate(body, headers=headers, tablefmt="github"),
            )
        for suite, members in SUITES.items():
            table = suite_table(grid, rows, members, cls.name, cls.paper)
            if table:
                out[f"{cls.table[0]}_{suite}"] = (f"Table 2, {suite}: accuracy on each set and their mean", table)
        return out

    @classmethod
    def figures(cls, grid, folder: Path) -> list[Path]:
        """Per dataset, the ROC curve of every row (pooled test folds, TAR averaged over seeds),
        embedded under Table 2; results from before version 2 have no curve."""
        rows = grid.rows(protocols=[cls.name])
        out = []
        for dataset in grid.columns(cls.name, rows):
            curves = {}
            for key in rows:
                rocs = [r["metrics"]["roc"] for r in grid.records(key, cls.name, dataset) if "roc" in r["metrics"]]
                if rocs:
                    curves[grid.label(key)] = mean_roc(rocs)
            if curves:
                title = f"ROC on {dataset}: pooled test folds, mean over seeds"
                out.append(plots.roc_figure(curves, folder / f"{cls.table[0]}_roc-{dataset}.png", title))
        return out


#: The ROC table's columns: (header, metric key); FAR 1e-3 only from the pooled test folds.
ROC_COLUMNS = (
    (f"TAR@FAR {POOLED_FAR:g} (pooled)", f"tar_at_far_{POOLED_FAR:g}_pooled"),
    *((f"TAR@FAR {far:g}", f"tar_at_far_{far:g}") for far in FOLD_FARS),
    ("AUC", "auc"),
)


def suite_table(grid, rows: list, members: tuple[str, ...], protocol: str, paper: dict) -> str:
    """Face-recognition papers' layout: one accuracy column per set of a suite that has results
    (mean over seeds), then their unweighted mean (only for rows measured on every column), with
    the paper's LFW number beside ``lfw-bin`` where the paper has one ('' when no row has results)."""
    columns = [d for d in members if any(grid.records(k, protocol, d) for k in rows)]
    if not columns:
        return ""
    headers, body = ["Method", *columns, "Mean"], []
    with_paper = any(paper.get(k[:2], {}).get("lfw") and grid.records(k, protocol, "lfw-bin") for k in rows)
    if with_paper:
        headers.insert(columns.index("lfw-bin") + 2, "LFW paper")
    for key in rows:
        accuracies = {d: [100 * r["metrics"]["accuracy"] for r in grid.records(key, protocol, d)] for d in columns}
        if not any(accuracies.values()):
            continue
        line = [grid.label(key)] + [f"{np.mean(a):.2f}" if a else "" for a in accuracies.values()]
        line.append(f"{np.mean([np.mean(a) for a in accuracies.values()]):.2f}" if all(accuracies.values()) else "")
        if with_paper:
            number = paper.get(key[:2], {}).get("lfw")
            line.insert(columns.index("lfw-bin") + 2, f"{number[0]:.2f}" if number and accuracies["lfw-bin"] else "")
        body.append(line)
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def roc_cell(records: list[dict], metric: str, stat: Optional[Shown] = None) -> str:
    """Percent, mean over seeds, ± the sd over seeds when there are several, and the interval."""
    return shown(mean_sd([r["metrics"][metric] for r in records]), stat) + f" (n={len(records)})" if records else ""


def mean_roc(rocs: list[dict[str, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Several ROC curves (``roc_points``) as one: TAR averaged over the curves at every FAR any
    of them has (each curve read as a step up at each of its points)."""
    far = np.unique(np.concatenate([r["far"] for r in rocs]))
    tar = np.mean([np.asarray(r["tar"])[np.searchsorted(r["far"], far, side="right") - 1] for r in rocs], axis=0)
    return far, tar
