"""Cells and how one is run: dataset -> method training -> features -> protocol -> result file.

A cell is (method, variant, protocol, dataset, seed); with the run settings it resolves to a
full config whose hash names its result file. ``run_cell`` is a plain function of picklable
arguments, so every executor (inline, local processes, Slurm arrays) submits the same thing.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

from harness.config import PretrainConfig, config_hash
from harness.datasets.base import FaceDataset
from harness.errors import BenchError
from harness.features import FeatureSource
from harness.io import write_json
from harness.provenance import git_state, provenance
from harness.registry import DATASETS, METHODS, PROTOCOLS, load_plugins
from harness.method import Method, MethodContext


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every cell of one invocation shares.

    Attributes:
        preset: ``smoke``, ``quick`` or ``paper``.
        overrides: ``--set`` values by section, e.g. ``{"fer": {"epochs": "5"}}``.
        data_root: parent folder of the real datasets (``None``: only generated data works).
        results_dir: where result JSON files, tables and figures go.
        cache_dir: decoded images, trained artifacts and features.
        device: ``cpu`` or ``cuda``.
        dump_features: also write each cell's features under this folder (``dump_folder``).
    """

    preset: str = "quick"
    overrides: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    data_root: Optional[str] = None
    results_dir: str = "results"
    cache_dir: str = ".cache"
    device: str = "cpu"
    dump_features: Optional[str] = None

    def section(self, name: str, shared: tuple[str, ...] = ()) -> dict[str, str]:
        """``--set`` values of section ``name``, over those of the ``shared`` sections."""
        merged: dict[str, str] = {}
        for section in (*shared, name):
            merged.update(self.overrides.get(section, {}))
        return merged


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    """One entry of the benchmark grid."""

    method: str
    variant: str
    protocol: str
    dataset: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.method}[{self.variant}] {self.protocol}/{self.dataset} seed {self.seed}"


class Session:
    """Per-process memo of datasets and configs for one ``Settings`` (data loads once)."""

    def __init__(self, settings: Settings) -> None:
        load_plugins()
        self.settings = settings
        self._datasets: dict[str, FaceDataset] = {}

    @functools.cached_property
    def device(self) -> torch.device:
        if self.settings.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device is visible; use --device cpu or run on a GPU node")
        return torch.device(self.settings.device)

    def dataset(self, name: str) -> FaceDataset:
        if name not in self._datasets:
            cls = DATASETS.get(name)
            cfg = cls.Config.resolve(self.settings.preset, self.settings.section(name), name)
            root = Path(self.settings.data_root).expanduser() if self.settings.data_root else None
            if cls.needs_root and (root is None or not root.is_dir()):
                raise BenchError(
                    f"dataset {name!r} needs the data root, but {root or '(none given)'} is not a folder; "
                    "pass --data-root DIR or set BENCH_DATA_ROOT"
                )
            self._datasets[name] = cls(cfg, root, Path(self.settings.cache_dir))
        return self._datasets[name]

    @functools.cached_property
    def pretrain(self) -> PretrainConfig:
        return PretrainConfig.resolve(self.settings.preset, self.settings.section("pretrain"), "pretrain")

    def method(self, name: str, variant: str, seed: int) -> Method:
        cls = METHODS.get(name)
        cfg = cls.Config.resolve(self.settings.preset, self.settings.section(name, cls.Config.SHARED_SECTIONS), name)
        pre = self.pretrain
        ctx = MethodContext(
            seed=seed,
            device=self.device,
            cache_dir=Path(self.settings.cache_dir),
            pretrain=pre,
            load_pretrain=lambda: self.dataset(pre.data).pretrain(),
            load_clips=lambda: self.dataset(pre.clips).clips(),
            pretrain_fingerprint=self._fingerprint(pre.data, "pretrain"),
            clips_fingerprint=self._fingerprint(pre.clips, "clips"),
        )
        return cls(cfg, variant, ctx)

    def _fingerprint(self, name: str, task: str) -> dict:
        """Fingerprint of a pretraining dataset, or a placeholder error if it cannot be opened
        (fixed methods never look at it; learned ones fail with the dataset's own message)."""
        try:
            return self.dataset(name).fingerprint(task)
        except BenchError as exc:
            return {"name": name, "unavailable": str(exc)}

    def protocol(self, name: str):
        cls = PROTOCOLS.get(name)
        return cls(cls.Config.resolve(self.settings.preset, self.settings.section(name), name))

    def resolve(self, cell: Cell) -> dict[str, Any]:
        """The full config of a cell (everything that can change its numbers, except the seed)."""
        method = self.method(cell.method, cell.variant, cell.seed)
        protocol = self.protocol(cell.protocol)
        resolved: dict[str, Any] = {
            "preset": self.settings.preset,
            "method": {"name": cell.method, "variant": cell.variant, "config": method.cfg.to_dict()},
            "protocol": {"name": cell.protocol, "version": protocol.version, "config": protocol.cfg.to_dict()},
            "dataset": self.dataset(cell.dataset).fingerprint(),
        }
        weights = method.weights_file()
        if weights is not None:  # loaded from a file: the file is the model, no pretraining data
            resolved["weights"] = weights
        elif method.artifacts():  # only learned methods depend on the pretraining data
            resolved["pretrain"] = {
                "config": self.pretrain.to_dict(),
                "data": method.ctx.pretrain_fingerprint,
                "clips": method.ctx.clips_fingerprint,
            }
        return resolved

    def result_path(self, cell: Cell, resolved: Optional[dict[str, Any]] = None) -> Path:
        """Where the cell's result file goes: named by its config hash."""
        h = config_hash(resolved if resolved is not None else self.resolve(cell))
        name = f"{cell.method}--{cell.variant}--seed{cell.seed}--{h}.json"
        return Path(self.settings.results_dir) / cell.protocol / cell.dataset / name


@functools.lru_cache(maxsize=4)
def _session(settings_key: str) -> Session:
    return Session(Settings(**json.loads(settings_key)))


def session_for(settings: Settings) -> Session:
    """One Session per settings per process (so inline sweeps load each dataset once)."""
    return _session(json.dumps(dataclasses.asdict(settings), sort_keys=True))


def check_cell(session: Session, cell: Cell) -> None:
    """Fail early, before anything is written, when a cell cannot run."""
    method_cls = METHODS.get(cell.method)
    if cell.variant not in method_cls.variants:
        raise BenchError(f"method {cell.method!r} has no variant {cell.variant!r}; variants: {', '.join(method_cls.variants)}")
    protocol_cls = PROTOCOLS.get(cell.protocol)
    dataset_cls = DATASETS.get(cell.dataset)
    if not protocol_cls.supports(method_cls):
        raise BenchError(f"protocol {cell.protocol!r} cannot evaluate method {cell.method!r}; see --list for what each protocol needs")
    if protocol_cls.task not in dataset_cls.tasks:
        raise BenchError(
            f"dataset {cell.dataset!r} cannot be used with protocol {cell.protocol!r} "
            f"(it supports: {', '.join(sorted(dataset_cls.tasks))}); pick another --datasets or --protocol"
        )
    session.dataset(cell.dataset)  # data-root problems surface now, as one line


def run_cell(cell: Cell, settings: Settings, executor: Optional[dict] = None) -> str:
    """Run one cell (training whatever it needs) and write its result file; returns its path."""
    session = session_for(settings)
    resolved = session.resolve(cell)
    path = session.result_path(cell, resolved)
    start, tic = datetime.now(timezone.utc), time.time()
    method = session.method(cell.method, cell.variant, cell.seed)
    protocol = session.protocol(cell.protocol)
    dataset = session.dataset(cell.dataset)
    features = FeatureSource(method, dataset, protocol, Path(settings.cache_dir))
    metrics = protocol.evaluate(dataset, features, cell.seed)
    if settings.dump_features:
        identity = {**dataclasses.asdict(cell), "config_hash": config_hash(resolved), "preset": settings.preset, "result": str(path)}
        features.dump(dump_folder(settings, path), identity)
    record = {
        "cell": {**dataclasses.asdict(cell), "config_hash": config_hash(resolved), "preset": settings.preset},
        "config": resolved,
        "metrics": metrics,
        "method_info": method.info(),
        "provenance": {
            **provenance(session.device),
            "executor": executor or {"name": "inline"},
            "start_time": start.isoformat(),
            "end_time": datetime.now(timezone.utc).isoformat(),
            "wall_seconds": round(time.time() - tic, 3),
        },
    }
    write_json(path, record)
    # as it happens, so that a log (Slurm, nohup) shows each result, not only the final tables
    print(f"cell done: {cell.label}: {protocol.summary(metrics)} ({record['provenance']['wall_seconds']:.1f} s)", flush=True)
    return str(path)


def dump_folder(settings: Settings, result_path: Path) -> Path:
    """Where ``--dump-features`` puts a cell's features: ``DIR/<protocol>/<dataset>/<result file stem>/``."""
    result_path = Path(result_path)
    return Path(settings.dump_features) / result_path.parent.parent.name / result_path.parent.name / result_path.stem


def submit_time_git() -> dict:
    """Git state when a sweep is submitted (code may change before a queued job starts)."""
    return git_state()
