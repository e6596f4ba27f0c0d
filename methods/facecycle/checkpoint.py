"""The authors' FaceCycle files, read without running code, and the official layout written back.

The official scripts ``torch.save`` a plain dict of state dicts (no ``module.`` prefix, no
optimiser): the expression stage (``ExpCode_<epoch>.tar``) holds ``codegeneration``,
``exptoflow``, ``Swap_Generator``; the final file (``finalmodel.tar``, the README's download,
and ``idcode_<epoch>.tar``) adds ``idcodegen`` and ``Swap_Norm``. Inside each network the
tensor names are the project's (``methods/facecycle/networks.py`` keeps them), so the only
renaming is ``OFFICIAL_NAMES``, network by network. The project's own trained ``model.pt`` is
written in this layout too, so both load the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from harness.checkpoints import load_weights, strict_state, weights_record
from harness.errors import BenchError

#: official network name -> ``FaceCycleNets`` attribute; the first three form the expression stage.
OFFICIAL_NAMES = {
    "codegeneration": "expression",
    "exptoflow": "flow",
    "Swap_Generator": "generator",
    "idcodegen": "identity",
    "Swap_Norm": "normalizer",
}
EXPRESSION_STAGE = ("codegeneration", "exptoflow", "Swap_Generator")


def official_state(nets: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``FaceCycleNets``' tensors in the official layout: ``{"codegeneration": {...}, ...}``
    (what the official scripts save; the inverse of the loading below)."""
    return {official: getattr(nets, name).state_dict() for official, name in OFFICIAL_NAMES.items() if hasattr(nets, name)}


@dataclasses.dataclass
class FaceCycleFile:
    """A FaceCycle weight file: ``nets`` maps official network names to their state dicts."""

    path: Path
    setting: str
    nets: dict[str, dict[str, torch.Tensor]]

    @property
    def has_identity(self) -> bool:
        return "idcodegen" in self.nets

    @property
    def where(self) -> str:
        return f"{self.setting}={self.path}"

    def record(self) -> dict[str, Any]:
        return weights_record(self.path, networks=list(self.nets))


def read_file(path: str | Path, setting: str) -> FaceCycleFile:
    """Load and check the file's top level: the three expression-stage networks, optionally the
    two identity ones, nothing else (one-line errors)."""
    path = Path(path).expanduser()
    where = f"{setting}={path}"
    data = load_weights(path, setting)
    if not isinstance(data, dict):
        raise BenchError(f"{where}: holds a {type(data).__name__}, not a dict of state dicts")
    odd = [str(k) for k in data if k not in OFFICIAL_NAMES]
    missing = [k for k in EXPRESSION_STAGE if k not in data]
    if odd or missing:
        what = f"unexpected entries {', '.join(odd[:3])}" if odd else f"missing entries {', '.join(missing)}"
        raise BenchError(
            f"{where}: {what}; a FaceCycle file holds {', '.join(EXPRESSION_STAGE)} (expression stage) "
            "and, in the final model, idcodegen and Swap_Norm"
        )
    if ("idcodegen" in data) != ("Swap_Norm" in data):
        raise BenchError(f"{where}: holds only one of idcodegen and Swap_Norm; the identity branch needs both")
    for name, state in data.items():
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise BenchError(f"{where}: entry {name!r} is not a state dict of tensors")
    return FaceCycleFile(path, setting, dict(data))


def load_nets(nets: torch.nn.Module, file: FaceCycleFile, names: Optional[tuple[str, ...]] = None) -> None:
    """Copy the file's tensors into ``nets`` (a ``FaceCycleNets``), strictly: every tensor of the
    networks ``names`` (official names; default: every network ``nets`` has) comes from the file
    with its shape, and the file holds nothing else for them."""
    names = names or tuple(official for official, name in OFFICIAL_NAMES.items() if hasattr(nets, name))
    expected, given, source = {}, {}, {}
    for official in names:
        name = OFFICIAL_NAMES[official]
        for key, value in getattr(nets, name).state_dict().items():
            expected[f"{name}.{key}"] = value
            source[f"{name}.{key}"] = f"{official}.{key}"
        for key, value in file.nets.get(official, {}).items():
            given[f"{name}.{key}"] = value
            source[f"{name}.{key}"] = f"{official}.{key}"
    strict_state(expected, given, source, f"{file.where} (facecycle)")
    for official in names:
        getattr(nets, OFFICIAL_NAMES[official]).load_state_dict(file.nets[official], strict=True)
