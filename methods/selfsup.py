"""What the two general-purpose self-supervised baselines (SimCLR, MAE) share.

LatentFace (paper Sec. 3.2) compares against SimCLRv2 [Chen et al. 2020] with a ResNet-50 and
MAE [He et al. 2022] with a ViT-Base, both "trained on CelebA and VoxCeleb separately for 30
epochs at 224x224 resolution". Both baselines are trained the same way here: a network with a
self-supervised ``loss(x)`` is fitted on the unlabelled pretraining images by the shared loop
(``harness.train.fit``) inside a content-addressed ``Artifact``, and its frozen encoder gives the
features. Only the network and its loss differ, so each method file defines just those.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import nn

from harness.artifacts import Artifact
from harness.config import Config, at_least, between, dotted, positive
from harness.errors import BenchError
from harness.io import torch_load, torch_save
from harness.train import fit
from harness.method import Method, model_seed, to_input


@dataclasses.dataclass(frozen=True)
class SelfSupervisedConfig(Config):
    """Training schedule shared by the SimCLR and MAE configs (defaults: the ``quick`` preset).

    Attributes:
        input_size: side in pixels the images are resized to, for training and features.
        epochs: passes over the pretraining images.
        batch_size: images per step (SimCLR sees two views of each).
        train_images: train on the first this many pretraining images (0: all of them).
        lr: peak learning rate of AdamW.
        beta2: AdamW's second-moment decay (MAE uses 0.95).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up epochs before the cosine decay (both papers warm up).
        grad_clip: clip the global gradient norm to this value (0: off).
    """

    input_size: int = 64
    epochs: int = 3
    batch_size: int = 128
    train_images: int = 0
    lr: float = 1e-3
    beta2: float = 0.999
    weight_decay: float = 1e-6
    warmup_epochs: int = 0
    grad_clip: float = 0.0

    # batch_size >= 2: contrastive pairs and BatchNorm need two images
    RULES = {
        "input_size": at_least(8), "epochs": at_least(1), "batch_size": at_least(2), "train_images": at_least(0),
        "lr": positive, "beta2": between(0, 1, high_open=True), "weight_decay": at_least(0),
        "warmup_epochs": at_least(0), "grad_clip": at_least(0),
    }

    def check(self, section: str) -> None:
        p = dotted(section)
        if self.warmup_epochs >= self.epochs:
            raise BenchError(
                f"{p}warmup_epochs={self.warmup_epochs}: must be below {p}epochs ({self.epochs}); "
                f"set {p}warmup_epochs lower or {p}epochs higher"
            )


class SelfSupervisedNet(nn.Module):
    """Interface of the trained networks: ``forward`` gives features, ``loss`` trains.

    Both take float images in [-1, 1] of shape (B, 3, input_size, input_size).
    """

    feature_dim: int

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def networks(self) -> list[nn.Module]:
        """The modules ``loss`` calls that do the heavy work (conv nets, transformer blocks): with
        ``train.precision=bf16`` only these run in bfloat16, with ``train.compile`` only these
        are compiled; augmentation, masking and the loss itself stay float32 and eager."""
        raise NotImplementedError


class SelfSupervisedBaseline(Method):
    """A method whose features come from a network trained from scratch on the pretraining set.

    Subclasses implement ``build_net`` (and may override ``param_groups``); this class owns the
    artifact, the optimiser and schedule, training via ``fit``, loading and ``encode``.
    """

    Config = SelfSupervisedConfig
    batches = {"batch_size": ("pretrain", "train_images")}
    #: bump (per subclass) when a code change alters the trained network for the same config
    artifact_version: ClassVar[int] = 1
    #: config fields that only choose how features are read from the trained network: left
    #: out of the artifact key, so changing them reuses the checkpoint
    feature_fields: ClassVar[tuple[str, ...]] = ()
    cfg: SelfSupervisedConfig
    net: SelfSupervisedNet

    def build_net(self) -> SelfSupervisedNet:
        """A freshly initialised network for ``self.cfg`` (on the CPU)."""
        raise NotImplementedError

    def param_groups(self, net: SelfSupervisedNet) -> list[dict]:
        """AdamW parameter groups; by default every parameter is decayed."""
        return [{"params": list(net.parameters())}]

    # --- training -------------------------------------------------------------------------
    def artifacts(self) -> list[Artifact]:
        config = {k: v for k, v in self.cfg.to_dict().items() if k not in self.feature_fields}
        key = {"config": config, "pretrain": self.ctx.pretrain_fingerprint, "seed": self.ctx.seed, **self.ctx.accel.key()}
        return [Artifact(kind=self.name, key=key, build=self._train, version=self.artifact_version)]

    def training_setup(
        self,
    ) -> tuple[SelfSupervisedNet, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Callable]:
        """Network, optimiser, per-epoch schedule and the ``fit`` step, seeded from the cell."""
        cfg, device = self.cfg, self.ctx.device
        # Seeds weight init and, since training draws from the global generator, the random
        # crops / jitter / masks too, so a cell trains the same model every time.
        torch.manual_seed(model_seed(self.ctx, self.name))
        net = self.build_net().to(device)
        optimizer = torch.optim.AdamW(
            self.param_groups(net), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay
        )
        scheduler = warmup_cosine(optimizer, cfg.epochs, cfg.warmup_epochs)

        def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
            # Every method gets the same uint8 images; each resizes them to its own input size.
            return {"loss": net.loss(to_input(batch, cfg.input_size, device))}

        return net, optimizer, scheduler, step

    def _train(self, folder: Path) -> dict:
        cfg = self.cfg
        images = self.ctx.load_pretrain().images
        if cfg.train_images:
            images = images[: cfg.train_images]
        net, optimizer, scheduler, step = self.training_setup()
        with self.ctx.accel.networks(*net.networks()):  # bf16 / compiled networks, when asked
            result = fit(
                model=net,
                optimizer=optimizer,
                step=step,
                data=images,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                seed=model_seed(self.ctx, self.name, "order"),
                workdir=folder,
                device=self.ctx.device,
                grad_clip=cfg.grad_clip or None,
                scheduler=scheduler,
                desc=self.name,
                setting_hint=f" (e.g. --set {self.name}.lr={cfg.lr / 10:g} or --set {self.name}.grad_clip=1.0)",
                batch_setting=f"{self.name}.batch_size",
                accel=self.ctx.accel,
            )
        # Weights alone, for loading features; last.pt (with optimiser state) stays the resume point.
        torch_save(folder / "model.pt", net.state_dict())
        return {**result.summary(), "train_images": len(images), "feature_dim": net.feature_dim}

    # --- features -------------------------------------------------------------------------
    def load(self) -> None:
        net = self.build_net()
        (artifact,) = self.artifacts()
        net.load_state_dict(torch_load(artifact.path(self.ctx.cache_dir) / "model.pt"))
        self.net = net.to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        """The same frozen features for every view (the baselines have no task-specific parts)."""
        return self.net(x)

    @functools.cached_property
    def feature_dim(self) -> int:
        """Length of the feature vector ``encode`` returns."""
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            return self.build_net().feature_dim


def warmup_cosine(
    optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: linear warm-up for ``warmup_epochs``, then cosine decay to zero."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs)
    if warmup_epochs == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / (warmup_epochs + 1), total_iters=warmup_epochs
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
