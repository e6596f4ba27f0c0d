"""How training uses the device: bf16 autocast, channels-last, data placement, torch.compile, TF32.

The ``train`` config section (``--set train.precision=fp32``, ``--set train.compile=true``) holds
one field per switch. ``auto`` values turn a switch on for CUDA and off for the CPU, so the CPU
path computes exactly what it computed before these switches existed, and a GPU run uses the
device's strengths without being asked. ``Accel`` is the section resolved for one device; the
training loop (``harness.train.fit``) and the methods' training steps call it:

- ``feed``: the training tensor on the device once (uint8 images are small: CelebA at 64 px is
  2 GB) when it fits, else batches gathered into pinned memory and copied asynchronously; the
  model and the image batches in channels-last layout (what cuDNN's fastest convolutions want).
- ``networks``: while a method trains, its networks (the conv nets and transformers, which
  each method lists) run under bfloat16 autocast and hand back float32, and are compiled when
  asked. Everything between them stays float32: the stage-1 depth, renderer geometry, shading
  and losses, SimCLR's augmentation and NT-Xent loss, MAE's masking and pixel loss, the
  diffusion schedule and its weighted loss. Compiling the networks rather than the whole step
  keeps the Python-side randomness of the steps (flip coins, crop boxes) out of the graphs,
  where it would force a recompilation at every step.
- TF32 for float32 matmuls and convolutions on CUDA, process-wide (``apply_backend_flags``).

Which switches change what a run computes, beyond the rounding of the same float32 arithmetic:
bf16 and TF32 do (``Accel.key``, which enters artifact keys and result hashes); layout, data
placement and compilation only reorder float32 work, as moving from CPU to GPU does, and are
recorded (``Accel.describe``) but do not split the cache.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from harness.config import Config, choice
from harness.errors import BenchError

PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")
PLACEMENTS = ("auto", "device", "host")
#: with ``data=auto``, the training tensor moves to the device when it takes at most this share
#: of the free device memory (the rest is for the model, its activations and the optimiser).
DEVICE_DATA_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Device switches of training (section ``train``); ``auto`` means on for CUDA, off for the CPU.

    Attributes:
        precision: ``bf16`` runs the networks under bfloat16 autocast (float32 weights, optimiser
            and the computations around the networks that need it); ``fp32`` does not.
        channels_last: keep the model and image batches in channels-last memory layout.
        tf32: allow TF32 in float32 matmuls and convolutions on CUDA (no effect on the CPU).
        data: where the training tensor lives on CUDA: ``device`` (moved once), ``host`` (each
            batch gathered into pinned memory and copied asynchronously), ``auto`` (``device``
            when it takes at most a quarter of the free device memory). Nothing moves on the CPU.
        compile: ``torch.compile`` the networks while they train (the first steps then pay for
            compilation; random draws stay the eager generator's, so the numbers do not change).
    """

    precision: str = "auto"
    channels_last: str = "auto"
    tf32: bool = True
    data: str = "auto"
    compile: bool = False

    RULES = {"precision": choice(*PRECISIONS), "channels_last": choice(*SWITCHES), "data": choice(*PLACEMENTS)}


@dataclasses.dataclass(frozen=True)
class Accel:
    """The ``train`` switches resolved for one device type; the default is the plain CPU path.

    Attributes:
        device_type: ``cpu`` or ``cuda``.
        bf16: networks run under bfloat16 autocast.
        channels_last: model and image batches in channels-last layout.
        tf32: TF32 matmuls and convolutions (CUDA only).
        data: ``device``, ``host`` or ``auto`` (CUDA only; on the CPU the data stays where it is).
        compile: the networks are compiled while they train.
    """

    device_type: str = "cpu"
    bf16: bool = False
    channels_last: bool = False
    tf32: bool = False
    data: str = "host"
    compile: bool = False

    @classmethod
    def resolve(cls, cfg: TrainConfig, device: str | torch.device) -> "Accel":
        """The switches ``cfg`` asks for on ``device`` (``auto``: on for CUDA, off elsewhere).

        Depends only on the device's type, not on whether it is present, so a sweep's keys can be
        computed on a login node without a GPU.
        """
        kind = torch.device(device).type
        cuda = kind == "cuda"
        return cls(
            device_type=kind,
            bf16=cfg.precision == "bf16" or (cfg.precision == "auto" and cuda),
            channels_last=cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda),
            tf32=cfg.tf32 and cuda,
            data=cfg.data if cuda else "host",
            compile=cfg.compile,
        )

    # --- identity ----------------------------------------------------------------------------
    def key(self) -> dict[str, Any]:
        """The switches that change the arithmetic (bf16, TF32), for artifact keys and result
        hashes; empty on the plain float32 path, so CPU keys are what they were before."""
        numerics = {"precision": "bf16"} if self.bf16 else {}
        if self.tf32:
            numerics["tf32"] = True
        return {"train": numerics} if numerics else {}

    def describe(self) -> dict[str, Any]:
        """Every switch as it took effect, for result files."""
        return {
            "precision": "bf16" if self.bf16 else "fp32",
            "channels_last": self.channels_last,
            "tf32": self.tf32,
            "data": self.data,
            "compile": self.compile,
        }

    # --- what the training code calls --------------------------------------------------------
    def apply_backend_flags(self) -> None:
        """Set the process-wide TF32 flags of CUDA matmuls and cuDNN convolutions (no-op on the CPU)."""
        if self.device_type != "cuda":
            return
        precision = "tf32" if self.tf32 else "ieee"
        matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
        if hasattr(matmul, "fp32_precision") and conv is not None:  # torch >= 2.9
            matmul.fp32_precision = precision
            conv.fp32_precision = precision
        else:
            matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on this device type when ``bf16``, else a no-op context."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def networks(self, *modules: Optional[nn.Module]) -> Iterator[None]:
        """While the block runs, each module's forward runs under ``autocast`` and hands back
        float32 (``bf16``), compiled (``compile``); nothing changes with both off.

        ``None`` entries (ablated networks) are skipped; the modules' own ``forward`` is back
        when the block ends (no state dict changes: weights stay where they are).
        """
        patched = [m for m in modules if m is not None] if self.bf16 or self.compile else []
        saved = [m.__dict__.get("forward") for m in patched]  # an instance's own forward, if any
        for module in patched:
            module.forward = self._network_forward(module.forward)
        try:
            yield
        finally:
            for module, forward in zip(patched, saved):
                if forward is None:
                    del module.forward  # the class's forward shows again
                else:
                    module.forward = forward

    def _network_forward(self, forward: Callable) -> Callable:
        if self.compile:
            # The bound forward itself, so that each network class has its own compiled code
            # (one shared wrapper would be recompiled for every network, up to dynamo's limit).
            # fallback_random: random ops draw from the eager generator, so a compiled network
            # sees the same dropout and noise as an eager one (inductor draws its own numbers).
            forward = torch.compile(forward, options={"fallback_random": True})

        def run(*args: Any, **kwargs: Any) -> Any:
            with self.autocast():  # compiled code is specialised to the autocast state around it
                return _to_float32(forward(*args, **kwargs))

        return run

    def feed(self, model: nn.Module, data: torch.Tensor, device: torch.device) -> "Feed":
        """Prepare one training run: backend flags, the model's layout, where the data lives."""
        if self.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise BenchError(
                f"train.precision: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                "use --set train.precision=fp32"
            )
        self.apply_backend_flags()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        resident = device.type == "cuda" and self.data != "host" and (self.data == "device" or _fits(data, device))
        return Feed(data, device, resident=resident, channels_last=self.channels_last)


class Feed:
    """Batches of one training run's data, on the device, in the layout the model wants.

    Args:
        data: the training tensor, indexed along dim 0 (uint8 images or latent rows).
        device: where batches go.
        resident: move ``data`` to the device now, once; otherwise each batch is gathered on the
            host (into pinned memory for CUDA) and copied.
        channels_last: give 4-D batches channels-last layout.
    """

    def __init__(self, data: torch.Tensor, device: torch.device, resident: bool, channels_last: bool) -> None:
        self.device = device
        self.resident = resident
        self.pin = device.type == "cuda" and not resident
        self.data = data.to(device) if resident else data
        self.channels_last = channels_last

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``index`` of the data, on the device."""
        if self.resident:
            batch = self.data[index.to(self.device)]
        else:
            batch = self.data[index]
            if self.pin:
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


def _fits(data: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return data.element_size() * data.nelement() <= DEVICE_DATA_SHARE * free


def _to_float32(value: Any) -> Any:
    """Floating tensors (also inside tuples, lists and dicts) as float32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value

