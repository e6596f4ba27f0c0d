"""A protocol defined outside ``protocols/`` (``--plugins tests.protocol_plugin``): nearest class
centroid expression recognition. It shows that a new protocol is one module: registering it
makes it listable, runnable and tabulated without touching the harness."""
from __future__ import annotations

import torch

from harness.datasets.base import FaceDataset, ImageSet
from harness.protocol import Features, Protocol
from harness.registry import PROTOCOLS, register_protocol

if "centroid" not in PROTOCOLS:

    @register_protocol("centroid")
    class Centroid(Protocol):
        """Each test image takes the class whose mean training feature is nearest."""

        task = "fer"
        view = "fer"
        table = ("table_centroid", "Nearest class centroid (accuracy)")

        def images(self, dataset: FaceDataset, split: str) -> ImageSet:
            return dataset.fer_split(split)

        def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
            train, test = dataset.fer_split("train"), dataset.fer_split("test")
            x = features.get("train")
            centroids = torch.stack([x[train.labels == c].mean(0) for c in range(len(train.class_names))])
            pred = torch.cdist(features.get("test"), centroids).argmin(1)
            return {"accuracy": float((pred == test.labels).float().mean())}
