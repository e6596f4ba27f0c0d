"""End-to-end checks against a real Slurm cluster through submitit.

Needs a reachable cluster (``sinfo`` works); otherwise every test is skipped. Locally:

    bash slurm/install_cluster.sh && bash slurm/start_cluster.sh
    python -m pytest -m slurm tests/test_slurm_cluster.py

On another cluster set ``BENCH_SLURM_PARTITION`` (default ``debug``), if needed
``BENCH_SLURM_ACCOUNT`` / ``BENCH_SLURM_QOS``, and ``BENCH_SLURM_TEST_DIR`` to a folder on a
file system shared with the compute nodes (default: pytest's tmp_path). Jobs are tiny (1 CPU, 1 GB, 15 min walltime).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm

submitit = pytest.importorskip("submitit")

PARTITION = os.environ.get("BENCH_SLURM_PARTITION", "debug")
# Upper bounds, not expected durations: on the local test cluster each job takes a few seconds.
JOB_TIMEOUT_S = float(os.environ.get("BENCH_SLURM_TEST_TIMEOUT", "300"))


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _cluster_unavailable_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm cluster: `sinfo` not found (start one with slurm/start_cluster.sh)"
    try:
        res = _run(["sinfo", "-h", "-o", "%P"], timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm cluster: `sinfo` failed ({exc})"
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        return f"no Slurm cluster: `sinfo` exit {res.returncode}: {msg[-1] if msg else ''}"
    partitions = {p.rstrip("*") for p in res.stdout.split()}
    if PARTITION not in partitions:
        return (f"Slurm partition {PARTITION!r} not found (have {sorted(partitions)}); "
                "set BENCH_SLURM_PARTITION")
    return None


_REASON = _cluster_unavailable_reason()
if _REASON is not None:
    pytestmark = [pytest.mark.slurm, pytest.mark.skip(reason=_REASON)]


@pytest.fixture
def executor(tmp_path):
    # The job folder must be visible from the compute nodes: fine for the local cluster; on a
    # multi-node cluster point BENCH_SLURM_TEST_DIR at a shared file system.
    folder = tmp_path
    if os.environ.get("BENCH_SLURM_TEST_DIR"):
        import tempfile

        os.makedirs(os.environ["BENCH_SLURM_TEST_DIR"], exist_ok=True)
        folder = tempfile.mkdtemp(prefix="slurm-test-", dir=os.environ["BENCH_SLURM_TEST_DIR"])
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = dict(
        slurm_partition=PARTITION,
        timeout_min=15,  # submitit treats walltimes under 10 min as "timed out" jobs
        cpus_per_task=1,
        mem_gb=1,
        slurm_array_parallelism=2,
        name="bench-slurm-test",
    )
    if os.environ.get("BENCH_SLURM_ACCOUNT"):
        params["slurm_account"] = os.environ["BENCH_SLURM_ACCOUNT"]
    if os.environ.get("BENCH_SLURM_QOS"):
        params["slurm_qos"] = os.environ["BENCH_SLURM_QOS"]
    ex.update_parameters(**params)
    return ex


def _wait_done(jobs, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll until every job is done; cancel them and fail instead of hanging."""
    deadline = time.monotonic() + timeout
    while not all(j.done() for j in jobs):
        if time.monotonic() > deadline:
            for j in jobs:
                j.cancel(check=False)
            pytest.fail(f"jobs {[j.job_id for j in jobs]} not done after {timeout:.0f}s: "
                        f"{[j.state for j in jobs]}")
        time.sleep(1)


def _sacct_states(job_id: str, expected: dict[str, str], timeout: float = 60) -> dict[str, str]:
    """JobID -> State from sacct (allocations only), polled until it equals ``expected`` or
    ``timeout`` passes. Accounting lags: records reach slurmdbd a few seconds after the job
    ends, and for a moment an array can show up under its bare id ("3" instead of "3_0", "3_1")."""
    deadline = time.monotonic() + timeout
    while True:
        res = _run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State"])
        assert res.returncode == 0, f"sacct failed: {res.stderr}"
        states = {}
        for line in res.stdout.splitlines():
            jid, _, state = line.partition("|")
            if jid:
                states[jid] = state.split()[0] if state else ""  # "CANCELLED by 0" -> CANCELLED
        if states == expected or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_job_array_results_and_accounting(executor):
    with submitit.helpers.clean_env():  # do not leak SLURM_* of an enclosing job into sbatch
        jobs = executor.map_array(math.sqrt, [4, 9])
    assert len(jobs) == 2
    array_id = jobs[0].job_id.split("_")[0]
    assert all(j.job_id.startswith(array_id + "_") for j in jobs), [j.job_id for j in jobs]

    _wait_done(jobs)
    assert [j.result() for j in jobs] == [2.0, 3.0]

    expected = {j.job_id: "COMPLETED" for j in jobs}
    assert _sacct_states(array_id, expected) == expected


def test_cancelled_job_reports_cancelled_and_raises(executor):
    with submitit.helpers.clean_env():
        job = executor.submit(time.sleep, 600)

    # Cancel once it runs (or after 60 s even if still pending: that must work too).
    deadline = time.monotonic() + 60
    while job.state not in ("RUNNING",) and time.monotonic() < deadline:
        time.sleep(0.5)
    res = _run(["scancel", str(job.job_id)])
    assert res.returncode == 0, res.stderr

    expected = {str(job.job_id): "CANCELLED"}
    assert _sacct_states(job.job_id, expected) == expected

    _wait_done([job], timeout=120)  # done() must turn true, else result() would block forever
    assert job.state.startswith("CANCELLED"), job.state
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
