"""LFW people with many photos as "clips" of one identity, for stage-2 training without video.

Layout: the LFW images (``lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``, see ``lfw.py``; same
centred crop). Every person with at least ``min_images`` photos yields up to
``max_clips_per_person`` clips of ``clip_frames`` photos, drawn without replacement (seeded), so
that clips of one person share no photo; a person with fewer photos than ``clip_frames`` (when
``min_images`` is set below it) gives one clip drawn with replacement. In the LFW release,
85 people have 16 or more photos (158 have 10, 423 have 5).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from harness.config import Config, at_least, between
from harness.datasets.base import ClipSet, ImageSet
from harness.datasets.lfw import IMAGE_DIR, LFW
from harness.errors import BenchError
from harness.registry import register_dataset


@dataclasses.dataclass(frozen=True)
class LFWClipsConfig(Config):
    """Attributes:
    size, crop_fraction: as for ``lfw`` (stored side, centred crop of the 250 px image).
    min_images: people with at least this many photos make clips.
    clip_frames: photos per clip.
    max_clips_per_person: cap, so that the most photographed people do not dominate.
    seed: fixes which photos form each clip.
    """

    size: int = 64
    crop_fraction: float = 0.5
    min_images: int = 16
    clip_frames: int = 16
    max_clips_per_person: int = 4
    seed: int = 0

    RULES = {"seed": at_least(0), "size": at_least(8), "crop_fraction": between(0, 1, low_open=True), "min_images": at_least(2),
             "clip_frames": at_least(2), "max_clips_per_person": at_least(1)}


@register_dataset("lfw-clips")
class LFWClips(LFW):
    """Clips of one LFW person (varying expression, pose, light and age) for stage-2 training."""

    tasks = frozenset({"clips", "pretrain"})
    Config = LFWClipsConfig

    def image_folder(self) -> Path:
        return self.require(IMAGE_DIR)

    def people(self) -> dict[str, list[str]]:
        """Image names (relative to the image folder) of every person with enough photos."""
        folder = self.image_folder()
        people = {}
        for person in sorted(p for p in folder.iterdir() if p.is_dir()):
            names = sorted(f"{person.name}/{f.name}" for f in person.glob("*.jpg"))
            if len(names) >= self.cfg.min_images:
                people[person.name] = names
        if not people:
            raise BenchError(f"no person under {folder} has {self.cfg.min_images} photos; lower lfw-clips.min_images")
        return people

    def clips(self) -> ClipSet:
        rng = np.random.default_rng(self.cfg.seed)
        length = self.cfg.clip_frames
        names, identities = [], []
        for person, (_, photos) in enumerate(self.people().items()):
            order = rng.permutation(len(photos))
            count = min(max(len(photos) // length, 1), self.cfg.max_clips_per_person)
            for k in range(count):
                if len(photos) >= length:
                    picks = np.sort(order[k * length : (k + 1) * length])
                else:
                    picks = np.sort(rng.choice(len(photos), length, replace=True))
                names += [photos[i] for i in picks]
                identities += [person] * length
        frames = ImageSet(self.load(names, "clips"), identities=torch.tensor(identities))
        return ClipSet(frames=frames, clips=list(torch.arange(len(names)).view(-1, length)))

    def pretrain(self) -> ImageSet:
        """The photos of the clips, as unlabelled images."""
        return self.clips().frames
