"""SimCLR baseline: contrastive learning of two augmented views (lightly loss and head, timm ResNet).

References:
    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
    ICML 2020; Chen et al., "Big Self-Supervised Models are Strong Semi-Supervised Learners"
    (SimCLRv2), NeurIPS 2020. LatentFace (Sec. 3.2) reports "SimCLRv2" with a ResNet-50 trained
    from scratch on its face data for 30 epochs at 224x224; the ``paper`` preset is that setting.

SimCLRv2's changes over SimCLR that apply to a ResNet-50 are kept: a 3-layer projection head
and temperature 0.1. Its other changes (deeper/wider ResNets with selective kernels, a MoCo
memory, fine-tuning from the head's middle layer) do not apply to a frozen-feature ResNet-50
baseline. The features are the globally pooled backbone output, as in the SimCLR linear eval.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from harness.config import at_least, between, dotted, positive, probability
from harness.errors import BenchError
from harness.lazy import lazy
from harness.registry import register_method
from methods.selfsup import SelfSupervisedBaseline, SelfSupervisedConfig, SelfSupervisedNet

# Imported on first use: registering the method (tables, --status) builds no network.
timm = lazy("timm")
lightly_loss = lazy("lightly.loss")
lightly_modules = lazy("lightly.models.modules")
ops = lazy("torchvision.ops")
v2 = lazy("torchvision.transforms.v2")
TF = lazy("torchvision.transforms.v2.functional")
color = lazy("torchvision.transforms.v2.functional._color")
#: Backbones the presets name: known timm ResNets, checked without importing timm (tests confirm them).
PRESET_BACKBONES = ("resnet18", "resnet50")

# Colour-jitter amounts of lightly's SimCLRTransform (= the SimCLR paper's), scaled by
# ``cj_strength``; tests check they still match lightly's defaults.
CJ_BRIGHTNESS, CJ_CONTRAST, CJ_SATURATION, CJ_HUE = 0.8, 0.8, 0.8, 0.2
BLUR_SIGMAS = (0.1, 2.0)


@dataclasses.dataclass(frozen=True)
class SimCLRConfig(SelfSupervisedConfig):
    """SimCLR settings; defaults are the ``quick`` preset (64 px, half-width ResNet-18, ~1 min on 2 CPU cores).

    Augmentation fields follow lightly's ``SimCLRTransform`` arguments of the same name.

    Attributes:
        backbone: timm ResNet name (``resnet18``, ``resnet50``...), built with ``num_classes=0``.
        width: channels of the stem and first stage (timm default 64); stages double it.
        proj_layers: layers of lightly's SimCLRProjectionHead (SimCLRv2 uses 3).
        proj_dim: output size of the projection head (128 in SimCLR).
        temperature: NT-Xent temperature (0.5: lightly's default, best at small batches in
            SimCLR's CIFAR study; 0.1 in SimCLRv2).
        min_scale: smallest crop area fraction of the random resized crop.
        cj_prob: probability of colour jitter per view.
        cj_strength: scales the jitter amounts (lightly advises 0.5 for small images).
        random_gray_scale: probability of converting a view to grey.
        hf_prob: probability of a horizontal flip.
        gaussian_blur: probability of Gaussian blur (lightly turns it off for small images).
    """

    backbone: str = "resnet18"
    width: int = 32
    proj_layers: int = 3
    proj_dim: int = 128
    temperature: float = 0.5
    min_scale: float = 0.08
    cj_prob: float = 0.8
    cj_strength: float = 0.5
    random_gray_scale: float = 0.2
    hf_prob: float = 0.5
    gaussian_blur: float = 0.0

    PRESETS = {
        "smoke": {"input_size": 32, "width": 8, "epochs": 1, "batch_size": 16, "train_images": 64},
        # ResNet-50 at 224 px for 30 epochs (paper Sec. 3.2). Batch 256 (512 views) fits one
        # 80 GB GPU in fp32; AdamW at 1e-3 replaces SimCLR's LARS, which needs batches of 4096.
        "paper": {
            "input_size": 224,
            "backbone": "resnet50",
            "width": 64,
            "epochs": 30,
            "batch_size": 256,
            "warmup_epochs": 3,
            "temperature": 0.1,
            "cj_strength": 1.0,
            "gaussian_blur": 0.5,
        },
    }

    RULES = {
        "width": at_least(1), "proj_layers": at_least(2), "proj_dim": at_least(1), "temperature": positive,
        "min_scale": between(0, 1, low_open=True), "cj_prob": probability, "cj_strength": at_least(0),
        "random_gray_scale": probability, "hf_prob": probability, "gaussian_blur": probability,
    }

    def check(self, section: str) -> None:
        super().check(section)
        known = self.backbone in PRESET_BACKBONES
        if not self.backbone.startswith("resnet") or not (known or timm.is_model(self.backbone)):
            raise BenchError(f"{dotted(section)}backbone={self.backbone}: not a timm ResNet; set a timm ResNet name (resnet18, resnet50...)")


class SimCLRAugment:
    """The view augmentation of lightly's ``SimCLRTransform``, run batched on tensors.

    lightly's transform works on one PIL image at a time, which would dominate training time
    here; this applies the same pipeline (random resized crop -> horizontal flip -> colour
    jitter with probability ``cj_prob`` -> grey with probability ``random_gray_scale`` ->
    Gaussian blur), with lightly's parameters, to a whole batch on its device, drawing every
    random choice per image. Deviations, all for speed: crops are cut and resized with
    ``roi_align`` (bilinear, area-averaging when shrinking); the order of the four jitter
    operations is drawn once per batch, and so is the blur width (whether to blur is still
    drawn per image).
    """

    def __init__(self, cfg: SimCLRConfig) -> None:
        self.cfg = cfg
        self.crop = v2.RandomResizedCrop(cfg.input_size, scale=(cfg.min_scale, 1.0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment images in [0, 1] of shape (B, 3, S, S); returns (B, 3, input_size, input_size)."""
        cfg = self.cfg
        x = self.random_resized_crop(x)
        x = torch.where(self.draw(x, cfg.hf_prob), x.flip(-1), x)
        x = self.color_jitter(x, self.draw(x, cfg.cj_prob))
        x = torch.where(self.draw(x, cfg.random_gray_scale), TF.rgb_to_grayscale(x, num_output_channels=3), x)
        if cfg.gaussian_blur > 0:
            sigma = float(torch.empty(1).uniform_(*BLUR_SIGMAS))
            blurred = TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * BLUR_SIGMAS[1]) + 1, sigma=sigma)
            x = torch.where(self.draw(x, cfg.gaussian_blur), blurred, x)
        return x

    @staticmethod
    def draw(x: torch.Tensor, p: float) -> torch.Tensor:
        """Per-image coin flips with probability ``p``, shaped to broadcast over (B, 3, H, W)."""
        return (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision draws each box (same rule as lightly's RandomResizedCrop); roi_align then
        # crops and resizes the whole batch in one call.
        boxes = []
        for b in range(x.shape[0]):
            p = self.crop.make_params([x[b]])
            boxes.append([b, p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]])
        rois = torch.tensor(boxes, dtype=x.dtype, device=x.device)
        size = self.cfg.input_size
        return ops.roi_align(x, rois, output_size=(size, size), aligned=True)

    def color_jitter(self, x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
        """torchvision's ColorJitter with per-image factors; images where ``apply`` is False pass unchanged."""
        s = self.cfg.cj_strength

        def factor(low: float, high: float, identity: float) -> torch.Tensor:
            f = torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(low, high)
            return torch.where(apply, f, identity)

        brightness = factor(max(0.0, 1 - s * CJ_BRIGHTNESS), 1 + s * CJ_BRIGHTNESS, 1.0)
        contrast = factor(max(0.0, 1 - s * CJ_CONTRAST), 1 + s * CJ_CONTRAST, 1.0)
        saturation = factor(max(0.0, 1 - s * CJ_SATURATION), 1 + s * CJ_SATURATION, 1.0)
        hue = factor(-s * CJ_HUE, s * CJ_HUE, 0.0)

        def blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
            return (ratio * a + (1 - ratio) * b).clamp(0, 1)

        ops = [
            lambda y: (y * brightness).clamp(0, 1),
            lambda y: blend(y, TF.rgb_to_grayscale(y).mean(dim=(-3, -2, -1), keepdim=True), contrast),
            lambda y: blend(y, TF.rgb_to_grayscale(y), saturation),
            lambda y: shift_hue(y, hue.flatten()),
        ]
        for i in torch.randperm(len(ops)).tolist():
            x = ops[i](x)
        return x


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the hue of each image by its own ``shift`` (turns, in [-0.5, 0.5]), as torchvision does.

    torchvision's public ``adjust_hue`` takes one factor per call; its HSV kernels, used here,
    take the whole batch, so each image gets its own shift in one pass.
    """
    h, s, v = color._rgb_to_hsv(x).unbind(dim=-3)
    h = (h + shift.view(-1, 1, 1)).remainder(1.0)
    return color._hsv_to_rgb(torch.stack((h, s, v), dim=-3))


class SimCLRNet(SelfSupervisedNet):
    """ResNet backbone + projection head, trained with the NT-Xent loss on two views per image."""

    def __init__(self, cfg: SimCLRConfig) -> None:
        super().__init__()
        w = cfg.width
        self.backbone = timm.create_model(
            cfg.backbone, pretrained=False, num_classes=0, stem_width=w, channels=(w, 2 * w, 4 * w, 8 * w)
        )
        self.feature_dim = self.backbone.num_features
        # SimCLR keeps the hidden layers as wide as the features (2048 for ResNet-50).
        self.head = lightly_modules.SimCLRProjectionHead(self.feature_dim, self.feature_dim, cfg.proj_dim, num_layers=cfg.proj_layers)
        self.criterion = lightly_loss.NTXentLoss(temperature=cfg.temperature)
        self.augment = SimCLRAugment(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def networks(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        images = (x + 1) / 2  # the colour operations work on [0, 1]
        views = torch.cat([self.augment(images), self.augment(images)]) * 2 - 1
        # One backbone pass over both views: BatchNorm statistics then span both, like
        # SimCLR's global BN, so they cannot tell the two views apart.
        z1, z2 = self.head(self.backbone(views)).chunk(2)
        return self.criterion(z1, z2)


@register_method("simclr")
class SimCLR(SelfSupervisedBaseline):
    """SimCLR(v2) trained from scratch on the pretraining faces; features: pooled ResNet output."""

    Config = SimCLRConfig
    cfg: SimCLRConfig

    def build_net(self) -> SimCLRNet:
        return SimCLRNet(self.cfg)

    def info(self) -> dict:
        return {
            "backbone": f"timm {self.cfg.backbone} (width {self.cfg.width})",
            "feature_dim": self.feature_dim,
            "features": "globally average-pooled backbone output",
            "augmentation": "lightly SimCLRTransform parameters, batched tensor ops (see SimCLRAugment)",
        }
