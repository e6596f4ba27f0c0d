"""Where a result came from: code version, libraries, machine, times."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "timm", "lightly", "diffusers", "numpy", "scikit-learn", "submitit", "pandas")


def git_state() -> dict:
    """The commit of the code and whether tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
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


def slurm_job() -> dict:
    """Slurm job identity, when running inside a job (recorded by every result file)."""
    keys = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


def provenance(device: torch.device) -> dict:
    return {
        "git": git_state(),
        "libraries": library_versions(),
        "device": device_name(device),
        "host": socket.gethostname(),
        "slurm": slurm_job(),
    }
