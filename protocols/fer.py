"""Facial expression recognition by linear probing (paper Sections 3.2 and 3.4).

Frozen features -> BatchNorm1d -> Linear, trained with Adam (lr 1e-3) for 20 epochs, as in the
paper and its released code (BN with affine, Linear without bias). The released code reports
the epoch with the best *test* accuracy; here the last epoch is reported, or, with
``select=val``, the epoch that is best on a validation split carved from the training set.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from harness import plots
from harness.config import Config, at_least, choice, fraction, positive
from harness.datasets.base import FaceDataset, ImageSet
from harness.protocol import Features, Measure, Protocol, Shown, mean_sd, seeded_generator, shown
from harness.stats import weighted_mean
from harness.registry import register_protocol

#: The paper's Table 1 (accuracy, macro F1), by (method, variant) and our dataset names; a third
#: number is the accuracy the method's own paper reports (Table 1's starred row).
PAPER_TABLE1: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {
    ("simclr", "default"): {
        "rafdb": (64.47, 47.48), "affectnet": (40.15, 38.86), "affectnet-pose30": (37.69, 36.57), "affectnet-pose45": (37.84, 37.41),
    },
    ("mae", "default"): {
        "rafdb": (62.61, 48.93), "affectnet": (37.40, 33.99), "affectnet-pose30": (35.78, 33.05), "affectnet-pose45": (35.05, 32.06),
    },
    ("temporal", "default"): {
        "rafdb": (56.94, 42.92), "affectnet": (34.20, 32.53), "affectnet-pose30": (34.78, 33.47), "affectnet-pose45": (34.50, 32.25),
    },
    ("sslfer", "default"): {
        "rafdb": (55.37, 40.37), "affectnet": (35.90, 34.49), "affectnet-pose30": (34.72, 33.69), "affectnet-pose45": (34.06, 32.15),
    },
    # PCL* (74.47): PCL's own paper, whose linear probe trains 300 epochs; LatentFace's 20-epoch probe gives 67.07
    ("pcl", "default"): {
        "rafdb": (67.07, 55.71, 74.47), "affectnet": (36.15, 34.74), "affectnet-pose30": (35.94, 34.94), "affectnet-pose45": (34.72, 33.58),
    },
    ("unsup3d", "default"): {
        "rafdb": (69.42, 55.50), "affectnet": (41.07, 39.26), "affectnet-pose30": (38.89, 38.14), "affectnet-pose45": (36.70, 35.25),
    },
    ("facecycle", "default"): {
        "rafdb": (71.51, 60.80), "affectnet": (41.04, 39.70), "affectnet-pose30": (38.50, 37.10), "affectnet-pose45": (36.48, 34.90),
    },
    ("latentface", "rdm-both"): {
        "rafdb": (75.26, 64.91), "affectnet": (44.42, 43.60), "affectnet-pose30": (41.95, 41.69), "affectnet-pose45": (40.43, 39.45),
    },
    ("fabnet", "default"): {
        "rafdb": (65.54, 50.40), "affectnet": (36.92, 34.83), "affectnet-pose30": (34.55, 33.33), "affectnet-pose45": (33.18, 31.54),
    },
    ("tcae", "default"): {
        "rafdb": (69.52, 57.90), "affectnet": (38.77, 37.14), "affectnet-pose30": (36.56, 35.24), "affectnet-pose45": (35.60, 33.67),
    },
}


@dataclasses.dataclass(frozen=True)
class FERConfig(Config):
    """Attributes:
    epochs, lr, batch_size: probe training (paper: 20 epochs, Adam 1e-3; batch 32 RAF-DB).
    flip_aug: train on the features of a randomly flipped copy of each image, per epoch.
    select: ``last`` (report the last epoch) or ``val`` (best epoch on a validation split).
    val_fraction: share of each training class held out when ``select=val``.
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    flip_aug: bool = False
    select: str = "last"
    val_fraction: float = 0.1

    PRESETS = {"paper": {"batch_size": 32, "flip_aug": True}}
    # batch_size >= 2: BatchNorm cannot train on one sample; select never offers the test split
    RULES = {"epochs": at_least(1), "lr": positive, "batch_size": at_least(2), "select": choice("last", "val"),
             "val_fraction": fraction}


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix (0 where a class is never predicted nor present)."""
    tp = np.diag(confusion).astype(float)
    denom = confusion.sum(0) + confusion.sum(1)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def classification_metrics(true: np.ndarray, pred: np.ndarray, class_names: tuple[str, ...]) -> dict:
    cm = confusion_matrix(true, pred, len(class_names))
    f1 = f1_per_class(cm)
    return {
        "accuracy": float((true == pred).mean()),
        "macro_f1": float(f1.mean()),
        "per_class_f1": dict(zip(class_names, f1.tolist())),
        "confusion": cm.tolist(),
        "class_names": list(class_names),
        "n_test": int(len(true)),
    }


def correct(outcomes: dict[str, np.ndarray], pred: str = "pred") -> np.ndarray:
    """Per-image correctness of the predictions ``outcomes[pred]``."""
    return outcomes[pred] == outcomes["label"]


def accuracy_measure(pred: str = "pred") -> Measure:
    """Accuracy of the predictions ``outcomes[pred]``: compared by exact McNemar."""
    return Measure(lambda o, w: weighted_mean(correct(o, pred), w), correct=lambda o: correct(o, pred))


def macro_f1_measure(n_classes: int, pred: str = "pred") -> Measure:
    """Macro F1 of the predictions ``outcomes[pred]``, per replicate from weighted confusion counts."""

    def statistic(o: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        classes = np.arange(n_classes)
        is_pred = (o[pred][:, None] == classes).astype(float)
        is_true = (o["label"][:, None] == classes).astype(float)
        tp, denom = w @ (is_pred * is_true), w @ is_pred + w @ is_true
        return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0).mean(1)

    return Measure(statistic)


def train_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    cfg: FERConfig,
    seed: int,
    x_flip: torch.Tensor | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> nn.Module:
    """BatchNorm1d + Linear probe; returns the last-epoch model, or the best on ``val``."""
    torch.manual_seed(seed)  # the probe's initial weights
    probe = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.Linear(x.shape[1], n_classes, bias=False))
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = seeded_generator(seed, 1)
    best_acc, best_state = -1.0, None
    for _ in range(cfg.epochs):
        probe.train()
        inputs = x
        if x_flip is not None:  # each image appears once per epoch, flipped with probability 1/2
            pick = torch.rand(len(x), generator=gen) < 0.5
            inputs = torch.where(pick[:, None], x_flip, x)
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            opt.zero_grad()
            loss_fn(probe(inputs[idx]), y[idx]).backward()
            opt.step()
        if val is not None:
            acc = float((predict(probe, val[0]) == val[1]).float().mean())
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(probe.state_dict())
    if best_state is not None:
        probe.load_state_dict(best_state)
    probe.eval()
    return probe


@torch.no_grad()
def predict(probe: nn.Module, x: torch.Tensor) -> torch.Tensor:
    probe.eval()
    return probe(x).argmax(1)


def validation_split(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of a stratified validation subset of the training set."""
    gen = seeded_generator(seed, 2)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        k = int(round(fraction * len(idx)))
        mask[idx[torch.randperm(len(idx), generator=gen)[:k]]] = True
    return mask


@register_protocol("fer")
class FER(Protocol):
    """Linear-probe expression recognition: accuracy, macro F1, per-class F1, confusion counts."""

    task = "fer"
    view = "fer"
    Config = FERConfig
    table = ("table1_fer", "Table 1: facial expression recognition by linear probing (accuracy / macro F1)")
    metric = "acc / F1"
    paper = PAPER_TABLE1

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        return dataset.fer_split(split)

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        train, test = dataset.fer_split("train"), dataset.fer_split("test")
        x, y = features.get("train").float(), train.labels
        x_flip = features.get("train", flip=True).float() if self.cfg.flip_aug else None
        val = None
        if self.cfg.select == "val":
            held = validation_split(y, self.cfg.val_fraction, seed)
            val = (x[held], y[held])
            x, y = x[~held], y[~held]
            x_flip = x_flip[~held] if x_flip is not None else None
        probe = train_probe(x, y, len(train.class_names), self.cfg, seed, x_flip, val)
        pred = predict(probe, features.get("test").float())
        metrics = classification_metrics(test.labels.numpy(), pred.numpy(), train.class_names)
        metrics["n_train"] = int(len(x))
        metrics["feature_dim"] = int(x.shape[1])
        # per test image, in the split's order: what a paired comparison needs
        metrics["outcomes"] = {"label": test.labels.numpy(), "pred": pred.numpy()}
        return metrics

    @classmethod
    def summary(cls, metrics: dict) -> str:
        return f"accuracy {100 * metrics['accuracy']:.2f}  macro F1 {100 * metrics['macro_f1']:.2f}"

    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        return {"accuracy": accuracy_measure(), "macro_f1": macro_f1_measure(len(metrics["class_names"]))}

    @classmethod
    def cell(cls, records: list[dict], stats: Optional[dict[str, Shown]] = None) -> str:
        if not records:
            return ""
        stats = stats or {}
        acc = shown(mean_sd([r["metrics"]["accuracy"] for r in records]), stats.get("accuracy"))
        f1 = shown(mean_sd([r["metrics"]["macro_f1"] for r in records]), stats.get("macro_f1"))
        return f"{acc} / {f1} (n={len(records)})"

    @classmethod
    def paper_cell(cls, numbers: tuple[float, ...]) -> str:
        own = f" (own paper {numbers[2]:.2f})" if len(numbers) > 2 else ""
        return f"{numbers[0]:.2f} / {numbers[1]:.2f}{own}"

    @classmethod
    def figures(cls, grid, folder: Path) -> list[Path]:
        """One confusion matrix per result, normalised by true class (kept while newer than its JSON)."""
        return [path for r in grid.records_of(cls.name) if (path := confusion_figure(r, folder / r["cell"]["dataset"]))]


def confusion_figure(record: dict, folder: Path) -> Path | None:
    """The PNG of one FER result's confusion matrix; None when an up-to-date one exists."""
    png = plots.result_png(record, folder)
    if png is None:
        return None
    cm = np.asarray(record["metrics"]["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = record["metrics"]["class_names"]
    c = record["cell"]
    title = f"{c['method']} [{c['variant']}] on {c['dataset']}, seed {c['seed']}\naccuracy {100 * record['metrics']['accuracy']:.1f}%"
    return plots.heatmap(norm, names, names, png, title, xlabel="predicted", ylabel="true", vmin=0, vmax=1)
