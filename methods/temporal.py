"""Temporal: facial representations that rank frames by their distance in time.

Reference: Lu, Tavabi, Soleymani, "Self-Supervised Learning for Facial Action Unit Recognition
through Temporal Consistency", BMVC 2020 (official code ``ihp-lab/temporal-consistency``).
LatentFace compares with it in Tables 1, 2 and 5 (256-d, expression only).

A ResNet-18 trunk, ``fc1`` (512 -> 256) and L2 normalisation embed a frame; per clip an anchor
frame t, its neighbour t + 1 and ten "far" frames t + 1 + k * spacing (k = 1..10) are embedded,
and a ranking triplet loss asks each frame to be nearer (squared L2, margin 0.03) to the anchor
than the next: neighbour before far frame 1, far frame k before far frame k + 1. The
representation is the 256-d normalised ``fc1`` output.

Deviations from the official training (``train/triplet_rank_train.py``), for the data here: each
epoch draws a new anchor per clip (the official draws one per video once for all epochs); every
clip trains (the official keeps 20 % of videos aside to print a ranking accuracy, never used to
choose anything); frame distances are positions in the clip (``methods/clipbase.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import Config, at_least, between, dotted, existing_file, positive
from harness.errors import BenchError
from harness.method import model_seed
from harness.registry import register_method
from methods.clipbase import ClipBaseline, ImageNetResNet18, imagenet_input, jitter_crop, resnet, resolve_resnet18

#: the official ResNet-18 width; only then can ImageNet weights initialise it
PAPER_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class TemporalConfig(Config):
    """Temporal settings; defaults are the ``quick`` preset (CPU, seconds).

    Attributes:
        input_size: image side in pixels (official: 256).
        width: channels of the ResNet-18 stem and first stage (official torchvision: 64).
        epochs, batch_size: passes over the clips, clips per step (official: 50, 48 videos).
        lr, momentum: SGD (official: 1e-3, 0.9; ``quick`` raises the rate for its few steps).
        margin: the ranking loss's margin on squared distances (official: 0.03).
        far_frames, spacing: far frames per anchor and their spacing in frames (official: 10, 1).
        crop_min, crop_slack: augmentation, as fractions of the image: the crop side is drawn
            once per run from [crop_min, crop_min + crop_slack) and each image is cropped at a
            corner drawn from ``crop_slack`` around the centre (official, at 256 px: crop from
            [200, 224), Pad 24 + CenterCrop(crop + 24) + RandomCrop(crop), i.e. 200/256, 24/256).
        imagenet_weights: torchvision's ImageNet ResNet-18 file (``resnet18-f37072fd.pth``) that
            initialises the trunk as in the official code; empty: torchvision's hub cache.
            Without it (or at another width) the trunk starts from scratch, with one warning.
        checkpoint: the authors' file to load instead of training (``model_save/_<epoch>.pth``:
            ``{state_dict, optimizer}``, DataParallel ``module.`` keys); empty: train.
    """

    input_size: int = 48
    width: int = 16
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-2
    momentum: float = 0.9
    margin: float = 0.03
    far_frames: int = 10
    spacing: int = 1
    crop_min: float = 200 / 256
    crop_slack: float = 24 / 256
    imagenet_weights: str = ""
    checkpoint: str = ""

    PRESETS = {
        "smoke": {"input_size": 32, "width": 8, "epochs": 1, "batch_size": 4},
        # train/triplet_rank_train.py: argparse defaults lr 0.001, momentum 0.9, batch_size 48,
        # num_epoch 50, spacing_size 1; Scale((256, 256)) inputs; torchvision resnet18.
        "paper": {"input_size": 256, "width": PAPER_WIDTH, "epochs": 50, "batch_size": 48, "lr": 1e-3},
    }
    RULES = {
        "input_size": at_least(16), "width": at_least(1), "epochs": at_least(1), "batch_size": at_least(1),
        "lr": positive, "momentum": between(0, 1, high_open=True), "margin": at_least(0), "far_frames": at_least(1),
        "spacing": at_least(1), "crop_min": between(0, 1, low_open=True), "crop_slack": between(0, 1),
        "imagenet_weights": existing_file("give the path of resnet18-f37072fd.pth or leave it empty"),
        "checkpoint": existing_file("give the path of the authors' checkpoint (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        p = dotted(section)
        if self.checkpoint and self.width != PAPER_WIDTH:
            raise BenchError(
                f"{p}checkpoint with {p}width={self.width}: the authors' ResNet-18 is {PAPER_WIDTH} channels wide; add --preset paper "
                f"or --set {p}width={PAPER_WIDTH} (and {p}input_size=256, the size it was trained at)"
            )
        if self.crop_min + self.crop_slack > 1:
            raise BenchError(
                f"{p}crop_min={self.crop_min:g} + {p}crop_slack={self.crop_slack:g}: must be at most 1; lower one of them"
            )


class TemporalNet(nn.Module):
    """ResNet-18 trunk -> ``fc1`` (512 -> 256 at the official width) -> L2 normalisation."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.backbone = resnet("resnet18", width)
        self.fc1 = nn.Linear(self.backbone.num_features, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images -> unit-length 256-d embeddings."""
        return F.normalize(self.fc1(self.backbone(x)), p=2, dim=1)


def ranking_loss(anchor: torch.Tensor, close: torch.Tensor, far: torch.Tensor, margin: float) -> torch.Tensor:
    """The official tuplet loss: hinge on squared L2 distances to the anchor, each frame nearer
    than the next by ``margin`` (neighbour < far 1 < ... < far K), summed per anchor, averaged.

    Args:
        anchor, close: (B, D) embeddings of frames t and t + 1.
        far: (B, K, D) embeddings of the far frames, nearest first.
    """
    d_close = (anchor - close).pow(2).sum(-1)
    d_far = (anchor[:, None] - far).pow(2).sum(-1)
    nearer = torch.cat([d_close[:, None], d_far[:, :-1]], dim=1)
    return F.relu(nearer - d_far + margin).sum(1).mean()


@register_method("temporal")
class Temporal(ClipBaseline):
    """Temporal (Lu et al. 2020): features are the 256-d L2-normalised ``fc1`` output."""

    Config = TemporalConfig
    cfg: TemporalConfig
    # official key (DataParallel ``module.`` stripped) -> project key; the official trunk is
    # ``nn.Sequential(*list(resnet18.children())[:-1])``: 0 conv1, 1 bn1, 4..7 layer1..4
    OFFICIAL_PREFIX = "module."
    RENAMES = (
        ("resnet18.0.", "backbone.conv1."),
        ("resnet18.1.", "backbone.bn1."),
        ("resnet18.4.", "backbone.layer1."),
        ("resnet18.5.", "backbone.layer2."),
        ("resnet18.6.", "backbone.layer3."),
        ("resnet18.7.", "backbone.layer4."),
    )
    feature_dim: ClassVar[int] = 256
    resolved_fields = ("imagenet_weights",)

    def build_net(self) -> TemporalNet:
        return TemporalNet(self.cfg.width)

    def min_frames(self) -> int:
        return 2 + self.cfg.far_frames * self.cfg.spacing

    def init_source(self) -> ImageNetResNet18:
        """The trunk's initialisation: the ImageNet file, or scratch (said once)."""
        if self.cfg.width != PAPER_WIDTH:
            return ImageNetResNet18(f"scratch (width {self.cfg.width})")
        return resolve_resnet18(self.cfg.imagenet_weights, "temporal.imagenet_weights", "scratch", "temporal trains its ResNet-18 from scratch")

    def training_key(self) -> dict[str, Any]:
        return {"init": self.init_source().key()}

    def training_setup(self, frames: torch.Tensor, n_batches: int):
        cfg, device = self.cfg, self.ctx.device
        source = self.init_source()
        net = self.build_net()
        if source.path is not None:
            source.load_into(net.backbone, "temporal.imagenet_weights")
        net = net.to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        # The official crop side is drawn once per run (numpy RandomState(seed).randint(200, 224)).
        draw = torch.Generator().manual_seed(model_seed(self.ctx, "temporal-crop"))
        crop = cfg.crop_min + float(torch.rand(1, generator=draw)) * cfg.crop_slack
        offsets = torch.tensor([0, 1] + [1 + k * cfg.spacing for k in range(1, cfg.far_frames + 1)])
        span = int(offsets[-1])

        def step(rows: torch.Tensor) -> dict[str, torch.Tensor]:
            rows = rows.cpu()
            anchor = torch.randint(0, rows.shape[1] - span, (rows.shape[0], 1))
            x = self.frames(frames, rows.gather(1, anchor + offsets))
            z = net(imagenet_input(jitter_crop(x, cfg.input_size, crop, cfg.crop_slack)))
            z = z.view(rows.shape[0], len(offsets), -1)
            return {"loss": ranking_loss(z[:, 0], z[:, 1], z[:, 2:], cfg.margin)}

        return net, optimizer, None, step, [net]

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        return self.net(imagenet_input(x))

    def info(self) -> dict:
        if self.cfg.checkpoint:
            return {"weights": self.weights_file(), "feature_dim": self.feature_dim, "features": "L2-normalised fc1 output"}
        return {"init": self.init_source().describe(), "feature_dim": self.feature_dim, "features": "L2-normalised fc1 output"}
