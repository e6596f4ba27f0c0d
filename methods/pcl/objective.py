"""PCL's three objectives and the augmentations they see (authors' ``Models/exppose.py`` and
``data_process/``), batched on tensors.

1. Reconstruction: the image and its mirror, each with Gaussian noise, are encoded; every face
   code is decoded with every pose code (``G(normalize(face_a + pose_b))``) and compared (L1)
   with the clean image whose pose it took; plus the orthogonality loss between face and pose
   features (``orthogonality``, the authors' ``DiffLoss``).
2. Face contrastive: two crops of 0.4 x 0.4 of the side from different quadrants of one face
   are positives; the other crops of the batch are negatives, mixed pairwise (``mixed_logits``).
3. Pose contrastive: two augmented views of a face are positives, augmented views of its mirror
   image (same face, other pose) are negatives, mixed likewise.

Random draws use torch's global generator (seeded per cell, saved in training checkpoints).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.lazy import lazy
from methods.simclr import SimCLRAugment, SimCLRConfig

# Imported on first use: registering the method (tables, --status) builds no network.
ops = lazy("torchvision.ops")
TF = lazy("torchvision.transforms.v2.functional")

#: the authors' grey conversion inside their Sobel filter (``data_process/Sobel.py``)
SOBEL_GREY = (65.738 / 256, 129.057 / 256, 25.064 / 256)
#: range of the Gaussian blur's sigma (``expdb.GaussianBlur``)
BLUR_SIGMAS = (0.1, 2.0)


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared cross-correlation of batch-centred, row-normalised features (``DiffLoss``):
    0 when every face dimension is uncorrelated with every pose dimension over the batch."""
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + 1e-6)
    b = b / (b.norm(dim=1, keepdim=True).detach() + 1e-6)
    return (a.t() @ b).pow(2).mean()


def mix_negatives(negatives: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """Each anchor's negatives (N, K, D) blended pairwise: ``w n_k + (1 - w) n_perm(k)`` with
    ``w ~ Beta(alpha, alpha)`` per (anchor, negative) and one permutation of the K slots
    (the authors' mixing); ``alpha=None`` leaves them as they are."""
    if alpha is None:
        return negatives
    n, k = negatives.shape[:2]
    w = torch.distributions.Beta(alpha, alpha).sample((n, k, 1)).to(negatives)
    perm = torch.randperm(k).to(negatives.device)
    return negatives * w + (1 - w) * negatives[:, perm]


def mixed_logits(features: torch.Tensor, negatives: torch.Tensor, temperature: float, alpha: float | None) -> torch.Tensor:
    """InfoNCE loss of positive pairs (row i and row i + N of ``features``, 2N rows) against
    per-row negatives (2N, K, D), mixed first (``mix_negatives``); label 0 is the positive."""
    negatives = F.normalize(mix_negatives(negatives, alpha), dim=2)
    z = F.normalize(features, dim=1)
    q, k = z.chunk(2)
    pos = torch.cat([(q * k).sum(1), (k * q).sum(1)])[:, None]
    neg = torch.bmm(negatives, z[:, :, None])[:, :, 0]
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def face_contrastive(features: torch.Tensor, temperature: float, alpha: float | None) -> torch.Tensor:
    """The face step's loss (``neg_inter_info_nce_loss``): the negatives of each of the 2N rows
    are the 2N - 2 rows that are neither itself nor its positive, in batch order. Without
    mixing this is SimCLR's NT-Xent (lightly ``NTXentLoss``)."""
    b = len(features)
    idx = torch.arange(b, device=features.device)
    partner = (idx + b // 2) % b
    keep = (idx[None, :] != idx[:, None]) & (idx[None, :] != partner[:, None])
    negatives = features[None].expand(b, b, -1)[keep].reshape(b, b - 2, -1)
    return mixed_logits(features, negatives, temperature, alpha)


def pose_contrastive(features: torch.Tensor, negatives: torch.Tensor, temperature: float, alpha: float | None) -> torch.Tensor:
    """The pose step's loss (``neg_inter_info_nce_loss_pose``).

    Args:
        features: the two views of N faces (2N, D), first views first.
        negatives: the mirrored views (N * K, D) in the order they were drawn: view-major, each
            of the K draws holding all N faces. As in the authors' code they are cut into N
            consecutive blocks of K, block i the negatives of face i (both its views), so a
            block mixes faces; kept for fidelity.
    """
    n = len(features) // 2
    blocks = negatives.reshape(n, -1, negatives.shape[1])
    blocks = mix_negatives(blocks, alpha)  # mixed once, shared by both views (the authors' repeat)
    return mixed_logits(features, blocks.repeat(2, 1, 1), temperature, None)


class ContrastiveViews:
    """The augmentations of the face and pose steps, on batches of images in [0, 1].

    Per view, as the authors' ``ExpDB`` / ``PoseConDB`` transform after resizing to the input
    size: colour jitter (0.8, 0.8, 0.8, 0.2) with probability 0.8, grey 0.2, Gaussian blur
    (kernel 0.1 x size, sigma in [0.1, 2]) 0.8, Sobel edges 0.6. The jitter is SimCLR's batched
    one (same amounts; its four operations in one order per batch). The authors' Sobel output
    passes through an 8-bit PIL image, which wraps values above 1; here it is clipped.
    """

    def __init__(self, size: int, crop_ratio: float = 0.4) -> None:
        self.size, self.crop_ratio = size, crop_ratio
        self.jitter = SimCLRAugment(SimCLRConfig(input_size=size, cj_strength=1.0))
        radius = int(0.1 * size) // 2
        self.kernel = 2 * radius + 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] at the input size -> augmented views of the same shape."""
        draw = SimCLRAugment.draw
        x = self.jitter.color_jitter(x, draw(x, 0.8))
        x = torch.where(draw(x, 0.2), TF.rgb_to_grayscale(x, num_output_channels=3), x)
        if self.kernel > 1:
            x = torch.where(draw(x, 0.8), self.blur(x), x)
        return torch.where(draw(x, 0.6), sobel(x), x)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with reflection padding, one sigma per image."""
        b, c = x.shape[:2]
        sigma = torch.empty(b, 1).uniform_(*BLUR_SIGMAS).to(x)
        r = self.kernel // 2
        taps = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)[None]
        kernel = torch.exp(-taps.pow(2) / (2 * sigma.pow(2)))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
        y = F.pad(x.reshape(1, b * c, *x.shape[2:]), (r, r, r, r), mode="reflect")
        y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
        y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
        return y.reshape(x.shape)

    def quadrant_crops(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two square crops per image (the authors' ``DistanceCrop``): side ``2 * int(0.2 * S)``,
        centred at random in two different quadrants (a margin of half a crop from the quadrant's
        outer edges), each resized to the input size. ``images``: (B, 3, S, S) in [0, 1] at
        their stored resolution."""
        b, _, h, w = images.shape
        bh, bw = int(h * self.crop_ratio / 2), int(w * self.crop_ratio / 2)
        quadrants = torch.rand(b, 4).argsort(1)[:, :2]  # two distinct quadrants per image
        boxes = []
        for q in (quadrants[:, 0], quadrants[:, 1]):
            right, low = (q % 2).float(), (q // 2).float()
            # centres uniform over the integers [border, half - border] (+ half), as random.randint
            cx = torch.floor(torch.rand(b) * (w // 2 - 2 * bw + 1)) + bw + right * (w // 2)
            cy = torch.floor(torch.rand(b) * (h // 2 - 2 * bh + 1)) + bh + low * (h // 2)
            boxes.append(torch.stack([torch.arange(b).float(), cx - bw, cy - bh, cx + bw, cy + bh], 1))
        rois = torch.cat(boxes).to(images)
        crops = ops.roi_align(images, rois, output_size=(self.size, self.size), aligned=True)
        return crops[:b], crops[b:]


def sobel(x: torch.Tensor) -> torch.Tensor:
    """The authors' edge image: grey, central differences, sqrt(dx^2 + dy^2 + 1e-6), as 3 channels."""
    grey = (x * x.new_tensor(SOBEL_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    dy = F.conv2d(grey, x.new_tensor([[0.0, -1, 0], [0, 0, 0], [0, 1, 0]])[None, None], padding=1)
    dx = F.conv2d(grey, x.new_tensor([[0.0, 0, 0], [-1, 0, 1], [0, 0, 0]])[None, None], padding=1)
    return torch.sqrt(dx.pow(2) + dy.pow(2) + 1e-6).clamp(0, 1).expand_as(x)
