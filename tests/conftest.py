"""Shared fixtures: the real data root (or a skip), and a tiny in-memory dataset."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.config import Config, at_least
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.registry import DATASETS, load_plugins, register_dataset

load_plugins()
# tests use tiny tensors: one thread avoids oversubscribing the 2-core CI machine; an explicit
# OMP_NUM_THREADS wins (CI's second numerics profile runs the `numerics` tests with 2)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture
def real_data_root() -> Path:
    """``$BENCH_DATA_ROOT`` (CI points it at ../shared/data); skips when the data is absent."""
    root = Path(os.environ.get("BENCH_DATA_ROOT", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    if not (root / "lfw" / "pairs.txt").exists() or not (root / "fer2013" / "train").is_dir():
        pytest.skip(f"real LFW / FER-2013 not found under {root}; set BENCH_DATA_ROOT to run this test")
    return root


def load_script(name: str, folder: str = "scripts") -> types.ModuleType:
    """A script as a module: a tool of ``scripts/`` or a study beside its write-up in ``docs/``
    (they are run as files, not installed as a package)."""
    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class ToyConfig(Config):
    size: int = 16

    RULES = {"size": at_least(2)}


if "toy" not in DATASETS:

    @register_dataset("toy")
    class Toy(FaceDataset):
        """Two classes: the bright half of the image is the left or the right one; 10 folds of pairs."""

        tasks = frozenset({"fer", "verification", "pretrain"})
        Config = ToyConfig
        needs_root = False

        def _images(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            labels = torch.arange(n) % 2
            half = self.cfg.size // 2
            images = 100 + torch.randn(n, 3, self.cfg.size, self.cfg.size, generator=g) * 25
            images[labels == 0, :, :, :half] += 60
            images[labels == 1, :, :, half:] += 60
            return images.clamp(0, 255).to(torch.uint8), labels

        def fer_split(self, split: str) -> ImageSet:
            images, labels = self._images(80 if split == "train" else 40, 0 if split == "train" else 1)
            return ImageSet(images, labels=labels, class_names=("dark", "bright"))

        def verification(self) -> tuple[ImageSet, PairList]:
            images, labels = self._images(40, 2)
            g = torch.Generator().manual_seed(3)
            left, right, same, fold = [], [], [], []
            for k in range(10):
                for s in (True, False):
                    for _ in range(4):
                        a = int(torch.randint(40, (1,), generator=g))
                        pool = (labels == labels[a]) if s else (labels != labels[a])
                        choices = pool.nonzero().squeeze(1)
                        b = int(choices[torch.randint(len(choices), (1,), generator=g)])
                        left.append(a), right.append(b), same.append(s), fold.append(k)
            return ImageSet(images, identities=labels), PairList(
                torch.tensor(left), torch.tensor(right), torch.tensor(same), torch.tensor(fold)
            )

        def pretrain(self) -> ImageSet:
            return ImageSet(self._images(64, 4)[0])

        def size(self, task: str) -> int | None:
            return 64 if task == "pretrain" else None
