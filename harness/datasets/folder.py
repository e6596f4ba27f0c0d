"""Folder-of-classes expression datasets: ``<name>/{train,test}/<class>/*.jpg``.

FER-2013 ships this way; CK+, JAFFE or any other export in the same layout is registered with
one call, ``register_folder_dataset("ckplus", "ckplus")``. Grayscale images become RGB.
"""
from __future__ import annotations

import dataclasses

import torch

from harness.config import Config, at_least
from harness.datasets.base import FaceDataset, ImageSet
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclasses.dataclass(frozen=True)
class FolderConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    train_limit, test_limit: keep at most this many images per split (0 = all), drawn with a
        fixed seed in proportion to the class sizes, so small presets keep the class balance.
    """

    size: int = 64
    train_limit: int = 0
    test_limit: int = 0

    PRESETS = {"smoke": {"train_limit": 700, "test_limit": 350}}
    RULES = {"size": at_least(8), "train_limit": at_least(0), "test_limit": at_least(0)}


class FolderDataset(FaceDataset):
    """Expression recognition from a folder of class folders (classes = sorted folder names)."""

    tasks = frozenset({"fer"})
    Config = FolderConfig
    subdir: str = ""

    def fer_split(self, split: str) -> ImageSet:
        root = self.require(f"{self.subdir}/{split}")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise BenchError(f"{root} has no class folders; expected {root}/<class>/<image>.jpg")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        labels_t = torch.tensor(labels)
        limit = self.cfg.train_limit if split == "train" else self.cfg.test_limit
        keep = stratified_subset(labels_t, limit) if limit and limit < len(files) else torch.arange(len(files))
        files = [files[i] for i in keep.tolist()]
        key = {"dataset": self.name, "split": split, "files": [str(f.relative_to(root)) for f in files], "size": self.cfg.size}
        images = cached(self.cache_dir, "images", key, lambda: load_images(files, self.cfg.size, desc=f"{self.name} {split}"))
        names = tuple(str(f.relative_to(root.parent)) for f in files)  # <split>/<class>/<file>
        return ImageSet(images, labels=labels_t[keep], class_names=tuple(classes), names=names)


def stratified_subset(labels: torch.Tensor, limit: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of about ``limit`` items keeping each class's share (at least one each)."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        k = max(1, round(limit * len(idx) / len(labels)))
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(keep).sort().values


def register_folder_dataset(name: str, subdir: str) -> type[FolderDataset]:
    """Register ``<data-root>/<subdir>/{train,test}/<class>/`` as dataset ``name``."""
    cls = type(f"Folder_{name}", (FolderDataset,), {"subdir": subdir, "__doc__": f"{name}: folder-of-classes FER data."})
    return register_dataset(name)(cls)


register_folder_dataset("fer2013", "fer2013")
