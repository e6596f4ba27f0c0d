"""Training curves of every trained artifact, kept next to its checkpoint.

``harness.train.fit`` writes, in its training folder (beside ``last.pt``):

- ``losses_step.csv``: one row per optimisation step -- ``step`` (1-based, over the whole run),
  ``epoch`` (1-based), ``lr``, then every loss term the method's step returns (``loss`` first);
- ``losses_epoch.csv``: one row per epoch -- ``epoch``, ``step`` (its last step), the mean of
  each loss term over the epoch;
- ``losses.png``: both, one panel per loss term, drawn when training ends.

A resumed run keeps the rows up to its checkpoint and continues them, so the files always hold
exactly one row per step of the model in ``last.pt``. ``--log tensorboard`` (``$BENCH_LOG``) also
writes TensorBoard event files under ``tensorboard/`` there; ``--log wandb`` logs to Weights &
Biases (``WANDB_MODE=offline`` logs without a network, for ``wandb sync`` later).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from harness import plots
from harness.errors import BenchError
from harness.io import atomic_path

LOG_ENV = "BENCH_LOG"
#: optional loggers: name -> (module that must be importable, the extra that installs it)
BACKENDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
STEP_CSV, EPOCH_CSV, CURVES_PNG = "losses_step.csv", "losses_epoch.csv", "losses.png"


def requested() -> list[str]:
    """The optional loggers asked for (``$BENCH_LOG``, which ``--log`` sets for every job)."""
    return [name.strip() for name in os.environ.get(LOG_ENV, "").split(",") if name.strip()]


def check_backends(names: list[str]) -> None:
    """Fail before any work when a logger is unknown or its package is not installed."""
    for name in names:
        if name not in BACKENDS:
            raise BenchError(f"--log {name}: unknown logger; choose from {', '.join(BACKENDS)} (the CSV is always written)")
        module, extra = BACKENDS[name]
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"--log {name} needs the {module} package: pip install -e '.[{extra}]'")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def columns(rows: list[dict[str, str]], skip: tuple[str, ...]) -> dict[str, list[float]]:
    """CSV rows as float columns, without the ``skip`` ones."""
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k not in skip}


class TrainLog:
    """The loss log of one training run (see the module docstring for the files).

    Args:
        workdir: the training folder (where ``last.pt`` lives).
        desc: the run's name in titles and in W&B.
        done_steps: steps already in the checkpoint being resumed (0 for a fresh run).
        config: hyperparameters shown by W&B.
    """

    def __init__(self, workdir: Path, desc: str, done_steps: int = 0, config: dict | None = None) -> None:
        self.workdir, self.desc = Path(workdir), desc
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / STEP_CSV
        kept = [row for row in read_csv(path) if int(row["step"]) <= done_steps]  # rows past the checkpoint are redone
        self.fields: list[str] = list(kept[0]) if kept else []
        if kept or path.exists():
            self._rewrite(path, kept)
        self.file = open(path, "a", newline="", buffering=1)  # line-buffered: a killed job loses no finished row
        self.writer: csv.DictWriter | None = csv.DictWriter(self.file, self.fields, lineterminator="\n") if self.fields else None
        self.tensorboard: Any = None
        self.wandb: Any = None
        backends = requested()
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last checkpoint
            self.tensorboard = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=done_steps + 1 if done_steps else None)
        if "wandb" in backends:
            import wandb

            self.wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "latentface-bench"),
                name=f"{desc} {self.workdir.name}",
                dir=str(self.workdir),
                config={"desc": desc, "folder": str(self.workdir), **(config or {})},
            )

    def step(self, step: int, epoch: int, lr: float, losses: dict[str, float]) -> None:
        """One optimisation step (``step`` and ``epoch`` 1-based)."""
        row = {"step": step, "epoch": epoch, "lr": lr, **dict(sorted(losses.items(), key=lambda kv: kv[0] != "loss"))}
        if self.writer is None:
            self.fields = list(row)
            self.writer = csv.DictWriter(self.file, self.fields, lineterminator="\n")
            self.writer.writeheader()
        self.writer.writerow({k: row.get(k, "") for k in self.fields})
        scalars = {f"train/{k}": v for k, v in losses.items()} | {"train/lr": lr}
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def epochs(self, history: list[dict[str, float]], steps_per_epoch: int) -> None:
        """The per-epoch means so far (``fit``'s history, restored on resume), rewritten whole."""
        rows = [{"epoch": e + 1, "step": (e + 1) * steps_per_epoch, **means} for e, means in enumerate(history)]
        self._rewrite(self.workdir / EPOCH_CSV, rows)
        if rows:
            scalars = {f"epoch/{k}": v for k, v in history[-1].items()}
            if self.tensorboard is not None:
                for tag, value in scalars.items():
                    self.tensorboard.add_scalar(tag, value, rows[-1]["step"])
            if self.wandb is not None:
                self.wandb.log(scalars, step=rows[-1]["step"])

    def close(self) -> Path | None:
        """Close the files and draw ``losses.png``; returns its path (None without any step)."""
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        steps = read_csv(self.workdir / STEP_CSV)
        if not steps:
            return None
        epochs = read_csv(self.workdir / EPOCH_CSV)
        return plots.curves(columns(steps, ("epoch", "lr")), columns(epochs, ("epoch",)), self.workdir / CURVES_PNG, self.desc)

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        text = io.StringIO()
        if rows:
            writer = csv.DictWriter(text, list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        with atomic_path(path) as tmp:
            tmp.write_text(text.getvalue())
