"""FaceCycle's model and its two training cycles (official ``train_expression.py``, ``train_id.py``).

Expression cycle: two frames of one clip (half the time the second is the first's mirror) go
through the expression encoder to a code, a flow and a back-flow; the generator warps each to
its neutral face; the halves swap neutral faces and re-express them with their own back-flow,
by the generator and by a plain pixel warp; and the generator also auto-encodes each image.
Identity cycle (expression networks frozen): frames of two clips; each neutral face is
de-normalised by its identity code, the batch mean of those is the mean face, re-normalised by
each identity code back to the neutral face and re-expressed.

Every random draw of a step (frames, augmentation, the generator's noise) comes from the
step's own generator, which the training loop checkpoints, so a resumed run is the same run.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.datasets.base import ClipSet
from harness.method import to_input
from methods.facecycle.losses import IMAGENET_MEAN, IMAGENET_STD, GramPerceptual, margin_loss, ssim_loss, symmetry_loss
from methods.facecycle.networks import Encoder, FlowDecoder, Generator, Normalizer, warp
from methods.simclr import shift_hue

#: The official loss weights (both scripts): symmetry, SSIM; pixel and margin 1; perceptual 0.01
#: (a setting, ``perceptual_weight``).
SYMMETRY_WEIGHT, SSIM_WEIGHT = 1.5, 5.0
#: The official augmentation (``dataloader/preprocess.py``): RandomResizedCrop scale and ratio,
#: ColorJitter amounts and probability, horizontal flip; the mirrored second frame's probability.
CROP_SCALE, CROP_RATIO = (0.95, 1.05), (0.95, 1.05)
JITTER = {"brightness": 0.05, "contrast": 0.05, "saturation": 0.05, "hue": 0.01}
JITTER_P, FLIP_P, MIRROR_P = 0.8, 0.5, 0.5


class FaceCycleNets(nn.Module):
    """The five networks (project names; ``checkpoint.OFFICIAL_NAMES`` maps the official ones).

    Args:
        width: channel multiplier (1: the official networks).
        code_size: the training resolution, where the encoders' codes are defined.
        identity: also build the identity branch (``idcodegen``, ``Swap_Norm``).
        generator_blocks: residual blocks of the generator (8 officially).
    """

    def __init__(self, width: float = 1.0, code_size: int = 64, identity: bool = True, generator_blocks: int = 8) -> None:
        super().__init__()
        self.expression = Encoder(width, code_size)
        self.flow = FlowDecoder(width)
        self.generator = Generator(width, generator_blocks)
        if identity:
            self.identity = Encoder(width, code_size)
            self.normalizer = Normalizer(width)

    @property
    def has_identity(self) -> bool:
        return hasattr(self, "identity")

    def expression_nets(self) -> list[nn.Module]:
        return [self.expression, self.flow, self.generator]

    def identity_nets(self) -> list[nn.Module]:
        return [self.identity, self.normalizer]


def normalise(x01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> ImageNet mean/std normalisation (the official ``Normalize``)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 - mean) / std


# --- training pairs ------------------------------------------------------------------------------
def draw_pairs(clips: list[torch.Tensor], batch: torch.Tensor, same_clip: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame indices (first, second) for a batch of clip indices: two random frames of each
    clip (``same_clip``, the expression cycle) or one of each clip and one of another clip."""
    first, second = [], []
    for c in batch.tolist():
        frames = clips[c]
        first.append(int(frames[int(torch.randint(len(frames), (1,), generator=generator))]))
        other = c
        if not same_clip:  # any other clip, uniformly
            other = int(torch.randint(len(clips) - 1, (1,), generator=generator))
            other += other >= c
        frames = clips[other]
        second.append(int(frames[int(torch.randint(len(frames), (1,), generator=generator))]))
    return torch.tensor(first), torch.tensor(second)


def augment(x01: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The official per-image augmentation, batched: a random resized crop of 95-100 % of the
    area (aspect 0.95-1.05) back to full size, colour jitter with probability 0.8, a horizontal
    flip with probability 0.5. Deviation: the four jitter operations run in a fixed order."""
    b, device = x01.shape[0], x01.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * (high - low) + low).to(device)

    area = uniform(*CROP_SCALE)
    ratio = torch.exp(uniform(*map(float, torch.log(torch.tensor(CROP_RATIO)))))
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # > 1 cannot crop
    tx, ty = (uniform(-1, 1) * (1 - sx)), (uniform(-1, 1) * (1 - sy))
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
    x = F.grid_sample(x01, grid, mode="bilinear", padding_mode="border", align_corners=False)
    apply = (torch.rand(b, generator=generator) < JITTER_P).to(device).view(-1, 1, 1, 1)

    def factor(amount: float, identity: float = 1.0) -> torch.Tensor:
        f = uniform(identity - amount, identity + amount).view(-1, 1, 1, 1)
        return torch.where(apply, f, torch.full_like(f, identity))

    grey = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
    x = (x * factor(JITTER["brightness"])).clamp(0, 1)
    for kind, centre in (("contrast", True), ("saturation", False)):  # blend with the grey image (or its mean)
        luma = (x * grey).sum(1, keepdim=True)
        f = factor(JITTER[kind])
        x = (f * x + (1 - f) * (luma.mean((2, 3), keepdim=True) if centre else luma)).clamp(0, 1)
    x = shift_hue(x, factor(JITTER["hue"], 0.0).flatten())
    flip = (torch.rand(b, generator=generator) < FLIP_P).to(device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def training_pair(
    clips: ClipSet, batch: torch.Tensor, same_clip: bool, size: int, device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """The normalised pair batch (2B, 3, size, size): the first frames, then the second."""
    first, second = draw_pairs(clips.clips, batch, same_clip, generator)
    images = clips.frames.images
    a = augment(to_input(images[first], size, device) / 2 + 0.5, generator)
    b = augment(to_input(images[second], size, device) / 2 + 0.5, generator)
    if same_clip:  # official: half the time the second frame is the first, mirrored
        mirror = (torch.rand(len(batch), generator=generator) < MIRROR_P).to(device).view(-1, 1, 1, 1)
        b = torch.where(mirror, a.flip(-1), b)
    return normalise(torch.cat([a, b]))


# --- the two cycles ------------------------------------------------------------------------------
def _swap(x: torch.Tensor) -> torch.Tensor:
    """The batch's two halves exchanged."""
    first, second = x.chunk(2)
    return torch.cat([second, first])


def _perceptual(perceptual: Optional[GramPerceptual], recon: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    if perceptual is None:
        return target.new_zeros(())
    return perceptual(torch.cat(recon), target.repeat(len(recon), 1, 1, 1))


def expression_losses(
    nets: FaceCycleNets, full: torch.Tensor, perceptual: Optional[GramPerceptual], generator: torch.Generator, perceptual_weight: float = 0.01
) -> dict[str, torch.Tensor]:
    """The expression cycle's loss terms on a pair batch ``full`` (2B, first frames then second)."""
    flow, backflow = nets.flow(nets.expression(full))
    neutral = nets.generator(full, flow, generator)
    swapped = _swap(neutral)
    direct_forward = warp(full, flow, clamp_flow=True)
    direct_backward = warp(_swap(direct_forward), backflow, clamp_flow=True)
    swap_backward = warp(swapped, backflow, clamp_flow=True)
    recon = nets.generator(swapped, backflow, generator)
    autoencoded = nets.generator(full)
    pixel = (
        F.l1_loss(recon, full) + F.l1_loss(autoencoded, full) + F.l1_loss(swap_backward, full) + 1.5 * F.l1_loss(direct_backward, full)
    )
    perc = _perceptual(perceptual, [neutral, swap_backward, direct_backward, recon], full)
    ssim = ssim_loss(full, recon) + ssim_loss(full, autoencoded) + 1.5 * ssim_loss(full, direct_backward)
    sym = symmetry_loss(neutral) + 0.5 * symmetry_loss(direct_forward)
    loss = perceptual_weight * perc + pixel + SYMMETRY_WEIGHT * sym + SSIM_WEIGHT * ssim
    return {"loss": loss, "pixel": pixel, "perceptual": perc, "ssim": ssim, "symmetry": sym}


def identity_losses(
    nets: FaceCycleNets, full: torch.Tensor, perceptual: Optional[GramPerceptual], generator: torch.Generator, perceptual_weight: float = 0.01
) -> dict[str, torch.Tensor]:
    """The identity cycle's loss terms on a batch ``full`` (2B: frames of one clip, then of another)."""
    with torch.no_grad():  # the expression networks are frozen
        flow, backflow = nets.flow(nets.expression(full))
        neutral = nets.generator(full, flow, generator)
    code = nets.identity(full)
    mean_face = nets.normalizer(neutral, True, code).mean(0, keepdim=True).expand_as(neutral)
    neutral_again = nets.normalizer(mean_face, False, code)
    direct_backward = warp(neutral_again, backflow, clamp_flow=True)
    recon = nets.generator(neutral_again, backflow, generator)
    pixel = F.l1_loss(recon, full) + 0.8 * F.l1_loss(direct_backward, full) + F.l1_loss(neutral_again, neutral)
    perc = _perceptual(perceptual, [direct_backward, recon], full)
    ssim = ssim_loss(full, recon) + 0.8 * ssim_loss(full, direct_backward)
    sym = symmetry_loss(neutral_again)
    margin = margin_loss(mean_face, neutral)
    loss = perceptual_weight * perc + pixel + SYMMETRY_WEIGHT * sym + SSIM_WEIGHT * ssim + margin
    return {"loss": loss, "pixel": pixel, "perceptual": perc, "ssim": ssim, "symmetry": sym, "margin": margin}
