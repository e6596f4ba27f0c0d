"""Stage-2 networks: the RDM denoiser (paper Sec. 2.4, Appendix B) and the encoder-based ablation.

Both map a frame's stage-1 latent Z_exp (B, D) to an estimate of the clip's identity latent
Z_id (B, D); one network per latent kind (texture, shape), trained separately.
"""
from __future__ import annotations

import torch
from torch import nn


class Denoiser(nn.Module):
    """The released denoising UNet: predicts Z_0 = Z_id from (Z_tau, tau, Z_exp) (paper Eq. 7).

    The latents are treated as a 1x1 image with D channels, exactly as the released code did,
    so ``diffusers.UNet2DModel`` builds the architecture of the paper's Figure 14: input conv
    2D -> width over concat[z_tau, Z_exp]; sinusoidal time embedding width -> Linear 4*width ->
    SiLU -> Linear 4*width; one down block of 2 ResNet blocks, a mid block ResNet-attention-ResNet,
    an up block of 3 ResNet blocks with skips; output GroupNorm, SiLU, conv width -> D. At paper
    size (D=256, width=128) that is 512 -> 128 -> 256 with GroupNorm(32). The 3x3 convolutions
    only ever see their centre tap on a 1x1 input; they are kept so the parameter count and
    initialisation match the released model.

    Args:
        latent_dim: D, the size of one stage-1 latent (paper: 256).
        width: channels of the UNet blocks (paper: 128); a multiple of 8.
    """

    def __init__(self, latent_dim: int, width: int = 128) -> None:
        super().__init__()
        if width % 8:
            raise ValueError(f"denoiser width must be a multiple of 8 (attention heads of 8 channels), got {width}")
        from diffusers import UNet2DModel  # imported when a network is built: registering the method stays quick

        self.unet = UNet2DModel(
            sample_size=1,
            in_channels=2 * latent_dim,
            out_channels=latent_dim,
            layers_per_block=2,
            block_out_channels=(width,),
            down_block_types=("DownBlock2D",),
            up_block_types=("UpBlock2D",),
            # The released 128 channels / 32 groups normalise 4 channels per group of a 1x1 map;
            # narrower presets keep those 4 channels rather than the group count, since a group
            # of one channel on a 1x1 map would normalise every activation to zero.
            norm_num_groups=width // 4,
        )

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, z_exp: torch.Tensor) -> torch.Tensor:
        """Predicted clean latent (B, D) from the noisy latent (B, D), 0-based steps (B,), condition (B, D)."""
        x = torch.cat([z_t, z_exp], dim=1)[:, :, None, None]
        return self.unet(x, t).sample[:, :, 0, 0]


class IdentityEncoder(nn.Module):
    """The encoder-based ablation (paper Sec. 4.2): regress Z_id directly from Z_exp.

    The paper's "ResNet encoder" predicts the identity latent in one deterministic pass. This one
    takes the same input as the RDM, the frame's latent Z_exp, rather than the image, so Table 4's
    encoder row differs from the RDM rows only in regressing instead of generating (and training
    costs seconds). It is a residual MLP: Linear D -> width, ``blocks`` pre-norm residual blocks
    (LayerNorm, SiLU, Linear, LayerNorm, SiLU, Linear), LayerNorm, SiLU, Linear width -> D, whose
    output is added to Z_exp. That last layer starts at zero, so the untrained encoder predicts
    the frame itself and learns only the correction Z_id - Z_exp, which is small next to the
    latents (a plain MLP must first learn to copy its input, and in short runs does not).

    Args:
        latent_dim: D, the size of one stage-1 latent.
        width: hidden size.
        blocks: number of residual blocks (7, as many as the denoiser's ResNet blocks).
    """

    def __init__(self, latent_dim: int, width: int = 128, blocks: int = 7) -> None:
        super().__init__()
        self.stem = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width), nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width)
            )
            for _ in range(blocks)
        )
        self.head = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, latent_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, z_exp: torch.Tensor) -> torch.Tensor:
        """Predicted identity latent (B, D) from the frame latent (B, D)."""
        h = self.stem(z_exp)
        for block in self.blocks:
            h = h + block(h)
        return z_exp + self.head(h)
