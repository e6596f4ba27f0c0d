"""How one cell is run: dataset -> method training -> features -> protocol -> result file.

``run_cell`` is a plain function of picklable arguments, so every executor (inline, local
processes, Slurm arrays) submits the same thing. Processes sharing a results store and cache
run each cell once: a cell's lock file makes the others wait, and a result written by another
process meanwhile is kept (docs/shared-store.md). A result made by older code is moved to
``<results>/superseded/``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from harness import compare, timing
from harness.config import config_hash
from harness.features import FeatureSource
from harness.io import make_dirs, write_json
from harness.locks import file_lock
from harness.provenance import git_state, provenance
from harness.session import Cell, Settings, session_for


def supersede(results_dir: Path, stale: list[tuple[Path, str]]) -> None:
    """Move result files made by older code to ``<results>/superseded/`` (out of the tables)."""
    for path, why in stale:
        target = Path(results_dir) / "superseded" / path.relative_to(results_dir)
        make_dirs(target.parent)
        os.replace(path, target)
        print(f"superseded {path} ({why}); moved to {target}", flush=True)


def run_cell(
    cell: Cell, settings: Settings, executor: Optional[dict] = None, seen: Optional[tuple] = None, wait: bool = True
) -> Optional[str]:
    """Run one cell (training whatever it needs) and write its result file; returns its path.

    Processes sharing the results folder and cache run a cell once at a time: the one holding
    its lock file (``cell_lock``) runs it, the others wait.

    Args:
        seen: what the caller's sweep saw at the result path when it started
            (``result_stamp``; ``()``: no file). A result that differs from it was written by
            another process since then, so it is kept, not computed again (with ``--rerun``
            too: the other process's result is as new as this sweep's would be). None: run
            the cell whatever is there.
        wait: if False and another process is running the cell, return None at once.
    """
    session = session_for(settings)
    resolved = session.resolve(cell)
    path = session.result_path(cell, resolved)
    lock = cell_lock(settings, path)
    make_dirs(lock.parent)
    with file_lock(lock, f"cell {cell.label}", wait) as held:
        if not held:
            return None
        if seen is not None and result_stamp(path) not in ((), seen) and not missing_dump(settings, path):
            print(f"cell already done by another process: {cell.label} -> {path}", flush=True)
            return str(path)
        return _evaluate(cell, settings, executor, resolved, path)


def run_cells(cells: list[Cell], settings: Settings, executor: dict) -> list[str]:
    """Run cells in this process; returns their result paths.

    A cell that another process (a second sweep on the same store) is running is put off until
    the others are done and then waited for, so that two sweeps share the work instead of
    taking turns at each cell.
    """
    session = session_for(settings)
    with session.planning():  # before any work: a result that differs later was written by another process meanwhile
        seen = {cell: result_stamp(session.result_path(cell)) for cell in cells}
    paths = {cell: run_cell(cell, settings, executor, seen[cell], wait=False) for cell in cells}
    for cell in [c for c in cells if paths[c] is None]:
        paths[cell] = run_cell(cell, settings, executor, seen[cell])
    return [paths[cell] for cell in cells]


def _evaluate(cell: Cell, settings: Settings, executor: Optional[dict], resolved: dict[str, Any], path: Path) -> str:
    """The work of ``run_cell``: features, protocol, result file."""
    session = session_for(settings)
    start, tic = datetime.now(timezone.utc), time.time()
    method = session.method(cell.method, cell.variant, cell.seed)
    protocol = session.protocol(cell.protocol)
    dataset = session.dataset(cell.dataset)
    features = FeatureSource(method, dataset, protocol, Path(settings.cache_dir))
    with timing.stage(f"protocol {cell.protocol}"):
        metrics = protocol.evaluate(dataset, features, cell.seed)
    outcomes = metrics.pop("outcomes", None)  # per-item, stored packed beside the metrics
    if settings.dump_features:
        identity = {**dataclasses.asdict(cell), "config_hash": config_hash(resolved), "preset": settings.preset, "result": str(path)}
        features.dump(dump_folder(settings, path), identity)
    record = {
        "format": compare.FORMAT,
        "cell": {**dataclasses.asdict(cell), "config_hash": config_hash(resolved), "preset": settings.preset},
        "config": resolved,
        "metrics": metrics,
        "method_info": method.info(),
        "train": {"config": session.train.to_dict(), "effective": session.accel.describe()},
        "provenance": {
            **provenance(session.device),
            "executor": executor or {"name": "inline"},
            "start_time": start.isoformat(),
            "end_time": datetime.now(timezone.utc).isoformat(),
            "wall_seconds": round(time.time() - tic, 3),
        },
    }
    if outcomes is not None:
        record["outcomes"] = compare.pack(outcomes)
    write_json(path, record)
    supersede(Path(settings.results_dir), session.stale(cell, resolved))
    # as it happens, so that a log (Slurm, nohup) shows each result, not only the final tables
    print(f"cell done: {cell.label}: {protocol.summary(metrics)} ({record['provenance']['wall_seconds']:.1f} s)", flush=True)
    return str(path)


def store_locks(results_dir: str | Path, cache_dir: str | Path) -> Path:
    """Folder of the lock files of a results store's cells and tables:
    ``<cache>/locks/<hash of the store's absolute path>``. In the cache, so that a run stopped by
    bad input leaves the store as it was."""
    return Path(cache_dir) / "locks" / config_hash({"results_dir": str(Path(results_dir).resolve())})


def cell_lock(settings: Settings, result_path: Path) -> Path:
    """The lock file of a result: ``<store locks>/<protocol>/<dataset>/<result name>.lock``."""
    folder = store_locks(settings.results_dir, settings.cache_dir) / result_path.parent.parent.name / result_path.parent.name
    return folder / f"{result_path.stem}.lock"


def result_stamp(path: Path) -> tuple:
    """Identity of the file at ``path`` (inode, modification time, size), ``()`` if there is none:
    a rewrite (a new file renamed onto the path) changes it, without comparing clocks."""
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return ()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def dump_folder(settings: Settings, result_path: Path) -> Path:
    """Where ``--dump-features`` puts a cell's features: ``DIR/<protocol>/<dataset>/<result file stem>/``."""
    result_path = Path(result_path)
    return Path(settings.dump_features) / result_path.parent.parent.name / result_path.parent.name / result_path.stem


def missing_dump(settings: Settings, result_path: Path) -> bool:
    """``--dump-features`` was asked for and this cell's dump is not complete."""
    return bool(settings.dump_features) and not (dump_folder(settings, result_path) / "cell.json").exists()


def submit_time_git() -> dict:
    """Git state when a sweep is submitted (code may change before a queued job starts)."""
    return git_state()
