"""FaceCycle's loss terms (official ``Loss.py``, ``pytorch_ssim``, ``vgg19.py``) and its VGG19.

Images are ImageNet-normalised, as everywhere in the official code; every term below compares
images in that space. ImageNet VGG19 weights cannot be downloaded here: ``resolve_vgg19`` finds
a local file or falls back, with one warning, to a fixed seeded random VGG19.
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
from harness.lazy import lazy

vgg = lazy("torchvision.models.vgg")  # imported when a network is built: registering stays quick

log = logging.getLogger(__name__)

#: torchvision's file name of the ImageNet VGG19 weights (looked for in its hub cache).
VGG19_FILE = "vgg19-dcbb9e9d.pth"
#: ``vgg19().features`` up to relu4_1, and where relu2_1, relu3_1, relu4_1 end (the official
#: perceptual layers r21, r31, r41).
RELU4_1 = 21
GRAM_LAYERS = (7, 12, 21)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_FALLBACKS = ("random", "off")


@dataclasses.dataclass(frozen=True)
class VGGSource:
    """Where the VGG19 weights come from: ``imagenet`` (the file ``path``), ``random`` (seeded
    Kaiming-normal weights, torchvision's VGG initialisation) or ``off`` (perceptual term off;
    the generator's front is then seeded too)."""

    mode: str
    path: Optional[Path] = None

    def describe(self) -> str:
        if self.mode == "imagenet":
            return f"ImageNet VGG19 from {self.path}"
        return f"ImageNet VGG19 weights not found: {'perceptual term off, ' if self.mode == 'off' else ''}a fixed seeded random VGG19"


def resolve_vgg19(path: str, fallback: str, setting: str = "facecycle") -> VGGSource:
    """The VGG19 weights to use: ``path``, else torchvision's hub cache, else ``fallback`` with
    one warning per process. Never downloads."""
    file = hub_file(path, VGG19_FILE)
    if file.is_file():
        return VGGSource("imagenet", file)
    message = (
        f"ImageNet VGG19 weights not found at {file}; FaceCycle uses {VGGSource(fallback).describe().split(': ', 1)[1]} "
        f"({setting}.vgg_fallback). Put {VGG19_FILE} there or set {setting}.vgg_weights=PATH to train as the official code does."
    )
    warn_once(log, message)
    return VGGSource(fallback)


def vgg19_layers(source: VGGSource, seed: int, width: float = 1.0) -> nn.Sequential:
    """VGG19 ``features[:21]`` (to relu4_1) with channels scaled by ``width``: ImageNet weights
    (``width`` 1 only) or seeded ones, all frozen."""
    cfg = [v if v == "M" else round(v * width) for v in vgg.cfgs["E"]]
    layers = vgg.make_layers(cfg)[:RELU4_1]
    if source.mode == "imagenet" and width == 1:
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        layers.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < RELU4_1})
    else:
        generator = torch.Generator().manual_seed(seed)
        for conv in layers:
            if isinstance(conv, nn.Conv2d):
                out_channels, _, kh, kw = conv.weight.shape
                conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / (out_channels * kh * kw))
                conv.bias.data.zero_()
    return layers.requires_grad_(False).eval()


class GramPerceptual(nn.Module):
    """The official perceptual term: per layer r21, r31, r41 the MSE between the Gram matrices
    (C x C, divided by H W) of a reconstruction's and its target's VGG19 features, summed.

    The VGG weights are non-persistent buffers: never trained, never in checkpoints."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        for conv in layers:
            if isinstance(conv, nn.Conv2d):
                weight, bias = conv.weight.detach(), conv.bias.detach()
                del conv.weight, conv.bias
                conv.register_buffer("weight", weight, persistent=False)
                conv.register_buffer("bias", bias, persistent=False)
        self.layers = layers

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = recon.shape[0]
        x = torch.cat([recon, target])  # one pass over both
        loss = recon.new_zeros(())
        start = 0
        for end in GRAM_LAYERS:
            x = self.layers[start:end](x)
            start = end
            g = gram(x)
            loss = loss + F.mse_loss(g[:n], g[n:].detach())
        return loss


def gram(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (h * w)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - SSIM (``pytorch_ssim``: 11 x 11 Gaussian window, sigma 1.5, zero padding, C1 = 0.01^2,
    C2 = 0.03^2, mean over the map)."""
    c = x.shape[1]
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=window // 2, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return 1 - ssim.mean()


def symmetry_loss(face: torch.Tensor) -> torch.Tensor:
    """Mean |left half - mirrored right half| (the official ``symetricloss``)."""
    w = face.shape[-1]
    return (face[..., : w // 2] - face[..., w - w // 2 :].flip(-1)).abs().mean()


def margin_loss(mean_face: torch.Tensor, neutral: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """The official ``margin_loss`` as it runs: mean(|mean face - neutral| - margin). (Its hinge,
    ``l1 - F.relu(l1)``, is a statement whose result is discarded, so no hinge applies.)"""
    return ((mean_face - neutral).abs() - margin).mean()
