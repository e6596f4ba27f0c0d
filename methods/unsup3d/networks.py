"""The stage-1 networks (paper Appendix B, Figs. 10-13; identical to Unsup3D's).

Four kinds of fully convolutional nets share one downsampling pattern: 4x4 stride-2 convs that
double the width, then a 4x4 valid conv to a 1x1 code.

- ``FeatureAutoencoder`` ("EDDeconv"): texture (3 maps, Tanh) and depth (1 map, raw); its
  bottleneck is the 256-d latent ``Z_t`` / ``Z_s`` (non-negative, it follows a ReLU).
- ``NumericalEncoder``: pose (6 numbers) and light (4 numbers), Tanh, no normalisation.
- ``ConfidenceNet``: the per-pixel sigma maps that calibrate the reconstruction losses.

At 64 px and ``nf`` = 64 (32 for the numerical encoders) the layer lists are exactly the
published ones. Smaller inputs (a power of two, >= 16) drop the outermost stride-2 stages, so
the code stays 1x1 and every decoder still ends at ``nf`` channels at full resolution. Convs
have no bias, as in the reference code (GroupNorm or nothing follows them).
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: channels per GroupNorm group; the paper's 16/32/64 groups at 64/128/256 channels.
CHANNELS_PER_GROUP = 4


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the paper's group size, so reduced widths keep the same statistics."""
    return nn.GroupNorm(channels // CHANNELS_PER_GROUP, channels)


def down_stages(image_size: int) -> int:
    """Number of stride-2 stages that take ``image_size`` down to the 4x4 map (4 at 64 px)."""
    stages = int(math.log2(image_size)) - 2
    if image_size != 2 ** (stages + 2) or stages < 2:
        raise ValueError(f"image size must be a power of two >= 16, got {image_size}")
    return stages


def _encoder_trunk(cin: int, nf: int, image_size: int, norm: bool) -> tuple[list[nn.Module], int]:
    """Stride-2 4x4 convs nf, 2nf, 4nf, ... down to 4x4; returns the layers and the last width.

    With ``norm`` every stage but the last has GroupNorm and LeakyReLU(0.2) (feature encoders);
    without, plain ReLU (numerical encoders).
    """
    layers: list[nn.Module] = []
    stages = down_stages(image_size)
    width = cin
    for i in range(stages):
        out = nf * 2**i
        layers.append(nn.Conv2d(width, out, 4, stride=2, padding=1, bias=False))
        if norm and i < stages - 1:
            layers.append(group_norm(out))
        layers.append(nn.LeakyReLU(0.2, inplace=True) if norm else nn.ReLU(inplace=True))
        width = out
    return layers, width


def _up_stage(cin: int, cout: int, refine: bool) -> list[nn.Module]:
    """Stride-2 4x4 transposed conv (x2), optionally followed by a 3x3 conv, each GN + ReLU."""
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
        group_norm(cout),
        nn.ReLU(inplace=True),
    ]
    if refine:
        layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), group_norm(cout), nn.ReLU(inplace=True)]
    return layers


class NumericalEncoder(nn.Module):
    """Pose or light encoder (paper Fig. 11): image -> ``out_dim`` numbers in [-1, 1].

    Args:
        out_dim: 6 for pose (rx, ry, rz, tx, ty, tz), 4 for light (ambient, diffuse, dx, dy).
        nf: width of the first conv (paper: 32).
        image_size: input side in pixels.
    """

    def __init__(self, out_dim: int, nf: int = 32, image_size: int = 64) -> None:
        super().__init__()
        layers, width = _encoder_trunk(3, nf, image_size, norm=False)
        layers += [
            nn.Conv2d(width, width, 4, bias=False),  # 4x4 -> 1x1
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_dim, 1, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class FeatureAutoencoder(nn.Module):
    """Texture or depth encoder-decoder, "EDDeconv" (paper Figs. 10 and 12).

    The encoder ends in a 4x4 valid conv + ReLU to the ``latent_dim`` code (the paper's Z_t or
    Z_s). The decoder mirrors it: a 4x4 transposed conv back to 4x4 and a 3x3 conv, stride-2
    stages that halve the width (transposed conv + 3x3 conv, GN + ReLU each) up to half the
    image size, a nearest x2 upsample, 3x3 and 5x5 convs (GN + ReLU) and a final 5x5 conv.

    Args:
        out_channels: 3 for texture, 1 for depth.
        nf: width at full resolution (paper: 64).
        latent_dim: size of the code (paper: 256).
        image_size: input and output side in pixels.
        tanh: squash the output to [-1, 1] (texture yes; depth is normalised by the model).
    """

    def __init__(self, out_channels: int, nf: int = 64, latent_dim: int = 256, image_size: int = 64, tanh: bool = True) -> None:
        super().__init__()
        trunk, width = _encoder_trunk(3, nf, image_size, norm=True)
        self.encoder = nn.Sequential(*trunk, nn.Conv2d(width, latent_dim, 4, bias=False), nn.ReLU(inplace=True))
        up: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, 4, bias=False),  # 1x1 -> 4x4
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
        ]
        while width > nf:  # 4x4 -> image_size / 2
            up += _up_stage(width, width // 2, refine=True)
            width //= 2
        up += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(nf, nf, 3, padding=1, bias=False),
            group_norm(nf),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 5, padding=2, bias=False),
            group_norm(nf),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, out_channels, 5, padding=2, bias=False),
        ]
        if tanh:
            up.append(nn.Tanh())
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code (B, latent_dim)."""
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The map (B, out_channels, H, W) of a code (B, latent_dim)."""
        return self.decoder(z[:, :, None, None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (map, latent)."""
        z = self.encode(x)
        return self.decode(z), z


class ConfidenceNet(nn.Module):
    """Confidence maps sigma for the self-calibrated losses (paper Fig. 13, Unsup3D's ConfNet).

    The feature-encoder trunk to a ``code_dim`` code, transposed convs back up to a quarter of
    the image size (the size of VGG relu3_3 features), then two Softplus heads: the
    photometric one (two more x2 transposed convs and a 5x5 conv, full resolution) and the
    perceptual one (a 3x3 conv). Each head gives two maps: for the reconstruction and for its
    flipped twin (paper Eq. 11).

    Args:
        nf: width at full resolution (paper: 64).
        code_dim: bottleneck size (reference: 128).
        image_size: input side in pixels.
    """

    def __init__(self, nf: int = 64, code_dim: int = 128, image_size: int = 64) -> None:
        super().__init__()
        trunk, width = _encoder_trunk(3, nf, image_size, norm=True)
        trunk += [
            nn.Conv2d(width, code_dim, 4, bias=False),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(code_dim, width, 4, bias=False),  # 1x1 -> 4x4
            nn.ReLU(inplace=True),
        ]
        while width > 2 * nf:  # 4x4 -> image_size / 4
            trunk += _up_stage(width, width // 2, refine=False)
            width //= 2
        self.trunk = nn.Sequential(*trunk)
        self.photometric_head = nn.Sequential(
            *_up_stage(width, nf, refine=False),
            *_up_stage(nf, nf, refine=False),
            nn.Conv2d(nf, 2, 5, padding=2, bias=False),
            nn.Softplus(),
        )
        self.perceptual_head = nn.Sequential(nn.Conv2d(width, 2, 3, padding=1, bias=False), nn.Softplus())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sigma maps (B, 2, H, W) for the photometric and (B, 2, H/4, W/4) for the perceptual loss."""
        h = self.trunk(x)
        return self.photometric_head(h), self.perceptual_head(h)
