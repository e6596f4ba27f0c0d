"""What the two video baselines share (Temporal, SSLFER): training on clips, ImageNet-normalised
inputs, the ImageNet ResNet-18 they may start from, and their released files.

Both learn from the order of frames in talking-face videos: Temporal (Lu, Tavabi, Soleymani,
BMVC 2020) ranks frames by temporal distance, SSLFER (Shu, Gu, Yang, Lo, BMVC 2022) contrasts
nearby against distant frames. Here they train on ``ctx.load_video()`` (for ``synthetic`` its
smooth clips at 10 fps) through the shared loop (``harness.train.fit``): one training item is one
clip, a row of frame indices, and each step draws its frames inside the clip from the global
generator (which ``fit`` checkpoints, so a resumed run draws the same).

Frame distances are counted in places of the clip, as the official code counts frames of its own
extraction (Temporal 25 fps, SSLFER 25/6 fps): for synthetic video consecutive frames at 10 fps,
for VoxCeleb clips (16 frames drawn at random from a video, sorted) an order whose time steps
vary (``ClipSet.positions`` holds them; these methods use only the order). The result records
the data's frame rate.

A released file is loaded with ``--set <name>.checkpoint=PATH``: read by the safe loader, its
``state_dict`` renamed by the method's ``RENAMES`` table (official prefix -> project prefix) and
checked strictly; such a cell never trains.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from harness.artifacts import Artifact
from harness.checkpoints import file_sha256, hub_file, load_weights, read_once, strict_state, warn_once, weights_record
from harness.datasets.base import ClipSet
from harness.errors import BenchError
from harness.io import torch_load, torch_save
from harness.lazy import lazy
from harness.method import Method, MethodContext, model_seed, to_input
from harness.train import fit

# Imported on first use: registering the method (tables, --status) builds no network.
timm = lazy("timm")
ops = lazy("torchvision.ops")

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ImageNet ResNet-18 file (what ``models.resnet18(pretrained=True)`` downloads)
RESNET18_FILE = "resnet18-f37072fd.pth"


def imagenet_input(x: torch.Tensor) -> torch.Tensor:
    """Harness images in [-1, 1] -> torchvision's ``ToTensor`` range [0, 1] -> ImageNet mean/std."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def jitter_crop(x: torch.Tensor, size: int, crop: float, slack: float) -> torch.Tensor:
    """Per-image random square crops, resized to ``size``: the crop's side is ``crop`` of the
    image and its corner moves uniformly over ``slack`` of it around the centred position
    (torchvision's CenterCrop(crop + slack) then RandomCrop(crop), batched with ``roi_align``)."""
    n, side = x.shape[0], x.shape[-1]
    corner = (1 - crop - slack) / 2 + torch.rand(n, 2, device=x.device) * slack
    boxes = torch.cat([corner, corner + crop], dim=1) * side
    rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], dim=1)
    return ops.roi_align(x, rois, output_size=(size, size), aligned=True)


def resnet(name: str, width: int) -> nn.Module:
    """A timm ResNet without classifier (``num_classes=0``: global average pooling), stem and
    first stage ``width`` channels wide (64: the torchvision network, whose keys timm shares)."""
    return timm.create_model(name, pretrained=False, num_classes=0, stem_width=width, channels=(width, 2 * width, 4 * width, 8 * width))


@dataclasses.dataclass(frozen=True)
class ImageNetResNet18:
    """Where an ImageNet ResNet-18 comes from: ``imagenet`` (a local file) or the fallback."""

    mode: str
    path: Optional[Path] = None

    def key(self) -> dict[str, Any]:
        """For artifact keys and results: the mode and, for a file, its sha256."""
        return {"mode": self.mode, **({"sha256": file_sha256(self.path)} if self.path else {})}

    def describe(self) -> str:
        return f"ImageNet ResNet-18 from {self.path}" if self.path else self.mode

    def load_into(self, net: nn.Module, setting: str) -> None:
        """Copy the file's trunk into a timm ResNet-18 (``num_classes=0``), strictly; the
        classifier ``fc.*`` of the file is not used."""
        state = {k: v for k, v in load_weights(self.path, setting).items() if not k.startswith("fc.")}
        strict_state(net.state_dict(), state, {}, f"{setting}={self.path} (ImageNet ResNet-18)")
        net.load_state_dict(state)


def resolve_resnet18(path: str, setting: str, fallback: str, consequence: str) -> ImageNetResNet18:
    """The ImageNet ResNet-18 at ``path`` (empty: torchvision's hub cache), or ``fallback`` with
    one warning per process saying ``consequence``. Never downloads."""
    file = hub_file(path, RESNET18_FILE)
    if file.is_file():
        return ImageNetResNet18("imagenet", file)
    warn_once(log, f"ImageNet ResNet-18 not found at {file}; {consequence} (set {setting}=PATH to the file {RESNET18_FILE})")
    return ImageNetResNet18(fallback)


def rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    """``key`` with the first matching prefix of ``table`` (source -> target) replaced; unchanged
    when none matches (a strict check then names it as unexpected)."""
    for source, target in table:
        if key.startswith(source):
            return target + key[len(source):]
    return key


def clip_table(clips: ClipSet, min_frames: int, what: str) -> torch.Tensor:
    """The clips as one (n_clips, frames) index tensor: the training items of a video method."""
    lengths = sorted({len(c) for c in clips.clips})
    if not lengths:
        raise BenchError(f"{what}: the clip data holds no clips")
    if len(lengths) > 1:
        raise BenchError(f"{what}: clips of different lengths ({lengths[0]}..{lengths[-1]} frames); use clip data with one clip length")
    if lengths[0] < min_frames:
        raise BenchError(f"{what}: clips of {lengths[0]} frames are shorter than the {min_frames} one training sample spans; use longer clips or shorter offsets")
    return torch.stack(list(clips.clips))


class ClipBaseline(Method):
    """A method trained from scratch on clips, or loaded from its authors' file.

    Subclasses set ``RENAMES`` (and ``OFFICIAL_PREFIX``) and implement ``build_net``, ``min_frames``
    and ``training_setup``; the config has ``epochs``, ``batch_size`` (clips per step) and
    ``checkpoint``.
    """

    #: official state-dict prefix -> project prefix, the most specific first
    RENAMES: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: prefix of every key in the authors' files (``module.``: saved from ``nn.DataParallel``);
    #: stripped when present
    OFFICIAL_PREFIX: ClassVar[str] = ""
    #: bump when a code change alters the trained network for the same config
    artifact_version: ClassVar[int] = 1
    #: config fields that only choose how features are read: not in the artifact key
    feature_fields: ClassVar[tuple[str, ...]] = ()
    #: config fields that name pretrained weights: ``training_key`` holds what they resolve to
    #: (the file's sha256, or the fallback) in their stead
    resolved_fields: ClassVar[tuple[str, ...]] = ()
    net: nn.Module

    def __init__(self, cfg: Any, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        # a file that cannot serve this network fails now, as one line, before any work
        self.released = self.released_state(self.build_net().state_dict()) if cfg.checkpoint else None

    def build_net(self) -> nn.Module:
        """A freshly initialised network for ``self.cfg`` (on the CPU)."""
        raise NotImplementedError

    def min_frames(self) -> int:
        """Frames a clip needs for one training sample."""
        raise NotImplementedError

    def training_setup(
        self, frames: torch.Tensor, n_batches: int
    ) -> tuple[nn.Module, torch.optim.Optimizer, Optional[Any], Callable, list[nn.Module]]:
        """Network, optimiser, per-epoch schedule (or None; ``n_batches`` steps per epoch), the
        ``fit`` step over a batch of clip rows (frame indices into ``frames``, uint8 images) and
        the networks that do the heavy work."""
        raise NotImplementedError

    def training_key(self) -> dict[str, Any]:
        """What besides the config changes the trained weights (resolved pretrained weights)."""
        return {}

    # --- training -------------------------------------------------------------------------
    def artifacts(self) -> list[Artifact]:
        if self.cfg.checkpoint:
            return []
        skip = {"checkpoint", *self.feature_fields, *self.resolved_fields}
        config = {k: v for k, v in self.cfg.to_dict().items() if k not in skip}
        key = {"config": config, "video": self.ctx.video_fingerprint, "seed": self.ctx.seed, **self.training_key(), **self.ctx.accel.key()}
        return [Artifact(kind=self.name, key=key, build=self._train, version=self.artifact_version)]

    def _train(self, folder: Path) -> dict:
        clips = self.ctx.load_video()
        table = clip_table(clips, self.min_frames(), self.name)
        # Seeds weight init and the frames, crops and masks each step draws.
        torch.manual_seed(model_seed(self.ctx, self.name))
        net, optimizer, scheduler, step, networks = self.training_setup(clips.frames.images, len(table) // self.cfg.batch_size)
        with self.ctx.accel.networks(*networks):
            result = fit(
                model=net,
                optimizer=optimizer,
                step=step,
                data=table,
                epochs=self.cfg.epochs,
                batch_size=self.cfg.batch_size,
                seed=model_seed(self.ctx, self.name, "order"),
                workdir=folder,
                device=self.ctx.device,
                scheduler=scheduler,
                desc=self.name,
                setting_hint=f" (e.g. --set {self.name}.lr={self.cfg.lr / 10:g})",
                batch_setting=f"{self.name}.batch_size (clips per step)",
                accel=self.ctx.accel,
            )
        torch_save(folder / "model.pt", net.state_dict())
        return {**result.summary(), "train_clips": len(table), "fps": clips.fps, **self.training_key()}

    # --- a released file ------------------------------------------------------------------
    def weights_file(self) -> Optional[dict]:
        return weights_record(self.cfg.checkpoint, layout="official") if self.cfg.checkpoint else None

    def released_state(self, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``cfg.checkpoint``'s ``state_dict`` in project names, checked strictly against ``expected``
        (read once per method, file content and network shapes)."""
        shapes = tuple((k, tuple(v.shape)) for k, v in expected.items())
        return read_once(self.cfg.checkpoint, f"{self.name}.checkpoint", lambda _: self._read_released(expected), self.name, shapes)

    def _read_released(self, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        setting = f"{self.name}.checkpoint"
        where = f"{setting}={self.cfg.checkpoint}"
        data = load_weights(self.cfg.checkpoint, setting)
        state = data.get("state_dict") if isinstance(data, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise BenchError(f"{where}: not a {self.name} checkpoint (expected a dict with a 'state_dict' of tensors, as the authors' code saves)")
        given = {rename(k.removeprefix(self.OFFICIAL_PREFIX), self.RENAMES): v for k, v in state.items()}
        source = {rename(k.removeprefix(self.OFFICIAL_PREFIX), self.RENAMES): k for k in state}
        source.update({k: self.official_name(k) for k in expected if k not in source})  # missing ones, as the file would name them
        strict_state(expected, given, source, f"{where} ({self.name})")
        return given

    @classmethod
    def official_name(cls, key: str) -> str:
        """Project tensor name -> the authors' (the inverse of ``RENAMES``, with their prefix)."""
        return cls.OFFICIAL_PREFIX + rename(key, tuple((target, source) for source, target in cls.RENAMES))

    def official_state(self) -> dict[str, torch.Tensor]:
        """The loaded network's tensors in the authors' names, e.g. to write a file in their layout."""
        return {self.official_name(k): v for k, v in self.net.state_dict().items()}

    # --- features -------------------------------------------------------------------------
    def load(self) -> None:
        net = self.build_net()
        if self.released is not None:
            net.load_state_dict(self.released)
        else:
            (artifact,) = self.artifacts()
            net.load_state_dict(torch_load(artifact.path(self.ctx.cache_dir) / "model.pt"))
        self.net = net.to(self.ctx.device).eval()

    def frames(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Frames ``index`` (any shape) of the uint8 ``images`` as float inputs in [-1, 1] at the
        method's input size, on its device, flattened along the index dimensions."""
        return to_input(images[index.reshape(-1).cpu()], self.input_size, self.ctx.device)
