"""FAb-Net's and TCAE's networks, named and ordered as in the official code so that the authors'
state dicts load strictly (``oawiles/FAb-Net`` ``models_multiview.py``, class
``FrontaliseModelMasks_wider``; ``mysee1989/TCAE`` ``models_multiview.py``, ``Gen_sep_feature``).

Both encoders halve the image with 4x4 stride-2 convolutions down to a 1x1 embedding; the flow
decoders double it back with (upsample, 3x3 conv) stages. At 256 px there are eight stages of
``width`` x (1, 2, 4, 8, 8, 8, 8) channels and a ``embedding``-channel last conv, the official
networks (``width`` 32 = the official ``num_additional_ids``). At a smaller input the encoders
drop middle 8x-width stages (``log2(input_size)`` stages in all), so the embedding stays 1x1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: LeakyReLU slope of both encoders
SLOPE = 0.2
#: TCAE's shared trunk, official (conv, BatchNorm) names; its two branches have three convs each
TCAE_TRUNK = (("conv1", "batch_norm"), ("conv2", "batch_norm2_0"), ("conv3", "batch_norm4_0"), ("conv4", "batch_norm8_0"), ("conv5", "batch_norm8_1"))
TCAE_BRANCHES = {
    "pose": (("conv6", "batch_norm8_2"), ("conv7", "batch_norm8_3"), ("conv8", None)),
    "au": (("conv6_1", "batch_norm8_2_1"), ("conv7_1", "batch_norm8_3_1"), ("conv8_1", None)),
}


def stages(input_size: int) -> int:
    """Stride-2 stages from ``input_size`` to a 1x1 map (8 at the official 256 px)."""
    return int(math.log2(input_size))


def encoder_channels(input_size: int, width: int, embedding: int) -> list[int]:
    """Output channels of each encoder conv: width x (1, 2, 4, 8, 8...) then the embedding."""
    return [width * min(2**i, 8) for i in range(stages(input_size) - 1)] + [embedding]


def fabnet_encoder(input_size: int, width: int, embedding: int) -> nn.Sequential:
    """FAb-Net's ``encoder``: conv, then (conv, BatchNorm, LeakyReLU) ..., a bare last conv; no
    BatchNorm after the first conv (Sequential indices 0, 2, 3, 5, 6, ... 20 at 256 px)."""
    layers: list[nn.Module] = []
    channels = encoder_channels(input_size, width, embedding)
    previous = 3
    for i, c in enumerate(channels):
        layers.append(nn.Conv2d(previous, c, 4, 2, 1))
        if 0 < i < len(channels) - 1:
            layers.append(nn.BatchNorm2d(c))
        if i < len(channels) - 1:
            layers.append(nn.LeakyReLU(SLOPE, inplace=True))
        previous = c
    return nn.Sequential(*layers)


def flow_decoder(input_size: int, width: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """The official ``generate_decoder_layers``: ReLU, then per stage (upsample x2, 3x3 conv,
    BatchNorm, ReLU), the last conv followed by tanh; channels 8w ..., 4w, 2w, w, ``out_channels``.

    Upsampling is bilinear with ``align_corners=True``, PyTorch 0.3's behaviour under which the
    official code was written (0.4 changed the default); features do not depend on it.
    """
    n = stages(input_size)
    channels = [8 * width] * (n - 4) + [4 * width, 2 * width, width, out_channels]
    layers: list[nn.Module] = [nn.ReLU()]
    previous = in_channels
    for i, c in enumerate(channels):
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), nn.Conv2d(previous, c, 3, 1, 1)]
        layers += [nn.BatchNorm2d(c), nn.ReLU()] if i < len(channels) - 1 else [nn.Tanh()]
        previous = c
    return nn.Sequential(*layers)


class SeparateEncoder(nn.Module):
    """TCAE's ``Gen_sep_feature``: a shared trunk of (conv, BatchNorm, LeakyReLU), then a pose
    and an AU (action unit) branch of two such stages and a bare conv each; returns (pose, au),
    each (B, embedding, 1, 1). At 256 px the trunk has five stages; a smaller input drops trunk
    stages from the end (the branches keep three)."""

    def __init__(self, input_size: int, width: int, embedding: int) -> None:
        super().__init__()
        channels = encoder_channels(input_size, width, embedding)
        trunk = len(channels) - 3
        self.trunk = TCAE_TRUNK[:trunk]
        previous = 3
        for (conv, norm), c in zip(self.trunk, channels):
            setattr(self, conv, nn.Conv2d(previous, c, 4, 2, 1))
            setattr(self, norm, nn.BatchNorm2d(c))
            previous = c
        for layers in TCAE_BRANCHES.values():
            branch_in = previous
            for (conv, norm), c in zip(layers, channels[trunk:]):
                setattr(self, conv, nn.Conv2d(branch_in, c, 4, 2, 1))
                if norm is not None:
                    setattr(self, norm, nn.BatchNorm2d(c))
                branch_in = c
        self.leaky_relu = nn.LeakyReLU(SLOPE, inplace=True)

    def _stage(self, x: torch.Tensor, conv: str, norm: str | None) -> torch.Tensor:
        x = getattr(self, conv)(x)
        return self.leaky_relu(getattr(self, norm)(x)) if norm is not None else x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv, norm in self.trunk:
            x = self._stage(x, conv, norm)
        out = []
        for layers in TCAE_BRANCHES.values():
            y = x
            for conv, norm in layers:
                y = self._stage(y, conv, norm)
            out.append(y)
        return out[0], out[1]


def identity_grid(size: int, like: torch.Tensor) -> torch.Tensor:
    """The sampling grid that copies an image, (1, size, size, 2) with x first, in [-1, 1]."""
    ramp = torch.linspace(-1, 1, size, device=like.device, dtype=like.dtype)
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    return torch.stack((x, y), dim=-1)[None]


def warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` resampled at the identity grid plus ``flow`` (B, 2, H, W), clamped to [-1, 1];
    returns (warped image, grid). ``align_corners=True`` is ``grid_sample``'s behaviour in the
    PyTorch 0.3/0.4 the official code ran on."""
    grid = (flow.permute(0, 2, 3, 1) + identity_grid(flow.shape[-1], flow)).clamp(-1, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True), grid
