"""What every dataset hands to methods and protocols.

Images travel as one uint8 tensor ``(N, 3, S, S)`` at the dataset's storage size ``S``; each
method resizes batches to its own input size (the paper resizes "to the corresponding
resolution of each baseline"). Decoded images are cached on disk, so a rerun reads one file.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import torch

from harness.config import Config
from harness.errors import BenchError
from harness.io import cacheable


@cacheable
@dataclasses.dataclass
class ImageSet:
    """A set of images with optional labels.

    Attributes:
        images: uint8 tensor (N, 3, S, S), RGB.
        labels: int64 class labels (N,) for labelled splits.
        identities: int64 person ids (N,) where known.
        class_names: names of the label values, index = label.
        extras: further per-image ground truth (e.g. synthetic pose, depth maps).
        names: each image's file path relative to the dataset's folder, where the images are
            files (empty for generated data).
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    identities: Optional[torch.Tensor] = None
    class_names: tuple[str, ...] = ()
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSet wants uint8 (N,3,S,S) images, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.names and len(self.names) != len(self.images):
            raise ValueError(f"ImageSet got {len(self.names)} names for {len(self.images)} images")

    def __len__(self) -> int:
        return self.images.shape[0]


@cacheable
@dataclasses.dataclass
class PairList:
    """Verification pairs as indices into an ImageSet, with their official folds."""

    left: torch.Tensor
    right: torch.Tensor
    same: torch.Tensor  # bool
    fold: torch.Tensor  # int64, 0..n_folds-1

    def __len__(self) -> int:
        return self.left.shape[0]

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1


@cacheable
@dataclasses.dataclass
class ClipSet:
    """Clips of one identity each (stage-2 training data): ``clips[i]`` indexes ``frames``.

    Attributes:
        fps: frame rate of the videos the clips come from (None: unknown, or not video).
        positions: int64 (N,) each frame's frame number in its video, increasing within a clip,
            so frames ``i`` and ``j`` of one video lie ``(positions[j] - positions[i]) / fps``
            seconds apart; consecutive numbers mean regularly spaced frames. None: the frames
            have no temporal order (e.g. photos).
    """

    frames: ImageSet
    clips: list[torch.Tensor]
    fps: Optional[float] = None
    positions: Optional[torch.Tensor] = None


def split_clips(clips: ClipSet, holdout: float, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training clips, held-out clips), drawn at random; by identity when the frames know them,
    so that no held-out person is seen in training."""
    identities = clips.frames.identities
    groups = [int(identities[c[0]]) if identities is not None else i for i, c in enumerate(clips.clips)]
    unique = sorted(set(groups))
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    n_out = round(holdout * len(unique))
    held = {unique[i] for i in order[:n_out]}
    train = [c for c, g in zip(clips.clips, groups) if g not in held]
    test = [c for c, g in zip(clips.clips, groups) if g in held]
    return train, test


class FaceDataset:
    """Base class of registered datasets.

    Subclasses set ``tasks`` (a subset of ``{"fer", "verification", "pretrain", "clips"}``), a
    ``Config`` and implement the loaders for the tasks they support. ``root`` is the dataset's
    folder under ``--data-root`` (``None`` for generated data), ``cache_dir`` a writable folder.
    """

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type[Config]] = Config
    needs_root: ClassVar[bool] = True

    def __init__(self, cfg: Config, data_root: Optional[Path], cache_dir: Path) -> None:
        self.cfg = cfg
        self.data_root = data_root
        self.cache_dir = cache_dir

    # --- loaders, one per task ----------------------------------------------------------
    def fer_split(self, split: str) -> ImageSet:
        """Labelled ``train`` or ``test`` split for expression recognition."""
        raise BenchError(f"dataset {self.name!r} has no expression labels; use it with another protocol")

    def verification(self) -> tuple[ImageSet, PairList]:
        """The images referenced by the pair list, and the pairs."""
        raise BenchError(f"dataset {self.name!r} has no verification pairs; use it with another protocol")

    def pretrain(self) -> ImageSet:
        """Unlabelled images for self-supervised training."""
        raise BenchError(f"dataset {self.name!r} cannot serve as pretraining data")

    def clips(self) -> ClipSet:
        """Clips of one identity for stage-2 training."""
        raise BenchError(f"dataset {self.name!r} has no clips of one identity")

    def video(self) -> ClipSet:
        """Clips for methods that learn from motion or temporal order, their frame spacing stated
        (``ClipSet.fps``, ``ClipSet.positions``): by default the ``clips``, for datasets whose
        clips are video already (or that have nothing smoother)."""
        return self.clips()

    # --- helpers ----------------------------------------------------------------------------
    def missing(self) -> Optional[str]:
        """Why the dataset's files are absent, in a few words (``no <path>``), or None when they
        are there (or the dataset cannot tell without loading); a suite skips absent members."""
        return None

    def size(self, task: str) -> Optional[int]:
        """How many images the ``task`` loader returns, where the dataset knows without loading
        them (for the checks before a run); None otherwise."""
        return None

    def fingerprint(self, task: Optional[str] = None) -> dict:
        """What identifies this dataset's content for caches and result files.

        Args:
            task: only what this task's loader reads (``"pretrain"``, ``"clips"``), where a
                dataset can tell, so that e.g. resizing the FER split does not retrain models
                keyed by the pretraining data; None for everything.
        """
        return {"name": self.name, "config": self.cfg.to_dict()}

    def require(self, relative: str) -> Path:
        """Path of a file or folder inside the dataset root, or a one-line error naming it."""
        if self.data_root is None:
            raise BenchError(f"dataset {self.name!r} needs --data-root (or BENCH_DATA_ROOT) pointing at its parent folder")
        path = self.data_root / relative
        if not path.exists():
            raise BenchError(f"dataset {self.name!r}: missing {path}; check --data-root and the layout in docs/datasets.md")
        return path
