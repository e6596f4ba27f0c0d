"""The stage-1 model: image -> (texture, depth, light, pose) -> rendered reconstruction + losses.

This is Unsup3D (Wu et al., CVPR 2020) as LatentFace uses it (paper Sec. 2.2, Eqs. 4-5): the
texture and depth autoencoders' 256-d bottlenecks are the latents ``Z_t`` and ``Z_s``, light and
pose are regressed directly, and the face is rendered twice, as predicted and with texture and
depth flipped horizontally (the symmetry prior). Both renderings are scored against the input
with confidence-calibrated photometric and perceptual losses (paper Eq. 11).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from harness.io import atomic_path
from methods.unsup3d.losses import PerceptualLoss, masked_mean, photometric_loss
from methods.unsup3d.networks import ConfidenceNet, FeatureAutoencoder, NumericalEncoder
from methods.unsup3d.renderer import Renderer

MIN_DEPTH, MAX_DEPTH = 0.9, 1.1
#: depth of the two outermost columns on each side: 0.7 * max + 0.3 * min, behind the face.
BORDER_DEPTH = 0.7 * MAX_DEPTH + 0.3 * MIN_DEPTH
BORDER_COLUMNS = 2
FOV_DEGREES = 10.0
#: scales from the pose encoder's Tanh outputs to (rx, ry, rz) radians and (tx, ty, tz); no z
#: translation for face crops, as in Unsup3D's CelebA setting.
POSE_SCALE = (math.radians(60),) * 3 + (0.1, 0.1, 0.0)
#: (ambient, diffuse, direction) of the figures' shape column: oblique, so relief shows.
SHAPE_LIGHT = (0.0, 1.0, (-0.5, -0.5, 1.0))
#: figure tiles are enlarged (nearest neighbour) to at least this many pixels.
FIGURE_TILE = 64


def canonical_depth(raw: torch.Tensor) -> torch.Tensor:
    """Depth-net output (B, H, W) -> canonical depth in [0.9, 1.1].

    The per-image mean is removed (depth is only known up to an offset), Tanh bounds it, and
    the outermost columns are pinned behind the face so the mesh edge does not smear.
    """
    centred = raw - raw.mean(dim=(1, 2), keepdim=True)
    depth = MIN_DEPTH + (centred.tanh() + 1) / 2 * (MAX_DEPTH - MIN_DEPTH)
    border = torch.zeros_like(depth[:1])
    border[..., :BORDER_COLUMNS] = 1
    border[..., -BORDER_COLUMNS:] = 1
    return depth * (1 - border) + BORDER_DEPTH * border


def light_terms(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Light-encoder output (B, 4) in [-1, 1] -> ambient (B,), diffuse (B,), unit direction (B, 3).

    ambient = (1 + l0) / 2, diffuse = (1 + l1) / 2, direction = normalize([l2, l3, 1]); the raw
    zero vector is the fixed light of the "w/o light" ablation (0.5, 0.5, frontal).
    """
    direction = torch.cat([raw[:, 2:], torch.ones_like(raw[:, :1])], dim=1)
    return (1 + raw[:, 0]) / 2, (1 + raw[:, 1]) / 2, direction / direction.norm(dim=1, keepdim=True)


def view_pose(raw: torch.Tensor) -> torch.Tensor:
    """Pose-encoder output (B, 6) in [-1, 1] -> renderer pose (rx, ry, rz radians, tx, ty, tz)."""
    return raw * raw.new_tensor(POSE_SCALE)


def flip_pair(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` and its horizontal mirror stacked along the batch: the two branches of paper Eq. 4-5."""
    return torch.cat([t, t.flip(dim)], dim=0)


@dataclasses.dataclass
class Stage1Output:
    """Everything one forward pass computes.

    Maps are stacked over ``2B``: the first B from the predicted texture and depth (paper
    Eq. 4), the last B from their mirror images (Eq. 5).

    Attributes:
        losses: ``loss`` (the total, paper Eq. 11) and its terms, plus ``recon_l1``, the plain
            masked L1 error of the unflipped reconstruction (a diagnostic, not optimised).
        latents: as returned by ``Unsup3D.encode_latents``.
        texture: canonical texture in [-1, 1], (2B, 3, H, W).
        depth: canonical depth, (2B, H, W).
        shading: (2B, 1, H, W).
        canonical: shaded canonical image in [-1, 1], (2B, 3, H, W).
        recon: reconstruction in the observed view, zero outside ``mask``, (2B, 3, H, W).
        mask: pixels both branches cover, (2B, 1, H, W), detached.
        view_depth: depth in the observed view, (2B, H, W).
    """

    losses: dict[str, torch.Tensor]
    latents: dict[str, torch.Tensor]
    texture: torch.Tensor
    depth: torch.Tensor
    shading: torch.Tensor
    canonical: torch.Tensor
    recon: torch.Tensor
    mask: torch.Tensor
    view_depth: torch.Tensor


class Unsup3D(nn.Module):
    """LatentFace stage 1 / Unsup3D.

    Args:
        image_size: input side in pixels (paper: 64).
        width: width multiplier; 1 gives the paper's 64 base channels for the texture, depth and
            confidence nets and 32 for the light and pose encoders.
        latent_dim: size of Z_t and Z_s (paper: 256).
        light: learn the light encoder; without, a fixed light (ambient 0.5, diffuse 0.5,
            frontal direction) for the "w/o light" ablation (paper Table 3).
        pose: learn the pose encoder; without, the frontal pose for "w/o pose".
        perceptual: the perceptual loss, or None to train without it.
        flip_weight: lambda_flip of paper Eq. 11 (0.5).
        perceptual_weight: lambda_f of paper Eq. 11 (1.0).
        renderer_backend: rasterizer of ``Renderer`` (``"torch"``, ``"pytorch3d"``, ``"auto"``).
    """

    def __init__(
        self,
        image_size: int = 64,
        width: float = 1.0,
        latent_dim: int = 256,
        light: bool = True,
        pose: bool = True,
        perceptual: Optional[PerceptualLoss] = None,
        flip_weight: float = 0.5,
        perceptual_weight: float = 1.0,
        renderer_backend: str = "torch",
    ) -> None:
        super().__init__()
        nf, nf_numerical = round(64 * width), round(32 * width)
        self.latent_dim = latent_dim
        self.texture_net = FeatureAutoencoder(3, nf, latent_dim, image_size)
        self.depth_net = FeatureAutoencoder(1, nf, latent_dim, image_size, tanh=False)
        self.light_net = NumericalEncoder(4, nf_numerical, image_size) if light else None
        self.pose_net = NumericalEncoder(6, nf_numerical, image_size) if pose else None
        self.confidence_net = ConfidenceNet(nf, round(128 * width), image_size)
        self.perceptual = perceptual
        self.flip_weight = flip_weight
        self.perceptual_weight = perceptual_weight
        self.renderer = Renderer(image_size, FOV_DEGREES, MIN_DEPTH, MAX_DEPTH, backend=renderer_backend)
        # Optimisation steps taken; seeds the flip augmentation and is checkpointed with the
        # weights, so a resumed run draws the flips an uninterrupted one would have drawn.
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    # --- latents (what stage 2 and the probes read) ------------------------------------------
    def environment(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw Tanh codes ``light`` (B, 4) and ``pose`` (B, 6); zeros where the encoder is ablated."""
        b = x.shape[0]
        return {
            "light": self.light_net(x) if self.light_net is not None else x.new_zeros(b, 4),
            "pose": self.pose_net(x) if self.pose_net is not None else x.new_zeros(b, 6),
        }

    def encode_latents(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoders only: ``texture`` (Z_t) and ``shape`` (Z_s), (B, latent_dim), plus ``environment``."""
        return {"texture": self.texture_net.encode(x), "shape": self.depth_net.encode(x), **self.environment(x)}

    def view_depth(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted depth of the face in the observed view (B, H, W), for depth-accuracy metrics."""
        depth = canonical_depth(self.depth_net(x)[0][:, 0])
        return self.renderer.render_depth(depth, view_pose(self.environment(x)["pose"]))

    # --- rendering ------------------------------------------------------------------------------
    def shade(self, depth: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """Lambertian shading (B, 1, H, W) of canonical depth under raw light codes (B, 4)."""
        return self.renderer.shade(self.renderer.normals(depth), *light_terms(light))

    def forward(self, x: torch.Tensor) -> Stage1Output:
        """Decompose, render both branches and score them against ``x`` (B, 3, H, W) in [-1, 1]."""
        b = x.shape[0]
        texture_map, z_t = self.texture_net(x)
        depth_raw, z_s = self.depth_net(x)
        latents = {"texture": z_t, "shape": z_s, **self.environment(x)}
        texture = flip_pair(texture_map, 3)
        depth = flip_pair(canonical_depth(depth_raw[:, 0]), 2)
        # Both branches share the light and pose: only the face is mirrored (paper Eq. 5).
        shading = self.shade(depth, latents["light"].repeat(2, 1))
        canonical = (texture / 2 + 0.5) * shading * 2 - 1
        recon, mask, view_depth = self.renderer.render(depth, canonical, view_pose(latents["pose"]).repeat(2, 1))
        # Score only pixels both renderings cover, so the branches are compared on equal terms.
        mask = (mask[:b] * mask[b:]).repeat(2, 1, 1, 1)
        recon = recon * mask
        losses = self.losses(x, recon, mask)
        return Stage1Output(losses, latents, texture, depth, shading, canonical, recon, mask, view_depth)

    def losses(self, x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Paper Eq. 11: L_p + lambda_flip L_p' + lambda_f (L_f + lambda_flip L_f')."""
        b = x.shape[0]
        sigma_photo, sigma_percep = self.confidence_net(x)
        terms = {
            "photometric": photometric_loss(recon[:b], x, sigma_photo[:, :1], mask[:b]),
            "photometric_flip": photometric_loss(recon[b:], x, sigma_photo[:, 1:], mask[b:]),
        }
        total = terms["photometric"] + self.flip_weight * terms["photometric_flip"]
        if self.perceptual is not None:
            with torch.no_grad():
                target = self.perceptual.embed(x)
            terms["perceptual"] = self.perceptual(recon[:b], target, sigma_percep[:, :1], mask[:b])
            terms["perceptual_flip"] = self.perceptual(recon[b:], target, sigma_percep[:, 1:], mask[b:])
            total = total + self.perceptual_weight * (terms["perceptual"] + self.flip_weight * terms["perceptual_flip"])
        recon_l1 = masked_mean((recon[:b] - x).abs(), mask[:b]).detach()
        return {"loss": total, **terms, "recon_l1": recon_l1}

    @torch.no_grad()
    def figure_columns(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] for a figure: input, canonical texture, shape (the
        canonical depth shaded under a fixed oblique light), reconstruction, frontal view."""
        out = self.forward(x)
        b = x.shape[0]
        ambient, diffuse, direction = SHAPE_LIGHT
        shape = self.renderer.shade(
            self.renderer.normals(out.depth[:b]),
            x.new_full((b,), ambient),
            x.new_full((b,), diffuse),
            nn.functional.normalize(x.new_tensor(direction), dim=0).expand(b, 3),
        )
        frontal, frontal_mask, _ = self.renderer.render(out.depth[:b], out.canonical[:b], x.new_zeros(b, 6))
        images = [x, out.texture[:b], out.recon[:b], frontal * frontal_mask]
        columns = [(c / 2 + 0.5).clamp(0, 1) for c in images]
        columns.insert(2, shape.clamp(0, 1).expand(-1, 3, -1, -1))
        return columns


def save_reconstruction_grid(model: Unsup3D, x: torch.Tensor, path: Path) -> None:
    """PNG with one row per image of ``x``: input, texture, shape, reconstruction, frontal view."""
    columns = model.figure_columns(x)
    rows = torch.stack(columns, dim=1).flatten(0, 1)  # sample-major: each grid row is one sample
    rows = nn.functional.interpolate(rows, scale_factor=max(1, FIGURE_TILE // rows.shape[-1]), mode="nearest")
    with atomic_path(path) as tmp:
        from torchvision.utils import save_image  # imported late: registering the method stays quick
        save_image(rows.cpu(), tmp, nrow=len(columns), padding=2, pad_value=1.0, format="png")
