"""MAE baseline: a ViT that reconstructs masked patches (lightly masking and decoder, timm ViT).

References:
    He et al., "Masked Autoencoders Are Scalable Vision Learners" (MAE), CVPR 2022. LatentFace
    (Sec. 3.2) reports MAE with a ViT-Base trained from scratch on its face data for 30 epochs
    at 224x224; the ``paper`` preset is that setting, with MAE's decoder (512-d, 8 blocks).

Training follows MAE: 75% of the patch tokens are dropped at random, the encoder sees only the
rest, a light decoder fills the sequence with mask tokens and predicts the pixels of every
patch, and the loss is the mean squared error on the masked patches only. Features are computed
WITHOUT masking: the class token (MAE's linear-probe default) or the mean patch token.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import at_least, choice, dotted, fraction
from harness.errors import BenchError
from harness.lazy import lazy
from harness.registry import register_method
from methods.selfsup import SelfSupervisedBaseline, SelfSupervisedConfig, SelfSupervisedNet

# Imported on first use: registering the method (tables, --status) builds no network.
utils = lazy("lightly.models.utils")
lightly_modules = lazy("lightly.models.modules")
vision_transformer = lazy("timm.models.vision_transformer")


@dataclasses.dataclass(frozen=True)
class MAEConfig(SelfSupervisedConfig):
    """MAE settings; defaults are the ``quick`` preset (64 px, patch 8, a 4-block 192-d ViT).

    Attributes:
        patch_size: side of the square patches (tokens), in pixels.
        embed_dim, depth, num_heads: encoder ViT width, blocks and attention heads.
        decoder_dim, decoder_depth, decoder_heads: the same for the (lighter) decoder.
        mask_ratio: fraction of patches hidden from the encoder during training (MAE: 0.75).
        norm_pix_loss: regress per-patch normalised pixels (MAE's better target on ImageNet).
            Off by default: it discards each patch's colour and brightness, and with them most
            of what tells these faces apart. On held-out *training* identities of the quick
            synthetic FER split, the same-person ROC AUC of the features was 0.51 with it and
            0.83 without (random-cnn 0.78); no test split was looked at.
        pool: features from the class token (``"cls"``) or the mean patch token (``"mean"``).
    """

    patch_size: int = 8
    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    pool: str = "cls"
    epochs: int = 4
    # MAE's AdamW: betas (0.9, 0.95) and weight decay 0.05 on weights only; this lr suits the
    # small ViT and few steps of ``quick``.
    lr: float = 1e-3
    beta2: float = 0.95
    weight_decay: float = 0.05

    PRESETS = {
        "smoke": {
            "input_size": 32,
            "embed_dim": 32,
            "depth": 1,
            "num_heads": 2,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
            "epochs": 1,
            "batch_size": 16,
            "train_images": 64,
        },
        # ViT-Base/16 at 224 px for 30 epochs (paper Sec. 3.2) with MAE's decoder; batch 256
        # on one GPU, MAE's lr rule 1.5e-4 * batch / 256, 3 warm-up epochs (MAE: 40 of 800).
        "paper": {
            "input_size": 224,
            "patch_size": 16,
            "embed_dim": 768,
            "depth": 12,
            "num_heads": 12,
            "decoder_dim": 512,
            "decoder_depth": 8,
            "decoder_heads": 16,
            "epochs": 30,
            "batch_size": 256,
            "lr": 1.5e-4,
            "warmup_epochs": 3,
        },
    }

    RULES = {
        **{name: at_least(1) for name in ("patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth", "decoder_heads")},
        "mask_ratio": fraction,
        "pool": choice("cls", "mean"),
    }

    def check(self, section: str) -> None:
        super().check(section)
        p = dotted(section)
        for whole, part in (("input_size", "patch_size"), ("embed_dim", "num_heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, whole) % getattr(self, part):
                raise BenchError(
                    f"{p}{whole}={getattr(self, whole)}: not a multiple of {p}{part} ({getattr(self, part)}); "
                    f"set {p}{whole} to a multiple of it or change {p}{part}"
                )


class MAENet(SelfSupervisedNet):
    """timm ViT encoder wrapped by lightly for masking, plus lightly's MAE decoder."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        vit = vision_transformer.VisionTransformer(
            img_size=cfg.input_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            num_classes=0,
        )
        # lightly applies MAE's initialisation and fixed 2-D sine-cosine position embeddings.
        self.encoder = lightly_modules.MaskedVisionTransformerTIMM(vit=vit)
        self.feature_dim = cfg.embed_dim
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_dim)
        self.decoder = lightly_modules.MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(cfg.decoder_dim, cfg.patch_size**2 * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.encode(x)  # every patch, no masking; (B, 1 + patches, D)
        return tokens[:, 0] if self.cfg.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def networks(self) -> list[nn.Module]:
        # the encoder's transformer blocks (lightly's ``encode`` calls them, not the encoder's
        # forward) and the decoder; patch embedding, masking and the pixel loss stay float32
        return [self.encoder.vit.blocks, self.decoder]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        batch, length = x.shape[0], self.encoder.sequence_length
        # Index 0 is the class token, which is always kept.
        idx_keep, idx_mask = utils.random_token_mask((batch, length), mask_ratio=cfg.mask_ratio, device=x.device)
        visible = self.decoder_embed(self.encoder.encode(x, idx_keep=idx_keep))
        # Put the visible tokens back at their places; the decoder puts its mask token at the others.
        sequence = utils.set_at_index(visible.new_zeros(batch, length, cfg.decoder_dim), idx_keep, visible)
        decoded = self.decoder(sequence, idx_mask=idx_mask)
        prediction = self.prediction_head(utils.get_at_index(decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(x, cfg.patch_size), idx_mask - 1)  # -1: skip the class token
        if cfg.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return F.mse_loss(prediction, target)


@register_method("mae")
class MAE(SelfSupervisedBaseline):
    """MAE trained from scratch on the pretraining faces; features: unmasked ViT class/mean token."""

    Config = MAEConfig
    cfg: MAEConfig
    feature_fields = ("pool",)

    def build_net(self) -> MAENet:
        return MAENet(self.cfg)

    def param_groups(self, net: SelfSupervisedNet) -> list[dict]:
        # MAE decays weights but not biases or LayerNorm parameters.
        decay, no_decay = utils.get_weight_decay_parameters([net])
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def info(self) -> dict:
        cfg = self.cfg
        return {
            "backbone": f"timm ViT {cfg.embed_dim}-d, {cfg.depth} blocks, patch {cfg.patch_size}, {cfg.input_size} px",
            "feature_dim": self.feature_dim,
            "pool": cfg.pool,
            "features": "class token" if cfg.pool == "cls" else "mean of the patch tokens",
            "norm_pix_loss": cfg.norm_pix_loss,
        }
