"""Where cells run: in this process, as local processes, or as Slurm job arrays (submitit).

A sweep is planned as a graph: trained artifacts (stage-1 checkpoint -> stage-2 checkpoint ...),
then one evaluation per cell (features -> protocol -> result file). Every unbuilt artifact becomes
one training job, grouped into one job array per dependency level; the cells become one
evaluation array. On Slurm each array waits for the ones before it (``--dependency=afterok``);
the local executor runs them in order. Artifacts are still built under a file lock, so even jobs
that race never train the same thing twice.

Submitted callables are ``Resumable``: on timeout or preemption submitit requeues the same call,
and the work resumes from what it left on disk (training from the artifact's ``last.pt``).
Each submission is recorded in a manifest next to the job logs, so ``--status`` can say which
cells are done, stale (their result file was made by older code), running, failed (with the
log) or missing, and a rerun submits only what is missing: cells with a current result file,
built artifacts and jobs still queued or running are skipped.

Logs and the manifest of a sweep live in ``<cache-dir>/slurm-logs/<sweep-id>/``: the cache is
where the trained artifacts go, so it is already on a file system the compute nodes share. The
sweep id is derived from the settings and the cells, so the same arguments find the same sweep.

The package holds one idea a module, each importing only from those listed before it:
``profiles`` (cluster profiles), ``plan`` (the artifact graph), ``jobs`` (what a job runs),
``manifest`` (submitted jobs and their states), ``executors`` (job arrays, local and Slurm) and
``commands`` (``dispatch``, ``describe`` for ``--dry-run``, ``status`` for ``--status``).
"""
from __future__ import annotations

from harness.dispatch.commands import EXECUTORS, Options, cell_state, describe, dispatch, status
from harness.dispatch.executors import Group, job_groups
from harness.dispatch.jobs import JobContext, Resumable, build_artifact, evaluate_cells
from harness.dispatch.manifest import Manifest, final_states, live_jobs
from harness.dispatch.plan import Node, Plan, artifact_id, make_plan
from harness.dispatch.profiles import load_profile

__all__ = [
    "EXECUTORS", "Group", "JobContext", "Manifest", "Node", "Options", "Plan", "Resumable", "artifact_id",
    "build_artifact", "cell_state", "describe", "dispatch", "evaluate_cells", "final_states", "job_groups",
    "live_jobs", "load_profile", "make_plan", "status",
]
