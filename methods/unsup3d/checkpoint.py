"""Stage-1 weights from a file instead of training: the released layouts and the project's own.

Accepted layouts, detected from the file's keys (implementation notes, section 8):

- ``unsup3d-release``: Unsup3D's ``checkpoint030.pth`` (``trainer.save_checkpoint``): ``netD``,
  ``netA``, ``netL``, ``netV``, ``netC`` state dicts, plus optimizer states, ``epoch`` and
  ``metrics_trace``, which are ignored. Each EDDeconv is one Sequential ``network``.
- ``latentface-release``: LatentFace's ``diffusion_64.pth``: the same five nets with each
  EDDeconv split into ``network1`` (encoder) and ``network2`` (decoder), plus the two denoisers
  ``netEA`` and ``netED`` (stage 2, see ``methods/latentface/checkpoint.py``).
- ``project``: this project's stage-1 ``model.pt`` (the stage-1 artifact's file), a flat state
  dict of ``Unsup3D``; or a LatentFace export ``{"stage1": ..., "stage2": ...}``.

Released names map one-to-one onto the project's: ``netD.network.i`` is ``depth_net.encoder.i``
for the encoder's layers (the first 13 at 64 px, ending in the latent's ReLU) and
``depth_net.decoder.(i - 13)`` after; ``netA`` is ``texture_net`` likewise; ``netL``/``netV``
``.network`` are ``light_net``/``pose_net`` ``.net``; ``netC.network``, ``.out_net1``,
``.out_net2`` are ``confidence_net.trunk``, ``.photometric_head``, ``.perceptual_head``.
``project_name`` and ``released_name`` are the two directions of that mapping.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from harness.checkpoints import load_weights, read_once, strict_state, weights_record
from harness.errors import BenchError

#: released net -> project module of ``Unsup3D``
STAGE1_NETS = {"netD": "depth_net", "netA": "texture_net", "netL": "light_net", "netV": "pose_net", "netC": "confidence_net"}
#: the stage-2 nets of a LatentFace release (texture and shape denoisers)
STAGE2_NETS = {"netEA": "texture", "netED": "shape"}
#: top-level entries of a training checkpoint that hold no weights of the model
_BOOKKEEPING = ("optimizer", "scheduler", "epoch", "metrics_trace")
#: ConfNet's Sequentials, released -> project
_CONFIDENCE = {"network": "trunk", "out_net1": "photometric_head", "out_net2": "perceptual_head"}
#: buffers of the project's model that no released file holds (left at their initial values)
PROJECT_ONLY = ("train_steps",)
LAYOUTS = ("unsup3d-release", "latentface-release", "project")
#: What a shape mismatch with a released file usually means (the hint of ``strict_state``).
RELEASED_SIZES = "the released networks are the paper preset: 64 px, width 1, 256-d latents"


def project_name(key: str, encoder_layers: int) -> str:
    """Released stage-1 tensor name -> the project's (``netD.network.14.weight`` ->
    ``depth_net.decoder.1.weight``); ``encoder_layers`` is the length of the EDDeconv encoder."""
    net, seq, rest = key.split(".", 2)
    module = STAGE1_NETS[net]
    if net in ("netD", "netA"):
        index, tail = rest.split(".", 1)
        if seq == "network1":
            return f"{module}.encoder.{rest}"
        if seq == "network2":
            return f"{module}.decoder.{rest}"
        i = int(index)
        return f"{module}.encoder.{i}.{tail}" if i < encoder_layers else f"{module}.decoder.{i - encoder_layers}.{tail}"
    if net == "netC":
        return f"{module}.{_CONFIDENCE[seq]}.{rest}"
    return f"{module}.net.{rest}"


def released_name(key: str, encoder_layers: int, split: bool) -> str:
    """The inverse of ``project_name``: project name -> released name, in the Unsup3D layout
    (``split=False``, one ``network``) or the LatentFace layout (``network1``/``network2``)."""
    module, seq, rest = key.split(".", 2)
    net = {v: k for k, v in STAGE1_NETS.items()}[module]
    if module in ("depth_net", "texture_net"):
        index, tail = rest.split(".", 1)
        if split:
            return f"{net}.network{1 if seq == 'encoder' else 2}.{rest}"
        i = int(index) + (encoder_layers if seq == "decoder" else 0)
        return f"{net}.network.{i}.{tail}"
    if module == "confidence_net":
        return f"{net}.{ {v: k for k, v in _CONFIDENCE.items()}[seq]}.{rest}"
    return f"{net}.network.{rest}"


def released_stage1(model: torch.nn.Module, split: bool) -> dict[str, dict[str, torch.Tensor]]:
    """A stage-1 model's tensors in a released layout: ``{"netD": {"network.0.weight": ...}, ...}``
    (``split``: LatentFace's ``network1``/``network2``), e.g. to run the authors' code on it."""
    encoder_layers = len(model.depth_net.encoder)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in model.state_dict().items():
        if key not in PROJECT_ONLY:
            net, rest = released_name(key, encoder_layers, split).split(".", 1)
            out.setdefault(net, {})[rest] = value
    return out


@dataclasses.dataclass
class CheckpointFile:
    """A weight file with its detected layout.

    Attributes:
        path: the file.
        setting: the setting that named it (``unsup3d.checkpoint``), for messages.
        layout: one of ``LAYOUTS``.
        stage1: stage-1 tensors in the file's own names (released: ``netD.network.0.weight``;
            project: ``depth_net.encoder.0.weight``).
        stage2: per latent kind (``texture``, ``shape``) the stage-2 tensors in the file's names
            below the net (``conv_in.weight``...); empty for stage-1 files.
        stage2_model: ``rdm`` or ``encoder`` for project exports, ``rdm`` for a LatentFace release.
    """

    path: Path
    setting: str
    layout: str
    stage1: dict[str, torch.Tensor]
    stage2: dict[str, dict[str, torch.Tensor]]
    stage2_model: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self.setting}={self.path} ({self.layout})"

    def require_stage2(self, model: str, kinds: tuple[str, ...] | list[str]) -> None:
        """Fail with one line unless the file holds ``model`` networks for every latent kind."""
        if self.stage2_model != model or any(k not in self.stage2 for k in kinds):
            held = f"{self.stage2_model} networks for {', '.join(sorted(self.stage2))}" if self.stage2 else "no stage-2 networks"
            raise BenchError(
                f"{self.where}: holds {held}; this variant needs {model} networks for {', '.join(kinds)} "
                "(a stage-1 file serves unsup3d and latentface:none)"
            )

    def record(self) -> dict[str, Any]:
        """What result files record: path, sha256, size, layout, and which stage-2 nets it holds."""
        return weights_record(self.path, layout=self.layout, stage2=sorted(self.stage2), stage2_model=self.stage2_model)


def _flat(prefix: str, state: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{where}: entry {prefix!r} is not a state dict of tensors")
    return {f"{prefix}.{k}" if prefix else k: v for k, v in state.items()}


def _project_stage2(state: dict[str, torch.Tensor], where: str) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """An ``IdentityModel`` state dict (``nets.<kind>.…``) -> (model kind, tensors per kind)."""
    per_kind: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        head, kind, rest = (key.split(".", 2) + ["", ""])[:3]
        if head != "nets" or not rest:
            raise BenchError(f"{where}: stage2 entry {key!r} is not a tensor of a stage-2 network (nets.<kind>.…)")
        per_kind.setdefault(kind, {})[rest] = value
    first = next(iter(per_kind.values()), {})
    return ("rdm" if any(k.startswith("unet.") for k in first) else "encoder"), per_kind


def read_checkpoint(path: str | Path, setting: str) -> CheckpointFile:
    """Load a weight file safely and sort its tensors into stage 1 and stage 2 (read once per
    file content, whichever setting names it: unsup3d and latentface may name one file)."""
    return dataclasses.replace(read_once(path, setting, lambda p: _read(p, setting)), setting=setting)


def _read(path: Path, setting: str) -> CheckpointFile:
    where = f"{setting}={path}"
    data = load_weights(path, setting)
    if not isinstance(data, dict):
        raise BenchError(f"{where}: holds a {type(data).__name__}, not a dict of weights")
    if "netD" in data:  # a released file
        split = isinstance(data["netD"], dict) and any(str(k).startswith("network1.") for k in data["netD"])
        layout = "latentface-release" if split else "unsup3d-release"
        known = set(STAGE1_NETS) | (set(STAGE2_NETS) if split else set())
        odd = [k for k in data if k not in known and not str(k).startswith(_BOOKKEEPING)]
        if odd:
            raise BenchError(f"{where}: unexpected entries {', '.join(map(str, odd[:3]))} for an {layout} file")
        missing = [k for k in sorted(known) if k not in data]
        if missing:
            raise BenchError(f"{where}: missing entries {', '.join(missing)} of an {layout} file")
        stage1 = {k: v for net in STAGE1_NETS for k, v in _flat(net, data[net], where).items()}
        stage2 = {kind: _flat("", data[net], where) for net, kind in STAGE2_NETS.items() if net in data}
        return CheckpointFile(Path(path), setting, layout, stage1, stage2, "rdm" if stage2 else None)
    if "stage1" in data:  # a project export of LatentFace
        odd = [k for k in data if k not in ("stage1", "stage2")]
        if odd:
            raise BenchError(f"{where}: unexpected entries {', '.join(map(str, odd[:3]))}; expected stage1 and stage2")
        model, stage2 = _project_stage2(_flat("", data.get("stage2", {}), where), where) if data.get("stage2") else (None, {})
        return CheckpointFile(Path(path), setting, "project", _flat("", data["stage1"], where), stage2, model)
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return CheckpointFile(Path(path), setting, "project", dict(data), {})
    raise BenchError(
        f"{where}: not a recognised checkpoint (expected an Unsup3D release with netD..netC, a LatentFace release "
        "diffusion_64.pth, or this project's stage-1 model.pt)"
    )


def load_stage1_weights(model: torch.nn.Module, ckpt: CheckpointFile) -> None:
    """Copy the file's stage-1 tensors into ``model`` (an ``Unsup3D``), strictly: every tensor
    of the model must come from the file with its shape, and the file may hold nothing else."""
    expected = model.state_dict()
    if ckpt.layout == "project":
        given, source = dict(ckpt.stage1), {}
    else:
        encoder_layers = len(model.depth_net.encoder)
        split = ckpt.layout == "latentface-release"
        # messages name tensors as the file does, the missing ones too
        source = {k: released_name(k, encoder_layers, split) for k in expected if k not in PROJECT_ONLY}
        given = {}
        for key, value in ckpt.stage1.items():
            name = project_name(key, encoder_layers)
            given[name], source[name] = value, key
        for name in PROJECT_ONLY:  # a training counter the released code does not have
            given.setdefault(name, expected[name])
    strict_state(expected, given, source, f"{ckpt.where} -> stage 1", RELEASED_SIZES)
    model.load_state_dict(given, strict=True)
