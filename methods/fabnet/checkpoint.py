"""The authors' FAb-Net and TCAE files, read without running code and loaded strictly.

The project's networks carry the official module names (``methods/fabnet/networks.py``), so a
released tensor keeps its name; the only changes, and so the whole renaming table, are:

- ``module.`` (a DataParallel prefix) is stripped when every key has it;
- ``num_batches_tracked`` of each BatchNorm, absent from files written by PyTorch 0.4, is
  added as 0 (it only counts training steps; inference does not read it).

Accepted layouts, detected from the top-level entries:

- ``training``: what the official training scripts save (FAb-Net every 10 epochs, TCAE's
  ``model_256_2_180__epoch_N.pth`` every 100): ``{state_dict, optimizer, epoch, lr, momentum,
  opts}``; also FAb-Net's release ``nv2_curriculum.pth``. Only ``state_dict`` is read.
- ``classifier``: FAb-Net's ``*_4views.pth`` / ``300w_4views.pt``: the network under
  ``state_dict_model``, a BatchNorm1d + Linear classifier under ``state_dict`` (ignored).
- ``bare``: a state dict alone (also this project's ``model.pt``), e.g. TCAE's release, whose
  layout is unverified.

A file holding the encoder alone (``encoder.*`` only) loads into the encoder, which is all the
features need; anything else must match the whole network.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.checkpoints import load_weights, read_once, strict_state, weights_record
from harness.errors import BenchError

PREFIX = "module."
#: BatchNorm's step counter, which PyTorch 0.4 files lack
COUNTER = "num_batches_tracked"
#: top-level entry -> layout, in the order they are looked for (the 4-view files hold both)
ENTRIES = {"state_dict_model": "classifier", "state_dict": "training"}


@dataclasses.dataclass
class OfficialFile:
    """A weight file with its detected layout and the network's tensors in official names."""

    path: Path
    setting: str
    layout: str
    state: dict[str, torch.Tensor]
    prefixed: bool

    @property
    def where(self) -> str:
        return f"{self.setting}={self.path} ({self.layout})"

    @property
    def encoder_only(self) -> bool:
        return all(k.startswith("encoder.") for k in self.state)

    def record(self) -> dict[str, Any]:
        """What result files record: path, sha256, size, layout, and which part was loaded."""
        return weights_record(self.path, layout=self.layout, module_prefix=self.prefixed, encoder_only=self.encoder_only)


def read_official(path: str | Path, setting: str) -> OfficialFile:
    """Load a FAb-Net / TCAE file safely and take the network's state dict out of it (read once
    per file content: every cell of a run names the same file)."""
    return dataclasses.replace(read_once(path, setting, lambda p: _read(p, setting)), setting=setting)


def _read(path: Path, setting: str) -> OfficialFile:
    data = load_weights(path, setting)
    where = f"{setting}={path}"
    if not isinstance(data, dict):
        raise BenchError(f"{where}: holds a {type(data).__name__}, not a dict of weights")
    entry = next((k for k in ENTRIES if k in data), None)
    if entry is not None:
        layout, state = ENTRIES[entry], data[entry]
    elif data and all(isinstance(v, torch.Tensor) for v in data.values()):
        layout, state = "bare", data
    else:
        shown = ", ".join(map(str, list(data)[:4]))
        raise BenchError(f"{where}: not a FAb-Net/TCAE checkpoint (entries {shown}; expected state_dict, state_dict_model or a bare state dict)")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{where}: entry {entry!r} is not a state dict of tensors")
    prefixed = all(str(k).startswith(PREFIX) for k in state)
    state = {(k[len(PREFIX) :] if prefixed else k): v for k, v in state.items()}
    return OfficialFile(path, setting, layout, state, prefixed)


def load_official(model: nn.Module, file: OfficialFile, hint: str) -> None:
    """Copy the file's tensors into ``model`` (its encoder alone for an encoder-only file),
    strictly: every tensor with its shape, nothing else; one ``error:`` line otherwise.

    Args:
        hint: which settings make the shapes match (the released networks' preset).
    """
    target = model.encoder if file.encoder_only else model
    strip = "encoder." if file.encoder_only else ""
    given = {k[len(strip) :]: v for k, v in file.state.items() if not k.endswith(COUNTER)}
    expected = {k: v for k, v in target.state_dict().items() if not k.endswith(COUNTER)}
    source = {k: strip + k for k in expected} | {k: strip + k for k in given}
    wrong = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise BenchError(
            f"{file.where}: {source[k]} has shape {tuple(given[k].shape)}, the model expects {tuple(expected[k].shape)}"
            f"{f' (+{len(wrong) - 1} more)' if len(wrong) > 1 else ''}; {hint}"
        )
    strict_state(expected, given, source, file.where)
    # the step counters: the file's where it has them, else 0 (PyTorch 0.4 did not save them)
    counters = {k: file.state.get(strip + k, torch.zeros((), dtype=torch.long)) for k in target.state_dict() if k.endswith(COUNTER)}
    target.load_state_dict(given | counters, strict=True)


def official_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors as a PyTorch 0.4 file holds them (no ``num_batches_tracked``): the
    inverse of ``load_official``, for writing files in the official layouts."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(COUNTER)}
