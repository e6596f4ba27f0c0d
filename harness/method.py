"""The interface every method plugin implements (solo-learn style: one class per method).

Data flow: ``prepare()`` trains or loads the method's artifacts (checkpoints) -> ``encode()``
maps a batch of images to frozen features for a protocol's *view* -> protocols only ever see
features (and, for methods that predict it, depth). Methods live in ``methods/`` and are found
through the registry; this module is the contract between them and the harness.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from harness.accel import Accel, TrainConfig
from harness.artifacts import Artifact
from harness.config import Config, PretrainConfig
from harness.datasets.base import ClipSet, ImageSet
from harness.errors import BenchError


@dataclasses.dataclass
class MethodContext:
    """What a method may use besides its own config.

    Attributes:
        seed: the cell's seed; training and stochastic features derive their randomness from it.
        device: torch device for training and feature extraction.
        cache_dir: root of the artifact and feature caches.
        pretrain: where unlabeled training data comes from.
        load_pretrain: returns the pretraining images (loaded lazily, cached).
        load_clips: returns the stage-2 clips (loaded lazily, cached).
        load_video: returns clips that move like video, from the same source (``pretrain.clips``):
            for ``synthetic`` its smooth clips (one expression episode and a smooth head
            movement each, at a stated frame rate), for other sources their clips; each
            ``ClipSet`` states its frame spacing (``fps``, ``positions``). For methods that learn
            from temporal order or motion.
        pretrain_fingerprint: identifies the pretraining data in artifact keys.
        clips_fingerprint, video_fingerprint: identify the clips and the video in artifact keys.
        accel: how training uses the device (the ``train`` section resolved for ``device``);
            its ``key()`` belongs in the key of every trained artifact.
    """

    seed: int
    device: torch.device
    cache_dir: Path
    pretrain: PretrainConfig
    load_pretrain: Callable[[], ImageSet]
    load_clips: Callable[[], ClipSet]
    pretrain_fingerprint: dict
    clips_fingerprint: dict
    load_video: Callable[[], ClipSet]
    video_fingerprint: dict
    accel: Accel = dataclasses.field(default_factory=Accel)

    @classmethod
    def standalone(
        cls,
        images: ImageSet,
        cache_dir: Path,
        clips: ClipSet | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        name: str = "in-memory",
        train: TrainConfig | None = None,
        video: ClipSet | None = None,
    ) -> "MethodContext":
        """A context over in-memory data, for using a method outside the runner (benchmark
        scripts, tests, notebooks); ``name`` stands in for the dataset in artifact keys and
        ``train`` holds the device switches (default: the ``train`` section's defaults).
        ``video`` defaults to ``clips``."""
        video = clips if video is None else video

        def given(value: ClipSet | None, what: str) -> Callable[[], ClipSet]:
            def load() -> ClipSet:
                if value is None:
                    raise BenchError(f"{name}: no {what} were given to this context")
                return value

            return load

        def fingerprint(value: ClipSet | None) -> dict:
            return {"name": name, "clips": len(value.clips) if value is not None else 0}

        return cls(
            seed=seed,
            device=torch.device(device),
            cache_dir=Path(cache_dir),
            pretrain=PretrainConfig(data=name, clips=name),
            load_pretrain=lambda: images,
            load_clips=given(clips, "clips"),
            pretrain_fingerprint={"name": name, "n": len(images)},
            clips_fingerprint=fingerprint(clips),
            load_video=given(video, "clips or video"),
            video_fingerprint={**fingerprint(video), "fps": video.fps if video is not None else None},
            accel=Accel.resolve(train or TrainConfig(), device),
        )


class Method:
    """Base class of registered methods.

    Subclasses set ``Config`` (a frozen dataclass with presets), ``variants`` (the first is the
    default) and implement ``encode``; learned methods also override ``artifacts``; methods
    whose features have named parts override ``parts``, methods that predict depth ``depth``.

    Attributes:
        floor: a sanity baseline (no learning) that every learned method must beat; tables and
            figures show floors apart.
        predicts_depth: ``depth`` is implemented.
        depth_fov: field of view in degrees of the camera the predicted depth assumes (a
            monocular method recovers depth only relative to its own focal length).
        in_default_run: runs when ``--methods`` is not given; False for methods that need a
            file the user supplies (``timm`` needs weights).
        batches: config fields that are batch sizes of a training loop, and what they batch:
            ``{field: (task, cap)}`` with task ``"pretrain"`` or ``"clips"`` and ``cap`` the field
            that limits how many of those images are used (``""``: none); checked before any
            work against the data (``harness.checks``).
    """

    name: ClassVar[str]
    Config: ClassVar[type[Config]] = Config
    variants: ClassVar[tuple[str, ...]] = ("default",)
    floor: ClassVar[bool] = False
    predicts_depth: ClassVar[bool] = False
    depth_fov: ClassVar[float] = 10.0
    in_default_run: ClassVar[bool] = True
    batches: ClassVar[dict[str, tuple[str, str]]] = {}

    def __init__(self, cfg: Config, variant: str, ctx: MethodContext) -> None:
        if variant not in self.variants:
            raise BenchError(f"method {self.name!r} has no variant {variant!r}; variants: {', '.join(self.variants)}")
        self.cfg = cfg
        self.variant = variant
        self.ctx = ctx

    # --- what the runner calls -------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """Side of the square input images the method expects."""
        return int(getattr(self.cfg, "input_size", 64))

    def artifacts(self) -> list[Artifact]:
        """Trained artifacts this method needs, dependencies first (none for fixed methods, and
        none for weights loaded from a file: such a cell never trains)."""
        return []

    def weights_file(self) -> dict | None:
        """The weight file the method loads instead of training (a released checkpoint, an
        outside encoder): ``{"path", "sha256", ...}``; None for trained and fixed methods.

        Its sha256, not its path, identifies the model: it enters the cell's config hash and
        the feature-cache key, so a changed file never reuses old results.
        """
        return None

    def prepare(self) -> None:
        """Build (or load) every artifact, then make the method ready to ``encode``."""
        for artifact in self.artifacts():
            artifact.ensure(self.ctx.cache_dir)
        self.load()

    def load(self) -> None:
        """Load trained weights from the built artifacts (no-op for fixed methods)."""

    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        """Features of a batch.

        Args:
            x: float images in [-1, 1], (B, 3, input_size, input_size), on ``ctx.device``.
            view: which features a protocol asks for (``Protocol.view``): ``"fer"``,
                ``"verification"`` (the paper's features for each), or ``"parts"`` (every named
                part of the representation, laid out as ``parts()`` says). Methods without
                task-specific features return the same vector for every view.
            index: positions of the batch's images in their split, to seed per-sample noise.
        """
        raise NotImplementedError

    def feature_view(self, view: str) -> str:
        """The name of the features ``encode`` gives for ``view``: views that give the same
        features share a name, so that they are computed and cached once. By default every view
        gives the same features; methods with view-specific features return the view."""
        return ""

    def parts(self) -> dict[str, slice]:
        """Named parts of the ``"parts"`` view's features: name -> slice of the feature vector.

        A representation without parts is one part, ``all``.
        """
        return {"all": slice(None)}

    def depth(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted depth of the face in the observed view, (B, H, W), for methods with
        ``predicts_depth``; ``nan`` where the method renders no face."""
        raise NotImplementedError(f"method {self.name!r} predicts no depth")

    def fingerprint(self) -> dict:
        """Identifies the trained model behind the features (feature-cache key)."""
        key = {
            "method": self.name,
            "variant": self.variant,
            "config": self.cfg.to_dict(),
            "artifacts": [a.hash for a in self.artifacts()],
            "seed": self.ctx.seed,
        }
        weights = self.weights_file()
        if weights is not None:
            key["weights"] = weights["sha256"]
        return key

    def info(self) -> dict:
        """Facts to record in result files (e.g. which perceptual-loss weights were used)."""
        return {}


def to_input(images: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (B,3,S,S) -> float in [-1, 1] at ``size`` px on ``device`` (antialiased when shrinking)."""
    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return x


def part_slices(widths: dict[str, int]) -> dict[str, slice]:
    """Consecutive slices for parts of the given widths, in order: ``{"a": 2, "b": 3}`` ->
    ``{"a": slice(0, 2), "b": slice(2, 5)}`` (what ``Method.parts`` returns)."""
    out, start = {}, 0
    for name, width in widths.items():
        out[name] = slice(start, start + width)
        start += width
    return out


def model_seed(ctx: MethodContext, *salt: object) -> int:
    """A deterministic seed for one model of a cell, independent of Python's hash salt."""
    from harness.config import config_hash

    return int(config_hash({"seed": ctx.seed, "salt": [str(s) for s in salt]}), 16) % (2**31)
