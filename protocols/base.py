"""What a protocol sees: a dataset for labels/pairs and a source of frozen features."""
from __future__ import annotations

from typing import ClassVar, Protocol as TypingProtocol

import torch

from harness.config import Config
from harness.datasets.base import FaceDataset


class Features(TypingProtocol):
    """Frozen features of one method on one dataset (computed once, then read from the cache)."""

    def get(self, split: str, flip: bool = False) -> torch.Tensor:
        """Features (N, D) of ``split`` (``"train"``/``"test"`` for FER, ``"pairs"`` for
        verification); ``flip=True`` gives those of the horizontally flipped images."""
        ...


class Protocol:
    """Base class of registered protocols.

    Attributes:
        task: the dataset capability needed (``"fer"`` or ``"verification"``), also passed to
            ``Method.encode`` so a method can feed each protocol the features the paper uses.
        version: bump when a change alters the numbers; tables print it in their footer.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type[Config]] = Config

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        """Metrics of the protocol (JSON-able; fractions, not percent)."""
        raise NotImplementedError


def seeded_generator(seed: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)
