"""One training loop for every learned method: resume, checkpoints, NaN guard, progress, loss curves.

Resume reproduces an uninterrupted run bit for bit (same machine, same threads): the loop walks a
deterministic permutation per (seed, epoch), so a resumed run sees the same batches, and each
checkpoint holds, besides model, optimiser and schedule, every random generator a step may draw
from (torch CPU and CUDA, numpy, Python's ``random``, and the step's own generators) and the
partial epoch's loss sums.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from harness.accel import Accel
from harness.errors import BenchError, TrainingDiverged
from harness.io import torch_load, torch_save
from harness.progress import progress
from harness.trainlog import TrainLog


@dataclasses.dataclass
class TrainResult:
    """Per-epoch mean losses and throughput of a finished run.

    Attributes:
        history: mean of each loss term per epoch.
        images_per_second: over every step this process ran.
        warm_images_per_second: the same without the process's first step, which pays for
            memory allocation, kernel selection and compilation (the steady rate; nan after
            a single step).
    """

    history: list[dict[str, float]]
    images_per_second: float
    warm_images_per_second: float = math.nan

    def summary(self) -> dict:
        return {
            "history": self.history,
            "images_per_second": self.images_per_second,
            "warm_images_per_second": self.warm_images_per_second,
        }


def fit(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Callable[[torch.Tensor], Union[Mapping[str, torch.Tensor], Iterable[Mapping[str, torch.Tensor]]]],
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
    generators: Optional[Mapping[str, torch.Generator]] = None,
    batch_setting: str = "",
    accel: Optional[Accel] = None,
) -> TrainResult:
    """Train ``model`` by minimising ``step(batch)["loss"]`` over ``data``.

    Args:
        model: holds every trainable parameter (and is what gets checkpointed).
        optimizer: optimiser over ``model``'s parameters.
        step: maps a uint8 batch (B,3,S,S) on ``device`` to a dict of scalar losses with ``"loss"``,
            or yields several such dicts, one optimiser step each (methods that alternate
            objectives within an iteration, e.g. PCL); the logged ``loss`` is their sum.
        data: uint8 images (N,3,S,S) or any tensor indexed along dim 0 (stays on the CPU).
        epochs, batch_size, seed: the schedule; the last partial batch is dropped.
        workdir: ``last.pt`` here is the resume point (written every epoch, atomically); the
            loss curves go beside it (``harness.trainlog``).
        grad_clip: clip the global gradient norm to this value when set.
        scheduler: stepped once per epoch.
        ckpt_every: also checkpoint every this many steps (for long epochs on preemptible jobs).
        desc: progress-bar label.
        setting_hint: how to lower the learning rate / enable clipping, for the NaN message.
        generators: the step's own random generators (e.g. diffusion noise), checkpointed too.
        batch_setting: the ``--set`` name of the batch size, for the too-few-images message.
        accel: device switches (data placement, channels-last layout); None: plain. Mixed
            precision and compilation are the step's: see ``Accel.networks``.
    """
    workdir = Path(workdir)
    ckpt = workdir / "last.pt"
    generators = dict(generators or {})
    n_batches = len(data) // batch_size
    if n_batches == 0:
        fix = f"lower {batch_setting}" if batch_setting else "lower the batch size"
        raise BenchError(f"{desc}: {len(data)} training images is less than one batch of {batch_size}; {fix} or train on more images")
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    start_epoch, start_step = 0, 0
    if ckpt.exists():
        state = torch_load(ckpt)
        if state.get("order_seed", seed) != seed:
            raise BenchError(f"{ckpt} was written by a run with another seed; delete the folder to retrain")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_step, history = state["epoch"], state["step"], state["history"]
        sums = dict(state.get("sums") or {})
        if "rng" in state:
            set_rng_state(state["rng"], generators)

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
                "sums": sums if step_in_epoch else {},  # the partial epoch's loss sums
                "order_seed": seed,
                "rng": rng_state(generators),
            },
        )

    accel = accel or Accel()
    feed = accel.feed(model, data, device)  # data on the device once when it fits; model layout
    model.train()
    seen, busy = 0, 0.0
    warm_seen, warm_busy = 0, 0.0
    total = epochs * n_batches
    resumed = start_epoch * n_batches + start_step
    bar = progress(total=total, initial=resumed, desc=desc, unit="step", images_per_unit=batch_size)
    log = TrainLog(workdir, desc, resumed, {"epochs": epochs, "batch_size": batch_size, "seed": seed})
    for epoch in range(start_epoch, epochs):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(data), generator=generator)
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            sums = {}
        for b in range(first, n_batches):
            tic = time.perf_counter()
            batch = feed.batch(order[b * batch_size : (b + 1) * batch_size])
            stages = step(batch)
            if isinstance(stages, Mapping):
                stages = (stages,)
            values: dict[str, float] = {}
            for losses in stages:  # one optimiser step each; a generator's next stage sees the update
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
                total = values.get("loss", 0.0) + float(loss.detach())
                values.update({k: float(v.detach()) for k, v in losses.items()}, loss=total)
            elapsed = time.perf_counter() - tic
            if seen:  # every step but the first of this process
                warm_busy, warm_seen = warm_busy + elapsed, warm_seen + batch.shape[0]
            busy += elapsed
            seen += batch.shape[0]
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            log.step(epoch * n_batches + b + 1, epoch + 1, optimizer.param_groups[0]["lr"], values)
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{seen / max(busy, 1e-9):.0f}", refresh=False)
            if ckpt_every and (b + 1) % ckpt_every == 0 and b + 1 < n_batches:
                save(epoch, b + 1)
        history.append({k: v / n_batches for k, v in sums.items()})
        log.epochs(history, n_batches)
        if scheduler is not None:
            scheduler.step()
        save(epoch + 1, 0)
    bar.close()
    log.close()
    model.eval()
    ips = seen / busy if busy > 0 else math.nan
    warm = warm_seen / warm_busy if warm_busy > 0 else math.nan
    return TrainResult(history=history, images_per_second=ips, warm_images_per_second=warm)


def rng_state(generators: Mapping[str, torch.Generator] = {}) -> dict:
    """Every random generator a training step may draw from, as tensors and plain values."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict, generators: Mapping[str, torch.Generator] = {}) -> None:
    """Restore what ``rng_state`` saved (CUDA only where the same devices are visible)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    for name, generator in generators.items():
        if name in state["generators"]:
            generator.set_state(state["generators"][name])
