"""The percentile curriculum FAb-Net and TCAE train under (FAb-Net ``train_attention_curriculum.py``,
``utils_scheduler/TrackLoss.py``; TCAE ``self_supervised_train_TCAE.py``, ``TrackLoss.py``).

Per batch, each loss term's per-sample values are sorted and only those in a window of ranks
are averaged: first the easiest half, [0, 0.5]. After every epoch the validation loss (every
pair, no window) is tracked; when it has not improved for more than ``patience`` epochs (and
nothing moved for as long), the window moves up by ``step`` while its top is below ``stop``
(so up to [0.4, 0.9]); after that each such stall steps ``ReduceLROnPlateau`` instead.

``Curriculum`` plays the per-epoch scheduler of the shared training loop (``harness.train.fit``
steps it after each epoch and checkpoints its ``state_dict``), so a resumed run continues with
the same window, tracker and learning rate.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def window_mean(values: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """Mean of the sorted ``values`` whose rank is in [lo, hi) x batch, as the official slice
    ``sort()[0][int(lo * B):int(hi * B)]``."""
    n = values.shape[0]
    return values.sort()[0][int(window[0] * n) : int(window[1] * n)].mean()


class Curriculum:
    """The sorting window and its schedule, stepped once per epoch.

    Args:
        optimizer: whose learning rate the plateau schedule lowers once the window has stopped.
        validate: the validation loss of the current model (called once per epoch).
        top, step, stop: first window [0, top]; move by ``step`` while its top is below ``stop``.
        patience: epochs without improvement (strictly more) before the window moves.
        plateau_patience: ``ReduceLROnPlateau``'s patience (counted in its own steps).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        validate: Callable[[], float],
        top: float = 0.5,
        step: float = 0.1,
        stop: float = 0.85,
        patience: int = 15,
        plateau_patience: int = 10,
    ) -> None:
        self.validate = validate
        self.step_size, self.stop, self.patience = step, stop, patience
        self.window = (0.0, top)
        self.epoch = 0
        self.validation: list[float] = []
        self._reset_tracker()
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=plateau_patience)

    def _reset_tracker(self) -> None:
        self.best, self.best_epoch, self.last_move = math.inf, -1, -1

    def step(self) -> None:
        """End of an epoch: validate, then move the window or lower the learning rate on a stall."""
        loss = float(self.validate())
        self.validation.append(loss)
        epoch = self.epoch
        if loss < self.best:
            self.best, self.best_epoch, self.last_move = loss, epoch, epoch
        if epoch - self.best_epoch > self.patience and epoch - self.last_move > self.patience:
            self.last_move = epoch
            lo, hi = self.window
            if hi < self.stop:
                self.window = (lo + self.step_size, hi + self.step_size)
                self._reset_tracker()
            else:
                self.plateau.step(loss)
        self.epoch += 1

    def state_dict(self) -> dict:
        return {
            "window": list(self.window), "epoch": self.epoch, "validation": list(self.validation),
            "best": self.best, "best_epoch": self.best_epoch, "last_move": self.last_move, "plateau": self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.window = tuple(state["window"])
        self.epoch, self.validation = state["epoch"], list(state["validation"])
        self.best, self.best_epoch, self.last_move = state["best"], state["best_epoch"], state["last_move"]
        self.plateau.load_state_dict(state["plateau"])
