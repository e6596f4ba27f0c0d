"""The building blocks of FaceCycle's expression encoder, which PCL reuses as its backbone.

FaceCycle (Chang, Chen, Chiu, ICCV 2021) encodes faces with plain convolutions, LeakyReLU(0.1),
no normalisation layers, and a self-attention block in the first two stages; PCL (Liu et al.,
CVPR 2023) keeps that encoder up to ``layer2_2`` and changes its end: PCL's ``layer3_1`` goes
128 -> 256 -> 128 channels (FaceCycle's 128 -> 256 -> 256), and the last stage, split in two,
is 128 -> 128 -> 128 per branch (FaceCycle's ``layer3_2``: 256 -> 256 -> 128). Module names and
Sequential positions follow PCL's code, so its state dicts load without renaming. ``width``
scales every channel count (1 = the authors' network).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: negative slope of every LeakyReLU in the encoder
SLOPE = 0.1


def channels(base: int, width: float) -> int:
    """``base`` channels of the authors' network scaled by ``width`` (at least 1)."""
    return max(1, round(base * width))


class SelfAttention(nn.Module):
    """FaceCycle's attention block: ``LeakyReLU(x + attention(x))``.

    Three 1x1 convolutions: softmax over positions for ``theta``, over channels for ``g``; the
    (C x C) similarity ``phi theta^T`` reweights the channels of ``g``.
    """

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.g = nn.Conv2d(planes, planes, kernel_size=1)
        self.theta = nn.Conv2d(planes, planes, kernel_size=1)
        self.phi = nn.Conv2d(planes, planes, kernel_size=1)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # reshape, not view: the authors' .view fails on channels-last tensors
        g = F.softmax(self.g(x).reshape(b, c, h * w), dim=1)
        theta = F.softmax(self.theta(x).reshape(b, c, h * w), dim=-1).transpose(1, 2)
        phi = self.phi(x).reshape(b, c, h * w)
        attention = torch.bmm(torch.bmm(phi, theta), g)
        return self.act(x + attention.reshape(b, c, h, w))


class ResidualBlock(nn.Module):
    """FaceCycle's ``BasicBlockNormal``: two 3x3 convolutions, identity shortcut, no norm."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, 1, 1)
        self.relu = nn.LeakyReLU(SLOPE, inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def conv_pair(cin: int, cmid: int, cout: int, stride: int = 1, attention: bool = False) -> nn.Sequential:
    """conv3x3(stride) - LeakyReLU - [SelfAttention] - conv3x3 - LeakyReLU (FaceCycle's stages)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cmid, 3, stride, 1), nn.LeakyReLU(SLOPE)]
    if attention:
        layers.append(SelfAttention(cmid))
    layers += [nn.Conv2d(cmid, cout, 3, 1, 1), nn.LeakyReLU(SLOPE)]
    return nn.Sequential(*layers)


class FaceCycleStem(nn.Module):
    """PCL's version of FaceCycle's expression encoder up to ``layer3_1`` (input side / 16,
    ``128 * width`` channels): the trunk whose flattened map is PCL's representation.

    ``conv1`` (7x7 stride 2), ``layer1`` (attention), ``layer2_1`` (stride 2, attention), two
    residual blocks, ``layer2_2`` (stride 2), ``layer3_1`` (stride 2, then back to 128 channels:
    PCL's, not FaceCycle's).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = channels(64, width), channels(128, width), channels(256, width)
        self.out_channels = c2
        self.conv1 = nn.Sequential(nn.Conv2d(3, c1, 7, 2, 3), nn.LeakyReLU(SLOPE), nn.Conv2d(c1, c1, 3, 1, 1), nn.LeakyReLU(SLOPE))
        self.layer1 = conv_pair(c1, c1, c1, attention=True)
        self.layer2_1 = conv_pair(c1, c2, c2, stride=2, attention=True)
        self.resblock1 = ResidualBlock(c2)
        self.resblock2 = ResidualBlock(c2)
        self.layer2_2 = conv_pair(c2, c2, c2, stride=2)
        self.layer3_1 = conv_pair(c2, c3, c2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.conv1(x))
        x = self.resblock2(self.resblock1(self.layer2_1(x)))
        return self.layer3_1(self.layer2_2(x))


def init_convolutions(module: nn.Module) -> None:
    """The authors' initialisation: conv weights N(0, 2 / (k * k * out_channels)), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.data.zero_()
