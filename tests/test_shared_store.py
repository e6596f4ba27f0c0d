"""Processes sharing one store and cache do each piece of work once; a killed one blocks nobody.

Two sweeps on one ``--results-dir`` and ``--cache-dir`` (two people, a rerun beside a running
evaluation array) wait for each other's cache entries and cells and reuse them; a lock held by a
process that was killed is released by the kernel (``harness.locks``).
"""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import harness.locks
from harness.cli import main
from harness.io import cached
from harness.runner import result_stamp, run_cell
from harness.session import Cell, Settings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so that "tests.hold_points" imports as a --plugins module
    sys.path.insert(0, str(REPO))
#: Six cells of fixed methods on small synthetic splits; fer and knn read the same features.
SWEEP = [
    "--preset", "smoke", "--methods", "pixels,random-cnn", "--datasets", "synthetic", "--protocol", "fer,knn,verification",
    "--set", "synthetic.fer_train_images=140", "--set", "synthetic.fer_test_images=70",
]
CHILDREN: list[multiprocessing.Process] = []


def start(function, *args, log: Path, env: dict[str, str] | None = None) -> multiprocessing.Process:
    """Start ``function(*args)`` in a forked child (no seconds spent importing torch again)
    whose output goes to ``log``; this process runs torch on one thread (conftest)."""
    log.touch()

    def target() -> None:
        os.environ.update(env or {})
        sys.stdout = sys.stderr = open(log, "a", buffering=1)
        result = function(*args)
        sys.exit(result if isinstance(result, int) else 0)

    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    CHILDREN.append(child)
    return child


@pytest.fixture(autouse=True)
def no_child_left():
    """A failed test kills the children it started (one may be holding a lock for a minute)."""
    yield
    while CHILDREN:
        child = CHILDREN.pop()
        if child.is_alive():
            child.kill()
            child.join()


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("end", ["killed", "resumed"])
def test_two_sweeps_on_one_store_compute_each_feature_and_cell_once(tmp_path, end):
    """The first sweep stops while it holds a cell's and a feature entry's locks; the second one
    waits for that entry; then the first is killed (its locks must not block the second) or
    resumed (the second must reuse its entry and leave it its cell)."""
    store = ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second", "rerun")}
    first = start(main, [*SWEEP, *store, "--plugins", "tests.hold_points"], log=logs["first"],
                  env={"BENCH_HOLD": f"{tmp_path}:2"})  # holds the fer cell and its test features
    wait_for(lambda: (tmp_path / "held").exists() or not first.is_alive(), "the first sweep to hold its second entry")
    assert first.is_alive(), logs["first"].read_text()[-3000:]
    second = start(main, [*SWEEP, *store], log=logs["second"])
    waiting = re.compile(rf"^waiting for the features cache entry \w+: \S+ pid {first.pid} since ", re.M)
    wait_for(lambda: waiting.search(logs["second"].read_text()) or not second.is_alive(), "the second sweep to wait for the entry")
    assert second.is_alive(), logs["second"].read_text()[-3000:]
    if end == "killed":
        os.kill(first.pid, signal.SIGKILL)
    else:
        (tmp_path / "go").touch()
    first.join(120)
    second.join(120)
    assert first.exitcode == (-signal.SIGKILL if end == "killed" else 0), logs["first"].read_text()[-3000:]
    assert second.exitcode == 0, logs["second"].read_text()[-3000:]
    rerun = start(main, [*SWEEP, *store], log=logs["rerun"])
    rerun.join(120)
    text = {name: log.read_text() for name, log in logs.items()}
    assert rerun.exitcode == 0, text["rerun"][-3000:]
    assert "6 cells, 6 already done, 0 to run" in text["rerun"]

    results = sorted((tmp_path / "results").glob("*/*/*.json"))
    assert len(results) == 6 and all(json.loads(p.read_text())["metrics"] for p in results)
    done = [line for t in text.values() for line in t.splitlines() if line.startswith("cell done: ")]
    assert len(done) == len(set(done)) == 6, done  # each cell written by one process, once
    # each feature entry computed once: one closing progress line per entry, across the processes
    computed = [line.split("] ", 1)[1].split(": done")[0] for t in text.values() for line in t.splitlines()
                if re.match(r"^\[[\d:]+\] \S+ features \S+: done, ", line)]
    assert len(computed) == len(list((tmp_path / "cache" / "features").glob("*.json"))), computed
    assert computed.count("pixels features test") == 1
    # the entry the first sweep held is computed by the second one only if the first was killed
    assert ("pixels features test: done" in text["second"]) == (end == "killed")
    if end == "resumed":
        assert "cell done: pixels[default] fer/synthetic" in text["first"]  # the cell it held is left to it


def test_a_cache_entry_being_built_is_waited_for_and_reused(tmp_path, capsys):
    key = {"entry": 1}

    def slow_build() -> torch.Tensor:
        (tmp_path / "building").touch()
        wait_for(lambda: (tmp_path / "go").exists(), "the go-ahead")
        return torch.arange(6.0)

    builder = start(cached, tmp_path, "kind", key, slow_build, log=tmp_path / "builder.log")
    wait_for(lambda: (tmp_path / "building").exists(), "the builder to start")
    threading.Timer(1.0, (tmp_path / "go").touch).start()
    value = cached(tmp_path, "kind", key, lambda: torch.full((6,), -1.0))  # would be wrong if built here
    builder.join(60)
    assert builder.exitcode == 0 and torch.equal(value, torch.arange(6.0))
    assert re.search(rf"waiting for the kind cache entry \w+: \S+ pid {builder.pid} since ", capsys.readouterr().out)


def test_a_cache_entry_whose_builder_was_killed_is_built_by_the_next_process(tmp_path):
    key = {"entry": 2}

    def dying_build() -> torch.Tensor:
        (tmp_path / "building").touch()
        time.sleep(60)
        return torch.zeros(6)

    def waiter() -> None:  # in a child: a lock that stays held fails the test instead of hanging it
        torch.save(cached(tmp_path, "kind", key, lambda: torch.arange(6.0)), tmp_path / "value.pt")

    builder = start(cached, tmp_path, "kind", key, dying_build, log=tmp_path / "builder.log")
    wait_for(lambda: (tmp_path / "building").exists(), "the builder to start")
    second = start(waiter, log=tmp_path / "waiter.log")
    wait_for(lambda: "waiting for" in (tmp_path / "waiter.log").read_text(), "the second process to wait")
    os.kill(builder.pid, signal.SIGKILL)
    second.join(30)  # the lock goes with its holder, not after the builder's 60 s
    assert second.exitcode == 0, (tmp_path / "waiter.log").read_text()
    assert torch.equal(torch.load(tmp_path / "value.pt"), torch.arange(6.0))
    assert f"pid {builder.pid} since" in (tmp_path / "waiter.log").read_text()


def test_a_result_written_by_another_process_since_the_sweep_started_is_kept(tmp_path, capsys):
    import tests.dispatch_plugins  # noqa: F401  (registers toy)

    settings = Settings(preset="smoke", overrides={"pretrain": {"data": "toy"}},
                        results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    cell = Cell("pixels", "default", "fer", "toy", 0)
    path = Path(run_cell(cell, settings))
    other = result_stamp(path)  # as if another process wrote it after this sweep started
    assert run_cell(cell, settings, seen=()) == str(path) and result_stamp(path) == other  # without --rerun: kept
    assert "cell already done by another process" in capsys.readouterr().out
    assert run_cell(cell, settings, seen=other) == str(path) and result_stamp(path) != other  # --rerun of what it saw: run
    assert "cell done: " in capsys.readouterr().out
    mine = result_stamp(path)
    assert run_cell(cell, settings, seen=other) == str(path) and result_stamp(path) == mine  # --rerun, rewritten since: kept


def test_a_file_system_without_locks_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(harness.locks.fcntl, "flock", no_locks)
    argv = ["--preset", "smoke", "--methods", "pixels", "--protocol", "fer", "--datasets", "synthetic",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: cannot lock ") and "gives no locks" in err
    assert not list((tmp_path / "results").glob("*/*/*.json"))
