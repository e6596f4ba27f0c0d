"""PCL weights from a file: the authors' two layouts and the project's own.

- ``pcl-train``: what the authors' ``main.py`` saves while training, ``{epoch, state_dict}`` of
  a DataParallel ``ExpPoseModel``: ``module.encoder.*`` (48 tensors), ``module.exp_fc.*`` and
  ``module.pose_fc.*`` (9 each), ``module.decoder.*`` (39). Every tensor loads, strictly.
- ``pcl-linear-eval``: what their linear evaluation saves, ``{epoch, state_dict}`` of the bare
  encoder (un-prefixed: ``conv1.0.weight`` ...) plus ``linear_classifier.{weight,bias}`` (the
  probe, ignored) and, where present, the heads ``exp_fc.*`` / ``pose_fc.*``. The encoder loads
  strictly (and the heads, when the file has them); the decoder keeps its initial weights,
  which features never use.
- ``project``: this project's ``model.pt`` (a flat ``PCLModel`` state dict; its training
  bookkeeping, ``TRAINING_STATE``, is not loaded).

The one renaming (``PROJECT_NAMES``): the heads are lightly ``ProjectionHead``s, whose layers
sit under ``layers``: ``exp_fc.0.weight`` is ``exp_fc.layers.0.weight``. Everything else has
the authors' names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.checkpoints import load_weights, strict_state, weights_record
from harness.errors import BenchError
from methods.pcl.networks import TRAINING_STATE, PCLModel

HEADS = ("exp_fc", "pose_fc")
#: authors' name -> project name, by pattern
PROJECT_NAMES = {"exp_fc.<i>.<tensor>": "exp_fc.layers.<i>.<tensor>", "pose_fc.<i>.<tensor>": "pose_fc.layers.<i>.<tensor>"}
LAYOUTS = ("pcl-train", "pcl-linear-eval", "project")
PROBE = "linear_classifier."


def project_name(key: str) -> str:
    """The authors' ``ExpPoseModel`` name (no ``module.``) -> the project's."""
    head, _, rest = key.partition(".")
    return f"{head}.layers.{rest}" if head in HEADS else key


def official_name(key: str) -> str:
    """The inverse of ``project_name``."""
    head, _, rest = key.partition(".")
    return f"{head}.{rest.removeprefix('layers.')}" if head in HEADS else key


def official_state(model: PCLModel, layout: str, epoch: int = 1) -> dict[str, Any]:
    """``model``'s tensors in one of the authors' layouts (to run their code on them in checks,
    and for tests): ``pcl-train`` or ``pcl-linear-eval`` (with a 7-class probe, heads left out
    as the authors' encoder-only evaluation model saves them)."""
    state = {k: v for k, v in model.state_dict().items() if k not in TRAINING_STATE}
    if layout == "pcl-train":
        return {"epoch": epoch, "state_dict": {f"module.{official_name(k)}": v for k, v in state.items()}}
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    probe = {f"{PROBE}weight": torch.zeros(7, model.feature_dim), f"{PROBE}bias": torch.zeros(7)}
    return {"epoch": epoch, "state_dict": {**encoder, **probe}}


def _state_dict(data: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise BenchError(f"{where}: not a PCL checkpoint (expected a state dict, or {{epoch, state_dict}} as the authors save)")
    return {str(k): v for k, v in data.items()}


def detect_layout(state: dict[str, torch.Tensor], where: str) -> str:
    if all(k.startswith("module.") for k in state):
        return "pcl-train"
    if any(k.startswith("encoder.") for k in state):
        return "project"
    if any(k.startswith("conv1.") for k in state):
        return "pcl-linear-eval"
    shown = ", ".join(list(state)[:3])
    raise BenchError(
        f"{where}: not a PCL checkpoint (tensors {shown}, ...); expected the authors' training file "
        "(module.encoder.*), their linear-evaluation file (conv1.*, linear_classifier.*) or this project's model.pt"
    )


def read(path: str | Path, setting: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The file's layout and its tensors, read without running code."""
    where = f"{setting}={path}"
    state = _state_dict(load_weights(path, setting), where)
    return detect_layout(state, where), state


def record(path: str | Path, setting: str) -> dict[str, Any]:
    """What result files record about the file (path, sha256, size, layout)."""
    return weights_record(path, layout=read(path, setting)[0])


def load_pcl_weights(model: PCLModel, path: str | Path, setting: str) -> str:
    """Copy the file's tensors into ``model`` strictly (see the module docstring); returns the layout."""
    layout, state = read(path, setting)
    where = f"{setting}={path} ({layout})"
    # the training bookkeeping is not part of the model (and sized by the epochs it trained)
    expected = {k: v for k, v in model.state_dict().items() if k not in TRAINING_STATE}
    if layout == "project":
        state = {k: v for k, v in state.items() if k not in TRAINING_STATE}
        strict_state(expected, state, {}, where)
        model.load_state_dict(state, strict=False)
        return layout
    if layout == "pcl-train":
        given = {project_name(k.removeprefix("module.")): v for k, v in state.items()}
        source = {project_name(k.removeprefix("module.")): k for k in state}
        source.update({k: f"module.{official_name(k)}" for k in expected if k not in source})
        strict_state(expected, given, source, where)
        model.load_state_dict(given, strict=False)
        return layout
    # linear evaluation: the encoder, and the heads where the file has them
    kept = {k: v for k, v in state.items() if not k.startswith(PROBE)}
    parts = ("encoder",) + tuple(h for h in HEADS if any(k.startswith(f"{h}.") for k in kept))
    given = {(project_name(k) if k.partition(".")[0] in HEADS else f"encoder.{k}"): v for k, v in kept.items()}
    source = {(project_name(k) if k.partition(".")[0] in HEADS else f"encoder.{k}"): k for k in kept}
    wanted = {k: v for k, v in expected.items() if k.partition(".")[0] in parts}
    source.update({k: official_name(k).removeprefix("encoder.") for k in wanted if k not in source})
    strict_state(wanted, given, source, where)
    model.load_state_dict(given, strict=False)
    return layout
