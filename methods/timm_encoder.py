"""Any pretrained timm image model as a frozen encoder: ``--methods timm:<model name>``.

The variant is the timm model name (``timm:resnet50``, ``timm:vit_small_patch16_224``, any name
``timm.list_models()`` knows, with or without a pretrained tag such as ``resnet50.a1_in1k``).
Weights come from ``--set timm.weights=PATH`` (``.pth``/``.pt``/``.bin`` read without running
code, or ``.safetensors``), or, with no path, from timm's own download where the machine is
online (with its progress bar) or from timm's cache where it was downloaded before. Without a
file, a cached copy or a reachable hub, the run stops before any work starts, within seconds. A file's classifier head may be present or absent: it is matched to the file, then
ignored. Nothing is trained; the file's sha256 identifies the model in caches and results.

Input: the face images resized to the model's pretrained input size and normalised with its
mean and std (``timm.data.resolve_model_data_config``); no further crop, since the datasets
already hand out face crops. Features: the pooled pre-logits (``forward_head(...,
pre_logits=True)``), the same for every protocol.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
from typing import Any, Optional
from urllib.parse import urlparse

import torch

from harness.checkpoints import load_weights, strict_state, weights_record
from harness.config import Config, existing_file
from harness.errors import BenchError
from harness.method import Method, MethodContext
from harness.registry import register_method


class TimmModels(tuple):
    """The ``timm`` method's variants: a few examples for ``--list``, but every model name timm
    knows is accepted (``name in variants`` asks timm)."""

    def __contains__(self, name: object) -> bool:
        import timm

        return isinstance(name, str) and timm.is_model(name)


@dataclasses.dataclass(frozen=True)
class TimmConfig(Config):
    """Attributes:
    weights: the weight file (a state dict, optionally under ``state_dict`` or ``model``);
        empty: timm's own pretrained weights, downloaded (needs a network connection).
    """

    weights: str = ""

    RULES = {"weights": existing_file("give the path of the model's weights")}


def unwrap_state(data: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a weight file: the file itself, or its ``state_dict``/``model``
    entry; a ``module.`` prefix (saved from DistributedDataParallel) is removed."""
    if isinstance(data, dict) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in ("state_dict", "model") if isinstance(data.get(k), dict)), None)
        if inner is None:
            raise BenchError(f"{where}: not a state dict (entries: {', '.join(map(str, list(data)[:4]))}); save model.state_dict()")
        data = inner
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise BenchError(f"{where}: holds no state dict of tensors")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


def fit_classifier(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give ``model`` the classifier head the weight file has: none, or one of its width."""
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    weight = next((state[f"{h}.weight"] for h in heads if f"{h}.weight" in state), None)
    if weight is None:
        model.reset_classifier(0)
    elif weight.shape[0] != model.num_classes:
        model.reset_classifier(weight.shape[0])


#: How long the reachability check waits for the hub (a DNS lookup included).
HUB_TIMEOUT_S = 2.0


def cached_pretrained(pretrained_cfg: dict) -> bool:
    """Whether timm's pretrained weights for this config are on this machine already (the
    Hugging Face cache or torch hub's folder), so that loading them needs no network."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, check_cached_file

    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        names = [pretrained_cfg["hf_hub_filename"]] if pretrained_cfg.get("hf_hub_filename") else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if any(isinstance(try_to_load_from_cache(repo, name, revision=revision or None), str) for name in names):
            return True
    url = pretrained_cfg.get("url")
    return bool(url) and check_cached_file(url)


def hub_unreachable() -> Optional[str]:
    """Why the model hub cannot be reached from here, or None; answers within ``HUB_TIMEOUT_S``
    (timm's own download retries for about a minute before it gives up)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    problem: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S).close()
        except OSError as exc:
            problem.append(f"{host} cannot be reached: {exc.strerror or exc}")

    probe = threading.Thread(target=connect, daemon=True)  # a hung DNS lookup has no timeout of its own
    probe.start()
    probe.join(HUB_TIMEOUT_S)
    return f"{host} did not answer within {HUB_TIMEOUT_S:.0f} s" if probe.is_alive() else (problem[0] if problem else None)


@register_method("timm")
class TimmEncoder(Method):
    """A pretrained timm model, frozen; features are its pooled pre-logits."""

    Config = TimmConfig
    variants = TimmModels(("resnet50", "vit_small_patch16_224", "<any timm model name>"))
    in_default_run = False  # needs weights: run it by name
    cfg: TimmConfig

    def __init__(self, cfg: TimmConfig, variant: str, ctx: MethodContext) -> None:
        if variant not in self.variants:
            raise BenchError(f"timm has no model {variant!r}; find names with: python -c \"import timm; print(timm.list_models('*res*'))\"")
        super().__init__(cfg, variant, ctx)
        self.net: Optional[torch.nn.Module] = None
        if not cfg.weights and not cached_pretrained(self.shapes.pretrained_cfg):
            why = hub_unreachable()
            if why:
                raise BenchError(
                    f"timm:{variant}: no timm.weights, no cached copy of its pretrained weights, and the model hub cannot "
                    f"be reached ({why}); give a local file with --set timm.weights=PATH"
                )

    @functools.cached_property
    def shapes(self) -> torch.nn.Module:
        """The model on the meta device: its configs and shapes, no weights."""
        import timm

        with torch.device("meta"):
            return timm.create_model(self.variant, pretrained=False)

    @functools.cached_property
    def data_config(self) -> dict[str, Any]:
        """Input size, mean and std from the model's pretrained config (shapes only, no weights)."""
        from timm.data import resolve_model_data_config

        return resolve_model_data_config(self.shapes)

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def weights_file(self) -> Optional[dict]:
        return weights_record(self.cfg.weights) if self.cfg.weights else None

    def load(self) -> None:
        import timm

        if self.cfg.weights:
            where = f"timm.weights={self.cfg.weights} (timm:{self.variant})"
            state = unwrap_state(load_weights(self.cfg.weights, "timm.weights"), where)
            model = timm.create_model(self.variant, pretrained=False)
            fit_classifier(model, state)
            strict_state(model.state_dict(), state, {}, where)
            model.load_state_dict(state, strict=True)
        else:
            try:
                model = timm.create_model(self.variant, pretrained=True)
            except (OSError, RuntimeError, ValueError) as exc:
                raise BenchError(
                    f"timm:{self.variant}: timm could not fetch its pretrained weights ({str(exc).splitlines()[0][:120]}); "
                    "give a local file with --set timm.weights=PATH"
                ) from None
        mean, std = (torch.tensor(self.data_config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        self.mean, self.std = mean.to(self.ctx.device), std.to(self.ctx.device)
        self.net = model.requires_grad_(False).to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> the model's normalisation
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).flatten(1)

    def info(self) -> dict:
        source = self.weights_file() or {"source": "timm download", "pretrained_cfg": self.variant}
        return {"model": self.variant, "weights": source, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}}
