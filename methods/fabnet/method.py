"""The registered methods ``fabnet`` and ``tcae``: trained from scratch on frame pairs of video
clips (``MethodContext.load_video``), or loaded from the authors' files (``--set fabnet.checkpoint=PATH``).

References: Koepke, Wiles, Zisserman, "Self-supervised learning of a facial attribute embedding
from video" (FAb-Net), BMVC 2018; Li, Zeng, Shan, Chen, "Self-supervised representation learning
from videos for facial action unit detection" (TCAE), CVPR 2019. LatentFace's Tables 1, 2 and 5
evaluate the authors' released models: 256-d features, FAb-Net's embedding and TCAE's AU
embedding. ``docs/methods/fabnet.md`` says what follows the official code and what does not.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from harness.artifacts import Artifact
from harness.config import Config, at_least, between, dotted, existing_file, positive, power_of_two
from harness.datasets.base import ClipSet, split_clips
from harness.errors import BenchError
from harness.io import torch_load, torch_save
from harness.method import Method, MethodContext, model_seed, part_slices, to_input
from harness.registry import register_method
from harness.train import fit
from methods.fabnet.checkpoint import OfficialFile, load_official, read_official
from methods.fabnet.curriculum import Curriculum, window_mean
from methods.fabnet.models import TCAE, FabNet, FlowNet

#: the largest input: the official encoders have eight stride-2 stages (256 px -> 1x1)
MAX_INPUT = 256


@dataclasses.dataclass(frozen=True)
class FlowConfig(Config):
    """Settings shared by FAb-Net and TCAE; defaults are the ``quick`` preset: a small CPU
    network (32 px, five stride-2 stages instead of eight, width 8 instead of 32, the 256-d
    embedding kept) for a few epochs.

    Attributes:
        input_size: image side; the encoders have log2(input_size) stride-2 stages (official 256).
        width: filters of the first conv (official 32, ``num_additional_ids``).
        embedding: channels of the 1x1 embedding = feature size per part (official 256).
        epochs, batch_size: passes over the training frames (each frame is the target once per
            epoch, its source another frame of its clip drawn at random), pairs per step.
        lr, momentum: SGD.
        min_crop: each frame is randomly cropped to a side fraction in [min_crop, 1) (drawn per
            step) at a random place (per image) and resized back.
        window_top, window_step, window_stop: the curriculum's first window [0, window_top] of
            sorted per-sample losses, its step, and the top below which it still moves.
        patience: epochs without a better validation loss (strictly more) before the window moves.
        plateau_patience: ``ReduceLROnPlateau``'s patience once the window has stopped.
        holdout: share of the clips (of the people, where known) kept for the validation loss.
        checkpoint: an authors' file (or this project's ``model.pt``) to load instead of
            training; its sha256 identifies the model in caches and results.
    """

    input_size: int = 32
    width: int = 8
    embedding: int = 256
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    min_crop: float = 0.9
    window_top: float = 0.5
    window_step: float = 0.1
    window_stop: float = 0.85
    patience: int = 15
    plateau_patience: int = 10
    holdout: float = 0.125
    checkpoint: str = ""

    SMOKE: ClassVar[dict[str, Any]] = {"input_size": 16, "width": 2, "embedding": 8, "epochs": 1, "batch_size": 8}
    RULES = {
        "input_size": power_of_two(16),  # the flow decoders need four stages (8w... 4w, 2w, w)
        "width": at_least(1), "embedding": at_least(1), "epochs": at_least(1),
        "batch_size": at_least(2),  # BatchNorm
        "lr": positive, "momentum": between(0, 1, high_open=True), "min_crop": between(0, 1, low_open=True),
        "window_top": between(0, 1, low_open=True), "window_step": at_least(0), "window_stop": between(0, 1),
        "patience": at_least(0), "plateau_patience": at_least(0), "holdout": between(0, 1, low_open=True, high_open=True),
        "checkpoint": existing_file("give the path of the authors' .pth file (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        p = dotted(section)
        if self.input_size > MAX_INPUT:
            raise BenchError(f"{p}input_size={self.input_size}: at most {MAX_INPUT} (the official encoders' eight stages); set {p}input_size lower")
        if int(self.window_top * self.batch_size) < 1:
            raise BenchError(
                f"{p}window_top={self.window_top}: keeps no sample of a batch of {self.batch_size}; raise {p}window_top or {p}batch_size"
            )


@dataclasses.dataclass(frozen=True)
class FabNetConfig(FlowConfig):
    PRESETS = {
        "smoke": FlowConfig.SMOKE,
        # train_attention_curriculum.py: FrontaliseModelMasks_wider(3, inner_nc=256,
        # num_additional_ids=32) at 256 px; SGD lr 1e-4, momentum 0.9, batch 128; crops in
        # [170, 190) of a 190 px centre crop (VoxCelebData_withmask.py); the curriculum
        # [0, 0.5] + 0.1 up to 0.85, TrackLoss's 15 epochs, ReduceLROnPlateau's default
        # patience 10. The official loop runs until stopped (range(10000)); the released
        # model's epoch count is not published: 200 epochs here.
        "paper": {
            "input_size": 256, "width": 32, "embedding": 256, "epochs": 200, "batch_size": 128, "lr": 1e-4,
            "min_crop": 170 / 190,
        },
    }


@dataclasses.dataclass(frozen=True)
class TCAEConfig(FlowConfig):
    epochs: int = 1  # quick: its step costs four FAb-Net steps (five encoder, four decoder passes)

    PRESETS = {
        "smoke": FlowConfig.SMOKE,
        # self_supervised_train_TCAE.py: Gen_sep_feature (width 32, 256-d) and decoders of
        # width 32 at 256 px; SGD lr 1e-3, momentum 0.9, batch 64 (three parameter groups at
        # the same lr = one); crops in [200, 224) of a 224 px centre crop (TCAE_data.py); the
        # same curriculum, ReduceLROnPlateau(patience=10); checkpoints every 100 of up to 2000
        # epochs (range(1, 2000)); the released model's epoch is not published: 200 here.
        "paper": {
            "input_size": 256, "width": 32, "embedding": 256, "epochs": 200, "batch_size": 64, "lr": 1e-3,
            "min_crop": 200 / 224,
        },
    }


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """The harness's [-1, 1] images -> the official input convention, ``ToTensor()``'s [0, 1]."""
    return (x + 1) / 2


def random_crops(x: torch.Tensor, min_crop: float) -> torch.Tensor:
    """Each image cropped to one side fraction in [min_crop, 1) at its own random place and
    resized back (bilinear), like the official Pad/CenterCrop/RandomCrop/Scale jitter."""
    b = x.shape[0]
    side = float(torch.empty(()).uniform_(min_crop, 1.0))
    shift = (torch.rand(b, 2) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FramePairs:
    """The clips' frames as (clip, position) rows, for drawing a source frame per target frame."""

    def __init__(self, clips: list[torch.Tensor]) -> None:
        self.lengths = torch.tensor([len(c) for c in clips])
        self.table = torch.zeros(len(clips), int(self.lengths.max()), dtype=torch.long)
        for i, c in enumerate(clips):
            self.table[i, : len(c)] = c
        self.rows = torch.cat([torch.stack((torch.full((len(c),), i), torch.arange(len(c))), 1) for i, c in enumerate(clips)])

    def pairs(self, rows: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, source) frame indices: each row's frame, and another frame of its clip."""
        clip, position = rows[:, 0].cpu(), rows[:, 1].cpu()
        length = self.lengths[clip]
        other = (position + 1 + (torch.rand(len(rows), generator=generator) * (length - 1)).long()) % length
        return self.table[clip, position], self.table[clip, other]


class FlowMethod(Method):
    """A network that warps one frame of a clip into another (FAb-Net, TCAE); features: its
    embeddings of each image, the first part for ``fer`` and ``verification``."""

    Config = FlowConfig
    Net: ClassVar[type[FlowNet]]
    batches = {"batch_size": ("clips", "")}
    #: bump when a code change alters the trained network for the same config
    artifact_version: ClassVar[int] = 1
    cfg: FlowConfig
    net: FlowNet

    def __init__(self, cfg: FlowConfig, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        if cfg.checkpoint:  # fail now, as one line, if the file cannot be read
            self.official_file

    def build_net(self) -> FlowNet:
        return self.Net(self.cfg.input_size, self.cfg.width, self.cfg.embedding)

    # --- weights from a file --------------------------------------------------------------
    @functools.cached_property
    def official_file(self) -> OfficialFile:
        return read_official(self.cfg.checkpoint, f"{self.name}.checkpoint")

    def weights_file(self) -> Optional[dict]:
        return self.official_file.record() if self.cfg.checkpoint else None

    # --- training -------------------------------------------------------------------------
    def artifacts(self) -> list[Artifact]:
        if self.cfg.checkpoint:
            return []
        config = {k: v for k, v in self.cfg.to_dict().items() if k != "checkpoint"}
        key = {"config": config, "video": self.ctx.video_fingerprint, "seed": self.ctx.seed, **self.ctx.accel.key()}
        return [Artifact(kind=self.name, key=key, build=self._train, version=self.artifact_version)]

    def split(self, clips: ClipSet) -> tuple[FramePairs, FramePairs]:
        """Training and validation clips (those with two frames at least), as frame pairs."""
        train, held = split_clips(clips, self.cfg.holdout, model_seed(self.ctx, self.name, "holdout"))
        train, held = [c for c in train if len(c) > 1], [c for c in held if len(c) > 1]
        if not train or not held:
            raise BenchError(
                f"{self.name}: {len(train)} training and {len(held)} validation clips of two frames or more; "
                f"give more clips (pretrain.clips) or change {self.name}.holdout={self.cfg.holdout}"
            )
        return FramePairs(train), FramePairs(held)

    def weighted(self, terms: dict[str, torch.Tensor], window: tuple[float, float]) -> dict[str, torch.Tensor]:
        """Each term's window mean and their weighted sum ``loss`` (the official total)."""
        losses = {k: window_mean(v, window) for k, v in terms.items()}
        losses["loss"] = sum(self.Net.WEIGHTS[k] * v for k, v in losses.items())
        return losses

    def _train(self, folder: Path) -> dict:
        cfg, ctx, device = self.cfg, self.ctx, self.ctx.device
        # video: smooth clips where the source has them (synthetic), else its clips; frames are
        # paired at random within a clip whatever their spacing, as the official loaders do
        clips = ctx.load_video()
        frames = clips.frames.images
        train, held = self.split(clips)
        # Seeds weight init; source frames and crops draw from the global generator, which the
        # training checkpoints hold, so a resumed run draws the same ones.
        torch.manual_seed(model_seed(ctx, self.name))
        net = self.build_net().to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        val_target, val_source = held.pairs(held.rows, torch.Generator().manual_seed(model_seed(ctx, self.name, "validation")))

        def images(index: torch.Tensor) -> torch.Tensor:
            return to_unit(to_input(frames[index], cfg.input_size, device))

        @torch.no_grad()
        def validate() -> float:
            """The official validation loss: every pair, no window, eval-mode BatchNorm."""
            net.eval()
            total, n = 0.0, 0
            for start in range(0, len(val_target), cfg.batch_size):
                t, s = images(val_target[start : start + cfg.batch_size]), images(val_source[start : start + cfg.batch_size])
                total += float(self.weighted(net.per_sample_losses(t, s), (0.0, 1.0))["loss"]) * len(t)
                n += len(t)
            net.train()
            return total / n

        curriculum = Curriculum(optimizer, validate, cfg.window_top, cfg.window_step, cfg.window_stop, cfg.patience, cfg.plateau_patience)

        def step(rows: torch.Tensor) -> dict[str, torch.Tensor]:
            target, source = train.pairs(rows)
            t = random_crops(images(target), cfg.min_crop)
            s = random_crops(images(source), cfg.min_crop)
            return self.weighted(net.per_sample_losses(t, s), curriculum.window)

        with ctx.accel.networks(*net.children()):
            result = fit(
                model=net,
                optimizer=optimizer,
                step=step,
                data=train.rows,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                seed=model_seed(ctx, self.name, "order"),
                workdir=folder,
                device=device,
                scheduler=curriculum,
                desc=self.name,
                setting_hint=f" (e.g. --set {self.name}.lr={cfg.lr / 10:g})",
                batch_setting=f"{self.name}.batch_size",
                accel=ctx.accel,
            )
        torch_save(folder / "model.pt", net.state_dict())
        return {
            **result.summary(), "validation_loss": curriculum.validation, "window": list(curriculum.window),
            "train_frames": len(train.rows), "validation_pairs": len(val_target),
        }

    # --- features -------------------------------------------------------------------------
    def load(self) -> None:
        net = self.build_net()
        if self.cfg.checkpoint:
            load_official(net, self.official_file, f"set {self.name}.input_size/width/embedding to the file's network (the authors' files: --preset paper)")
        else:
            (artifact,) = self.artifacts()
            net.load_state_dict(torch_load(artifact.path(self.ctx.cache_dir) / "model.pt"))
        self.net = net.to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        parts = self.net.embed(to_unit(x))
        names = self.Net.PARTS if view == "parts" else self.Net.PARTS[:1]
        return torch.cat([parts[n] for n in names], dim=1)

    def feature_view(self, view: str) -> str:
        return "parts" if view == "parts" and len(self.Net.PARTS) > 1 else ""

    def parts(self) -> dict[str, slice]:
        return part_slices({name: self.cfg.embedding for name in self.Net.PARTS})

    @property
    def feature_dim(self) -> int:
        """Length of the ``fer`` / ``verification`` features."""
        return self.cfg.embedding

    def info(self) -> dict:
        out: dict[str, Any] = {"feature_dim": self.feature_dim, "features": self.Net.PARTS[0], "parts": list(self.Net.PARTS)}
        if self.cfg.checkpoint:
            out["weights"] = self.weights_file()
        return out


@register_method("fabnet")
class FabNetMethod(FlowMethod):
    """FAb-Net: the embedding that drives a flow from a source frame to a target frame (256-d)."""

    Config = FabNetConfig
    Net = FabNet


@register_method("tcae")
class TCAEMethod(FlowMethod):
    """TCAE: pose and AU (action unit) embeddings that drive twin flows; features: the AU embedding."""

    Config = TCAEConfig
    Net = TCAE
