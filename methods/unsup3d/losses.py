"""Stage-1 losses (paper Appendix C, Eqs. 8-11) and the depth-accuracy metric.

Both reconstruction terms are self-calibrated: a predicted confidence map sigma turns the
per-pixel error into a negative log-likelihood (paper Eq. 10), averaged over the rendered-face
mask. The perceptual term compares VGG16 relu3_3 features; ImageNet weights cannot be
downloaded here, so ``resolve_perceptual`` decides what stands in for them and says so.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.checkpoints import hub_file, warn_once

log = logging.getLogger(__name__)

EPS = 1e-7
#: torchvision's file name for the ImageNet VGG16 weights (found in its hub cache when present).
VGG16_FILE = "vgg16-397923af.pth"
#: the first 16 modules of ``vgg16().features`` end with relu3_3.
RELU3_3 = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PERCEPTUAL_FALLBACKS = ("off", "random")
CONFIDENCE_FORMS = ("gaussian", "laplacian")


def calibrated_error(diff: torch.Tensor, sigma: torch.Tensor, form: str) -> torch.Tensor:
    """Per-element negative log-likelihood of an error under a predicted scale (constants dropped).

    Args:
        diff: prediction minus target, (B, C, H, W).
        sigma: confidence map (B, 1, H, W), broadcast over channels.
        form: ``"laplacian"``, |d| sqrt(2) / sigma + ln sigma (paper Eq. 10), or
            ``"gaussian"``, d^2 / (2 sigma^2) + ln sigma (Unsup3D's perceptual term).
    """
    if form == "laplacian":
        return diff.abs() * math.sqrt(2) / (sigma + EPS) + torch.log(sigma + EPS)
    if form == "gaussian":
        return diff.pow(2) / (2 * sigma.pow(2) + EPS) + torch.log(sigma + EPS)
    raise ValueError(f"unknown confidence form {form!r}; choose one of {CONFIDENCE_FORMS}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, C, H, W) over the pixels where ``mask`` (B, 1, H, W) is set."""
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(EPS)


def photometric_loss(recon: torch.Tensor, image: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_p of paper Eq. 8: Laplacian NLL of the pixel error, averaged over the mask."""
    return masked_mean(calibrated_error(recon - image, sigma, "laplacian"), mask)


@dataclasses.dataclass(frozen=True)
class PerceptualSource:
    """What the perceptual loss runs on.

    Attributes:
        mode: ``"imagenet"`` (pretrained weights from ``path``), ``"random"`` (a fixed seeded
            random VGG16) or ``"off"`` (no perceptual term).
        path: the weights file for ``"imagenet"``.
    """

    mode: str
    path: Optional[Path] = None

    def describe(self) -> str:
        if self.mode == "imagenet":
            return f"ImageNet VGG16 from {self.path}"
        if self.mode == "random":
            return "ImageNet VGG16 weights not found: a fixed randomly initialised VGG16 (seeded) instead"
        return "ImageNet VGG16 weights not found: perceptual term off"


def resolve_perceptual(vgg_weights: str, fallback: str) -> PerceptualSource:
    """Find the ImageNet VGG16 weights, or fall back (with one warning per process). Never downloads.

    Args:
        vgg_weights: explicit path to the weights file; empty means torchvision's hub cache
            (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``).
        fallback: ``"off"`` or ``"random"``, used when the file is missing.
    """
    if fallback not in PERCEPTUAL_FALLBACKS:
        raise ValueError(f"unknown perceptual fallback {fallback!r}; choose one of {PERCEPTUAL_FALLBACKS}")
    path = hub_file(vgg_weights, VGG16_FILE)
    if path.is_file():
        return PerceptualSource("imagenet", path)
    source = PerceptualSource(fallback)
    message = (
        f"ImageNet VGG16 weights not found at {path}; perceptual loss: {fallback} "
        f"(unsup3d.perceptual_fallback). Put the file there or set unsup3d.vgg_weights=PATH to train as the paper did."
    )
    warn_once(log, message)
    return source


def vgg16_relu3_3(source: PerceptualSource, seed: int = 0) -> Optional[nn.Sequential]:
    """VGG16 ``features[:16]`` (up to relu3_3), frozen, or None when the term is off.

    The weights become non-persistent buffers: they follow ``.to(device)`` but are neither
    trained nor written into stage-1 checkpoints (the file, or the seed, reproduces them).
    """
    if source.mode == "off":
        return None
    import torchvision  # imported when a network is built: registering the method stays quick

    # Only the layers we use: building all of vgg16() would also allocate its 120M-weight head.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:RELU3_3]
    if source.mode == "imagenet":
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < RELU3_3}
        )
    generator = torch.Generator().manual_seed(seed)
    for conv in features:
        if not isinstance(conv, nn.Conv2d):
            continue
        weight, bias = conv.weight.detach(), conv.bias.detach()
        if source.mode == "random":  # torchvision's VGG initialisation (Kaiming normal, fan-out), seeded
            out_channels, _, kh, kw = weight.shape
            weight = torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / (out_channels * kh * kw))
            bias = torch.zeros_like(bias)
        del conv.weight, conv.bias
        conv.register_buffer("weight", weight, persistent=False)
        conv.register_buffer("bias", bias, persistent=False)
    return features.eval()


class PerceptualLoss(nn.Module):
    """L_f of paper Eq. 9: calibrated error between VGG16 relu3_3 features of two images.

    Args:
        features: the frozen feature extractor from ``vgg16_relu3_3``.
        form: ``"gaussian"`` (Unsup3D reference, default) or ``"laplacian"`` (paper Eq. 10).
    """

    def __init__(self, features: nn.Module, form: str = "gaussian") -> None:
        super().__init__()
        if form not in CONFIDENCE_FORMS:
            raise ValueError(f"unknown perceptual form {form!r}; choose one of {CONFIDENCE_FORMS}")
        self.features = features
        self.form = form
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """relu3_3 features of images in [-1, 1]."""
        return self.features((x / 2 + 0.5 - self.mean) / self.std)

    def forward(self, recon: torch.Tensor, target_features: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Loss of ``recon`` against precomputed target features (shared by both flip branches).

        Args:
            recon: reconstructions (B, 3, H, W).
            target_features: ``embed(input)``, (B, C, h, w).
            sigma: confidence map (B, 1, h, w).
            mask: full-resolution mask (B, 1, H, W), average-pooled to the feature size.
        """
        diff = self.embed(recon) - target_features
        pooled = F.avg_pool2d(mask, kernel_size=mask.shape[-1] // diff.shape[-1])
        return masked_mean(calibrated_error(diff, sigma, self.form), pooled)


def scale_invariant_depth_error(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scale-invariant depth error (SIDE, Unsup3D Sec. 4.1) per image: std over pixels of log-depth ratios.

    SIDE = sqrt(mean(d^2) - mean(d)^2) with d = ln pred - ln target, so a global depth scale
    (which monocular reconstruction cannot recover) costs nothing.

    Args:
        pred, target: positive depth maps (B, H, W).
        mask: pixels to score (B, H, W), e.g. where both depths are valid; all when None.
    """
    d = pred.clamp_min(EPS).log() - target.clamp_min(EPS).log()
    mask = torch.ones_like(d) if mask is None else mask.to(d.dtype)
    count = mask.sum((1, 2)).clamp_min(1)
    mean = (d * mask).sum((1, 2)) / count
    # two passes rather than mean(d^2) - mean(d)^2, which cancels catastrophically in float32
    return (((d - mean[:, None, None]).pow(2) * mask).sum((1, 2)) / count).sqrt()
