"""One training loop for every learned method: resume, checkpoints, NaN guard, progress, loss curves.

The loop walks a deterministic permutation per (seed, epoch), so a run resumed from a
checkpoint sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from harness.errors import TrainingDiverged
from harness.io import torch_load, torch_save
from harness.progress import progress
from harness.trainlog import TrainLog


@dataclasses.dataclass
class TrainResult:
    """Per-epoch mean losses and throughput of a finished run."""

    history: list[dict[str, float]]
    images_per_second: float

    def summary(self) -> dict:
        return {"history": self.history, "images_per_second": self.images_per_second}


def fit(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    data: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    workdir: Path,
    device: torch.device,
    grad_clip: Optional[float] = None,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    ckpt_every: int = 0,
    desc: str = "train",
    setting_hint: str = "",
) -> TrainResult:
    """Train ``model`` by minimising ``step(batch)["loss"]`` over ``data``.

    Args:
        model: holds every trainable parameter (and is what gets checkpointed).
        optimizer: optimiser over ``model``'s parameters.
        step: maps a uint8 batch (B,3,S,S) on ``device`` to a dict of scalar losses with ``"loss"``.
        data: uint8 images (N,3,S,S) or any tensor indexed along dim 0 (stays on the CPU).
        epochs, batch_size, seed: the schedule; the last partial batch is dropped.
        workdir: ``last.pt`` here is the resume point (written every epoch, atomically); the
            loss curves go beside it (``harness.trainlog``).
        grad_clip: clip the global gradient norm to this value when set.
        scheduler: stepped once per epoch.
        ckpt_every: also checkpoint every this many steps (for long epochs on preemptible jobs).
        desc: progress-bar label.
        setting_hint: how to lower the learning rate / enable clipping, for the NaN message.
    """
    workdir = Path(workdir)
    ckpt = workdir / "last.pt"
    n_batches = len(data) // batch_size
    if n_batches == 0:
        raise ValueError(f"{desc}: {len(data)} training images is less than one batch of {batch_size}")
    history: list[dict[str, float]] = []
    start_epoch, start_step = 0, 0
    if ckpt.exists():
        state = torch_load(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_step, history = state["epoch"], state["step"], state["history"]

    def save(epoch: int, step_in_epoch: int) -> None:
        torch_save(
            ckpt,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch,
                "step": step_in_epoch,
                "history": history,
            },
        )

    model.train()
    seen, busy = 0, 0.0
    total = epochs * n_batches
    resumed = start_epoch * n_batches + start_step
    bar = progress(total=total, initial=resumed, desc=desc, unit="step", images_per_unit=batch_size)
    log = TrainLog(workdir, desc, resumed, {"epochs": epochs, "batch_size": batch_size, "seed": seed})
    for epoch in range(start_epoch, epochs):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(data), generator=generator)
        sums: dict[str, float] = {}
        first = start_step if epoch == start_epoch else 0
        for b in range(first, n_batches):
            tic = time.perf_counter()
            batch = data[order[b * batch_size : (b + 1) * batch_size]].to(device, non_blocking=True)
            losses = step(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"{desc}: loss became {loss.item()} at epoch {epoch + 1} step {b + 1}; "
                    f"lower the learning rate or enable gradient clipping{setting_hint}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            busy += time.perf_counter() - tic
            seen += batch.shape[0]
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            log.step(epoch * n_batches + b + 1, epoch + 1, optimizer.param_groups[0]["lr"], values)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / max(busy, 1e-9):.0f}", refresh=False)
            if ckpt_every and (b + 1) % ckpt_every == 0 and b + 1 < n_batches:
                save(epoch, b + 1)
        done = n_batches - first
        history.append({k: v / max(done, 1) for k, v in sums.items()})
        log.epochs(history, n_batches)
        if scheduler is not None:
            scheduler.step()
        save(epoch + 1, 0)
    bar.close()
    log.close()
    model.eval()
    ips = seen / busy if busy > 0 else math.nan
    return TrainResult(history=history, images_per_second=ips)
