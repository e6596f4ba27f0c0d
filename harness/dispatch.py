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
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import subprocess
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import submitit

from harness.artifacts import Artifact, file_lock
from harness.config import config_hash
from harness.errors import BenchError
from harness.io import write_json
from harness.provenance import REPO
from harness.registry import load_plugins
from harness.runner import Cell, Settings, run_cell, session_for, submit_time_git

EXECUTORS = ("inline", "local", "slurm")
PROFILES = REPO / "slurm" / "profiles"
#: Profile keys submitit shares between clusters, and the Slurm-only ones (passed as ``slurm_<key>``).
GENERIC_KEYS: dict[str, type] = {"gpus_per_node": int, "cpus_per_task": int, "mem_gb": float, "timeout_min": int}
SLURM_KEYS: dict[str, type] = {"partition": str, "array_parallelism": int, "account": str, "qos": str, "constraint": str}
#: How often a waiting submitter asks Slurm how its jobs are doing.
POLL_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Options:
    """How a sweep is submitted (the CLI's ``--slurm-profile``, ``--slurm``, ``--plugins``, ``--detach``).

    Attributes:
        profile: a profile name under ``slurm/profiles`` or the path of a ``.toml`` file.
        slurm: ``KEY=VALUE`` overrides of the profile's keys.
        plugins: modules every job imports first (they register extra datasets or methods).
        detach: Slurm only: return after submitting instead of waiting for the jobs.
    """

    profile: str = "local-test"
    slurm: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    detach: bool = False


# --- Slurm profiles ------------------------------------------------------------------------------
def load_profile(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """submitit parameters of a Slurm profile, with ``--slurm KEY=VALUE`` overrides applied.

    Args:
        name: a profile under ``slurm/profiles`` (``local-test``) or the path of a ``.toml`` file.
        overrides: items such as ``partition=gpu``, ``timeout_min=120`` or
            ``additional_parameters.exclude=node17``; an empty value unsets the key.

    Returns:
        Keyword arguments for ``submitit.AutoExecutor.update_parameters``. Empty values are
        dropped: submitit passes ``""`` through, and ``--account=`` is an sbatch error.
    """
    path = Path(name) if name.endswith(".toml") else PROFILES / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise BenchError(f"--slurm-profile {name}: {path} does not exist; known profiles (in {PROFILES}): {known}")
    try:
        with open(path, "rb") as handle:
            table = dict(tomllib.load(handle).get("slurm", {}))
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    types = {**GENERIC_KEYS, **SLURM_KEYS}
    valid = ", ".join([*types, "additional_parameters.KEY"])
    extra = dict(table.pop("additional_parameters", None) or {})
    unknown = sorted(set(table) - set(types))
    if unknown:  # a typo would otherwise silently do nothing
        raise BenchError(f"{path}: unknown key(s) {', '.join(unknown)} in [slurm]; valid keys: {valid}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise BenchError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu")
        if key.startswith("additional_parameters."):
            extra[key.partition(".")[2]] = True if value.lower() == "true" else value
        elif key in types:
            table[key] = _parse(value, types[key], item)
        else:
            raise BenchError(f"--slurm {item!r}: unknown key {key!r}; valid keys: {valid}")
    params = {(k if k in GENERIC_KEYS else f"slurm_{k}"): v for k, v in table.items() if v not in ("", None)}
    extra = {k: v for k, v in extra.items() if v not in ("", None)}
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def _parse(value: str, kind: type, item: str) -> Any:
    """A ``--slurm`` value of the key's type; ``""`` unsets the key."""
    if value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise BenchError(f"--slurm {item!r}: expected a value of type {kind.__name__}") from None


def check_slurm_tools() -> None:
    """Fail early, as one line, where Slurm cannot be reached."""
    for tool in ("sbatch", "squeue", "sacct"):
        if shutil.which(tool) is None:
            raise BenchError(
                f"--executor slurm: `{tool}` is not on PATH; run from a Slurm login node "
                "(see slurm/README.md) or use --executor local"
            )


# --- the plan: artifacts and cells ---------------------------------------------------------------
def artifact_id(artifact: Artifact) -> str:
    """``kind/hash``: the artifact's folder under ``<cache>/artifacts`` and its name in logs."""
    return f"{artifact.kind}/{artifact.hash}"


@dataclasses.dataclass
class Node:
    """One unique artifact of a sweep.

    Attributes:
        artifact: what is built (its ``build`` closure belongs to ``maker``'s method).
        level: 0 if it needs no other artifact, else 1 + the highest level of those it needs.
        maker: a cell whose method lists the artifact: a training job rebuilds the method from it.
        cells: every cell to run that needs the artifact.
        built: whether ``done.json`` exists.
    """

    artifact: Artifact
    level: int
    maker: Cell
    cells: list[Cell]
    built: bool

    @property
    def id(self) -> str:
        return artifact_id(self.artifact)


@dataclasses.dataclass
class Plan:
    """A sweep: every cell the arguments name, the ones to run, and the artifacts those need.

    Attributes:
        sweep: id of the sweep (``<preset>-<hash of settings and cells>``).
        settings: the settings, with absolute paths (jobs may start in another directory).
        cells: every cell of the sweep, done or not.
        todo: the cells to run.
        nodes: artifacts the todo cells need, by id, dependencies first.
        needs: artifact ids each todo cell needs.
        results: result file of every cell.
    """

    sweep: str
    settings: Settings
    cells: list[Cell]
    todo: list[Cell]
    nodes: dict[str, Node]
    needs: dict[Cell, list[str]]
    results: dict[Cell, Path]

    @property
    def folder(self) -> Path:
        """Job logs, pickles and the manifest of this sweep."""
        return Path(self.settings.cache_dir) / "slurm-logs" / self.sweep

    def levels(self) -> list[list[Node]]:
        """Unbuilt artifacts by dependency level: level k needs only artifacts of levels below k."""
        todo = [n for n in self.nodes.values() if not n.built]
        return [[n for n in todo if n.level == k] for k in range(max((n.level for n in todo), default=-1) + 1)]

    def key(self, item: Cell | Node) -> str:
        """Name of a job in the manifest: ``artifact <kind/hash>`` or ``cell <protocol/dataset/file>``."""
        if isinstance(item, Node):
            return f"artifact {item.id}"
        return f"cell {item.protocol}/{item.dataset}/{self.results[item].name}"


def absolute(settings: Settings) -> Settings:
    """``settings`` with absolute paths, as jobs get them."""
    root = str(Path(settings.data_root).expanduser().resolve()) if settings.data_root else None
    return dataclasses.replace(
        settings,
        data_root=root,
        results_dir=str(Path(settings.results_dir).resolve()),
        cache_dir=str(Path(settings.cache_dir).resolve()),
        dump_features=str(Path(settings.dump_features).resolve()) if settings.dump_features else None,
    )


def make_plan(todo: Sequence[Cell], settings: Settings, cells: Optional[Sequence[Cell]] = None) -> Plan:
    """The artifact graph of ``todo`` (nothing is trained: methods only list their artifacts).

    Args:
        todo: cells to run.
        settings: settings of the invocation.
        cells: every cell of the sweep (names it, so a rerun finds the same sweep); default ``todo``.
    """
    settings = absolute(settings)
    cells = list(cells if cells is not None else todo)
    session = session_for(settings)
    cache = Path(settings.cache_dir)
    nodes: dict[str, Node] = {}
    deps: dict[str, set[str]] = {}
    needs: dict[Cell, list[str]] = {}
    for cell in todo:
        artifacts = session.method(cell.method, cell.variant, cell.seed).artifacts()
        ids = [artifact_id(a) for a in artifacts]
        needs[cell] = ids
        for i, artifact in enumerate(artifacts):
            node = nodes.setdefault(ids[i], Node(artifact, 0, cell, [], artifact.is_built(cache)))
            node.cells.append(cell)
            deps.setdefault(ids[i], set()).update(ids[:i])  # methods list dependencies first

    def level(aid: str, path: tuple[str, ...] = ()) -> int:
        if aid in path:
            raise BenchError(f"artifacts need each other in a cycle: {' -> '.join((*path, aid))}")
        return max((level(d, (*path, aid)) + 1 for d in deps[aid]), default=0)

    for aid, node in nodes.items():
        node.level = level(aid)
    sweep = f"{settings.preset}-" + config_hash(
        {"settings": dataclasses.asdict(settings), "cells": [dataclasses.asdict(c) for c in sorted(cells)]}
    )
    return Plan(
        sweep=sweep,
        settings=settings,
        cells=cells,
        todo=list(todo),
        nodes=dict(sorted(nodes.items(), key=lambda item: item[1].level)),
        needs=needs,
        results={cell: session.result_path(cell) for cell in cells},
    )


# --- what jobs run -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class JobContext:
    """What every job of a sweep gets besides its own task.

    Attributes:
        settings: the sweep's settings, with absolute paths.
        plugins: modules to import before anything is looked up in the registries.
        executor: recorded in result files: name, sweep, profile, git state at submit time.
    """

    settings: Settings
    plugins: tuple[str, ...]
    executor: dict


def build_artifact(cell: Cell, aid: str, ctx: JobContext) -> str:
    """Build one artifact, and those it needs, of ``cell``'s method; returns its folder.

    The body of a training job. Training resumes from the artifact's checkpoints, so a requeued
    or resubmitted job continues where the last one stopped.
    """
    load_plugins(ctx.plugins)
    session = session_for(ctx.settings)
    artifacts = session.method(cell.method, cell.variant, cell.seed).artifacts()
    ids = [artifact_id(a) for a in artifacts]
    if aid not in ids:
        raise BenchError(f"{cell.label} no longer needs artifact {aid} (the code changed since submission?); rerun the sweep")
    cache = Path(ctx.settings.cache_dir)
    for artifact in artifacts[: ids.index(aid) + 1]:
        marker = artifact.path(cache) / "done.json"
        tic = time.time()
        artifact.ensure(cache)
        # done.json is written last: if it is newer than the start, this job built the artifact.
        built_here = marker.stat().st_mtime >= tic
        how = f"built here in {time.time() - tic:.1f} s" if built_here else "already built"
        print(f"artifact {artifact_id(artifact)}: {how}", flush=True)
    return str(artifacts[ids.index(aid)].path(cache))


def evaluate_cell(cell: Cell, ctx: JobContext) -> str:
    """Run one cell (features and protocol) and write its result file; returns its path.

    The body of an evaluation job; the result records the job id at run time.
    """
    load_plugins(ctx.plugins)
    job = submitit.JobEnvironment()
    return run_cell(cell, ctx.settings, {**ctx.executor, "job_id": job.job_id})


class Resumable(submitit.helpers.Checkpointable):
    """What is submitted: calls ``function``.

    On timeout or preemption submitit calls ``checkpoint`` (inherited), which requeues the same
    call; the work itself resumes from what it left on disk (``last.pt``, cached features).
    """

    def __init__(self, function: Callable[..., str]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> str:
        return self.function(*args)


# --- the manifest and job states ------------------------------------------------------------------
class Manifest:
    """Job id and log paths of the latest job of every artifact and cell of a sweep.

    Stored as ``manifest.json`` in the sweep folder, rewritten atomically after each submission.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.path = plan.folder / "manifest.json"
        self.jobs: dict[str, dict] = json.loads(self.path.read_text())["jobs"] if self.path.exists() else {}

    def record(self, keys: Sequence[str], labels: Sequence[str], jobs: Sequence[submitit.Job], executor: str) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key, label, job in zip(keys, labels, jobs):
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


# --- job arrays ----------------------------------------------------------------------------------
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


# --- entry points --------------------------------------------------------------------------------
def dispatch(
    todo: list[Cell],
    settings: Settings,
    executor: str = "inline",
    options: Optional[Options] = None,
    cells: Optional[list[Cell]] = None,
) -> list[str]:
    """Run ``todo`` with the named executor; returns the result paths (none when detached).

    Args:
        todo: the cells to run.
        settings: settings of the invocation.
        executor: ``inline`` (this process), ``local`` (submitit processes, array after array)
            or ``slurm`` (job arrays chained by dependencies).
        options: profile, overrides, plugins and whether to wait.
        cells: every cell of the sweep (names the sweep); default ``todo``.
    """
    options = options or Options()
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if options.detach and executor != "slurm":
        raise BenchError("--detach needs --executor slurm (the other executors run the jobs themselves)")
    submit_git = submit_time_git()
    if executor == "inline":
        return [run_cell(cell, settings, {"name": "inline", "submit_git": submit_git}) for cell in todo]
    if executor == "slurm":
        check_slurm_tools()
    params = load_profile(options.profile, options.slurm)
    plan = make_plan(todo, settings, cells)
    plan.folder.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(
        settings=plan.settings,
        plugins=options.plugins,
        executor={"name": executor, "sweep": plan.sweep, "profile": options.profile, "submit_git": submit_git},
    )
    print(f"sweep {plan.sweep}: logs and manifest in {plan.folder}")
    with file_lock(plan.folder / "submit.lock"):  # two submitters of one sweep would submit everything twice
        manifest = Manifest(plan)
        # Later arrays can wait for live Slurm jobs; the local executor waits for its own jobs.
        live = live_jobs(manifest.jobs, ["slurm"]) if executor == "slurm" else {}
        groups = job_groups(plan, manifest, live)
        if executor == "local":
            run_local(plan, groups, params, ctx, manifest)
        else:
            job_ids = submit_slurm(plan, groups, params, ctx, manifest)
    if executor == "slurm":
        if not any(g.tasks for g in groups):
            print("slurm: nothing to submit" + (f" ({len(job_ids)} job(s) of an earlier submission still live)" if job_ids else ""))
        if options.detach:
            return []
        wait_slurm(manifest, job_ids)
    missing = [cell for cell in plan.todo if not plan.results[cell].exists()]
    if missing:
        final = final_states(manifest.jobs)
        _, detail = cell_state(plan, manifest, {}, final, missing[0])
        raise BenchError(f"{len(missing)} of {len(plan.todo)} cells have no result; first: {missing[0].label}: {detail}; see --status")
    return [str(plan.results[cell]) for cell in plan.todo]


def describe(todo: list[Cell], settings: Settings, executor: str, options: Options, cells: list[Cell]) -> str:
    """The ``--dry-run`` report: the artifact graph, the cells and the job arrays that would be submitted."""
    plan = make_plan(todo, settings, cells)
    lines = [f"sweep {plan.sweep}: {len(plan.cells)} cells; logs and manifest in {plan.folder}"]
    lines.append(f"artifacts ({len(plan.nodes)} unique, {sum(not n.built for n in plan.nodes.values())} to build):")
    for node in plan.nodes.values():
        who = ", ".join(c.label for c in node.cells[:3]) + (f" +{len(node.cells) - 3} more" if len(node.cells) > 3 else "")
        lines.append(f"  level {node.level}  {node.id}  {'built' if node.built else 'to build':8s}  needed by {len(node.cells)} cell(s): {who}")
    lines.append("cells:")
    for cell in plan.cells:
        needs = f"  needs {', '.join(plan.needs[cell])}" if plan.needs.get(cell) else ""
        lines.append(f"  {'todo' if cell in plan.needs else 'done'}  {cell.label}{needs}  -> {plan.results[cell]}")
    lines.append(f"{len(plan.todo)} of {len(plan.cells)} cells to run")
    if executor == "inline":
        lines.append("jobs: none (--executor inline runs the cells in this process, training artifacts on first use)")
        return "\n".join(lines)
    params = load_profile(options.profile, options.slurm)
    manifest = Manifest(plan)
    groups = job_groups(plan, manifest, live_jobs(manifest.jobs, ["slurm"]) if executor == "slurm" else {})
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    lines.append(f"jobs (--executor {executor}, profile {options.profile}: {shown}):")
    before: list[str] = []
    for group in groups:
        if group.tasks or group.running:
            after = f", after {', '.join(before)}" if before and executor == "slurm" else ""
            live = f" ({len(group.running)} more still running from an earlier submission)" if group.running else ""
            lines.append(f"  {group.name}: {len(group.tasks)} job(s){after}{live}")
            before.append(group.name)
    if not any(g.tasks for g in groups):
        lines.append("  nothing to submit")
    return "\n".join(lines)


def cell_state(
    plan: Plan, manifest: Manifest, live: dict[str, str], final: dict[str, str], cell: Cell,
    stale: Sequence[tuple[Path, str]] = (),
) -> tuple[str, str]:
    """``(done | stale | running | failed | missing, detail)`` of one cell of the sweep.

    ``stale``: result files of the cell that older code made (``Session.stale``).
    """
    if plan.results[cell].exists():
        return "done", str(plan.results[cell])
    key = plan.key(cell)
    if key in live:
        return "running", f"job {manifest.jobs[key]['job_id']} {live[key]}"
    for aid in plan.needs.get(cell, []):  # a failed training explains why its cells never ran
        node_key = f"artifact {aid}"
        if not plan.nodes[aid].built and node_key in manifest.jobs and node_key not in live:
            return "failed", f"needs {aid}: {describe_job(node_key, manifest.jobs, final)}"
    if key in manifest.jobs:
        return "failed", describe_job(key, manifest.jobs, final)
    if stale:
        path, why = stale[0]
        return "stale", f"{path} was made by older code ({why}); rerun to recompute"
    return "missing", "never submitted"


def status(todo: list[Cell], settings: Settings, cells: list[Cell]) -> str:
    """The ``--status`` report: done, stale, running, failed (with the log) or missing, per cell and artifact."""
    plan = make_plan(todo, settings, cells)
    session = session_for(plan.settings)
    manifest = Manifest(plan)
    live = live_jobs(manifest.jobs)
    final = final_states(manifest.jobs)
    lines = [f"sweep {plan.sweep}: manifest {manifest.path}" + ("" if manifest.path.exists() else " (none yet)")]
    counts: collections.Counter = collections.Counter()
    for node in plan.nodes.values():
        if node.built:
            continue
        key = plan.key(node)
        if key in live:
            state = f"running  job {manifest.jobs[key]['job_id']} {live[key]}"
        elif key in manifest.jobs:
            state = f"failed   {describe_job(key, manifest.jobs, final)}"
        else:
            state = "missing  never submitted"
        lines.append(f"  artifact {node.id}: {state}")
    for cell in plan.cells:
        stale = session.stale(cell) if not plan.results[cell].exists() else []
        state, detail = cell_state(plan, manifest, live, final, cell, stale)
        counts[state] += 1
        lines.append(f"  {state:8s} {cell.label}  {detail}")
    lines.append(", ".join(f"{counts[s]} {s}" for s in ("done", "stale", "running", "failed", "missing")))
    return "\n".join(lines)
