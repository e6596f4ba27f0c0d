"""CelebA as pretraining data (stage 1 of LatentFace, SimCLR, MAE), with its official split.

Layout under ``--data-root``::

    celeba/img_align_celeba/000001.jpg ...   aligned and cropped images, 178x218
    celeba/list_eval_partition.txt           "000001.jpg 0" lines: 0 train, 1 val, 2 test

Face crop: the aligned images put the eyes at about (69, 111) and (108, 111) and the mouth at
about y = 152, so the fixed box ``crop_box = (33, 65, 143, 175)`` (left, top, right, bottom) is a
110x110 square from the brow line to below the chin, like a detector crop; it is resized to
``size``. Set ``celeba.crop_box=`` (empty) to keep the whole image, e.g. after replacing the
folder with ``scripts/crop_faces.py --detector mtcnn`` crops as the paper does.
"""
from __future__ import annotations

import dataclasses

from harness.config import Config, at_least, dotted
from harness.datasets.base import FaceDataset, ImageSet
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

IMAGE_DIR = "celeba/img_align_celeba"
PARTITION_FILE = "celeba/list_eval_partition.txt"


@dataclasses.dataclass(frozen=True)
class CelebAConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    crop_box: face box (left, top, right, bottom) in the 178x218 aligned image; empty = no crop.
    partition: official partition used for pretraining (0 train, 1 val, 2 test).
    pretrain_limit: keep the first N images of the partition (0 = all 162,770 training images).
    """

    size: int = 64
    crop_box: tuple[int, ...] = (33, 65, 143, 175)
    partition: int = 0
    pretrain_limit: int = 20000

    PRESETS = {"smoke": {"pretrain_limit": 256}, "paper": {"pretrain_limit": 0}}
    RULES = {"size": at_least(8), "partition": lambda p: None if p in (0, 1, 2) else "expected 0 (train), 1 (val) or 2 (test)",
             "pretrain_limit": at_least(0)}

    def check(self, section: str) -> None:
        box = self.crop_box
        if box and (len(box) != 4 or box[0] >= box[2] or box[1] >= box[3]):
            raise BenchError(
                f"{dotted(section)}crop_box={','.join(map(str, box))}: set left,top,right,bottom with left<right, top<bottom"
            )


@register_dataset("celeba")
class CelebA(FaceDataset):
    """CelebA images of one official partition, face-cropped, as unlabelled pretraining data."""

    tasks = frozenset({"pretrain"})
    Config = CelebAConfig

    def partition_names(self) -> list[str]:
        """Image names of the configured partition, in file order."""
        path = self.require(PARTITION_FILE)
        names = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].isdigit():
                raise BenchError(f"{path}: line {number} should be '<image>.jpg <0|1|2>', got {line.strip()!r}")
            if int(fields[1]) == self.cfg.partition:
                names.append(fields[0])
        if not names:
            raise BenchError(f"{path}: no image in partition {self.cfg.partition}; the file is empty or not CelebA's")
        return names

    def pretrain(self) -> ImageSet:
        names = self.partition_names()
        if self.cfg.pretrain_limit:
            names = names[: self.cfg.pretrain_limit]
        folder = self.require(IMAGE_DIR)
        box = tuple(self.cfg.crop_box) or None
        key = {"dataset": "celeba", "names": names, "size": self.cfg.size, "crop": list(self.cfg.crop_box)}
        images = cached(
            self.cache_dir,
            "images",
            key,
            lambda: load_images([folder / n for n in names], self.cfg.size, boxes=[box] * len(names), desc="celeba"),
        )
        return ImageSet(images)
