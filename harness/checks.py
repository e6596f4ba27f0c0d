"""Everything a run checks before any work starts, so that a bad request never costs a training run.

Field values are checked by their configs (``harness.config``: each config's ``RULES`` and
``check()``, run whenever a config is resolved). This module checks a run as a whole: that every
``--set`` section and key exists, that every config the cells use resolves, that each cell's
method, protocol and dataset go together, that the pretraining data exists and is large enough
for the batch sizes that train on it, that the device exists and that results and cache can be
written. Each failure is a ``BenchError``: one line, exit code 2, nothing written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from harness.accel import TrainConfig
from harness.config import Config, PretrainConfig
from harness.errors import BenchError
from harness.registry import DATASETS, METHODS, PROTOCOLS, SUITES
from harness.session import Cell, Session


def known_sections() -> dict[str, type[Config]]:
    """Every ``--set`` section and its config: ``pretrain``, ``train`` and each registered name."""
    sections: dict[str, type[Config]] = {"pretrain": PretrainConfig, "train": TrainConfig}
    for registry in (METHODS, PROTOCOLS, DATASETS):
        sections.update({name: registry.get(name).Config for name in registry.names()})
    # a suite's section takes its members' settings (those they share, SHARED_SECTIONS)
    sections.update({name: DATASETS.get(members[0]).Config for name, members in SUITES.items()})
    return sections


def check_run(session: Session, cells: list[Cell]) -> None:
    """All pre-flight checks of a run of ``cells`` (nothing is trained, loaded or written)."""
    settings = session.settings
    sections = known_sections()  # the sections' names were checked as the command line was read
    for name in settings.overrides:  # every section a setting names resolves, used by these cells or not
        sections[name].resolve(settings.preset, settings.section(name, sections[name].SHARED_SECTIONS), name)
    check_pretraining(session.pretrain)
    session.device  # noqa: B018 -- fails now if cuda was asked for and is absent
    for cell in cells:
        check_cell(session, cell)
    check_training_data(session, cells)
    check_writable(Path(settings.results_dir), "--results-dir")
    check_writable(Path(settings.cache_dir), "--cache-dir")
    if settings.dump_features:
        check_writable(Path(settings.dump_features), "--dump-features")


def check_pretraining(pretrain: PretrainConfig) -> None:
    """``pretrain.data`` and ``pretrain.clips`` name datasets that can serve them."""
    for field, task in (("data", "pretrain"), ("clips", "clips")):
        name = getattr(pretrain, field)
        if task not in DATASETS.get(name).tasks:
            able = ", ".join(n for n in DATASETS.names() if task in DATASETS.get(n).tasks)
            raise BenchError(f"pretrain.{field}={name}: that dataset has no {task} split; choose one of {able}")


def check_cell(session: Session, cell: Cell) -> None:
    """The cell's method, protocol and dataset exist, go together and resolve their configs."""
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
    session.method(cell.method, cell.variant, cell.seed)
    session.protocol(cell.protocol)
    session.dataset(cell.dataset)  # data-root problems surface now, as one line


def unavailable(value: Any) -> str | None:
    """The message of a data fingerprint that could not be taken (``Session._fingerprint``), if any."""
    if isinstance(value, Mapping):
        if "unavailable" in value:
            return str(value["unavailable"])
        return next((m for v in value.values() if (m := unavailable(v))), None)
    return None


def check_training_data(session: Session, cells: list[Cell]) -> None:
    """Methods that still have to train can read their data, and each batch size fits it.

    A training loop drops the last partial batch, so a batch larger than the data it batches
    would train nothing; the sizes come from ``FaceDataset.size`` where a dataset can tell
    without loading anything (otherwise the training loop says so when it starts).
    """
    cache = Path(session.settings.cache_dir)
    seen = set()
    for cell in cells:
        if (cell.method, cell.variant) in seen:
            continue
        method = session.method(cell.method, cell.variant, cell.seed)
        todo = [a for a in method.artifacts() if not a.is_built(cache)]
        if not todo:
            continue
        seen.add((cell.method, cell.variant))
        for artifact in todo:
            problem = unavailable(artifact.key)
            if problem:
                raise BenchError(problem)
        for field, (task, cap) in method.batches.items():
            name = session.pretrain.data if task == "pretrain" else session.pretrain.clips
            available = session.dataset(name).size(task)
            if available is None:
                continue
            limit = getattr(method.cfg, cap) if cap else 0
            usable = min(available, limit) if limit else available
            batch = getattr(method.cfg, field)
            if batch > usable:
                capped = f", {cell.method}.{cap}={limit}" if limit and limit < available else ""
                raise BenchError(
                    f"{cell.method}.{field}={batch} is larger than the {usable} {task} images it batches "
                    f"({name}{capped}), so training would never take a step; lower it"
                )


def check_writable(path: Path, option: str) -> None:
    """``path`` is a folder that can be written, or one that can be created (nothing is created here)."""
    path = path.expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BenchError(f"{option} {path}: {probe} is a file, not a folder; choose another {option}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {path}: {probe} cannot be written (read-only or no permission); choose another {option}")
