"""The registered ``synthetic`` datasets: splits of the procedural face world, cached on disk.

Identity-id ranges keep test people out of training: ``[0, T)`` train (pretrain, clips, FER
train), ``[T, T+E)`` FER test, then the verification people (``folds x people_per_fold``).
Each split has its own random stream and cache entry, keyed by the fields it depends on and the
generator version, so changing one split's size regenerates only that split.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.config import Config, at_least, between, choice
from harness.datasets.base import ClipSet, FaceDataset, ImageSet, PairList
from harness.datasets.synthetic import world
from harness.datasets.synthetic.render import render
from harness.errors import BenchError
from harness.io import cached
from harness.progress import progress
from harness.registry import register_dataset

#: Bump when the world or the renderer changes what a config produces (invalidates caches).
GENERATOR_VERSION = "synthetic-6"
RENDER_BATCH = 16  # images per render call: small tensors stay in the CPU cache
CHUNK = 256  # images per worker task (a multiple of RENDER_BATCH, so results do not depend on workers)
STREAMS = {"pretrain": 10, "clips": 11, "fer-train": 12, "fer-test": 13, "verification": 14, "video": 15}
#: Frame rate of the smooth clips (``video()``): the default 16 frames span 1.5 s, one expression
#: episode (its onset 0.3-0.8 s) while the head moves.
VIDEO_FPS = 10.0
#: Fewest frames of a smooth clip: enough that its apex, the shortest phase, holds a frame.
MIN_VIDEO_FRAMES = 12


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(Config):
    """Sizes of the synthetic splits (defaults: the ``quick`` preset).

    Attributes:
        seed: fixes every image; the same config always yields the same bytes.
        size: image side in pixels.
        max_yaw: yaw is uniform in [-max_yaw, max_yaw] degrees.
        train_identities: people in the training splits (pretrain, clips, FER train).
        test_identities: people in the FER test split (disjoint from training).
        pretrain_images: unlabelled images for self-supervised training.
        clips, clip_frames: clips of one person (stage 2's, ``clips()``), frames per clip (also
            of the smooth clips).
        video_clips: smooth clips (``video()``, what the video baselines train on; fewer than
            ``clips`` at ``quick``, where they train for a few seconds each).
        fer_train_images, fer_test_images: expression-labelled images (classes balanced).
        verification_pairs: matched pairs per fold, and as many mismatched ones.
        verification_folds: folds of the verification protocol (people disjoint across folds).
        images_per_person: verification images per person.
        variation: ``all`` (every factor varies) or ``pose``: one neutral expression, light,
            camera and background for every image, only the person and the head pose vary (with
            ``train_identities=1``: one head under random poses, the sanity case where a 3D
            model's depth must be learnable; ``docs/depth_study/depth_curve.py``).
    """

    seed: int = 0
    size: int = 64
    max_yaw: float = 60.0
    train_identities: int = 400
    test_identities: int = 200
    pretrain_images: int = 3200
    clips: int = 150
    clip_frames: int = 16
    video_clips: int = 48
    fer_train_images: int = 2000
    fer_test_images: int = 1000
    verification_pairs: int = 60
    verification_folds: int = 10
    images_per_person: int = 4
    variation: str = "all"

    PRESETS = {
        "smoke": dict(
            train_identities=40, test_identities=20, pretrain_images=128, clips=8, video_clips=8,
            fer_train_images=700, fer_test_images=350, verification_pairs=10,
        ),
        "paper": dict(
            train_identities=5000, test_identities=1000, pretrain_images=50000, clips=2000, video_clips=2000,
            fer_train_images=20000, fer_test_images=5000, verification_pairs=300,
        ),
    }

    RULES = {
        "seed": at_least(0),
        **{name: at_least(1) for name in (
            "size", "train_identities", "test_identities", "pretrain_images", "clips", "clip_frames", "video_clips",
            "fer_train_images", "fer_test_images", "verification_pairs", "verification_folds")},
        "images_per_person": at_least(2),  # a matched pair needs two images of one person
        "max_yaw": between(0, 90),
        "variation": choice(*world.VARIATIONS),
    }

    @property
    def people_per_fold(self) -> int:
        """Enough people that a fold offers 1.5x the matched pairs it needs (and 2 at least)."""
        pairs_per_person = math.comb(self.images_per_person, 2)
        return max(2, math.ceil(1.5 * self.verification_pairs / pairs_per_person))


#: Config fields each split depends on, besides ``COMMON_FIELDS`` (its cache key).
COMMON_FIELDS = ("seed", "size", "max_yaw", "train_identities", "variation")
SPLIT_FIELDS = {
    "pretrain": ("pretrain_images",),
    "clips": ("clips", "clip_frames"),
    "video": ("video_clips", "clip_frames"),
    "fer-train": ("fer_train_images",),
    "fer-test": ("test_identities", "fer_test_images"),
    "verification": ("test_identities", "verification_pairs", "verification_folds", "images_per_person"),
}


@register_dataset("synthetic")
class SyntheticFaces(FaceDataset):
    """Procedural 3D heads with ground truth for identity, expression, pose, light and depth.

    Every ImageSet carries ``identities`` and ``extras``: ``expression`` (int64), ``intensity``,
    ``units`` (action units, (N, 13)), ``pose`` (yaw, pitch, roll in degrees), ``light`` (see
    ``world.light_vector``), ``fov`` (the camera's field of view, radians), the person's
    ``shape`` and ``texture`` factors (``world.identity_factors``), ``depth`` (float32 (N, S, S),
    camera-space depth, 0 on background) and ``head`` (bool (N, S, S), pixels on the head).
    The FER splits with these extras are what the ``factors`` and ``depth`` protocols read.
    The smooth clips (``video()``) add ``phase`` (int64, index into ``world.PHASES``).
    """

    tasks = frozenset({"fer", "verification", "pretrain", "clips", "factors", "depth"})
    Config = SyntheticConfig
    needs_root = False
    #: FER test images must have at least this |yaw| (the pose subsets override it).
    min_test_yaw: float = 0.0

    def pretrain(self) -> ImageSet:
        return self._split("pretrain")

    def clips(self) -> ClipSet:
        frames = self._split("clips")
        length = self.cfg.clip_frames
        return ClipSet(frames=frames, clips=list(torch.arange(len(frames)).view(-1, length)))

    def video(self) -> ClipSet:
        """Smooth clips at ``VIDEO_FPS``: one expression episode each (onset, apex, offset; the
        ``phase`` extra) while the head pose eases along a short path (``world.smooth_poses``)."""
        length = self.cfg.clip_frames
        if length < MIN_VIDEO_FRAMES:
            raise BenchError(
                f"{self.name}.clip_frames={length} is too short for smooth clips (onset, apex and offset need "
                f"{MIN_VIDEO_FRAMES} frames); raise it"
            )
        frames = self._split("video")
        return ClipSet(
            frames=frames, clips=list(torch.arange(len(frames)).view(-1, length)),
            fps=VIDEO_FPS, positions=torch.arange(length).repeat(self.cfg.video_clips),
        )

    def fer_split(self, split: str) -> ImageSet:
        if split not in ("train", "test"):
            raise BenchError(f"fer split {split!r}: expected 'train' or 'test'")
        images = self._split(f"fer-{split}")
        if split == "test" and self.min_test_yaw > 0:
            images = subset(images, images.extras["pose"][:, 0].abs() >= self.min_test_yaw)
            if not len(images):
                raise BenchError(f"{self.name}: no test image has |yaw| >= {self.min_test_yaw:g}; raise {self.name}.max_yaw")
        return images

    def verification(self) -> tuple[ImageSet, PairList]:
        return self._split("verification")

    def size(self, task: str) -> Optional[int]:
        sizes = {"pretrain": self.cfg.pretrain_images, "clips": self.cfg.clips * self.cfg.clip_frames}
        return {**sizes, "video": self.cfg.video_clips * self.cfg.clip_frames}.get(task)

    def fingerprint(self, task: Optional[str] = None) -> dict:
        # the generator version too: features and trained models go stale when the world changes
        if task in SPLIT_FIELDS:
            return {"name": self.name, **self._split_key(task)}
        return {**super().fingerprint(), "generator": GENERATOR_VERSION}

    def _split_key(self, split: str) -> dict:
        """What one split's images depend on: the generator and the config fields it reads."""
        config = {name: getattr(self.cfg, name) for name in COMMON_FIELDS + SPLIT_FIELDS[split]}
        return {"generator": GENERATOR_VERSION, "split": split, "config": config}

    def _split(self, split: str) -> ImageSet | tuple[ImageSet, PairList]:
        """The split's ImageSet (with its PairList for ``verification``), built once and cached."""
        cfg = self.cfg
        return cached(self.cache_dir, "synthetic", self._split_key(split), lambda: build_split(cfg, split))


@register_dataset("synthetic-pose30")
class SyntheticPose30(SyntheticFaces):
    """``synthetic`` whose FER test split keeps only |yaw| >= 30 degrees (like AffectNet's Pose 30)."""

    min_test_yaw = 30.0


def subset(images: ImageSet, keep: torch.Tensor) -> ImageSet:
    """The images where ``keep`` is True, with their labels, identities and extras."""

    def pick(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value[keep]

    return ImageSet(
        images=images.images[keep],
        labels=pick(images.labels),
        identities=pick(images.identities),
        class_names=images.class_names,
        extras={name: value[keep] for name, value in images.extras.items()},
    )


# --- building splits ----------------------------------------------------------------------------------
def build_split(cfg: SyntheticConfig, split: str) -> ImageSet | tuple[ImageSet, PairList]:
    """Sample and render one split; ``verification`` also returns its pairs."""
    rng = np.random.default_rng([cfg.seed, STREAMS[split]])
    labelled = split.startswith("fer")
    pairs = None
    if split == "pretrain":
        ids = rng.integers(0, cfg.train_identities, cfg.pretrain_images)
        labels = rng.integers(0, len(world.EXPRESSIONS), len(ids))
        scene = _scene(cfg, rng, ids, labels)
    elif split == "clips":
        scene = _clip_scene(cfg, rng)
    elif split == "video":
        scene = _video_scene(cfg, rng)
    elif split in ("fer-train", "fer-test"):
        n = cfg.fer_train_images if split == "fer-train" else cfg.fer_test_images
        first, count = (0, cfg.train_identities) if split == "fer-train" else (cfg.train_identities, cfg.test_identities)
        labels = rng.permutation(np.arange(n) % len(world.EXPRESSIONS))  # balanced classes
        scene = _scene(cfg, rng, first + rng.integers(0, count, n), labels)
    else:
        first = cfg.train_identities + cfg.test_identities
        people = first + np.arange(cfg.verification_folds * cfg.people_per_fold)
        ids = np.repeat(people, cfg.images_per_person)
        scene = _scene(cfg, rng, ids, rng.integers(0, len(world.EXPRESSIONS), len(ids)))
        pairs = _pairs(cfg, rng, ids - first)
    images, depth, head = render_scenes(scene, cfg.size, desc=f"synthetic {split}")
    shape, texture = world.identity_factors(scene)
    result = ImageSet(
        images=images,
        labels=torch.as_tensor(scene["expression"], dtype=torch.int64) if labelled else None,
        identities=torch.as_tensor(scene["identity"], dtype=torch.int64),
        class_names=world.EXPRESSIONS if labelled else (),
        extras={
            "expression": torch.as_tensor(scene["expression"], dtype=torch.int64),
            "intensity": torch.as_tensor(scene["intensity"], dtype=torch.float32),
            "units": torch.as_tensor(scene["units"], dtype=torch.float32),
            "pose": torch.as_tensor(scene["pose"], dtype=torch.float32),
            "light": torch.as_tensor(world.light_vector(scene), dtype=torch.float32),
            "fov": torch.as_tensor(scene["fov"], dtype=torch.float32),
            "shape": torch.as_tensor(shape, dtype=torch.float32),
            "texture": torch.as_tensor(texture, dtype=torch.float32),
            "depth": depth,
            "head": head,
        },
    )
    if "phase" in scene:
        result.extras["phase"] = torch.as_tensor(scene["phase"], dtype=torch.int64)
    return result if pairs is None else (result, pairs)


def _scene(cfg: SyntheticConfig, rng: np.random.Generator, ids: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Independent expression, pose and environment for each image of people ``ids``."""
    people = world.identity_table(cfg.seed, int(ids.max()) + 1)
    expressions = world.sample_expressions(rng, labels)
    poses = world.sample_poses(rng, len(ids), cfg.max_yaw)
    return _compose(cfg, people, ids, expressions, poses, world.sample_environments(rng, len(ids)))


def _clip_scene(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Clips like talking-head videos: one person, light, camera and background per clip; the
    expression changes freely between frames and the head pose drifts (a random walk)."""
    n, length = cfg.clips, cfg.clip_frames
    ids = np.repeat(rng.integers(0, cfg.train_identities, n), length)
    labels = rng.integers(0, len(world.EXPRESSIONS), n * length)
    env = {name: np.repeat(value, length, axis=0) for name, value in world.sample_environments(rng, n).items()}
    env["gaze"] = world.sample_environments(rng, n * length)["gaze"]
    start = np.repeat(world.sample_poses(rng, n, cfg.max_yaw), length, axis=0)
    steps = rng.standard_normal((n, length, 3)) * np.array([5.0, 2.0, 1.5])
    steps[:, 0] = 0.0
    drift = np.cumsum(steps, axis=1).reshape(n * length, 3)
    poses = np.clip(start + drift, [-cfg.max_yaw, -25.0, -15.0], [cfg.max_yaw, 25.0, 15.0])
    people = world.identity_table(cfg.seed, cfg.train_identities)
    return _compose(cfg, people, ids, world.sample_expressions(rng, labels), poses, env)


def _video_scene(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Smooth clips: one person, light, camera, background and gaze per clip; one expression
    episode (``world.expression_episodes``) and a smooth head movement (``world.smooth_poses``)."""
    n, length = cfg.video_clips, cfg.clip_frames
    ids = np.repeat(rng.integers(0, cfg.train_identities, n), length)
    labels = rng.integers(1, len(world.EXPRESSIONS), n)  # every clip shows an expression
    env = {name: np.repeat(value, length, axis=0) for name, value in world.sample_environments(rng, n).items()}
    expressions = world.expression_episodes(rng, labels, length)
    poses = world.smooth_poses(rng, n, length, cfg.max_yaw)
    people = world.identity_table(cfg.seed, cfg.train_identities)
    return _compose(cfg, people, ids, expressions, poses, env)


def _compose(cfg: SyntheticConfig, people: dict, ids: np.ndarray, expressions: dict, poses: np.ndarray, env: dict) -> dict:
    """``world.compose``, with everything but person and pose held fixed for ``variation=pose``
    (after sampling, so the random streams, and the poses, are those of the full world)."""
    if cfg.variation == "pose":
        expressions, env = world.hold_fixed(expressions, env)
    return world.compose(people, ids, expressions, poses, env)


def _pairs(cfg: SyntheticConfig, rng: np.random.Generator, person: np.ndarray) -> PairList:
    """Per fold, ``verification_pairs`` matched and as many mismatched pairs among the fold's people.

    ``person`` is each image's index among the verification people; fold f holds people
    ``[f * people_per_fold, (f + 1) * people_per_fold)``, so no person appears in two folds.
    """
    left, right, same, fold = [], [], [], []
    for f in range(cfg.verification_folds):
        members = np.flatnonzero(person // cfg.people_per_fold == f)
        i, j = np.triu_indices(len(members), k=1)
        matched = person[members[i]] == person[members[j]]
        for want_same in (True, False):
            candidates = np.flatnonzero(matched == want_same)
            if len(candidates) < cfg.verification_pairs:
                raise BenchError(f"synthetic: a fold has only {len(candidates)} candidate pairs; raise images_per_person")
            chosen = rng.choice(candidates, cfg.verification_pairs, replace=False)
            left.append(members[i[chosen]])
            right.append(members[j[chosen]])
            same.append(np.full(len(chosen), want_same))
            fold.append(np.full(len(chosen), f))
    return PairList(
        left=torch.as_tensor(np.concatenate(left), dtype=torch.int64),
        right=torch.as_tensor(np.concatenate(right), dtype=torch.int64),
        same=torch.as_tensor(np.concatenate(same), dtype=torch.bool),
        fold=torch.as_tensor(np.concatenate(fold), dtype=torch.int64),
    )


# --- rendering, in parallel processes for large splits ------------------------------------------------
def render_scenes(scene: dict[str, np.ndarray], size: int, desc: str = "synthetic") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render all images of a scene: uint8 (N, 3, S, S), depth (N, S, S) and head mask (N, S, S).

    Chunks of ``CHUNK`` images are rendered by DataLoader worker processes, one per CPU core
    (single-threaded: torch's own threads stall when other programs share the cores). Every
    image is rendered in the same batch of ``RENDER_BATCH`` whatever the number of workers, so
    the bytes never depend on the machine's core count.
    """
    n = len(scene["pose"])
    chunks = _Chunks(scene, size)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, len(chunks), 8) if len(chunks) > 1 else 0
    if multiprocessing.current_process().daemon:
        workers = 0  # a daemonic process (e.g. a Pool worker) may not start processes of its own
    parts: list[tuple[torch.Tensor, ...]] = []
    with progress(total=n, desc=desc, unit="img") as bar, _one_thread():
        for chunk in DataLoader(chunks, batch_size=None, num_workers=workers):
            # Copies out of the workers' shared memory, so that each chunk's file handle is released.
            parts.append(tuple(t.clone() for t in chunk))
            bar.update(len(chunk[0]))
    return tuple(torch.cat(column) for column in zip(*parts))


class _Chunks(Dataset):
    """A scene cut into chunks of ``CHUNK`` images; item i renders chunk i."""

    def __init__(self, scene: dict[str, np.ndarray], size: int) -> None:
        self.scene, self.size = scene, size
        self.starts = range(0, len(scene["pose"]), CHUNK)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunk = world.take(self.scene, slice(self.starts[i], self.starts[i] + CHUNK))
        parts = [render(world.take(chunk, slice(k, k + RENDER_BATCH)), self.size) for k in range(0, len(chunk["pose"]), RENDER_BATCH)]
        return tuple(torch.cat(column) for column in zip(*parts))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Render on one thread in this process too (DataLoader workers already use one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
