"""FaceCycle's five networks (Chang, Chen, Chiu, ICCV 2021), laid out as the official code's.

Module and tensor names inside each network are the official ones (``conv1``, ``layer1.2.g``,
``resblock1``, ``expresscode``...), so a released state dict loads into them unchanged; only the
networks' own names differ (``methods/facecycle/checkpoint.py`` holds that table). Every size
scales with ``width`` (1 = the official networks, 64/128/256 channels); the CPU presets use less.

The encoder's building blocks (``widths``, ``conv_lrelu``, ``SelfAttention``, ``ResidualBlock``,
``encoder_stages``, ``run_stages``, ``official_init``) are public: PCL uses this encoder up to
``layer3_1``, which it ends at 128 channels (``encoder_stages(width, out=c2)``), and replaces
``layer3_2`` by two branches of its own (128 -> 128 -> 128 each); it does not use ``last_stage``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

#: LeakyReLU slope of every encoder and flow layer (the official code's ``negative_slope=0.1``).
SLOPE = 0.1
#: the encoder halves the image four times (stride-2 convs in conv1, layer2_1, layer2_2, layer3_1).
ENCODER_STRIDE = 16
#: VGG19 ``features`` indices of the layers the generator and normaliser start with
#: (conv1_1, conv1_2, conv2_1, conv2_2, conv3_1), as the official ``vgg19(pretrained=True)`` slices.
VGG_FRONT = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10}


def widths(width: float) -> tuple[int, int, int]:
    """Channels (c1, c2, c3) of the three resolutions: (64, 128, 256) at ``width`` 1, at least 1."""
    return max(1, round(64 * width)), max(1, round(128 * width)), max(1, round(256 * width))


def feature_map_side(size: int) -> int:
    """Side of the encoder's last map for a ``size`` px input (100 -> 7, 64 -> 4)."""
    for _ in range(4):  # 3x3 (or 7x7) convs, stride 2, padding k // 2: ceil(size / 2)
        size = (size + 1) // 2
    return size


def conv_lrelu(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    """A conv (padding ``kernel // 2``, with bias) and LeakyReLU(0.1): the encoder's unit."""
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=True), nn.LeakyReLU(SLOPE)]


class SelfAttention(nn.Module):
    """FaceCycle's attention block: three 1x1 convs ``g``, ``theta``, ``phi``; output
    LeakyReLU(x + A), A = (phi softmax_N(theta)^T) softmax_C(g), a C x C similarity applied
    to the positions' channel distributions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.g = nn.Conv2d(channels, channels, 1)
        self.theta = nn.Conv2d(channels, channels, 1)
        self.phi = nn.Conv2d(channels, channels, 1)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # reshape, not view: the maps may be channels-last. g, theta, phi in the official order:
        # it sets the order x's gradients add up in, so seeded training matches to the bit
        g = self.g(x).reshape(b, c, -1)
        theta = F.softmax(self.theta(x).reshape(b, c, -1), dim=-1).transpose(1, 2)  # B x N x C
        similarity = torch.bmm(self.phi(x).reshape(b, c, -1), theta)  # B x C x C
        return self.act(x + torch.bmm(similarity, F.softmax(g, dim=1)).reshape(b, c, h, w))  # g: over channels


class ResidualBlock(nn.Module):
    """The official ``BasicBlockNormal``: conv, LeakyReLU, conv, + input, LeakyReLU (no norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.relu = nn.LeakyReLU(SLOPE)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def encoder_stages(width: float = 1.0, out: Optional[int] = None) -> dict[str, nn.Module]:
    """The encoder's stages before the last, in order, with the official names: ``conv1``
    (7x7 stride 2), ``layer1`` and ``layer2_1`` (with self-attention), two residual blocks,
    ``layer2_2`` and ``layer3_1`` (each halving the map). ``layer3_1`` ends at ``out`` channels
    (default c3, FaceCycle's; PCL's goes back to c2)."""
    c1, c2, c3 = widths(width)
    out = c3 if out is None else out
    return {
        "conv1": nn.Sequential(*conv_lrelu(3, c1, 2, kernel=7), *conv_lrelu(c1, c1)),
        "layer1": nn.Sequential(*conv_lrelu(c1, c1), SelfAttention(c1), *conv_lrelu(c1, c1)),
        "layer2_1": nn.Sequential(*conv_lrelu(c1, c2, 2), SelfAttention(c2), *conv_lrelu(c2, c2)),
        "resblock1": ResidualBlock(c2),
        "resblock2": ResidualBlock(c2),
        "layer2_2": nn.Sequential(*conv_lrelu(c2, c2, 2), *conv_lrelu(c2, c2)),
        "layer3_1": nn.Sequential(*conv_lrelu(c2, c3, 2), *conv_lrelu(c3, out)),
    }


def run_stages(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` through the stages of ``encoder_stages`` that ``net`` holds under their names."""
    for name in ("conv1", "layer1", "layer2_1", "resblock1", "resblock2", "layer2_2", "layer3_1"):
        x = getattr(net, name)(x)
    return x


def last_stage(width: float = 1.0) -> nn.Sequential:
    """``layer3_2``: two 3x3 convs from c3 to c2 channels at the last resolution."""
    _, c2, c3 = widths(width)
    return nn.Sequential(*conv_lrelu(c3, c3), *conv_lrelu(c3, c2))


def official_init(module: nn.Module, linear_std: float = 0.01) -> None:
    """The official initialisation of the encoder and flow decoder: convs N(0, sqrt(2 / (k^2 out))),
    linears N(0, ``linear_std``), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, linear_std)
            m.bias.data.zero_()


class Encoder(nn.Module):
    """``codegeneration``: the expression encoder (and, as ``idcodegen``, the identity encoder).

    ``features(x)`` is the representation the paper counts: the flattened ``layer3_2`` map,
    128 x 7 x 7 = 6272 at 100 px (the official RAF-DB evaluation), channel-first.
    ``forward(x)`` is the 256-d code (tanh), defined only at ``code_size`` px (64 officially),
    where the map flattens to the ``expresscode`` input (2048).
    """

    def __init__(self, width: float = 1.0, code_size: int = 64) -> None:
        super().__init__()
        _, c2, c3 = widths(width)
        for name, stage in encoder_stages(width).items():
            self.add_module(name, stage)
        self.layer3_2 = last_stage(width)
        flat = c2 * feature_map_side(code_size) ** 2
        self.expresscode = nn.Sequential(nn.Linear(flat, 2 * c3), nn.LeakyReLU(SLOPE), nn.Linear(2 * c3, c3))
        self.code_size = code_size
        official_init(self)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``layer3_2`` map (B, c2, s, s) of normalised images (B, 3, H, W)."""
        return self.layer3_2(run_stages(self, x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The code (B, c3, 1, 1) in [-1, 1]."""
        return torch.tanh(self.expresscode(self.features(x)))[:, :, None, None]


def identity_grid(b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """The sampling grid of no motion, (B, H, W, 2) in [-1, 1] (the official ``np.linspace``
    mesh, on ``like``'s device and dtype)."""
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).expand(b, h, w, 2)


def warp(x: torch.Tensor, flow: torch.Tensor, clamp_flow: bool = False) -> torch.Tensor:
    """``x`` sampled at the identity grid plus ``flow`` (B, 2, h, w; bilinearly resized to x's
    size; ``clamp_flow``: clipped to [-1, 1] first, as the training scripts' pixel warp does)."""
    b, _, h, w = x.shape
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
    if clamp_flow:
        flow = flow.clamp(-1, 1)
    return F.grid_sample(x, identity_grid(b, h, w, x) + flow.permute(0, 2, 3, 1), align_corners=True)


class FlowDecoder(nn.Module):
    """``exptoflow``: a code (B, c3, 1, 1) -> a 16 x 16 tanh flow and its back-flow (the flow
    warped by itself, clipped to [-1, 1], negated)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = widths(width)
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.motiongen1 = nn.Sequential(
            nn.Conv2d(c3, 16 * c3, 1), nn.PixelShuffle(4), nn.LeakyReLU(SLOPE), SelfAttention(c3), *conv_lrelu(c3, c3)
        )
        self.motiongen2 = nn.Sequential(up, *conv_lrelu(c3, c2), SelfAttention(c2), *conv_lrelu(c2, c2))
        self.resblock1 = ResidualBlock(c2)
        self.resblock2 = ResidualBlock(c2)
        self.toflow4 = nn.Sequential(up, *conv_lrelu(c2, c1), nn.Conv2d(c1, 2, 1, bias=False))
        self.normact = nn.Tanh()
        official_init(self)
        for m in self.toflow4:  # the official code draws the flow head smaller
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, 0.05)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.resblock2(self.resblock1(self.motiongen2(self.motiongen1(code))))
        flow = self.normact(self.toflow4(motion))
        return flow, -warp(flow, flow).clamp(-1, 1)


def vgg_front(width: float = 1.0) -> dict[str, nn.Sequential]:
    """VGG19's conv1_1 ... conv3_1, each (conv, ReLU), as the official generator names them;
    frozen (``requires_grad`` off), their weights come from ImageNet VGG19 or a seed."""
    c1, c2, c3 = widths(width)
    shapes = {"conv1_1": (3, c1), "conv1_2": (c1, c1), "conv2_1": (c1, c2), "conv2_2": (c2, c2), "conv3_1": (c2, c3)}
    front = {name: nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.ReLU(inplace=True)) for name, (i, o) in shapes.items()}
    for layer in front.values():
        layer.requires_grad_(False)
    return front


class VGGFront(nn.Module):
    """Base of the generator and the normaliser: the frozen VGG19 front and its forward pass."""

    def __init__(self, width: float) -> None:
        super().__init__()
        for name, layer in vgg_front(width).items():
            self.add_module(name, layer)

    def front(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv2_1 features at 1/2 size, conv3_1 features at 1/4 size)."""
        half = self.conv2_1(F.max_pool2d(self.conv1_2(self.conv1_1(x)), 2))
        return half, self.conv3_1(F.max_pool2d(self.conv2_2(half), 2))


def _relu_conv(c_in: int, c_out: int, n: int = 2) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, 1, 1), nn.ReLU()]
    return layers


class Generator(VGGFront):
    """``generator`` (saved as ``Swap_Generator``): re-renders a face, warping its VGG features
    by a flow (with noise driven by the pooled features added), or unwarped without a flow."""

    def __init__(self, width: float = 1.0, blocks: int = 8) -> None:
        super().__init__(width)
        _, c2, c3 = widths(width)
        self.redconv = nn.Sequential(nn.Conv2d(c3, c3, 3, 1, 1), nn.ReLU())
        self.cnn = nn.Sequential(*[ResidualBlock(c3) for _ in range(blocks)])
        self.up = nn.Sequential(nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(), *_relu_conv(c2, c2, 1))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(), *_relu_conv(c2, c2, 1))
        self.torgb = nn.Conv2d(c2, 3, 3, 1, 1)
        self.noise_encoding1 = nn.Sequential(*_relu_conv(c2, c2))
        self.noise_encoding0 = nn.Sequential(*_relu_conv(c3, c3))

    def forward(self, x: torch.Tensor, flow: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Faces (B, 3, H, W) in the input's normalisation; ``generator`` draws the noise the
        official code takes from the global stream (``normal_()``)."""
        half, quarter = self.front(x)
        if flow is not None:
            noise0 = torch.randn(quarter.shape, generator=generator).to(quarter)
            noise1 = torch.randn(half.shape, generator=generator).to(half)
            quarter = warp(quarter, flow) + self.noise_encoding0(noise0 + F.adaptive_avg_pool2d(quarter, 1))
            half = warp(half, flow) + self.noise_encoding1(noise1 + F.adaptive_avg_pool2d(half, 1))
        out = self.up(self.cnn(self.redconv(quarter)))
        return self.torgb(self.up2(torch.cat([half, out], dim=1)))


class SPADE(nn.Module):
    """Instance norm (no affine) re-scaled and shifted by 1x1 convs of a code (B, C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.InstanceNorm2d(channels, affine=False)
        self.beta = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gamma(code) + self.beta(code)


class Normalizer(VGGFront):
    """``normalizer`` (saved as ``Swap_Norm``): de-normalises a neutral face by the identity code
    towards the mean face (``denorm``), or re-normalises a mean face to a person (``renorm``)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__(width)
        _, c2, c3 = widths(width)
        self.denorm = SPADE(c3)
        self.renorm = SPADE(c3)
        self.cnn = nn.Sequential(*[ResidualBlock(c3) for _ in range(6)])
        self.cnn3 = nn.Sequential(ResidualBlock(c3))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(), *_relu_conv(c2, c2, 1), nn.ConvTranspose2d(c2, c2, 4, 2, 1), nn.ReLU()
        )
        self.torgb = nn.Conv2d(c2, 3, 1)

    def forward(self, x: torch.Tensor, denorm: bool, code: torch.Tensor) -> torch.Tensor:
        _, quarter = self.front(x)
        quarter = (self.denorm if denorm else self.renorm)(quarter, code)
        return self.torgb(self.up(self.cnn3(self.cnn(quarter))))
