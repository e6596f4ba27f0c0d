"""Stage-2 weights from a file: the LatentFace release's denoisers, or the project's export.

The released ``diffusion_64.pth`` holds the texture denoiser ``netEA`` and the shape denoiser
``netED``, each a ``diffusers.UNet2DModel`` saved under diffusers 0.14 (implementation notes,
section 8). Today's diffusers builds the same network with the same tensor names except the
mid-block attention, whose ``query``, ``key``, ``value`` and ``proj_attn`` are now ``to_q``,
``to_k``, ``to_v`` and ``to_out.0``; ``project_denoiser_name`` maps them (a file re-saved by a
newer diffusers passes unchanged). The stage-1 nets of the same file are read by
``methods/unsup3d/checkpoint.py``.

The project's own LatentFace export is ``{"stage1": Unsup3D state dict, "stage2":
IdentityModel state dict}`` (``save_latentface``); it also carries the encoder ablation.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from harness.checkpoints import strict_state
from harness.io import torch_save
from methods.unsup3d.checkpoint import RELEASED_SIZES, STAGE2_NETS, CheckpointFile

#: diffusers 0.14 attention tensor names -> today's
ATTENTION_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD = re.compile(r"^(?P<block>(?:.+\.)?attentions\.\d+\.)(?P<name>query|key|value|proj_attn)\.(?P<param>weight|bias)$")
_NEW = re.compile(r"^(?P<block>(?:.+\.)?attentions\.\d+\.)(?P<name>to_q|to_k|to_v|to_out\.0)\.(?P<param>weight|bias)$")


def project_denoiser_name(key: str) -> str:
    """A diffusers 0.14 ``UNet2DModel`` tensor name -> today's (only attention names change)."""
    match = _OLD.match(key)
    return f"{match['block']}{ATTENTION_RENAMES[match['name']]}.{match['param']}" if match else key


def diffusers014_name(key: str) -> str:
    """The inverse of ``project_denoiser_name``: today's name -> diffusers 0.14's."""
    match = _NEW.match(key)
    old = {v: k for k, v in ATTENTION_RENAMES.items()}
    return f"{match['block']}{old[match['name']]}.{match['param']}" if match else key


def released_denoisers(stage2: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """An RDM ``IdentityModel``'s denoisers as the release saved them: ``{"netEA": ..., "netED": ...}``
    with diffusers 0.14's tensor names (the inverse of what ``load_stage2_weights`` reads)."""
    net_of = {kind: net for net, kind in STAGE2_NETS.items()}
    return {
        net_of[kind]: {diffusers014_name(k.removeprefix("unet.")): v for k, v in stage2.nets[kind].state_dict().items()}
        for kind in stage2.nets
    }


def load_stage2_weights(stage2: torch.nn.Module, model: str, ckpt: CheckpointFile) -> None:
    """Copy the file's stage-2 nets into ``stage2`` (an ``IdentityModel`` of ``model`` ``rdm``
    or ``encoder``), strictly, for each latent kind the model disentangles."""
    kinds = list(stage2.nets)
    ckpt.require_stage2(model, kinds)
    net_of = {kind: net for net, kind in STAGE2_NETS.items()}
    expected = stage2.state_dict()
    given, source = {}, {}
    if ckpt.layout != "project":  # messages name tensors as the file does, the missing ones too
        for name in expected:
            _, kind, rest = name.split(".", 2)
            source[name] = f"{net_of[kind]}.{diffusers014_name(rest.removeprefix('unet.'))}"
    for kind in kinds:
        for key, value in ckpt.stage2[kind].items():
            if ckpt.layout == "project":
                name = f"nets.{kind}.{key}"
            else:
                name = f"nets.{kind}.unet.{project_denoiser_name(key)}"
                source[name] = f"{net_of[kind]}.{key}"
            given[name] = value
    strict_state(expected, given, source, f"{ckpt.where} -> stage 2", RELEASED_SIZES)
    stage2.load_state_dict(given, strict=True)


def save_latentface(path: Path, stage1: torch.nn.Module, stage2: torch.nn.Module) -> None:
    """Write a trained LatentFace model as one file in the project's layout (what
    ``--set latentface.checkpoint=PATH`` loads on another machine)."""
    torch_save(path, {"stage1": stage1.state_dict(), "stage2": stage2.state_dict()})
