"""PCL's networks, laid out like the authors' ``ExpPoseModel`` (``Models/networks.py``).

``encoder``: FaceCycle's expression encoder whose last stage is split into ``layer3_2_exp`` and
``layer3_2_pose``; it returns the trunk (``layer3_1``'s map), the face (expression) and the
pose maps, flattened: each 128 x 4 x 4 = 2048 at 64 px. ``exp_fc`` / ``pose_fc``: projection
heads Linear -> ReLU -> Linear -> BatchNorm1d (lightly's ``ProjectionHead``, biases kept as the
authors have them). ``decoder``: a ``Generator`` that upsamples a feature vector back to an
image (Linear to 512 channels at 1x1, then upsample-conv-BatchNorm-ReLU stages, tanh).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.lazy import lazy
from methods.facecycle.networks import conv_lrelu, encoder_stages, official_init, run_stages, widths

# Imported on first use: registering the method (tables, --status) builds no network.
heads = lazy("lightly.models.modules.heads")

#: buffers of the training loop that no file of the authors holds
TRAINING_STATE = ("steps", "costs")


class PCLEncoder(nn.Module):
    """FaceCycle's expression encoder (``methods/facecycle/networks.py``) with PCL's ends:
    ``layer3_1`` goes back to c2 channels (128 -> 256 -> 128; FaceCycle's ends at 256), and the
    last stage is split into ``layer3_2_exp`` and ``layer3_2_pose``, each 128 -> 128 -> 128
    (FaceCycle's ``layer3_2``: 256 -> 256 -> 128). ``forward`` -> (trunk, face, pose), flattened;
    the trunk (``layer3_1``'s map, input side / 16) is PCL's representation."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = self.out_channels = widths(width)[1]
        for name, stage in encoder_stages(width, out=c).items():
            self.add_module(name, stage)
        self.layer3_2_exp = nn.Sequential(*conv_lrelu(c, c), *conv_lrelu(c, c))
        self.layer3_2_pose = nn.Sequential(*conv_lrelu(c, c), *conv_lrelu(c, c))
        official_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        trunk = run_stages(self, x)
        return trunk.flatten(1), self.layer3_2_exp(trunk).flatten(1), self.layer3_2_pose(trunk).flatten(1)


def projection_head(dim: int, out_dim: int) -> nn.Module:
    """``exp_fc`` / ``pose_fc``: Linear(dim, dim) - ReLU - Linear(dim, out_dim) - BatchNorm1d.

    lightly drops a Linear's bias before BatchNorm by default; the authors keep it, so it is
    asked for (the fifth block entry), and the released tensors load one to one.
    """
    return heads.ProjectionHead([(dim, dim, None, nn.ReLU(), True), (dim, out_dim, nn.BatchNorm1d(out_dim), None, True)])


class Generator(nn.Module):
    """The authors' decoder: ``fc`` to ``512 * width`` channels at 1x1, then log2(size) upsampling
    stages (bilinear x2, 3x3 conv; BatchNorm and ReLU but after the last, which gives 3 channels
    through tanh). Channels halve at the first and the second-to-last stage (512-256-256-256-
    256-128-3 at 64 px, the authors' ``model.{2,3,6,7,...,22}``)."""

    def __init__(self, in_dim: int, size: int, width: float = 1.0) -> None:
        super().__init__()
        d = max(1, round(512 * width))
        self.fc = nn.Linear(in_dim, d)
        stages = int(math.log2(size))
        widths = [d] + [d // 2] * (stages - 2) + [d // 4]  # the authors' 512, 256 x 4, 128 at 64 px
        relu, up = nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        layers: list[nn.Module] = [relu]
        for i in range(stages - 1):
            layers += [up, nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1), nn.BatchNorm2d(widths[i + 1]), relu]
        layers += [up, nn.Conv2d(widths[-1], 3, 3, 1, 1), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(self.fc(z)[:, :, None, None])


class PCLModel(nn.Module):
    """Encoder, the two projection heads and the decoder (the authors' ``ExpPoseModel``).

    Besides the authors' tensors it holds the training loop's bookkeeping, which must resume
    with the weights (``TRAINING_STATE``): the step count and each epoch's summed face and pose
    losses (for the dynamic weight averaging).

    Args:
        size: input side in pixels (a power of two, at least 16).
        width: channel multiplier (1 = the authors' network).
        proj_dim: output size of the projection heads (512).
        epochs: epochs of the training schedule (rows of ``costs``).
    """

    def __init__(self, size: int = 64, width: float = 1.0, proj_dim: int = 512, epochs: int = 1) -> None:
        super().__init__()
        self.encoder = PCLEncoder(width)
        self.feature_dim = self.encoder.out_channels * (size // 16) ** 2
        self.exp_fc = projection_head(self.feature_dim, proj_dim)
        self.pose_fc = projection_head(self.feature_dim, proj_dim)
        self.decoder = Generator(self.feature_dim, size, width)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("costs", torch.zeros(epochs, 2, dtype=torch.float64))

    def networks(self) -> list[nn.Module]:
        """What runs in bfloat16 / compiled when asked (``Accel.networks``)."""
        return [self.encoder, self.exp_fc, self.pose_fc, self.decoder]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images in [0, 1] (the authors' ``ToTensor``, no mean/std) -> (trunk, face, pose)."""
        return self.encoder(x)

    def reconstruct(self, face: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """The decoded image of a face code combined with a pose code: ``G(normalize(face + pose))``."""
        return self.decoder(F.normalize(face + pose, dim=1))
