"""Atomic file writes and a small on-disk cache: a killed process never leaves a partial file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness.config import config_hash


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def torch_save(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


def cached(cache_dir: Path, kind: str, key: dict, build: Callable[[], Any]) -> Any:
    """Return ``build()``, computing it once per ``key`` and storing it under ``cache_dir/kind``."""
    path = Path(cache_dir) / kind / f"{config_hash(key)}.pt"
    if path.exists():
        return torch_load(path)
    value = build()
    torch_save(path, value)
    return value
