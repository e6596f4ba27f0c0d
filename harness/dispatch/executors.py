"""Job arrays and the executors that run them: local processes in order, or Slurm arrays chained by dependencies."""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import submitit

from harness.dispatch.jobs import JobContext, Resumable, build_artifact, evaluate_cells
from harness.dispatch.manifest import Manifest, live_jobs
from harness.dispatch.plan import Plan
from harness.dispatch.profiles import CELLS_PER_JOB, submitit_params
from harness.session import Cell
from harness.errors import BenchError

#: How often a waiting submitter asks Slurm how its jobs are doing.
POLL_SECONDS = 5.0


@dataclasses.dataclass
class Group:
    """One job array: the training jobs of one dependency level, or the evaluation jobs.

    Attributes:
        name: ``train level K`` or ``evaluate``.
        function: the job body, called as ``function(*task, ctx)``.
        keys, labels, tasks: per job to submit: the manifest keys and readable labels of what it
            does (one artifact, or the cells of one evaluation task), and its leading arguments.
        running: ids of live jobs (from an earlier submission) that already do part of this group.
    """

    name: str
    function: Callable[..., str]
    keys: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    labels: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    tasks: list[tuple] = dataclasses.field(default_factory=list)
    running: list[str] = dataclasses.field(default_factory=list)


def job_groups(plan: Plan, manifest: Manifest, live: dict[str, str], cells_per_job: int = CELLS_PER_JOB) -> list[Group]:
    """The arrays to submit, in order; artifacts and cells whose job is still live are skipped.

    Training is one job per artifact. Evaluation is one job per run of at most ``cells_per_job``
    cells that read the same trained model and dataset (method, variant, seed, dataset): the
    job starts Python, loads the data and the model and reads the features once for them all.
    """
    groups = []
    for level, nodes in enumerate(plan.levels()):
        group = Group(f"train level {level}", build_artifact)
        for node in nodes:
            key = plan.key(node)
            if key in live:
                group.running.append(manifest.jobs[key]["job_id"])
            else:
                group.keys.append((key,))
                group.labels.append((node.id,))
                group.tasks.append((node.maker, node.id))
        groups.append(group)
    evaluate = Group("evaluate", evaluate_cells)
    shared: dict[tuple, list[Cell]] = {}
    for cell in plan.todo:
        key = plan.key(cell)
        if key in live:
            evaluate.running.append(manifest.jobs[key]["job_id"])
        else:
            shared.setdefault((cell.method, cell.variant, cell.seed, cell.dataset), []).append(cell)
    for cells in shared.values():
        for start in range(0, len(cells), cells_per_job):
            task = tuple(cells[start:start + cells_per_job])
            evaluate.keys.append(tuple(plan.key(c) for c in task))
            evaluate.labels.append(tuple(c.label for c in task))
            evaluate.tasks.append((task,))
    evaluate.running = sorted(set(evaluate.running))
    groups.append(evaluate)
    return groups


def make_executor(kind: str, folder: Path, params: dict[str, Any], name: str) -> submitit.AutoExecutor:
    """A submitit executor for ``local`` or ``slurm`` writing into ``folder/kind``."""
    executor = submitit.AutoExecutor(folder=folder / kind, cluster=kind)
    executor.update_parameters(name=name, **submitit_params(params))
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
            for labels, job in zip(group.labels[chunk], jobs):
                label = ", ".join(labels)
                try:
                    job.result()
                except Exception:  # the job's traceback is in its log, which the message names
                    failed.append(f"{label} (log {job.paths.stderr})")
        if failed:
            raise BenchError(f"local: {len(failed)} job(s) of {group.name} failed, nothing after it was started: {failed[0]}")


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One array of a group too large for a single array.

    Attributes:
        tasks: the group's tasks it holds (indexed from 0 in the array).
        parallelism: its ``%N``: the chunks running side by side share the group's parallelism.
        waits_for: the chunk (index in the group) it starts after, so that no more chunks run at
            once than the parallelism allows; None for the first chunks.
    """

    tasks: range
    parallelism: Optional[int]
    waits_for: Optional[int]


def chunks(n_tasks: int, max_size: int, parallelism: Optional[int]) -> list[Chunk]:
    """Split a group of ``n_tasks`` into arrays of at most ``max_size`` tasks, holding at most
    ``parallelism`` tasks running over all of them.

    The chunks run in ``lanes = min(chunks, parallelism)`` lanes, each chunk after the one before
    it in its lane (``afterany``); the lanes' ``%N`` add up to ``parallelism``.
    """
    spans = [range(start, min(start + max_size, n_tasks)) for start in range(0, n_tasks, max_size)]
    if parallelism is None or not spans:
        return [Chunk(span, None, None) for span in spans]
    lanes = min(len(spans), parallelism)
    share = [parallelism // lanes + (lane < parallelism % lanes) for lane in range(lanes)]
    return [Chunk(span, share[i % lanes], i - lanes if i >= lanes else None) for i, span in enumerate(spans)]


def submit_slurm(
    plan: Plan, groups: list[Group], params: dict[str, Any], ctx: JobContext, manifest: Manifest, max_size: int
) -> list[str]:
    """Submit every array at once, each depending on the ones before; returns the ids of the sweep's live jobs.

    A group larger than ``max_size`` becomes several arrays (chunks); the next group waits for
    every chunk. A refused submission stops with one line naming the arrays already submitted.
    """
    after: list[str] = []  # jobs the next array must wait for
    job_ids: list[str] = []
    submitted: list[str] = []  # arrays of this submission, to name if sbatch refuses a later one
    for group in groups:
        arrays: list[str] = []
        parts = chunks(len(group.tasks), max_size, params.get("slurm_array_parallelism"))
        for i, chunk in enumerate(parts):
            chunk_params = dict(params)
            if chunk.parallelism is not None:
                chunk_params["slurm_array_parallelism"] = chunk.parallelism
            waits = [f"afterok:{':'.join(after)}"] if after else []
            if chunk.waits_for is not None:
                waits.append(f"afterany:{arrays[chunk.waits_for]}")
            if waits:
                chunk_params["slurm_dependency"] = ",".join(waits)
                # without this a job whose dependency failed would stay pending forever
                extra = {**params.get("slurm_additional_parameters", {}), "kill-on-invalid-dep": "yes"}
                chunk_params["slurm_additional_parameters"] = extra
            name = group.name + (f" chunk {i + 1} of {len(parts)}" if len(parts) > 1 else "")
            executor = make_executor("slurm", plan.folder, chunk_params, f"{plan.sweep}-{name.replace(' ', '-')}")
            part = slice(chunk.tasks.start, chunk.tasks.stop)
            try:
                jobs = submit(executor, group, group.tasks[part], ctx)
            except Exception as exc:  # sbatch's refusal (bad partition, account, array size...) as one line
                done = (f"already submitted: arrays {', '.join(submitted)} (cancel them with scancel {' '.join(submitted)}, "
                        "or rerun to submit only what is missing)") if submitted else "nothing was submitted"
                raise BenchError(f"slurm: sbatch refused {name} ({len(chunk.tasks)} jobs): "
                                 f"{' '.join(str(exc).split())[-300:]}; {done}") from None
            manifest.record(group.keys[part], group.labels[part], jobs, "slurm")
            array = jobs[0].job_id.split("_")[0]
            print(f"slurm: {name}: array {array} of {len(jobs)} job(s)" + (f", after {', '.join(after)}" if after else ""))
            arrays.append(array)
            submitted.append(array)
            job_ids += [job.job_id for job in jobs]
        after += arrays + group.running
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
