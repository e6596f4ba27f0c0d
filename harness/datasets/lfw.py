"""Labeled Faces in the Wild: the official 10-fold verification protocol (View 2).

Layout under ``--data-root``: ``lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg`` and
``lfw/pairs.txt``. The deep-funneled images are aligned with the face in the centre, so the face
crop is a centred square (``crop_fraction`` of the 250 px side) resized to ``size``.

The LatentFace release evaluates on its own pre-cropped copy, ``lfw_crop`` (same
``<Name>/<Name>_NNNN.jpg`` names), resized whole: ``--set lfw.image_dir=lfw_crop --set
lfw.crop_fraction=1`` reads it from ``lfw/lfw_crop`` (``configs/released.toml``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from harness.config import Config, at_least, between
from harness.datasets.base import ImageSet
from harness.datasets.pairs import Pair, PairsDataset, parse_lfw_pairs
from harness.errors import BenchError
from harness.registry import register_dataset

DEFAULT_IMAGES = "lfw-deepfunneled"
IMAGE_DIR = f"lfw/{DEFAULT_IMAGES}"


@dataclasses.dataclass(frozen=True)
class LFWConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    crop_fraction: side of the centred face crop as a fraction of the image side; 1: no crop,
        the whole image is resized (pre-cropped folders such as the release's ``lfw_crop``).
    pairs_file: the pair list inside ``lfw/`` (View 2 ``pairs.txt``).
    pretrain_limit: cap on pretraining images (0 = all 13,233): a fixed random subset, so a
        cap does not keep only the people whose names come first in the alphabet.
    image_dir: the image folder inside ``lfw/``: ``lfw-deepfunneled`` or the release's ``lfw_crop``.
    """

    size: int = 64
    crop_fraction: float = 0.5
    pairs_file: str = "pairs.txt"
    pretrain_limit: int = 0
    image_dir: str = DEFAULT_IMAGES

    LATE_FIELDS = ("image_dir",)

    RULES = {"size": at_least(8), "crop_fraction": between(0, 1, low_open=True), "pretrain_limit": at_least(0)}


@register_dataset("lfw")
class LFW(PairsDataset):
    """LFW verification (paper Table 2) and, optionally, its images as pretraining data."""

    tasks = frozenset({"verification", "pretrain"})
    Config = LFWConfig

    def image_folder(self) -> Path:
        return self.require(f"lfw/{self.cfg.image_dir}")

    def pairs_path(self) -> Path:
        return self.require(f"lfw/{self.cfg.pairs_file}")

    def pair_list(self) -> list[Pair]:
        return parse_lfw_pairs(self.pairs_path())

    def pretrain(self) -> ImageSet:
        folder = self.image_folder()
        names = sorted(str(p.relative_to(folder)) for p in folder.glob("*/*.jpg"))
        if self.cfg.pretrain_limit and self.cfg.pretrain_limit < len(names):
            keep = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))[: self.cfg.pretrain_limit]
            names = [names[i] for i in keep.sort().values.tolist()]
        if not names:
            raise BenchError(f"no JPEG images under {folder}; check --data-root")
        return ImageSet(self.load(names, "pretrain"), names=tuple(names))

