"""Dispatch: the artifact graph, Slurm profiles, and sweeps through the local and Slurm executors.

Jobs run in fresh Python processes that import ``tests.dispatch_plugins`` (``--plugins``) for the
``toy`` dataset and the ``two-stage`` method; ``PYTHONPATH`` points them at this checkout.
The ``slurm``-marked tests need a running cluster (``bash slurm/start_cluster.sh``) and are
skipped without one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so that "tests.dispatch_plugins" imports as jobs import it
    sys.path.insert(0, str(REPO))

from harness import dispatch  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.io import torch_load  # noqa: E402
from harness.registry import METHODS, PROTOCOLS  # noqa: E402
from harness.session import Cell, Settings  # noqa: E402

PLUGINS = "tests.dispatch_plugins"
TOY = ["--datasets", "toy", "--preset", "smoke", "--set", "pretrain.data=toy", "--plugins", PLUGINS]


def job_environment(monkeypatch) -> None:
    """Jobs import the plugins from this checkout, whatever directory pytest runs in, and use this
    process's thread count: their results are compared bit for bit with inline ones, and another
    thread count splits reductions differently."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True)
def job_env(monkeypatch):
    job_environment(monkeypatch)


def bench(tmp_path: Path, name: str, *argv: str) -> int:
    """The CLI with results and cache in ``tmp_path/name``."""
    return main([*argv, "--results-dir", str(tmp_path / name / "results"), "--cache-dir", str(tmp_path / name / "cache")])


def results(tmp_path: Path, name: str) -> dict[str, dict]:
    """Result records by file name (the name holds method, variant, seed and config hash)."""
    files = sorted((tmp_path / name / "results").glob("*/*/*.json"))
    return {f"{f.parent.parent.name}/{f.name}": json.loads(f.read_text()) for f in files}


def metrics(records: dict[str, dict]) -> dict[str, dict]:
    """Each record's metrics, after checking that it ran at this process's thread count (the
    comparisons with inline runs are bit for bit)."""
    assert {r["provenance"]["machine"]["torch_threads"] for r in records.values()} == {torch.get_num_threads()}
    return {name: record["metrics"] for name, record in records.items()}


def manifest(tmp_path: Path, name: str) -> dict:
    (path,) = (tmp_path / name / "cache" / "slurm-logs").glob("*/manifest.json")
    return json.loads(path.read_text())


def build_counts(tmp_path: Path, name: str) -> dict[str, int]:
    """Artifact id -> how many jobs trained it, from the "built here" lines of the job logs."""
    counts: dict[str, int] = {}
    for log in (tmp_path / name / "cache" / "slurm-logs").glob("*/*/*_log.out"):
        for line in log.read_text().splitlines():
            if line.startswith("artifact ") and ": built here" in line:
                aid = line.split()[1].rstrip(":")
                counts[aid] = counts.get(aid, 0) + 1
    return counts


def done_json(tmp_path: Path, name: str, kind: str) -> dict:
    (path,) = (tmp_path / name / "cache" / "artifacts" / kind).glob("*/done.json")
    return json.loads(path.read_text())


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def checkpointed(tmp_path: Path, name: str, kind: str) -> bool:
    """Whether the artifact's training has saved at least one finished epoch."""
    found = list((tmp_path / name / "cache" / "artifacts" / kind).glob("*/last.pt"))
    return bool(found) and torch_load(found[0])["epoch"] >= 1


# --- planning ------------------------------------------------------------------------------------
def test_plan_builds_each_artifact_once_with_stage1_shared(tmp_path):
    import tests.dispatch_plugins  # noqa: F401  (registers two-stage and toy)

    settings = Settings(preset="smoke", overrides={"pretrain": {"data": "toy"}},
                        results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    cells = [Cell("two-stage", v, p, "toy", 0) for v in ("a", "b", "stage1") for p in ("fer", "verification")]
    cells.append(Cell("pixels", "default", "fer", "toy", 0))
    plan = dispatch.make_plan(cells, settings)

    assert [n.id.split("/")[0] for n in plan.nodes.values()] == ["two-stage-1", "two-stage-2", "two-stage-2"]
    stage1, *stage2 = plan.nodes.values()
    assert stage1.level == 0 and len(stage1.cells) == 6  # one stage-1 model for every variant
    assert [n.level for n in stage2] == [1, 1] and [len(n.cells) for n in stage2] == [2, 2]
    assert plan.needs[cells[-1]] == []  # pixels trains nothing
    groups = dispatch.job_groups(plan, dispatch.Manifest(plan), live={})
    # evaluation: one job per trained model and dataset (two-stage a, b, stage1; pixels) for the 7 cells
    assert [(g.name, len(g.tasks)) for g in groups] == [("train level 0", 1), ("train level 1", 2), ("evaluate", 4)]
    assert sorted(len(keys) for keys in groups[-1].keys) == [1, 2, 2, 2]

    stage1.artifact.ensure(Path(settings.cache_dir))  # once built, stage 1 is no job any more
    plan = dispatch.make_plan(cells, settings)
    assert [len(level) for level in plan.levels()] == [0, 2]
    assert plan.sweep == dispatch.make_plan(cells[::-1], settings, cells).sweep  # same cells, same sweep


def test_dry_run_prints_artifact_graph_and_jobs(tmp_path, capsys):
    argv = ["--methods", "pixels,two-stage:a,two-stage:b", "--protocol", "fer", *TOY, "--executor", "slurm", "--dry-run"]
    assert bench(tmp_path, "sweep", *argv) == 0
    out = capsys.readouterr().out
    assert "artifacts (3 unique, 3 to build)" in out
    assert "level 0  two-stage-1/" in out and "needed by 2 cell(s)" in out
    assert "3 of 3 cells to run" in out
    assert "train level 0: 1 job(s)" in out and "train level 1: 2 job(s), after train level 0" in out
    assert "evaluate: 3 job(s), after train level 0, train level 1" in out
    assert not (tmp_path / "sweep" / "results").exists()


# --- profiles and errors -------------------------------------------------------------------------
def test_profile_drops_empty_values_and_applies_overrides(tmp_path):
    params = dispatch.load_profile("local-test")
    assert params["slurm_partition"] == "debug" and params["timeout_min"] == 30
    assert "slurm_account" not in params and "slurm_additional_parameters" not in params  # "" and {} mean unset

    params = dispatch.load_profile(
        "gpu-example",
        ["partition=big", "timeout_min=120", "qos=high", "constraint=", "additional_parameters.exclude=node17"],
    )
    assert params["slurm_partition"] == "big" and params["timeout_min"] == 120 and params["slurm_qos"] == "high"
    assert "slurm_constraint" not in params
    assert params["slurm_additional_parameters"] == {"exclude": "node17"}

    typo = tmp_path / "typo.toml"
    typo.write_text('[slurm]\npartiton = "debug"\n')
    for name, overrides, message in [
        ("nosuch", [], "known profiles"),
        (str(typo), [], "unknown key(s) partiton"),
        ("local-test", ["timeout_min=soon"], "expected a value of type int"),
        ("local-test", ["partition"], "expected KEY=VALUE"),
        ("local-test", ["gpus=1"], "unknown key 'gpus'"),
    ]:
        with pytest.raises(BenchError, match=re.escape(message)):
            dispatch.load_profile(name, overrides)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--executor", "slurm"], "`sbatch` is not on PATH"),
        (["--executor", "local", "--slurm-profile", "nosuch"], "--slurm-profile nosuch"),
        (["--executor", "local", "--detach"], "--detach needs --executor slurm"),
        (["--plugins", "no_such_module"], "cannot import 'no_such_module'"),
    ],
)
def test_impossible_requests_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert bench(tmp_path, "sweep", "--methods", "pixels", *TOY, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "sweep" / "results").exists()


# --- results of older code ---------------------------------------------------------------------------
def test_results_of_older_code_are_stale_and_recomputed(tmp_path, capsys, monkeypatch):
    """A cell's identity holds its artifacts' versions and the protocol's: bumping one makes the
    old result stale (``--status``), the next run recomputes it and moves the old file aside."""
    import tests.dispatch_plugins  # noqa: F401  (registers two-stage and toy)

    argv = ["--methods", "pixels,two-stage:a", "--protocol", "fer", *TOY]
    assert bench(tmp_path, "s", *argv) == 0
    before = results(tmp_path, "s")
    two_stage = METHODS.get("two-stage")
    real = two_stage.stage1
    monkeypatch.setattr(two_stage, "stage1", lambda self: dataclasses.replace(real(self), version=2))  # a fix to stage 1
    capsys.readouterr()
    assert bench(tmp_path, "s", *argv, "--status") == 0
    out = capsys.readouterr().out
    assert "1 done, 1 stale, 0 running, 0 failed, 0 missing" in out
    assert "made by older code (two-stage-1 v1 -> v2, two-stage-2 key changed); rerun to recompute" in out

    assert bench(tmp_path, "s", *argv) == 0
    out = capsys.readouterr().out
    assert "2 cells, 1 already done, 1 to run" in out
    (old,) = [name for name in before if name.startswith("fer/two-stage")]
    file = old.split("/")[1]
    superseded = tmp_path / "s" / "results" / "superseded" / "fer" / "toy" / file
    assert f"superseded {tmp_path / 's' / 'results' / 'fer' / 'toy' / file}" in out and superseded.exists()
    after = results(tmp_path, "s")
    assert len(after) == 2 and old not in after
    new = next(record for name, record in after.items() if name.startswith("fer/two-stage"))
    assert [a["version"] for a in new["config"]["artifacts"]] == [2, 1]
    table = (tmp_path / "s" / "results" / "tables" / "table1_fer.md").read_text()
    assert table.count("(n=1)") == 2, "the old result is out of the tables"

    monkeypatch.setattr(PROTOCOLS.get("fer"), "version", "2")  # a fix to the protocol
    assert bench(tmp_path, "s", *argv, "--status") == 0
    out = capsys.readouterr().out
    assert "0 done, 2 stale" in out and out.count("protocol fer v1 -> v2") == 2


def test_results_from_an_older_synthetic_world_are_stale_and_superseded(tmp_path, capsys, monkeypatch):
    """A new synthetic generator version is a new world: its data, the models trained on it and
    the results made from it are rebuilt; the old results show as stale, then move out of the tables."""
    import tests.dispatch_plugins  # noqa: F401  (registers two-stage)
    from harness.datasets.synthetic import dataset as synthetic

    small = [f"synthetic.{key}={value}" for key, value in
             (("size", 16), ("pretrain_images", 32), ("fer_train_images", 70), ("fer_test_images", 35))]
    argv = ["--methods", "pixels,two-stage:stage1", "--protocol", "fer", "--datasets", "synthetic", "--preset", "smoke",
            "--set", "pretrain.data=synthetic", *[a for setting in small for a in ("--set", setting)], "--plugins", PLUGINS]
    assert bench(tmp_path, "s", *argv) == 0
    old, new = synthetic.GENERATOR_VERSION, synthetic.GENERATOR_VERSION + "-next"
    before = results(tmp_path, "s")
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", new)  # a change to the world or the renderer
    capsys.readouterr()
    assert bench(tmp_path, "s", *argv, "--status") == 0
    out = capsys.readouterr().out
    assert "0 done, 2 stale, 0 running, 0 failed, 0 missing" in out
    assert out.count(f"data generator {old} -> {new}") == 2
    assert "(two-stage-1 key changed, data generator" in out, "the model trained on the old world is not reused"
    assert bench(tmp_path, "s", *argv, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "2 of 2 cells to run" in out and out.count(f"made by older code: two-stage-1 key changed, data generator {old} -> {new})") == 1
    assert out.count(f"made by older code: data generator {old} -> {new})") == 1  # pixels: no model

    assert bench(tmp_path, "s", *argv) == 0
    out = capsys.readouterr().out
    assert "2 cells, 0 already done, 2 to run" in out and out.count("superseded ") == 2
    after = results(tmp_path, "s")
    assert len(after) == 2 and not set(after) & set(before)
    assert {r["config"]["dataset"]["generator"] for r in after.values()} == {new}
    assert {r["config"]["pretrain"]["data"]["generator"] for r in after.values() if "pretrain" in r["config"]} == {new}
    superseded = tmp_path / "s" / "results" / "superseded"
    assert sorted(f"{p.parent.parent.name}/{p.name}" for p in superseded.glob("*/*/*.json")) == sorted(before)
    table = (tmp_path / "s" / "results" / "tables" / "table1_fer.md").read_text()
    assert table.count("(n=1)") == 2, "the old results are out of the tables"
    # every split the run read was generated again, under a key naming the new version
    keys = [json.loads(f.read_text())["key"] for f in (tmp_path / "s" / "cache" / "synthetic").glob("*.json")]
    assert sorted(k["split"] for k in keys if k["generator"] == new) == sorted(k["split"] for k in keys if k["generator"] == old)


# --- the local executor --------------------------------------------------------------------------
def test_local_sweep_matches_inline_and_records_the_executor(tmp_path, capsys):
    argv = ["--methods", "pixels,random-cnn", "--protocol", "fer", *TOY]
    assert bench(tmp_path, "inline", *argv) == 0
    assert bench(tmp_path, "local", *argv, "--executor", "local") == 0
    local = results(tmp_path, "local")
    assert len(local) == 2 and metrics(local) == metrics(results(tmp_path, "inline"))
    executor = next(iter(local.values()))["provenance"]["executor"]
    assert executor["name"] == "local" and executor["job_id"] and executor["sweep"].startswith("smoke-")
    assert executor["submit_git"]["sha"] == next(iter(local.values()))["provenance"]["git"]["sha"]

    capsys.readouterr()
    assert bench(tmp_path, "local", *argv, "--executor", "local", "--status") == 0
    assert "2 done, 0 stale, 0 running, 0 failed, 0 missing" in capsys.readouterr().out
    jobs = manifest(tmp_path, "local")["jobs"]
    assert bench(tmp_path, "local", *argv, "--executor", "local") == 0  # finished: nothing is submitted
    assert manifest(tmp_path, "local")["jobs"] == jobs


def children(pid: int) -> list[int]:
    """Ids of the processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the job process")
def test_local_preempted_training_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    argv = ["--methods", "two-stage:stage1", "--protocol", "fer", *TOY, "--executor", "local",
            "--set", "two-stage.epochs=6", "--set", "two-stage.step_sleep=0.3"]
    signalled = []

    def preempt() -> None:
        # What a cluster does before preemption or the walltime: SIGUSR2 to the job's process.
        wait_for(lambda: checkpointed(tmp_path, "local", "two-stage-1"), 120, "a training checkpoint")
        pid = int(next(iter(manifest(tmp_path, "local")["jobs"].values()))["job_id"])  # the job controller
        (task,) = children(pid)
        os.kill(task, signal.SIGUSR2)
        signalled.append(task)

    thread = threading.Thread(target=preempt, daemon=True)
    thread.start()
    assert bench(tmp_path, "local", *argv) == 0
    thread.join(5)
    assert signalled
    built = done_json(tmp_path, "local", "two-stage-1")
    assert built["start_epoch"] >= 1 and len(built["history"]) == 6  # resumed, not restarted
    assert len(results(tmp_path, "local")) == 1


# --- the Slurm executor --------------------------------------------------------------------------
def slurm_unavailable() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm cluster: `sinfo`/`sbatch` not found (start one with bash slurm/start_cluster.sh)"
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm cluster: `sinfo` failed ({exc})"
    if res.returncode != 0:
        return f"no Slurm cluster: `sinfo` exit {res.returncode} (start one with bash slurm/start_cluster.sh)"
    if "debug" not in {p.rstrip("*") for p in res.stdout.split()}:
        return "the local-test profile's partition 'debug' is missing (start the test cluster with slurm/start_cluster.sh)"
    return None


SLURM_MISSING = slurm_unavailable()
requires_slurm = pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))
SWEEP = ["--methods", "pixels,random-cnn,two-stage:a,two-stage:b", "--protocol", "fer", *TOY]


@pytest.fixture(scope="module")
def slurm_sweep(tmp_path_factory):
    """One Slurm sweep (3 training jobs in 2 arrays, 4 evaluation jobs in 1 array) and its inline twin."""
    tmp_path = tmp_path_factory.mktemp("slurm-sweep")
    with pytest.MonkeyPatch.context() as mp:
        job_environment(mp)
        assert bench(tmp_path, "slurm", *SWEEP, "--executor", "slurm") == 0
    assert bench(tmp_path, "inline", *SWEEP) == 0
    return tmp_path


@pytest.mark.slurm
@requires_slurm
def test_slurm_sweep_runs_as_job_arrays_and_matches_inline(slurm_sweep):
    records = results(slurm_sweep, "slurm")
    assert len(records) == 4 and metrics(records) == metrics(results(slurm_sweep, "inline"))
    jobs = [r["provenance"]["executor"]["job_id"] for r in records.values()]
    assert len({j.split("_")[0] for j in jobs}) == 1 and sorted(j.split("_")[1] for j in jobs) == ["0", "1", "2", "3"]
    slurm_env = next(iter(records.values()))["provenance"]["slurm"]
    assert slurm_env["array_job_id"] == jobs[0].split("_")[0]
    counts = build_counts(slurm_sweep, "slurm")
    assert len(counts) == 3 and set(counts.values()) == {1}  # stage 1 shared, each artifact trained once


@pytest.mark.slurm
@requires_slurm
def test_slurm_resubmitting_a_finished_sweep_submits_nothing(slurm_sweep, capsys):
    jobs = manifest(slurm_sweep, "slurm")["jobs"]
    capsys.readouterr()
    assert bench(slurm_sweep, "slurm", *SWEEP, "--executor", "slurm") == 0
    assert "slurm: nothing to submit" in capsys.readouterr().out
    assert manifest(slurm_sweep, "slurm")["jobs"] == jobs


@pytest.mark.slurm
@requires_slurm
def test_slurm_cancelled_training_resumes_after_resubmission(tmp_path, capsys):
    argv = ["--methods", "two-stage:a", "--protocol", "fer", *TOY, "--executor", "slurm",
            "--set", "two-stage.epochs=8", "--set", "two-stage.step_sleep=0.3"]
    assert bench(tmp_path, "slurm", *argv, "--detach") == 0
    wait_for(lambda: checkpointed(tmp_path, "slurm", "two-stage-1"), 120, "a stage-1 checkpoint")
    jobs = manifest(tmp_path, "slurm")["jobs"]
    stage1 = next(e for key, e in jobs.items() if key.startswith("artifact two-stage-1/"))
    subprocess.run(["scancel", stage1["job_id"]], check=True)
    # The jobs that depend on it are cancelled by Slurm (--kill-on-invalid-dep) and leave the queue.
    wait_for(lambda: not dispatch.live_jobs(jobs), 60, "the sweep's jobs to leave the queue")

    capsys.readouterr()
    assert bench(tmp_path, "slurm", *argv, "--status") == 0
    out = capsys.readouterr().out
    assert "0 done, 0 stale, 0 running, 1 failed, 0 missing" in out and stage1["stderr"] in out

    assert bench(tmp_path, "slurm", *argv) == 0  # resubmits the three missing jobs and waits
    built = done_json(tmp_path, "slurm", "two-stage-1")
    assert built["start_epoch"] >= 1 and len(built["history"]) == 8  # resumed from the checkpoint
    counts = build_counts(tmp_path, "slurm")  # stage 1 and two-stage:a's stage 2, each trained once
    assert len(counts) == 2 and set(counts.values()) == {1}, counts
    assert len(results(tmp_path, "slurm")) == 1


@pytest.mark.slurm
@requires_slurm
def test_slurm_preempted_training_is_requeued_and_resumes(tmp_path):
    argv = ["--methods", "two-stage:stage1", "--protocol", "fer", *TOY, "--executor", "slurm",
            "--set", "two-stage.epochs=8", "--set", "two-stage.step_sleep=0.3"]
    assert bench(tmp_path, "slurm", *argv, "--detach") == 0
    wait_for(lambda: checkpointed(tmp_path, "slurm", "two-stage-1"), 120, "a stage-1 checkpoint")
    job = next(e for key, e in manifest(tmp_path, "slurm")["jobs"].items() if key.startswith("artifact "))["job_id"]
    # Slurm's preemption notice as submitit's own tests send it: the job checkpoints and requeues itself.
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: "PENDING" in squeue_state(job), 60, "the job to be requeued")
    # A requeued job waits ~2 minutes (BeginTime) before it may start again; let it start now.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)

    assert bench(tmp_path, "slurm", *argv) == 0  # nothing new to submit: waits for the live jobs
    built = done_json(tmp_path, "slurm", "two-stage-1")
    assert built["start_epoch"] >= 1 and len(built["history"]) == 8
    record = next(iter(results(tmp_path, "slurm").values()))
    assert record["provenance"]["executor"]["name"] == "slurm"


def squeue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%T", "-j", job], capture_output=True, text=True).stdout
