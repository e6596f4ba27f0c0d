"""Sanity baselines: the floor every learned representation must beat.

Both are real methods with no training: ``pixels`` reads the image itself, ``random-cnn`` passes
it through a fixed, randomly initialised conv net (random features are a known, non-trivial
baseline for linear probes).
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import Config, at_least, each
from harness.registry import register_method
from harness.method import Method, model_seed


@dataclasses.dataclass(frozen=True)
class PixelsConfig(Config):
    """Attributes:
    input_size: images are downsampled to this side (area averaging) before flattening.
    """

    input_size: int = 16

    RULES = {"input_size": at_least(1)}


@register_method("pixels")
class Pixels(Method):
    """Downsampled raw pixels, standardised per image (zero mean, unit variance)."""

    Config = PixelsConfig
    floor = True

    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        # per-image standardisation removes global brightness and contrast, nothing else
        return (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)


@dataclasses.dataclass(frozen=True)
class RandomCNNConfig(Config):
    """Attributes:
    input_size: input side in pixels.
    widths: output channels of the stride-2 3x3 conv layers (ReLU after each).
    """

    input_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)

    RULES = {"input_size": at_least(1), "widths": each(at_least(1))}


@register_method("random-cnn")
class RandomCNN(Method):
    """A fixed randomly initialised conv net (seeded by the cell seed), globally average-pooled."""

    Config = RandomCNNConfig
    floor = True

    @functools.cached_property
    def net(self) -> nn.Sequential:
        """The network, built on first use: a plan makes the method but never encodes with it."""
        torch.manual_seed(model_seed(self.ctx, "random-cnn"))
        layers: list[nn.Module] = []
        channels = 3
        for width in self.cfg.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
            channels = width
        return nn.Sequential(*layers).to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net(x), 1).flatten(1)
