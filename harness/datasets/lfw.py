"""Labeled Faces in the Wild: the official 10-fold verification protocol (View 2).

Layout under ``--data-root``: ``lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg`` and
``lfw/pairs.txt``. The deep-funneled images are aligned with the face in the centre, so the face
crop is a centred square (``crop_fraction`` of the 250 px side) resized to ``size``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from harness.config import Config
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

IMAGE_DIR = "lfw/lfw-deepfunneled"


@dataclasses.dataclass(frozen=True)
class LFWConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    crop_fraction: side of the centred face crop as a fraction of the image side.
    pairs_file: the pair list inside ``lfw/`` (View 2 ``pairs.txt``).
    pretrain_limit: cap on pretraining images (0 = all 13,233): a fixed random subset, so a
        cap does not keep only the people whose names come first in the alphabet.
    """

    size: int = 64
    crop_fraction: float = 0.5
    pairs_file: str = "pairs.txt"
    pretrain_limit: int = 0


@dataclasses.dataclass(frozen=True)
class Pair:
    """One line of a pair list: two image paths relative to the image folder, same person?"""

    left: str
    right: str
    same: bool
    fold: int


def image_name(person: str, number: int) -> str:
    return f"{person}/{person}_{number:04d}.jpg"


def parse_pairs(path: Path) -> list[Pair]:
    """Parse an LFW ``pairs.txt``: header ``"<folds> <n>"``, then per fold n matched lines
    ``name i j`` followed by n mismatched lines ``name1 i name2 j``."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 2 or not all(t.isdigit() for t in lines[0]):
        raise BenchError(f"{path}: first line must be '<folds> <pairs per half-fold>' like '10 300'; the file is malformed")
    n_folds, n = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != 2 * n_folds * n:
        raise BenchError(
            f"{path}: header says {n_folds} folds x {2 * n} pairs = {2 * n_folds * n} lines, found {len(body)}; "
            "the file is truncated or corrupt, download it again"
        )
    pairs = []
    for k, tokens in enumerate(body):
        fold, same = k // (2 * n), (k % (2 * n)) < n
        try:
            if same and len(tokens) == 3:
                pairs.append(Pair(image_name(tokens[0], int(tokens[1])), image_name(tokens[0], int(tokens[2])), True, fold))
            elif not same and len(tokens) == 4:
                pairs.append(Pair(image_name(tokens[0], int(tokens[1])), image_name(tokens[2], int(tokens[3])), False, fold))
            else:
                raise ValueError
        except ValueError:
            kind = "'name i j'" if same else "'name1 i name2 j'"
            raise BenchError(f"{path}: line {k + 2} should be {kind}, got {' '.join(tokens)!r}") from None
    return pairs


def pairs_to_tensors(pairs: list[Pair]) -> tuple[list[str], PairList]:
    """Unique image names in order of first use, and the pairs as indices into them."""
    index: dict[str, int] = {}
    for p in pairs:
        index.setdefault(p.left, len(index))
        index.setdefault(p.right, len(index))
    pair_list = PairList(
        left=torch.tensor([index[p.left] for p in pairs]),
        right=torch.tensor([index[p.right] for p in pairs]),
        same=torch.tensor([p.same for p in pairs]),
        fold=torch.tensor([p.fold for p in pairs]),
    )
    return list(index), pair_list


@register_dataset("lfw")
class LFW(FaceDataset):
    """LFW verification (paper Table 2) and, optionally, its images as pretraining data."""

    tasks = frozenset({"verification", "pretrain"})
    Config = LFWConfig

    def pairs_path(self) -> Path:
        return self.require(f"lfw/{self.cfg.pairs_file}")

    def pair_list(self) -> list[Pair]:
        return parse_pairs(self.pairs_path())

    def load(self, names: list[str], what: str) -> torch.Tensor:
        """Decode images of the image folder (cached on disk by name list and crop)."""
        folder = self.require(IMAGE_DIR)
        key = {"dataset": "lfw", "what": what, "names": names, "size": self.cfg.size, "crop": self.cfg.crop_fraction}
        return cached(
            self.cache_dir,
            "images",
            key,
            lambda: load_images([folder / n for n in names], self.cfg.size, center_fraction=self.cfg.crop_fraction, desc=f"lfw {what}"),
        )

    def verification(self) -> tuple[ImageSet, PairList]:
        names, pairs = pairs_to_tensors(self.pair_list())
        people = sorted({n.split("/")[0] for n in names})
        person_id = {p: i for i, p in enumerate(people)}
        identities = torch.tensor([person_id[n.split("/")[0]] for n in names])
        return ImageSet(self.load(names, "pairs"), identities=identities), pairs

    def pretrain(self) -> ImageSet:
        folder = self.require(IMAGE_DIR)
        names = sorted(str(p.relative_to(folder)) for p in folder.glob("*/*.jpg"))
        if self.cfg.pretrain_limit and self.cfg.pretrain_limit < len(names):
            keep = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))[: self.cfg.pretrain_limit]
            names = [names[i] for i in keep.sort().values.tolist()]
        if not names:
            raise BenchError(f"no JPEG images under {folder}; check --data-root")
        return ImageSet(self.load(names, "pretrain"))

    def fingerprint(self, task: Optional[str] = None) -> dict:
        if "verification" not in self.tasks:  # e.g. lfw-clips: the pair list is never read
            return super().fingerprint(task)
        return {**super().fingerprint(task), "pairs_bytes": self.pairs_path().stat().st_size}
