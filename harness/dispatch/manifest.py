"""The manifest of a sweep's jobs, and the states of those jobs: live (squeue) and final (sacct)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import submitit

from harness.dispatch.plan import Plan
from harness.io import write_json


class Manifest:
    """Job id and log paths of the latest job of every artifact and cell of a sweep.

    Stored as ``manifest.json`` in the sweep folder, rewritten atomically after each submission.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.path = plan.folder / "manifest.json"
        self.jobs: dict[str, dict] = json.loads(self.path.read_text())["jobs"] if self.path.exists() else {}

    def record(self, keys: Sequence[Sequence[str]], labels: Sequence[Sequence[str]], jobs: Sequence[submitit.Job], executor: str) -> None:
        """Record each job under the keys of everything it does (one artifact, or several cells)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for job_keys, job_labels, job in zip(keys, labels, jobs):
            for key, label in zip(job_keys, job_labels):
                self.jobs[key] = {
                    "label": label,
                    "executor": executor,
                    "job_id": job.job_id,
                    "stdout": str(job.paths.stdout),
                    "stderr": str(job.paths.stderr),
                    "submitted": now,
                }
        write_json(self.path, {"sweep": self.plan.sweep, "settings": dataclasses.asdict(self.plan.settings), "jobs": self.jobs})


def live_jobs(jobs: dict[str, dict], executors: Sequence[str] = ("local", "slurm")) -> dict[str, str]:
    """Key -> state (``PENDING``, ``RUNNING``...) of the manifest's jobs that are still queued or running.

    Args:
        jobs: manifest entries by key.
        executors: consider only jobs of these executors.
    """
    jobs = {key: entry for key, entry in jobs.items() if entry["executor"] in executors}
    slurm = {}
    if any(e["executor"] == "slurm" for e in jobs.values()) and shutil.which("squeue"):
        # squeue lists live jobs only, without the delay of accounting; -r: one line per array task
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
        slurm = dict(line.split("|", 1) for line in out.stdout.split())
    # a bare id ("149") stands for its whole array: squeue shows a requeued task as "149_0"
    for task, state in list(slurm.items()):
        slurm.setdefault(task.split("_")[0], state)
    live = {}
    for key, entry in jobs.items():
        if entry["executor"] == "slurm" and entry["job_id"] in slurm:
            live[key] = slurm[entry["job_id"]]
        elif entry["executor"] == "local" and _local_job_alive(entry):
            live[key] = "RUNNING"
    return live


def _local_job_alive(entry: dict) -> bool:
    """A local job (id = pid of its controller) runs until submitit writes its result pickle."""
    if (Path(entry["stdout"]).parent / f"{entry['job_id']}_0_result.pkl").exists():
        return False
    try:
        os.kill(int(entry["job_id"]), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def final_states(jobs: dict[str, dict]) -> dict[str, str]:
    """Key -> final Slurm state (``COMPLETED``, ``FAILED``, ``CANCELLED``...) of the manifest's Slurm jobs."""
    ids = {key: e["job_id"] for key, e in jobs.items() if e["executor"] == "slurm"}
    if not ids or shutil.which("sacct") is None:
        return {}
    arrays = sorted({j.split("_")[0] for j in ids.values()})
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=60
    )
    states = {}
    for line in out.stdout.split("\n"):
        jid, _, state = line.partition("|")
        if jid:
            states[jid] = state.split(" ")[0]  # "CANCELLED by 0" -> CANCELLED
    return {key: states[jid] for key, jid in ids.items() if jid in states}


def describe_job(key: str, jobs: dict[str, dict], final: dict[str, str]) -> str:
    """``job ID STATE, log PATH`` of a finished job of the manifest."""
    entry = jobs[key]
    state = final.get(key, "ended" if entry["executor"] == "local" else "UNKNOWN")
    return f"job {entry['job_id']} {state}, log {entry['stderr']}"
