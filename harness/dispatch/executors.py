"""Job arrays and the executors that run them: local processes in order, or Slurm arrays chained by dependencies."""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import submitit

from harness.dispatch.jobs import JobContext, Resumable, build_artifact, evaluate_cell
from harness.dispatch.manifest import Manifest, live_jobs
from harness.dispatch.plan import Plan
from harness.errors import BenchError

#: How often a waiting submitter asks Slurm how its jobs are doing.
POLL_SECONDS = 5.0


@dataclasses.dataclass
class Group:
    """One job array: the training jobs of one dependency level, or the evaluation jobs.

    Attributes:
        name: ``train level K`` or ``evaluate``.
        function: the job body, called as ``function(*task, ctx)``.
        keys, labels, tasks: per job to submit: manifest key, readable label, leading arguments.
        running: ids of live jobs (from an earlier submission) that already do part of this group.
    """

    name: str
    function: Callable[..., str]
    keys: list[str] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    tasks: list[tuple] = dataclasses.field(default_factory=list)
    running: list[str] = dataclasses.field(default_factory=list)


def job_groups(plan: Plan, manifest: Manifest, live: dict[str, str]) -> list[Group]:
    """The arrays to submit, in order; artifacts and cells whose job is still live are skipped."""
    groups = []
    for level, nodes in enumerate(plan.levels()):
        group = Group(f"train level {level}", build_artifact)
        for node in nodes:
            _add(group, plan.key(node), node.id, (node.maker, node.id), manifest, live)
        groups.append(group)
    evaluate = Group("evaluate", evaluate_cell)
    for cell in plan.todo:
        _add(evaluate, plan.key(cell), cell.label, (cell,), manifest, live)
    groups.append(evaluate)
    return groups


def _add(group: Group, key: str, label: str, task: tuple, manifest: Manifest, live: dict[str, str]) -> None:
    if key in live:
        group.running.append(manifest.jobs[key]["job_id"])
    else:
        group.keys.append(key)
        group.labels.append(label)
        group.tasks.append(task)


def make_executor(kind: str, folder: Path, params: dict[str, Any], name: str) -> submitit.AutoExecutor:
    """A submitit executor for ``local`` or ``slurm`` writing into ``folder/kind``."""
    executor = submitit.AutoExecutor(folder=folder / kind, cluster=kind)
    executor.update_parameters(name=name, **params)
    return executor


def submit(executor: submitit.AutoExecutor, group: Group, tasks: list[tuple], ctx: JobContext) -> list[submitit.Job]:
    """Submit ``tasks`` of ``group`` as one array (``map_array`` takes one sequence per argument)."""
    columns = list(zip(*[(*task, ctx) for task in tasks]))
    with submitit.helpers.clean_env():  # a submission from inside a job must not inherit its SLURM_* variables
        return executor.map_array(Resumable(group.function), *columns)


def run_local(plan: Plan, groups: list[Group], params: dict[str, Any], ctx: JobContext, manifest: Manifest) -> None:
    """Run the arrays in order as local processes, ``array_parallelism`` at a time; stop at a failure."""
    parallelism = int(params.get("slurm_array_parallelism", 1))
    for group in groups:
        if not group.tasks:
            continue
        print(f"local: {group.name}: {len(group.tasks)} job(s), {parallelism} at a time", flush=True)
        executor = make_executor("local", plan.folder, params, f"{plan.sweep}-{group.name.replace(' ', '-')}")
        failed = []
        for start in range(0, len(group.tasks), parallelism):
            chunk = slice(start, start + parallelism)
            jobs = submit(executor, group, group.tasks[chunk], ctx)
            manifest.record(group.keys[chunk], group.labels[chunk], jobs, "local")
            for label, job in zip(group.labels[chunk], jobs):
                try:
                    job.result()
                except Exception:  # the job's traceback is in its log, which the message names
                    failed.append(f"{label} (log {job.paths.stderr})")
        if failed:
            raise BenchError(f"local: {len(failed)} job(s) of {group.name} failed, nothing after it was started: {failed[0]}")


def submit_slurm(plan: Plan, groups: list[Group], params: dict[str, Any], ctx: JobContext, manifest: Manifest) -> list[str]:
    """Submit every array at once, each depending on the ones before; returns the ids of the sweep's live jobs."""
    after: list[str] = []  # jobs the next array must wait for
    job_ids: list[str] = []
    for group in groups:
        if group.tasks:
            group_params = dict(params)
            if after:
                group_params["slurm_dependency"] = "afterok:" + ":".join(after)
                # without this a job whose dependency failed would stay pending forever
                extra = {**params.get("slurm_additional_parameters", {}), "kill-on-invalid-dep": "yes"}
                group_params["slurm_additional_parameters"] = extra
            executor = make_executor("slurm", plan.folder, group_params, f"{plan.sweep}-{group.name.replace(' ', '-')}")
            try:
                jobs = submit(executor, group, group.tasks, ctx)
            except Exception as exc:  # sbatch's refusal (bad partition, account...) as one line
                raise BenchError(f"slurm: sbatch refused {group.name}: {' '.join(str(exc).split())[-300:]}") from None
            manifest.record(group.keys, group.labels, jobs, "slurm")
            array = jobs[0].job_id.split("_")[0]
            print(f"slurm: {group.name}: array {array} of {len(jobs)} job(s)" + (f", after {', '.join(after)}" if after else ""))
            after.append(array)
            job_ids += [job.job_id for job in jobs]
        after += group.running
        job_ids += group.running
    return job_ids


def wait_slurm(manifest: Manifest, job_ids: list[str]) -> None:
    """Poll squeue until none of ``job_ids`` is queued or running, printing each change."""
    last = ""
    while True:
        live = {key: state for key, state in live_jobs(manifest.jobs, ["slurm"]).items() if manifest.jobs[key]["job_id"] in job_ids}
        if not live:
            return
        counts = collections.Counter(live.values())
        line = f"slurm: {len(job_ids) - len(live)} of {len(job_ids)} jobs finished; " + ", ".join(
            f"{n} {state.lower()}" for state, n in sorted(counts.items())
        )
        if line != last:
            print(line, flush=True)
            last = line
        time.sleep(POLL_SECONDS)
