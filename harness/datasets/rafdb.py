"""RAF-DB basic set: seven-class expression recognition on aligned faces (paper Table 1).

Layout under ``--data-root`` (the ``basic`` folder of the download, renamed ``rafdb``)::

    rafdb/Image/aligned/train_00001_aligned.jpg ...   100x100 aligned faces
    rafdb/EmoLabel/list_patition_label.txt            "train_00001.jpg 5" lines (sic: "patition")

Labels 1..7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; they are stored as
0..6 in that order (as the released LatentFace code does). The ``train_``/``test_`` prefix of the
name is the official split. The aligned images are used whole (no crop), resized to ``size``.
"""
from __future__ import annotations

import dataclasses

import torch

from harness.config import Config, at_least
from harness.datasets.base import FaceDataset, ImageSet
from harness.datasets.folder import stratified_subset
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
LABEL_FILE = "rafdb/EmoLabel/list_patition_label.txt"
IMAGE_DIR = "rafdb/Image/aligned"


@dataclasses.dataclass(frozen=True)
class RAFDBConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    train_limit, test_limit: keep about this many images per split (0 = all 12,271 / 3,068),
        drawn per class in proportion, so small presets keep the class balance.
    """

    size: int = 64
    train_limit: int = 0
    test_limit: int = 0

    PRESETS = {"smoke": {"train_limit": 700, "test_limit": 350}}
    RULES = {"size": at_least(8), "train_limit": at_least(0), "test_limit": at_least(0)}


@register_dataset("rafdb")
class RAFDB(FaceDataset):
    """RAF-DB basic expression recognition (official train / test split)."""

    tasks = frozenset({"fer"})
    Config = RAFDBConfig

    def labels(self, split: str) -> tuple[list[str], list[int]]:
        """Image names of a split and their labels 0..6, in file order."""
        path = self.require(LABEL_FILE)
        names, labels = [], []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in {"1", "2", "3", "4", "5", "6", "7"}:
                raise BenchError(f"{path}: line {number} should be '<split>_<number>.jpg <label 1-7>', got {line.strip()!r}")
            if fields[0].startswith(f"{split}_"):
                names.append(fields[0])
                labels.append(int(fields[1]) - 1)
        if not names:
            raise BenchError(f"{path}: no '{split}_' images listed; the file is not RAF-DB's basic label list")
        return names, labels

    def fer_split(self, split: str) -> ImageSet:
        if split not in ("train", "test"):
            raise BenchError(f"fer split {split!r}: expected 'train' or 'test'")
        names, labels = self.labels(split)
        labels_t = torch.tensor(labels)
        limit = self.cfg.train_limit if split == "train" else self.cfg.test_limit
        if limit and limit < len(names):
            keep = stratified_subset(labels_t, limit)
            names, labels_t = [names[i] for i in keep.tolist()], labels_t[keep]
        folder = self.require(IMAGE_DIR)
        files = [folder / f"{name.rsplit('.', 1)[0]}_aligned.jpg" for name in names]
        key = {"dataset": "rafdb", "split": split, "names": names, "size": self.cfg.size}
        images = cached(self.cache_dir, "images", key, lambda: load_images(files, self.cfg.size, desc=f"rafdb {split}"))
        return ImageSet(images, labels=labels_t, class_names=CLASSES, names=tuple(str(f.relative_to(folder.parents[1])) for f in files))
