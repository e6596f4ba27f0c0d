"""AffectNet: eight-class expression recognition in the wild, and its large-pose subsets.

Layout under ``--data-root``::

    affectnet/training.csv, affectnet/validation.csv    (or the download's original place,
        affectnet/Manually_Annotated_file_lists/{training,validation}.csv)
    affectnet/Manually_Annotated_Images/<subDirectory_filePath>
    affectnet/pose30.txt, affectnet/pose45.txt          validation images with |yaw| >= 30 / 45

The CSVs have the columns ``subDirectory_filePath, face_x, face_y, face_width, face_height,
facial_landmarks, expression, valence, arousal``. Expressions 0..7 are Neutral, Happy, Sad,
Surprise, Fear, Disgust, Anger, Contempt; rows with other codes (None, Uncertain, No-Face) or
valence / arousal outside [-1, 1] are dropped, as in the released LatentFace code. Each image is
cropped to its face box and resized to ``size``. The test annotations are not public, so
``fer_split("test")`` is the validation set (as in the paper).

The training set is unbalanced; by default it is down-sampled like the released code (neutral
1/10, happy 1/20, sad 1/4, surprise 1/2, anger 1/4). The pose subsets ``affectnet-pose30`` and
``affectnet-pose45`` train on the same data and test on the validation images their list names
(one path per line, matched by file name without extension).
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

from harness.config import Config, at_least
from harness.datasets.base import FaceDataset, ImageSet
from harness.datasets.folder import stratified_subset
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
IMAGE_DIR = "affectnet/Manually_Annotated_Images"
CSV_FILES = {"train": "training.csv", "test": "validation.csv"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
#: (class, keep one row in k), applied in this order like the released code.
DOWNSAMPLE = ((0, 10), (1, 20), (2, 4), (3, 2), (6, 4))


@dataclasses.dataclass(frozen=True)
class AffectNetConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    downsample: thin out the large training classes like the released code.
    pose_list: file under ``affectnet/`` naming the test (validation) images to keep; empty = all.
    train_limit, test_limit: keep about this many images per split (0 = all), drawn per class in
        proportion, so small presets keep the class balance.
    """

    size: int = 64
    downsample: bool = True
    pose_list: str = ""
    train_limit: int = 10000
    test_limit: int = 0

    PRESETS = {"smoke": {"train_limit": 700, "test_limit": 350}, "paper": {"train_limit": 0}}
    RULES = {"size": at_least(8), "train_limit": at_least(0), "test_limit": at_least(0)}


@dataclasses.dataclass(frozen=True)
class AffectNetPose30Config(AffectNetConfig):
    pose_list: str = "pose30.txt"


@dataclasses.dataclass(frozen=True)
class AffectNetPose45Config(AffectNetConfig):
    pose_list: str = "pose45.txt"


@dataclasses.dataclass
class Rows:
    """The usable rows of one AffectNet CSV: image paths, face boxes and labels."""

    paths: list[str]
    boxes: list[tuple[float, float, float, float]]
    labels: np.ndarray

    def take(self, keep: np.ndarray) -> "Rows":
        return Rows([self.paths[i] for i in keep], [self.boxes[i] for i in keep], self.labels[keep])


@register_dataset("affectnet")
class AffectNet(FaceDataset):
    """AffectNet expression recognition: train on (down-sampled) training, test on validation."""

    tasks = frozenset({"fer"})
    Config = AffectNetConfig

    def csv_path(self, split: str) -> Path:
        name = CSV_FILES[split]
        for relative in (f"affectnet/{name}", f"affectnet/Manually_Annotated_file_lists/{name}"):
            if self.data_root is not None and (self.data_root / relative).exists():
                return self.data_root / relative
        return self.require(f"affectnet/{name}")  # raises, naming the expected place

    def rows(self, split: str) -> Rows:
        """Usable rows of a split, down-sampled (train) or restricted to the pose list (test)."""
        path = self.csv_path(split)
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BenchError(f"{path}: missing column {missing[0]!r}; expected the AffectNet CSV header")
            paths, boxes, labels = [], [], []
            for number, row in enumerate(reader, start=2):
                try:
                    label = int(row["expression"])
                    valid = all(-1.0 <= float(row[c]) <= 1.0 for c in ("valence", "arousal") if row.get(c) not in (None, ""))
                    x, y, w, h = (float(row[c]) for c in ("face_x", "face_y", "face_width", "face_height"))
                except ValueError:
                    raise BenchError(f"{path}: line {number} has a non-numeric box, expression, valence or arousal") from None
                if 0 <= label < len(CLASSES) and valid:
                    paths.append(row["subDirectory_filePath"])
                    boxes.append((x, y, x + w, y + h))
                    labels.append(label)
        rows = Rows(paths, boxes, np.array(labels, dtype=np.int64))
        if split == "train" and self.cfg.downsample:
            for label, every in DOWNSAMPLE:
                rows = rows.take(np.flatnonzero((rows.labels != label) | (np.arange(len(rows.labels)) % every == 0)))
        if split == "test" and self.cfg.pose_list:
            listed = {Path(line.strip()).stem for line in self.require(f"affectnet/{self.cfg.pose_list}").read_text().splitlines() if line.strip()}
            rows = rows.take(np.array([i for i, p in enumerate(rows.paths) if Path(p).stem in listed], dtype=np.int64))
        if not len(rows.labels):
            raise BenchError(f"{path}: no usable rows for the {split} split; check the file and affectnet.pose_list")
        return rows

    def fer_split(self, split: str) -> ImageSet:
        if split not in ("train", "test"):
            raise BenchError(f"fer split {split!r}: expected 'train' or 'test'")
        rows = self.rows(split)
        limit = self.cfg.train_limit if split == "train" else self.cfg.test_limit
        if limit and limit < len(rows.labels):
            rows = rows.take(stratified_subset(torch.from_numpy(rows.labels), limit).numpy())
        folder = self.require(IMAGE_DIR)
        key = {"dataset": "affectnet", "split": split, "paths": rows.paths, "boxes": rows.boxes, "size": self.cfg.size}
        images = cached(
            self.cache_dir,
            "images",
            key,
            lambda: load_images([folder / p for p in rows.paths], self.cfg.size, boxes=rows.boxes, desc=f"{self.name} {split}"),
        )
        names = tuple(f"{folder.name}/{p}" for p in rows.paths)  # relative to affectnet/
        return ImageSet(images, labels=torch.from_numpy(rows.labels), class_names=CLASSES, names=names)


@register_dataset("affectnet-pose30")
class AffectNetPose30(AffectNet):
    """AffectNet tested on validation images with |yaw| >= 30 degrees (paper Table 1, Pose 30)."""

    Config = AffectNetPose30Config


@register_dataset("affectnet-pose45")
class AffectNetPose45(AffectNet):
    """AffectNet tested on validation images with |yaw| >= 45 degrees (paper Table 1, Pose 45)."""

    Config = AffectNetPose45Config
