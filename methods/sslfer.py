"""SSLFER: contrastive facial expression learning from nearby and distant video frames.

Reference: Shu, Gu, Yang, Lo, "Revisiting Self-Supervised Contrastive Learning for Facial
Expression Recognition", BMVC 2022 (official code ``ClaudiaShu/SSL-FER``). LatentFace compares
with it in Tables 1, 2 and 5 (128-d, expression only).

A ResNet-50 with a two-layer projection head (2048 -> 2048 -> 128, lightly's
``SimCLRProjectionHead`` without batch norm) is trained with InfoNCE (temperature 0.07) on four
frames per clip: an anchor, a positive 2-6 frames away (TimeAug, weights 5:4:3:2:1), a negative
anchor at least 12 frames away in the same clip (HardNeg) and its own TimeAug positive. The
positives may carry their inner face on another person's head (FaceSwap, p 0.8), every frame may
have an eye or the mouth covered by its mean colour (masking, p 0.8), and each anchor's most
similar negative by eye and mouth descriptors is counted as an extra positive (MaskFN: loss =
CE(positive) + 0.8 CE(that negative), the negative left out of both denominators).

The representation is the 128-d head output (the paper's Table 5); ``features=pooled`` gives the
2048-d pooled trunk, which the authors' own evaluation uses.

Offline deviations (no dlib, no ImageNet download): the face regions are fixed boxes on aligned
faces (``REGIONS``) instead of 68 landmarks; FaceSwap pastes a feathered inner-face ellipse with
mean-colour correction instead of a Procrustes-aligned landmark hull; MaskFN's descriptor is an
ImageNet ResNet-18 from a local file, else (one warning) standardised 16 px grey pixels of the two
crops. The view augmentation is the SimCLR baseline's batched pipeline with SSLFER's amounts
(Resize 128 + RandomCrop 112, flip, jitter 0.4 with hue 0.1 instead of 0.2, blur, grey).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn
from torchvision.ops import roi_align

from harness.config import Config, at_least, choice, dotted, each, existing_file, positive, probability
from harness.errors import BenchError
from harness.registry import register_method
from methods.clipbase import ClipBaseline, ImageNetResNet18, imagenet_input, jitter_crop, resnet, resolve_resnet18
from methods.simclr import SimCLRAugment, SimCLRConfig

#: Face regions on aligned faces, (x0, y0, x1, y1) as fractions of the image (fitted to the
#: synthetic faces and to aligned real crops): what the official code finds with dlib landmarks.
REGIONS = {
    "left_eye": (0.22, 0.36, 0.46, 0.54),
    "right_eye": (0.54, 0.36, 0.78, 0.54),
    "mouth": (0.30, 0.62, 0.70, 0.84),
    "eyes": (0.18, 0.32, 0.82, 0.58),  # MaskFN's eye crop (landmarks 36-47, +-10 px)
}
#: FaceSwap's inner face (eyes, brows, nose, mouth): an ellipse (centre x, y, half-axes x, y).
INNER_FACE = (0.5, 0.58, 0.32, 0.32)
#: MaskFN crops are squared to this side for the descriptor network (official: 64 px).
CROP_SIZE = 64
PIXEL_DESCRIPTOR = 16
DESCRIPTOR_FALLBACKS = ("pixels", "off")


@dataclasses.dataclass(frozen=True)
class SSLFERConfig(Config):
    """SSLFER settings; defaults are the ``quick`` preset (CPU, seconds).

    Attributes:
        input_size: image side in pixels (official: 112, a random 112 crop of a 128 resize).
        backbone: timm ResNet (``resnet50`` official; same keys as torchvision's).
        width: channels of the stem and first stage (official: 64).
        proj_dim: output of the projection head (official ``out_dim``: 128).
        features: ``head`` (the 128-d head output, the paper's Table 5) or ``pooled`` (the
            2048-d pooled trunk, the authors' own evaluation); not in the training key.
        epochs: passes over the clips (official: 300 or 500).
        batch_size: clips per step, four frames each (official ``-b 256`` = 128 samples of
            Anchor, NAnchor, Positive, NPositive, i.e. 256 positive pairs).
        lr, weight_decay: Adam (official: 3e-4, 1e-4).
        warmup_epochs: constant-rate epochs before the cosine schedule (official: 10); the
            official schedule then steps once per epoch with ``T_max`` = steps per epoch.
        temperature: InfoNCE temperature (official: 0.07).
        positive_offsets, positive_weights: TimeAug frame distances of the positive and their
            weights (official at 25/6 fps: 2..6 frames, 5:4:3:2:1).
        negative_gap: HardNeg: the negative anchor is at least this many frames away (official:
            12, 3 s at 25/6 fps).
        face_swap: probability that a positive gets another person's head (official: 0.8).
        mask_prob: probability of covering an eye or the mouth (official: 0.8).
        maskfn_weight: weight of the false-negative term (official ``negative_lambda``: 0.8);
            0 turns MaskFN off (plain InfoNCE, lightly's NTXentLoss).
        imagenet_weights: torchvision's ImageNet ResNet-18 file for MaskFN's descriptor; empty:
            torchvision's hub cache.
        descriptor_fallback: without that file: ``pixels`` (grey crop pixels) or ``off`` (no MaskFN).
        checkpoint: the authors' ``checkpoint_best.pth.tar`` to load instead of training.
    """

    input_size: int = 48
    backbone: str = "resnet18"
    width: int = 16
    proj_dim: int = 128
    features: str = "head"
    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 10
    temperature: float = 0.07
    positive_offsets: tuple[int, ...] = (2, 3, 4, 5, 6)
    positive_weights: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)
    negative_gap: int = 12
    face_swap: float = 0.8
    mask_prob: float = 0.8
    maskfn_weight: float = 0.8
    imagenet_weights: str = ""
    descriptor_fallback: str = "pixels"
    checkpoint: str = ""

    PRESETS = {
        "smoke": {"input_size": 32, "width": 8, "epochs": 1, "batch_size": 4},
        # run_maskclr.py argparse defaults: -a resnet50, --out_dim 128, --epochs 300,
        # -b 256 (DataLoader batch 128 samples of four frames), --lr 0.0003, --wd 1e-4,
        # --temperature 0.07, --negative_lambda 0.8; contrastive_learning_dataset.py: 112 px.
        "paper": {"input_size": 112, "backbone": "resnet50", "width": 64, "epochs": 300, "batch_size": 128, "lr": 3e-4},
    }
    RULES = {
        "input_size": at_least(16), "width": at_least(1), "proj_dim": at_least(1), "features": choice("head", "pooled"),
        "epochs": at_least(1), "batch_size": at_least(1), "lr": positive, "weight_decay": at_least(0),
        "warmup_epochs": at_least(0), "temperature": positive, "positive_offsets": each(at_least(0)),
        "positive_weights": each(positive), "negative_gap": at_least(1), "face_swap": probability,
        "mask_prob": probability, "maskfn_weight": at_least(0), "descriptor_fallback": choice(*DESCRIPTOR_FALLBACKS),
        "imagenet_weights": existing_file("give the path of resnet18-f37072fd.pth or leave it empty"),
        "checkpoint": existing_file("give the path of the authors' checkpoint_best.pth.tar (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        p = dotted(section)
        if self.backbone not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise BenchError(f"{p}backbone={self.backbone}: set one of the official ResNets (resnet18 ... resnet152)")
        if len(self.positive_weights) != len(self.positive_offsets):
            raise BenchError(
                f"{p}positive_weights has {len(self.positive_weights)} values for {len(self.positive_offsets)} "
                f"{p}positive_offsets; set one weight per offset"
            )
        if self.checkpoint and self.width != 64:
            raise BenchError(
                f"{p}checkpoint with {p}width={self.width}: the authors' ResNet is 64 channels wide; "
                f"add --preset paper or --set {p}width=64 {p}backbone=resnet50"
            )


class SSLFERNet(nn.Module):
    """ResNet trunk -> projection head (Linear, ReLU, Linear), as the official ``backbone.fc``."""

    def __init__(self, cfg: SSLFERConfig) -> None:
        super().__init__()
        self.backbone = resnet(cfg.backbone, cfg.width)
        dim = self.backbone.num_features
        self.head = SimCLRProjectionHead(dim, dim, cfg.proj_dim, num_layers=2, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def maskfn_loss(z0: torch.Tensor, z1: torch.Tensor, descriptors: torch.Tensor, temperature: float, weight: float) -> torch.Tensor:
    """InfoNCE with MaskFN's false negative (official ``info_nce_loss_withmask_agg``).

    Row i of ``z0`` pairs with row i of ``z1``. For each of the 2N rows, the negative whose
    descriptor is most similar (cosine) is taken out of the negatives and becomes a second
    positive: CE(positive vs the other negatives) + ``weight`` * CE(false negative vs the same).

    Args:
        z0, z1: (N, D) embeddings of the two views.
        descriptors: (2N, E) eye and mouth descriptors of ``cat([z0, z1])``'s images.
    """
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z.shape[0]
    rows = torch.arange(n, device=z.device)
    pair = (rows + n // 2) % n
    sim = z @ z.T / temperature
    negative = ~torch.eye(n, dtype=torch.bool, device=z.device)
    negative[rows, pair] = False
    d = F.normalize(descriptors.float(), dim=1)
    false_neg = (d @ d.T).masked_fill(~negative, -math.inf).argmax(1)
    negative[rows, false_neg] = False
    rest = sim.masked_fill(~negative, -math.inf)

    def ce(target: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(torch.cat([target[:, None], rest], dim=1), dim=1) - target).mean()

    return ce(sim[rows, pair]) + weight * ce(sim[rows, false_neg])


def region_mask(size: int, box: tuple[float, float, float, float], device: torch.device) -> torch.Tensor:
    """(size, size) bool: the ellipse inscribed in ``box`` (fractions of the image)."""
    x0, y0, x1, y1 = box
    grid = (torch.arange(size, device=device) + 0.5) / size
    ex = ((grid - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2
    ey = ((grid - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
    return ey[:, None] + ex[None, :] <= 1


def inner_face(size: int, device: torch.device) -> torch.Tensor:
    """(size, size) FaceSwap weight: 1 inside the inner-face ellipse, feathered to 0 outside
    (the official blurs its hull mask by 11 px, about a tenth of a face)."""
    cx, cy, ax, ay = INNER_FACE
    grid = (torch.arange(size, device=device) + 0.5) / size
    r = (((grid[:, None] - cy) / ay) ** 2 + ((grid[None, :] - cx) / ax) ** 2).sqrt()
    return ((1.2 - r) / 0.4).clamp(0, 1)


def mask_parts(x: torch.Tensor, p: float) -> torch.Tensor:
    """The masking augmentation: with probability ``p`` per image, an ellipse over its left
    eye, right eye or mouth (drawn per image) filled with the image's mean colour."""
    masks = torch.stack([region_mask(x.shape[-1], REGIONS[k], x.device) for k in ("left_eye", "right_eye", "mouth")])
    pick = masks[torch.randint(0, 3, (x.shape[0],), device=x.device)]
    apply = (torch.rand(x.shape[0], device=x.device) < p)[:, None, None]
    return torch.where((pick & apply)[:, None], x.mean(dim=(2, 3), keepdim=True), x)


def face_swap(face: torch.Tensor, head: torch.Tensor, p: float) -> torch.Tensor:
    """With probability ``p`` per image, ``face``'s inner face on ``head``, its colour shifted to
    the head's mean colour inside the face region (the official colour correction's aim)."""
    w = inner_face(face.shape[-1], face.device)
    total = w.sum()
    shift = (head * w).sum(dim=(2, 3), keepdim=True) / total - (face * w).sum(dim=(2, 3), keepdim=True) / total
    swapped = (w * (face + shift) + (1 - w) * head).clamp(-1, 1)
    apply = (torch.rand(face.shape[0], device=face.device) < p).view(-1, 1, 1, 1)
    return torch.where(apply, swapped, face)


def crops(x: torch.Tensor, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """The region ``box`` of every image, resized to ``size`` squared."""
    side = x.shape[-1]
    rois = torch.tensor([[0.0, box[0] * side, box[1] * side, box[2] * side, box[3] * side]], device=x.device, dtype=x.dtype)
    rois = rois.repeat(x.shape[0], 1)
    rois[:, 0] = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)
    return roi_align(x, rois, output_size=(size, size), aligned=True)


class SSLFERAugment(SimCLRAugment):
    """The official view transform (after masking): Resize 128 + RandomCrop 112, flip, colour
    jitter, blur, grey, run batched by the SimCLR baseline's pipeline; only the crop differs."""

    def random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        return jitter_crop(x, self.cfg.input_size, crop=112 / 128, slack=16 / 128)


def view_augment(input_size: int, jitter_prob: float) -> SSLFERAugment:
    """SSLFER's view transform (jitter 0.4 = strength 0.5 of SimCLR's 0.8; blur p 0.5; grey p 0.2)."""
    cfg = SimCLRConfig(input_size=input_size, cj_prob=jitter_prob, cj_strength=0.5, random_gray_scale=0.2, hf_prob=0.5, gaussian_blur=0.5)
    return SSLFERAugment(cfg)


@register_method("sslfer")
class SSLFER(ClipBaseline):
    """SSLFER (Shu et al. 2022): features are the 128-d head output, or the pooled trunk."""

    Config = SSLFERConfig
    cfg: SSLFERConfig
    # official ``ResNetSimCLR`` keys -> project keys: ``backbone.fc`` is the projection head
    RENAMES = (("backbone.fc.", "head.layers."),)
    feature_fields = ("features",)
    resolved_fields = ("imagenet_weights", "descriptor_fallback")

    def build_net(self) -> SSLFERNet:
        return SSLFERNet(self.cfg)

    @property
    def feature_dim(self) -> int:
        if self.cfg.features == "head":
            return self.cfg.proj_dim
        with torch.device("meta"):
            return resnet(self.cfg.backbone, self.cfg.width).num_features

    def min_frames(self) -> int:
        return max(self.cfg.negative_gap + 1, 2 * max(self.cfg.positive_offsets))

    def descriptor_source(self) -> Optional[ImageNetResNet18]:
        """MaskFN's descriptor network (or its fallback); None when MaskFN is off."""
        if self.cfg.maskfn_weight == 0:
            return None
        consequence = f"MaskFN uses the descriptor fallback {self.cfg.descriptor_fallback!r} (sslfer.descriptor_fallback)"
        return resolve_resnet18(self.cfg.imagenet_weights, "sslfer.imagenet_weights", self.cfg.descriptor_fallback, consequence)

    def training_key(self) -> dict[str, Any]:
        source = self.descriptor_source()
        return {"maskfn": source.key() if source else {"mode": "off"}}

    def training_setup(self, frames: torch.Tensor, n_batches: int):
        cfg, device = self.cfg, self.ctx.device
        net = self.build_net().to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # The official steps CosineAnnealingLR(T_max = steps per epoch) with the epoch number
        # after each epoch from epoch 10 on (closed form): epoch e > warmup uses cos(pi (e - 1) / T).
        warm = cfg.warmup_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 1.0 if e <= warm else (1 + math.cos(math.pi * (e - 1) / n_batches)) / 2
        )
        describe = self.descriptor_net()
        nce = NTXentLoss(temperature=cfg.temperature)
        anchor_view, positive_view = view_augment(cfg.input_size, 1.0), view_augment(cfg.input_size, 0.8)
        offsets = torch.tensor(cfg.positive_offsets)
        weights = torch.tensor(cfg.positive_weights, dtype=torch.float)

        def step(rows: torch.Tensor) -> dict[str, torch.Tensor]:
            rows = rows.cpu()
            a, n, p, q = self.sample_frames(rows, offsets, weights)
            b = rows.shape[0]
            # another clip's frame: the head that the positives' faces are pasted on
            heads = rows.roll(1, 0).gather(1, torch.randint(0, rows.shape[1], (b, 1)))
            x = self.frames(frames, torch.stack([a, n, p, q, heads[:, 0]], 1)).view(b, 5, 3, cfg.input_size, cfg.input_size)
            raw = x[:, :4].transpose(0, 1).reshape(4 * b, 3, cfg.input_size, cfg.input_size)  # A, NA, P, NP
            anchors, positives = raw[: 2 * b], face_swap(raw[2 * b :], x[:, 4].repeat(2, 1, 1, 1), cfg.face_swap)
            views = torch.cat([
                anchor_view(mask_parts(anchors, cfg.mask_prob).add(1).div(2)),
                positive_view(mask_parts(positives, cfg.mask_prob).add(1).div(2)),
            ])
            z0, z1 = net(imagenet_input(views * 2 - 1)).chunk(2)
            if describe is None:
                return {"loss": nce(z0, z1)}
            with torch.no_grad():  # MaskFN describes the frames before augmentation, as the official
                descriptors = describe(raw)
            return {"loss": maskfn_loss(z0, z1, descriptors, cfg.temperature, cfg.maskfn_weight)}

        return net, optimizer, scheduler, step, [net]

    def sample_frames(self, rows: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per clip: anchor, negative anchor (HardNeg: at least ``negative_gap`` away), and their
        TimeAug positives (frame indices into the clip data)."""
        b, length = rows.shape
        gap = self.cfg.negative_gap
        pos = torch.arange(length)
        valid = pos[(pos >= gap) | (pos <= length - 1 - gap)]
        a = valid[torch.randint(0, len(valid), (b,))]
        n = torch.multinomial(((pos[None] - a[:, None]).abs() >= gap).float(), 1)[:, 0]

        def shift(t: torch.Tensor) -> torch.Tensor:
            d = offsets[torch.multinomial(weights, b, replacement=True)]
            up, down = t + d <= length - 1, t - d >= 0
            go_up = up & ((torch.rand(b) < 0.5) | ~down)
            return torch.where(go_up, t + d, t - d)

        picks = torch.stack([a, n, shift(a), shift(n)], 1)
        return rows.gather(1, picks).unbind(1)

    def descriptor_net(self):
        """MaskFN's descriptor: images in [-1, 1] -> (B, 1024) eye + mouth features (or 2 x 256
        grey pixels); None when MaskFN is off."""
        source = self.descriptor_source()
        if source is None or source.mode == "off":
            return None
        if source.mode == "pixels":
            def pixels(x: torch.Tensor) -> torch.Tensor:
                parts = [crops(x, REGIONS[k], PIXEL_DESCRIPTOR).mean(1).flatten(1) for k in ("eyes", "mouth")]
                return torch.cat([(v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-6) for v in parts], 1)

            return pixels
        trunk = resnet("resnet18", 64)
        source.load_into(trunk, "sslfer.imagenet_weights")
        trunk = trunk.to(self.ctx.device).eval().requires_grad_(False)

        def imagenet(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([trunk(imagenet_input(crops(x, REGIONS[k], CROP_SIZE))) for k in ("eyes", "mouth")], 1)

        return imagenet

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        h = self.net.backbone(imagenet_input(x))
        return self.net.head(h) if self.cfg.features == "head" else h

    def info(self) -> dict:
        out: dict[str, Any] = {"feature_dim": self.feature_dim, "features": {"head": "projection-head output", "pooled": "pooled trunk"}[self.cfg.features]}
        if self.cfg.checkpoint:
            return {"weights": self.weights_file(), **out}
        source = self.descriptor_source()
        return {"maskfn_descriptor": source.describe() if source else "off", "regions": "fixed boxes on aligned faces", **out}
