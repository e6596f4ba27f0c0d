"""Sweeps larger than the cluster's MaxArraySize: split into arrays Slurm accepts, with the
dependencies, the concurrency and the results of one array.

The Slurm test runs on the single-node test cluster, which start_cluster.sh configures with
MaxArraySize=4 (``BENCH_SLURM_MAX_ARRAY_SIZE``), so a sweep of five seeds needs two arrays per level.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so that "tests.dispatch_plugins" imports as jobs import it
    sys.path.insert(0, str(REPO))

from harness.cli import main  # noqa: E402
from harness.dispatch.executors import chunks  # noqa: E402
from harness.dispatch.profiles import load_profile, max_array_size, submitit_params  # noqa: E402
from harness.errors import BenchError  # noqa: E402

TOY = ["--datasets", "toy", "--preset", "smoke", "--set", "pretrain.data=toy", "--plugins", "tests.dispatch_plugins"]
#: Five seeds of a two-stage method: 5 stage-1 trainings, 5 stage-2 trainings, 5 evaluations.
SWEEP = ["--methods", "two-stage:a", "--protocol", "fer", "--seeds", "0,1,2,3,4", *TOY]


@pytest.mark.parametrize("n, size, parallelism", [(10, 4, 3), (10, 4, None), (9, 3, 7), (4, 4, 2), (1, 1001, 1), (0, 4, 2), (13, 2, 2)])
def test_chunks_cover_every_task_once_within_the_limits(n, size, parallelism):
    parts = chunks(n, size, parallelism)
    assert [t for c in parts for t in c.tasks] == list(range(n))
    assert all(0 < len(c.tasks) <= size for c in parts)
    if parallelism is None:
        assert all(c.parallelism is None and c.waits_for is None for c in parts)
        return
    starters = [c for c in parts if c.waits_for is None]  # chunks that may start together
    assert sum(c.parallelism for c in starters) <= parallelism
    for i, c in enumerate(parts):  # a later chunk takes over its predecessor's share, never more
        if c.waits_for is not None:
            assert c.waits_for < i and parts[c.waits_for].parallelism == c.parallelism
    if parts:
        assert sum(c.parallelism for c in starters) == parallelism


def test_max_array_size_from_the_profile_or_the_cluster(monkeypatch):
    params = load_profile("local-test", ["max_array_size=7"])
    assert max_array_size(params) == 7 and "max_array_size" not in submitit_params(params)
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: Slurm's default
    assert max_array_size(load_profile("local-test")) == 1001
    with pytest.raises(BenchError, match="max_array_size must be at least 1"):
        load_profile("local-test", ["max_array_size=0"])


def test_dry_run_reports_cells_jobs_and_arrays(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a dry run needs no cluster
    argv = [*SWEEP, "--executor", "slurm", "--slurm", "max_array_size=2", "--dry-run",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train level 0: 5 job(s) in 3 arrays" in out and "train level 1: 5 job(s), after train level 0 in 3 arrays" in out
    assert "evaluate: 5 job(s), after train level 0, train level 1 in 3 arrays" in out
    assert "5 cells, 15 jobs, 9 arrays" in out


def cluster_limit() -> int | None:
    if not shutil.which("scontrol") or not shutil.which("sbatch"):
        return None
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return max_array_size({}) if "MaxArraySize" in out else None


@pytest.mark.slurm
@pytest.mark.skipif(cluster_limit() is None, reason="no Slurm cluster (start one with bash slurm/start_cluster.sh)")
def test_slurm_sweep_larger_than_max_array_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    limit = cluster_limit()
    extra = [] if limit <= 4 else ["--slurm", "max_array_size=4"]  # a cluster that allows more: ask for 4
    if limit <= 4:  # the cluster itself refuses a larger array, as sbatch does on a strict cluster
        refused = subprocess.run(["sbatch", f"--array=0-{limit}", "--wrap", "true"], capture_output=True, text=True)
        assert refused.returncode != 0 and "array" in refused.stderr.lower()
    dirs = ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*SWEEP, "--executor", "slurm", "--slurm", "array_parallelism=2", *extra, *dirs]) == 0
    out = capsys.readouterr().out
    for group in ("train level 0", "train level 1", "evaluate"):
        assert f"slurm: {group} chunk 1 of 2: array" in out and f"slurm: {group} chunk 2 of 2: array" in out
    files = sorted((tmp_path / "results" / "fer" / "toy").glob("*.json"))
    assert len(files) == 5  # every result written once
    jobs = [json.loads(f.read_text())["provenance"]["executor"]["job_id"] for f in files]
    # "<array>_<index>"; submitit submits a one-task array as a plain job, "<job>"
    assert all(int(j.partition("_")[2] or 0) < min(limit, 4) for j in jobs) and len({j.split("_")[0] for j in jobs}) == 2
    (manifest,) = (tmp_path / "cache" / "slurm-logs").glob("*/manifest.json")
    entries = json.loads(manifest.read_text())["jobs"]
    assert len(entries) == 15
    # Dependencies held: every training ended before any evaluation started, stage 1 before stage 2.
    times = {}
    for key, entry in entries.items():
        line = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Start,End,State", "-j", entry["job_id"]],
                              capture_output=True, text=True).stdout.split()[0]
        start, end, state = line.split("|")
        assert state == "COMPLETED", (key, state)
        times[key] = (start, end)
    kinds = {k: ("eval" if k.startswith("cell ") else k.split()[1].split("/")[0]) for k in entries}
    last_end = {kind: max(e for k, (_, e) in times.items() if kinds[k] == kind) for kind in set(kinds.values())}
    first_start = {kind: min(s for k, (s, _) in times.items() if kinds[k] == kind) for kind in set(kinds.values())}
    assert last_end["two-stage-1"] <= first_start["two-stage-2"] and last_end["two-stage-2"] <= first_start["eval"]
    assert main([*SWEEP, "--executor", "slurm", "--status", *extra, *dirs]) == 0
    assert "5 done, 0 stale, 0 running, 0 failed, 0 missing" in capsys.readouterr().out


def test_a_refused_array_names_what_was_already_submitted(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from harness.dispatch import executors

    submitted = []

    def fake_submit(executor, group, tasks, ctx):
        if submitted:  # sbatch refuses the second array
            raise RuntimeError("sbatch: error: Batch job submission failed:\n Invalid job array specification")
        submitted.append(tasks)
        return [SimpleNamespace(job_id=f"41_{i}") for i in range(len(tasks))]

    monkeypatch.setattr(executors, "submit", fake_submit)
    monkeypatch.setattr(executors, "make_executor", lambda *args: None)
    group = executors.Group("evaluate", print, keys=list("abcde"), labels=list("abcde"), tasks=[(k,) for k in "abcde"])
    recorded = SimpleNamespace(record=lambda keys, labels, jobs, kind: None)
    plan = SimpleNamespace(folder=tmp_path, sweep="smoke-x")
    with pytest.raises(BenchError) as error:
        executors.submit_slurm(plan, [group], {}, None, recorded, max_size=4)
    message = str(error.value)
    assert "\n" not in message and "sbatch refused evaluate chunk 2 of 2 (1 jobs)" in message
    assert "Invalid job array specification" in message and "already submitted: arrays 41" in message and "scancel 41" in message


def test_an_evaluation_job_runs_its_cells_and_skips_those_done(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import tests.dispatch_plugins  # noqa: F401  (registers toy)
    from harness.dispatch import jobs
    from harness.runner import run_cell
    from harness.session import Cell, Settings, session_for

    settings = Settings(preset="smoke", overrides={"pretrain": {"data": "toy"}},
                        results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    done, todo = Cell("pixels", "default", "fer", "toy", 0), Cell("pixels", "default", "knn", "toy", 0)
    first = Path(run_cell(done, settings, {"name": "inline"}))
    before = first.read_bytes()
    monkeypatch.setattr(jobs.submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="7_0"))
    ctx = jobs.JobContext(settings=settings, plugins=("tests.dispatch_plugins",), executor={"name": "slurm"})
    paths = jobs.evaluate_cells((done, todo), ctx)
    assert paths == [str(first), str(session_for(settings).result_path(todo))]
    assert first.read_bytes() == before  # done: not run again
    assert json.loads(Path(paths[1]).read_text())["provenance"]["executor"]["job_id"] == "7_0"
