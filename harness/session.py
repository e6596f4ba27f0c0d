"""Cells and their identities: what a sweep plans before any work.

A cell is (method, variant, protocol, dataset, seed); with the run settings it resolves to its
identity: the full config, the protocol's version and the hash (so the code version) of every
artifact it uses. The identity's hash names its result file, so a result made by older code is
not "done": the cell runs again, and the new result replaces the old one (``stale``). A
``Session`` holds what the cells of one run share (datasets, methods, configs).
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch

from harness.accel import Accel, TrainConfig
from harness.artifacts import Artifact
from harness.config import PretrainConfig, config_hash
from harness.datasets.base import FaceDataset
from harness.errors import BenchError
from harness.registry import DATASETS, METHODS, PROTOCOLS, load_plugins
from harness.method import Method, MethodContext
from harness.protocol import Protocol

T = TypeVar("T")


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
        self._memo: Optional[dict[tuple, Any]] = None  # see ``planning``

    @contextlib.contextmanager
    def planning(self) -> Iterator["Session"]:
        """While planning, remember each method, protocol and identity once (per method, variant
        and seed, not per cell: a 3,300-cell sweep has 700 of them). Planning trains, loads and
        writes nothing, so nothing they depend on changes meanwhile. Methods are then shared
        between cells: outside this block each call makes a fresh one, as a run needs."""
        outer = self._memo
        self._memo = {} if outer is None else outer
        try:
            yield self
        finally:
            self._memo = outer

    def _remember(self, key: tuple, make: Callable[[], T]) -> T:
        """``make()``, made once per key while ``planning``."""
        if self._memo is None:
            return make()
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @functools.cached_property
    def device(self) -> torch.device:
        if self.settings.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device is visible; use --device cpu or run on a GPU node")
        self.accel.apply_backend_flags()  # TF32 for training and feature extraction alike
        return torch.device(self.settings.device)

    @functools.cached_property
    def train(self) -> TrainConfig:
        """The ``train`` section: how training uses the device."""
        return TrainConfig.resolve(self.settings.preset, self.settings.section("train"), "train")

    @functools.cached_property
    def accel(self) -> Accel:
        """The ``train`` switches resolved for ``--device``."""
        return Accel.resolve(self.train, self.settings.device)

    def dataset(self, name: str) -> FaceDataset:
        if name not in self._datasets:
            cls = DATASETS.get(name)
            cfg = cls.Config.resolve(self.settings.preset, self.settings.section(name, cls.Config.SHARED_SECTIONS), name)
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
        return self._remember(("method", name, variant, seed), lambda: self._new_method(name, variant, seed))

    def _new_method(self, name: str, variant: str, seed: int) -> Method:
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
            load_video=lambda: self.dataset(pre.clips).video(),
            video_fingerprint=self._fingerprint(pre.clips, "video"),
            accel=self.accel,
        )
        return cls(cfg, variant, ctx)

    def _fingerprint(self, name: str, task: str) -> dict:
        """Fingerprint of a pretraining dataset, or a placeholder error if it cannot be opened
        (fixed methods never look at it; learned ones fail with the dataset's own message)."""
        try:
            return self.dataset(name).fingerprint(task)
        except BenchError as exc:
            return {"name": name, "unavailable": str(exc)}

    def protocol(self, name: str) -> Protocol:
        def make() -> Protocol:
            cls = PROTOCOLS.get(name)
            return cls(cls.Config.resolve(self.settings.preset, self.settings.section(name), name))

        return self._remember(("protocol", name), make)

    def artifacts(self, name: str, variant: str, seed: int, method: Optional[Method] = None) -> list[Artifact]:
        """``method(name, variant, seed).artifacts()``: what it trains, dependencies first
        (``method``: that method, where the caller has made it already)."""
        return self._remember(("artifacts", name, variant, seed), lambda: (method or self.method(name, variant, seed)).artifacts())

    def resolve(self, cell: Cell) -> dict[str, Any]:
        """The identity of a cell: everything that can change its numbers (except the seed),
        the code versions included: the protocol's, and every artifact's hash."""
        method, trained = self._method_identity(cell.method, cell.variant, cell.seed)
        return {
            "preset": self.settings.preset,
            "method": method,
            "protocol": self._protocol_identity(cell.protocol),
            "dataset": self._remember(("dataset identity", cell.dataset), lambda: self.dataset(cell.dataset).fingerprint()),
            **trained,
        }

    def _protocol_identity(self, name: str) -> dict[str, Any]:
        """The protocol's share of a cell's identity: its version and config."""

        def make() -> dict[str, Any]:
            protocol = self.protocol(name)
            return {"name": name, "version": protocol.version, "config": protocol.cfg.to_dict()}

        return self._remember(("protocol identity", name), make)

    def _method_identity(self, name: str, variant: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The method's share of a cell's identity: its config, and what its model comes from
        (the weight file, or the pretraining data, the trained artifacts and the training switches)."""

        def make() -> tuple[dict[str, Any], dict[str, Any]]:
            method = self.method(name, variant, seed)
            trained: dict[str, Any] = {}
            weights = method.weights_file()
            artifacts = self.artifacts(name, variant, seed, method) if weights is None else []
            if weights is not None:  # loaded from a file: the file is the model, no pretraining data
                trained["weights"] = weights
            elif artifacts:  # only learned methods depend on the pretraining data and trained code
                trained["pretrain"] = {
                    "config": self.pretrain.to_dict(),
                    "data": method.ctx.pretrain_fingerprint,
                    "clips": method.ctx.clips_fingerprint,
                }
                trained["artifacts"] = [{"kind": a.kind, "version": a.version, "hash": a.hash} for a in artifacts]
                trained.update(self.accel.key())  # bf16 / TF32 training is a different setting
            return {"name": name, "variant": variant, "config": method.cfg.to_dict()}, trained

        return self._remember(("identity", name, variant, seed), make)

    def result_path(self, cell: Cell, resolved: Optional[dict[str, Any]] = None) -> Path:
        """Where the cell's result file goes: named by its config hash."""
        if resolved is None:
            return self._remember(("result", cell), lambda: self.result_path(cell, self.resolve(cell)))
        return self.result_folder(cell) / f"{cell.method}--{cell.variant}--seed{cell.seed}--{config_hash(resolved)}.json"

    def result_folder(self, cell: Cell) -> Path:
        """The folder of the cell's result files (of every code version)."""
        return Path(self.settings.results_dir) / cell.protocol / cell.dataset

    def stale(self, cell: Cell, resolved: Optional[dict[str, Any]] = None, current: Optional[Path] = None) -> list[tuple[Path, str]]:
        """Result files of this cell with these settings that older code made: ``(path, what changed)``.

        ``current``: the cell's result file where the caller has it already (``result_path``);
        the files beside it are searched."""
        folder = current.parent if current is not None else self.result_folder(cell)
        prefix = f"{cell.method}--{cell.variant}--seed{cell.seed}--"  # the files ``<prefix>*.json``
        names, found = self._names_in(folder), []
        i = bisect.bisect_left(names, prefix)
        while i < len(names) and names[i].startswith(prefix):
            if names[i].endswith(".json"):
                found.append(folder / names[i])
            i += 1
        if not found:
            return []  # a new cell: no need to resolve it (--dry-run and --status ask of every cell)
        resolved = resolved if resolved is not None else self.resolve(cell)
        current = current if current is not None else self.result_path(cell, resolved)
        out = []
        for path in found:
            if path == current:
                continue
            try:
                old = json.loads(path.read_text())["config"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a result file: tables refuse it with their own message
            if settings_only(old) == settings_only(resolved):
                out.append((path, code_changes(old, resolved)))
        return out

    def _names_in(self, folder: Path) -> list[str]:
        """The sorted names in a results folder (none if it does not exist): listed once per
        folder while planning, where a glob per cell read the folder once per cell."""

        def make() -> list[str]:
            try:
                return sorted(os.listdir(folder))
            except OSError:  # no such folder (yet), or one that cannot be read: as a glob sees it
                return []

        return self._remember(("names in", folder), make)


@functools.lru_cache(maxsize=4)
def _session(settings_key: str) -> Session:
    return Session(Settings(**json.loads(settings_key)))


def session_for(settings: Settings) -> Session:
    """One Session per settings per process (so inline sweeps load each dataset once)."""
    return _session(json.dumps(dataclasses.asdict(settings), sort_keys=True))


def settings_only(resolved: dict[str, Any]) -> dict[str, Any]:
    """A cell identity without the code's versions (artifact hashes, protocol version, data generator)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "generator"}
        return value

    out = strip(resolved)  # new dicts at every level: popping below leaves ``resolved`` as it is
    out.pop("artifacts", None)
    out.get("protocol", {}).pop("version", None)
    return out


def code_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs in the code versions of two identities with the same settings, readably."""
    changes = []
    if old.get("protocol", {}).get("version") != new["protocol"]["version"]:
        changes.append(f"protocol {new['protocol']['name']} v{old.get('protocol', {}).get('version')} -> v{new['protocol']['version']}")
    if "artifacts" not in old and "artifacts" in new:
        changes.append("made before results recorded artifact versions")
    elif "artifacts" in new:
        before = {a["kind"]: a for a in old["artifacts"]}
        for artifact in new["artifacts"]:
            was = before.get(artifact["kind"])
            if was is None or was["hash"] != artifact["hash"]:
                versions = f"v{was['version']} -> v{artifact['version']}" if was and was["version"] != artifact["version"] else "key changed"
                changes.append(f"{artifact['kind']} {versions}")
    old_data, new_data = generators(old), generators(new)
    if old_data != new_data:
        changes.append(f"data generator {', '.join(old_data)} -> {', '.join(new_data)}")
    return ", ".join(changes) or "code version"


def generators(value: Any) -> list[str]:
    """The data generator versions named anywhere in an identity (synthetic data), sorted."""
    found: set[str] = set()
    if isinstance(value, dict):
        found.update(str(v) for k, v in value.items() if k == "generator")
        for v in value.values():
            found.update(generators(v))
    return sorted(found)
