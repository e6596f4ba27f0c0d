"""VoxCeleb face frames as clips of one identity (stage 2 of LatentFace) and as pretraining data.

Layout under ``--data-root``: cropped face frames, one folder per speaker and clip::

    voxceleb/<identity>/<clip>/<frame>.jpg      e.g. voxceleb/id10001/1zcIwhmdeo4/00001.jpg
    voxceleb/<train_identities_file>            optional: training speakers, one per line

The frames are already face crops (as in VoxCeleb's face-track release), so they are used whole
by default (``crop_fraction = 1``); for raw video frames, crop them first with
``scripts/crop_faces.py --detector mtcnn`` as the paper does. The paper trains on 1,147 of the
1,251 speakers; list them in the identities file to keep the held-out speakers out of training.

A clip is a clip folder with at least ``clip_frames`` frames, of which ``clip_frames`` are drawn
without replacement (seeded) and kept in temporal order; shorter clips are skipped. So frame
spacing is irregular: ``ClipSet.positions`` holds each drawn frame's index among its folder's
sorted frames (taken as the video's consecutive frames), and ``ClipSet.fps`` the rate at which
they were extracted where the ``fps`` setting states it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from harness.config import Config, at_least, between
from harness.datasets.base import ClipSet, FaceDataset, ImageSet
from harness.datasets.folder import IMAGE_SUFFIXES
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset


@dataclasses.dataclass(frozen=True)
class VoxCelebConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    clip_frames: frames drawn from each clip.
    max_clips: keep at most this many clips, drawn with ``seed`` (0 = every clip).
    seed: fixes which clips and frames are drawn.
    train_identities_file: file under ``voxceleb/`` listing the training speakers; empty = all.
    crop_fraction: centred square crop of each frame, as a fraction of its shorter side.
    fps: the rate at which the clip folders' frames were extracted (0 = unknown).
    """

    size: int = 64
    clip_frames: int = 16
    max_clips: int = 300
    seed: int = 0
    train_identities_file: str = ""
    crop_fraction: float = 1.0
    fps: float = 0.0

    LATE_FIELDS = ("fps",)
    PRESETS = {"smoke": {"max_clips": 8}, "paper": {"max_clips": 0}}

    RULES = {"seed": at_least(0), "size": at_least(8), "clip_frames": at_least(2), "max_clips": at_least(0), "crop_fraction": between(0, 1, low_open=True),
             "fps": at_least(0)}


@register_dataset("voxceleb")
class VoxCeleb(FaceDataset):
    """Talking-face clips: frames of one speaker with changing expression and pose."""

    tasks = frozenset({"clips", "pretrain"})
    Config = VoxCelebConfig

    def identities(self) -> list[str]:
        """Training speakers: those of the identities file, or every speaker folder."""
        root = self.require("voxceleb")
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not present:
            raise BenchError(f"{root} has no speaker folders; expected voxceleb/<identity>/<clip>/<frame>.jpg")
        if not self.cfg.train_identities_file:
            return present
        listed = self.require(f"voxceleb/{self.cfg.train_identities_file}").read_text().split()
        missing = sorted(set(listed) - set(present))
        if missing:
            raise BenchError(f"voxceleb/{self.cfg.train_identities_file} names {missing[0]!r}, which has no folder under {root}")
        return sorted(set(listed))

    def sample(self) -> tuple[list[Path], list[int], list[int]]:
        """Frame files of the drawn clips (``clip_frames`` per clip, in order), each file's index
        among its clip folder's sorted frames, and each clip's speaker."""
        root = self.require("voxceleb")
        candidates = []  # (speaker index, sorted frame files) of every long enough clip
        for person, name in enumerate(self.identities()):
            for clip in sorted(p for p in (root / name).iterdir() if p.is_dir()):
                frames = sorted(f for f in clip.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if len(frames) >= self.cfg.clip_frames:
                    candidates.append((person, frames))
        if not candidates:
            raise BenchError(f"no clip folder under {root} has {self.cfg.clip_frames} frames; check the layout or voxceleb.clip_frames")
        rng = np.random.default_rng(self.cfg.seed)
        chosen = range(len(candidates))
        if self.cfg.max_clips and self.cfg.max_clips < len(candidates):
            chosen = np.sort(rng.choice(len(candidates), self.cfg.max_clips, replace=False))
        files, positions, speakers = [], [], []
        for i in chosen:
            person, frames = candidates[i]
            picks = np.sort(rng.choice(len(frames), self.cfg.clip_frames, replace=False))
            files += [frames[k] for k in picks]
            positions += picks.tolist()
            speakers.append(person)
        return files, positions, speakers

    def clips(self) -> ClipSet:
        files, positions, speakers = self.sample()
        root = self.require("voxceleb")
        key = {"dataset": "voxceleb", "files": [str(f.relative_to(root)) for f in files], "size": self.cfg.size, "crop": self.cfg.crop_fraction}
        crop = self.cfg.crop_fraction if self.cfg.crop_fraction < 1 else None
        images = cached(self.cache_dir, "images", key, lambda: load_images(files, self.cfg.size, center_fraction=crop, desc="voxceleb"))
        length = self.cfg.clip_frames
        identities = torch.tensor(speakers).repeat_interleave(length)
        return ClipSet(
            frames=ImageSet(images, identities=identities), clips=list(torch.arange(len(files)).view(-1, length)),
            fps=self.cfg.fps or None, positions=torch.tensor(positions, dtype=torch.int64),
        )

    def pretrain(self) -> ImageSet:
        """The frames of the drawn clips, as unlabelled images."""
        return self.clips().frames
