"""Where a result came from: code version, libraries, machine, times.

``machine`` records what makes numbers machine-dependent: the same code, data and seed give
bit-identical numbers only on the same CPU model and instruction set (torch picks kernels by
it), the same thread counts (they fix the order of floating-point reductions) and the same
oneDNN / cuDNN builds. See docs/how-it-works.md, "Reproducibility".
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "timm", "lightly", "diffusers", "numpy", "scikit-learn", "submitit", "pandas")


def git_state() -> dict:
    """The commit of the code and whether tracked files other than stored results differ from it
    (a run that writes into a committed store, ``results/``, does not make its code dirty)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(changed)}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": "unknown", "dirty": None}


@functools.lru_cache(maxsize=1)
def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


#: CPU features that change which kernels torch (oneDNN, MKL) runs.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "neon", "sve")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@functools.lru_cache(maxsize=1)
def cpu_description() -> dict:
    """CPU model and the instruction-set features torch can use (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {"model": model, "arch": platform.machine(), "features": [f for f in SIMD_FLAGS if f in flags]}


@functools.lru_cache(maxsize=1)
def backend_versions() -> dict:
    """The numeric libraries torch was built with and uses here."""
    built = torch.__config__.show()
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\D*v?(\d+\.\d+(?:\.\d+)?)", built)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else None,
        "mkl": torch.backends.mkl.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def machine(device: torch.device) -> dict:
    """What makes this machine's numbers differ from another's (recorded in every result)."""
    out = {
        "cpu": cpu_description(),
        **backend_versions(),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return out


def slurm_job() -> dict:
    """Slurm job identity, when running inside a job (recorded by every result file)."""
    keys = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


def provenance(device: torch.device) -> dict:
    return {
        "git": git_state(),
        "libraries": library_versions(),
        "device": device_name(device),
        "machine": machine(device),
        "host": socket.gethostname(),
        "slurm": slurm_job(),
    }
