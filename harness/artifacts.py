"""Content-addressed artifacts: each checkpoint is keyed by the config that produces it.

Cells that need the same trained model share it (all Table 4 variants use one stage-1 model);
a file lock makes concurrent jobs wait for one builder instead of training twice; a ``done.json``
marker is written last, so a killed build is resumed (from its own checkpoints), never trusted.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Optional

from harness import timing
from harness.config import config_hash
from harness.io import write_json
from harness.locks import file_lock


@dataclasses.dataclass
class Artifact:
    """A trained thing on disk.

    Attributes:
        kind: short name, also the cache sub-folder (``stage1``, ``simclr``...).
        key: everything that determines the artifact's content (configs, data, seed, deps).
        build: trains into the given folder; must resume from what it left there before.
        version: the code's share of the key: bump it when a code change alters what ``build``
            produces for the same config, so stale checkpoints are not reused.
    """

    kind: str
    key: dict
    build: Callable[[Path], Optional[dict]] = dataclasses.field(compare=False, repr=False)
    version: int = 1

    @functools.cached_property
    def hash(self) -> str:
        """Of kind, version and key, computed once (a key is never changed after the artifact is
        made): a plan asks for it per cell, and it is a JSON dump of the whole config."""
        return config_hash({"kind": self.kind, "version": self.version, "key": self.key})

    def path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "artifacts" / self.kind / self.hash

    def is_built(self, cache_dir: Path) -> bool:
        return (self.path(cache_dir) / "done.json").exists()

    def ensure(self, cache_dir: Path) -> Path:
        """Build the artifact unless it exists; returns its folder."""
        folder = self.path(cache_dir)
        if self.is_built(cache_dir):
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / "build.lock", f"the {self.kind} artifact {self.hash}"):
            if not self.is_built(cache_dir):  # another job may have finished while we waited
                start = time.time()
                with timing.stage(f"train {self.kind}"):
                    summary = self.build(folder) or {}
                write_json(
                    folder / "done.json",
                    {"kind": self.kind, "key": self.key, "hash": self.hash, "build_seconds": time.time() - start, **summary},
                )
        return folder

