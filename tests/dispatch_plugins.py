"""Test plugins for the dispatch tests, importable by jobs (``--plugins tests.dispatch_plugins``).

Jobs run in fresh Python processes that never see ``tests/conftest.py``, so everything the
dispatch tests submit is registered here: the ``toy`` dataset (by importing the conftest, whose
registration is guarded against running twice) and ``two-stage``, a learned method in miniature
with the artifact graph of LatentFace: a stage-1 model shared by every variant, and a stage-2
model per variant trained on top of it, both with ``harness.train.fit`` (so they checkpoint).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import tests.conftest  # noqa: F401  (registers the "toy" dataset)
from harness.artifacts import Artifact
from harness.config import Config, at_least
from harness.io import torch_load, torch_save
from harness.registry import METHODS, register_method
from harness.train import fit
from harness.method import Method, model_seed, to_input


@dataclasses.dataclass(frozen=True)
class TwoStageConfig(Config):
    """Attributes:
    input_size: images are resized to this side and flattened.
    dim: size of the stage-1 code (the features).
    epochs: epochs of each stage.
    batch_size: images per step.
    step_sleep: seconds to sleep per training step, so a test can stop a job mid-training.
    """

    input_size: int = 8
    dim: int = 8
    epochs: int = 2
    batch_size: int = 16
    step_sleep: float = 0.0

    RULES = {"input_size": at_least(1), "dim": at_least(1), "epochs": at_least(1), "batch_size": at_least(1), "step_sleep": at_least(0)}


class Stage1(nn.Module):
    """A linear autoencoder of flattened images."""

    def __init__(self, cfg: TwoStageConfig) -> None:
        super().__init__()
        pixels = 3 * cfg.input_size**2
        self.encoder = nn.Linear(pixels, cfg.dim)
        self.decoder = nn.Linear(cfg.dim, pixels)


def train(model: nn.Module, loss, cfg: TwoStageConfig, data: torch.Tensor, seed: int, folder: Path) -> dict:
    """``fit`` with a per-step sleep; the summary says at which epoch this build started."""
    ckpt = folder / "last.pt"
    start_epoch = torch_load(ckpt)["epoch"] if ckpt.exists() else 0
    print(f"training {folder.parent.name}/{folder.name} from epoch {start_epoch}", flush=True)

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        time.sleep(cfg.step_sleep)
        return {"loss": loss(to_input(batch, cfg.input_size, torch.device("cpu")).flatten(1))}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    result = fit(model=model, optimizer=optimizer, step=step, data=data, epochs=cfg.epochs,
                 batch_size=cfg.batch_size, seed=seed, workdir=folder, device=torch.device("cpu"))
    torch_save(folder / "model.pt", model.state_dict())
    return {**result.summary(), "start_epoch": start_epoch}


if "two-stage" not in METHODS:

    @register_method("two-stage")
    class TwoStage(Method):
        """Variants ``a`` and ``b`` add their own stage 2 to the shared stage 1; ``stage1`` uses it alone."""

        Config = TwoStageConfig
        variants = ("a", "b", "stage1")

        def stage1(self) -> Artifact:
            key = {"config": self.cfg.to_dict(), "data": self.ctx.pretrain_fingerprint, "seed": self.ctx.seed}

            def build(folder: Path) -> dict:
                torch.manual_seed(model_seed(self.ctx, "two-stage-1"))
                model = Stage1(self.cfg)
                return train(model, lambda x: F.mse_loss(model.decoder(model.encoder(x)), x), self.cfg,
                             self.ctx.load_pretrain().images, model_seed(self.ctx, "order-1"), folder)

            return Artifact(kind="two-stage-1", key=key, build=build)

        def stage2(self, stage1: Artifact) -> Artifact:
            def build(folder: Path) -> dict:
                encoder = self.load_stage1(stage1).encoder
                torch.manual_seed(model_seed(self.ctx, "two-stage-2", self.variant))
                head = nn.Linear(self.cfg.dim, self.cfg.dim)
                sign = 1.0 if self.variant == "a" else -1.0  # the variants learn different maps

                def loss(x: torch.Tensor) -> torch.Tensor:
                    code = encoder(x)
                    return F.mse_loss(head(code), sign * code)

                return train(head, loss, self.cfg, self.ctx.load_pretrain().images, model_seed(self.ctx, "order-2"), folder)

            return Artifact(kind="two-stage-2", key={"stage1": stage1.hash, "variant": self.variant}, build=build)

        def artifacts(self) -> list[Artifact]:
            stage1 = self.stage1()
            return [stage1] if self.variant == "stage1" else [stage1, self.stage2(stage1)]

        def load_stage1(self, stage1: Artifact) -> Stage1:
            model = Stage1(self.cfg)
            model.load_state_dict(torch_load(stage1.ensure(self.ctx.cache_dir) / "model.pt"))
            return model.requires_grad_(False).eval()

        def load(self) -> None:
            artifacts = self.artifacts()
            self.encoder = self.load_stage1(artifacts[0]).encoder
            self.head = nn.Identity()
            if len(artifacts) == 2:
                self.head = nn.Linear(self.cfg.dim, self.cfg.dim)
                self.head.load_state_dict(torch_load(artifacts[1].path(self.ctx.cache_dir) / "model.pt"))

        @torch.no_grad()
        def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x.flatten(1)))
