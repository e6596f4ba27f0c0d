"""Expression recognition by weighted k-nearest neighbours: a second view that trains nothing.

As in the kNN evaluation of InstDisc, DINO and solo-learn: features are L2-normalised, each test
image takes its k most cosine-similar training images, each neighbour votes for its class with
weight exp(similarity / T), and the class with the largest total wins. k = 20 and 200, T = 0.07.
Unlike the linear probe (``fer``) it has no training to tune, so it shows what the raw geometry
of a representation holds.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from harness.config import Config, at_least, each, positive
from harness.datasets.base import FaceDataset, ImageSet
from harness.protocol import Features, Measure, Protocol, Shown, mean_sd, shown
from harness.registry import register_protocol
from protocols.fer import accuracy_measure, classification_metrics


@dataclasses.dataclass(frozen=True)
class KNNConfig(Config):
    """Attributes:
    ks: the neighbourhood sizes (capped at the training set's size).
    temperature: T of the vote weights exp(similarity / T).
    """

    ks: tuple[int, ...] = (20, 200)
    temperature: float = 0.07

    RULES = {"ks": each(at_least(1)), "temperature": positive}


def knn_predict(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, k: int, temperature: float,
                n_classes: int, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN class predictions (N_test,) on cosine similarity; ties go to the lower class."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    k = min(k, len(train))
    out = []
    for start in range(0, len(test), chunk):
        sim, idx = (test[start : start + chunk] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes, dtype=sim.dtype)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(1))
    return torch.cat(out)


@register_protocol("knn")
class KNN(Protocol):
    """Weighted kNN expression recognition on the FER splits: accuracy and macro F1 per k."""

    task = "fer"
    view = "fer"
    Config = KNNConfig
    table = ("table_knn", "Expression recognition by weighted kNN (accuracy per k; nothing trained)")
    metric = "kNN acc"

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        return dataset.fer_split(split)

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        train, test = dataset.fer_split("train"), dataset.fer_split("test")
        x, x_test = features.get("train"), features.get("test")
        metrics: dict = {"per_k": {}}
        outcomes = {"label": test.labels.numpy()}  # per test image, in the split's order
        for k in self.cfg.ks:
            pred = knn_predict(x, train.labels, x_test, k, self.cfg.temperature, len(train.class_names))
            m = classification_metrics(test.labels.numpy(), pred.numpy(), train.class_names)
            metrics["per_k"][str(k)] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
            outcomes[f"pred_k{k}"] = pred.numpy()
        first = str(self.cfg.ks[0])
        metrics.update(accuracy=metrics["per_k"][first]["accuracy"], macro_f1=metrics["per_k"][first]["macro_f1"],
                       k=int(first), n_train=int(len(x)), n_test=int(len(x_test)), feature_dim=int(x.shape[1]),
                       outcomes=outcomes)
        return metrics

    @classmethod
    def summary(cls, metrics: dict) -> str:
        return "  ".join(f"k={k} accuracy {100 * m['accuracy']:.2f}" for k, m in metrics["per_k"].items())

    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        """Each k's accuracy (the numbers the table shows)."""
        return {f"accuracy k={k}": accuracy_measure(f"pred_k{k}") for k in metrics["per_k"]}

    @classmethod
    def main_measure(cls, metrics: dict) -> str:
        return f"accuracy k={metrics['k']}"

    @classmethod
    def cell(cls, records: list[dict], stats: Optional[dict[str, Shown]] = None) -> str:
        if not records:
            return ""
        ks = list(records[0]["metrics"]["per_k"])
        stats = stats or {}
        parts = [f"k={k}: " + shown(mean_sd([r["metrics"]["per_k"][k]["accuracy"] for r in records]), stats.get(f"accuracy k={k}"))
                 for k in ks]
        return ", ".join(parts) + f" (n={len(records)})"
