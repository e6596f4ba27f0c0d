"""What the command line asks of a sweep: run it (``dispatch``), plan it (``--dry-run``), report it (``--status``)."""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from harness.dispatch.executors import chunks, job_groups, run_local, submit_slurm, wait_slurm
from harness.dispatch.jobs import JobContext
from harness.dispatch.manifest import Manifest, describe_job, final_states, live_jobs
from harness.dispatch.plan import Plan, make_plan
from harness.dispatch.profiles import CELLS_PER_JOB, check_slurm_tools, load_profile, max_array_size
from harness.errors import BenchError
from harness.locks import file_lock
from harness.runner import run_cells, submit_time_git
from harness.session import Cell, Settings, session_for

EXECUTORS = ("inline", "local", "slurm")


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
        return run_cells(todo, settings, {"name": "inline", "submit_git": submit_git})
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
    # two submitters of one sweep would submit everything twice
    with file_lock(plan.folder / "submit.lock", f"the submission of sweep {plan.sweep}"):
        manifest = Manifest(plan)
        # Later arrays can wait for live Slurm jobs; the local executor waits for its own jobs.
        live = live_jobs(manifest.jobs, ["slurm"]) if executor == "slurm" else {}
        groups = job_groups(plan, manifest, live, params.get("cells_per_job", CELLS_PER_JOB))
        if executor == "local":
            run_local(plan, groups, params, ctx, manifest)
        else:
            job_ids = submit_slurm(plan, groups, params, ctx, manifest, max_array_size(params))
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
    session = session_for(settings)
    with session.planning():
        for cell in plan.cells:
            needs = f"  needs {', '.join(plan.needs[cell])}" if plan.needs.get(cell) else ""
            # what the run will move to superseded/, as --status reports it
            stale = session.stale(cell, current=plan.results[cell]) if cell in plan.needs else []
            replaces = "".join(f"  (replaces {path}, made by older code: {why})" for path, why in stale)
            lines.append(f"  {'todo' if cell in plan.needs else 'done'}  {cell.label}{needs}  -> {plan.results[cell]}{replaces}")
    lines.append(f"{len(plan.todo)} of {len(plan.cells)} cells to run")
    if executor == "inline":
        lines.append("jobs: none (--executor inline runs the cells in this process, training artifacts on first use)")
        return "\n".join(lines)
    params = load_profile(options.profile, options.slurm)
    manifest = Manifest(plan)
    live = live_jobs(manifest.jobs, ["slurm"]) if executor == "slurm" else {}
    groups = job_groups(plan, manifest, live, params.get("cells_per_job", CELLS_PER_JOB))
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    limit = max_array_size(params) if executor == "slurm" else None
    lines.append(f"jobs (--executor {executor}, profile {options.profile}: {shown}"
                 + (f"; arrays of at most {limit} jobs" if limit else "") + "):")
    before: list[str] = []
    n_arrays = 0
    for group in groups:
        if group.tasks or group.running:
            after = f", after {', '.join(before)}" if before and executor == "slurm" else ""
            still = f" ({len(group.running)} more still running from an earlier submission)" if group.running else ""
            parts = len(chunks(len(group.tasks), limit, None)) if limit else 1 if group.tasks else 0
            split = f" in {parts} arrays" if parts > 1 else ""
            cells = sum(len(keys) for keys in group.keys)
            shared = f" for {cells} cells" if cells != len(group.tasks) else ""
            lines.append(f"  {group.name}: {len(group.tasks)} job(s){shared}{after}{split}{still}")
            before.append(group.name)
            n_arrays += parts
    if not any(g.tasks for g in groups):
        lines.append("  nothing to submit")
    else:
        lines.append(f"{len(plan.todo)} cells, {sum(len(g.tasks) for g in groups)} jobs, {n_arrays} arrays")
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
    session = session_for(settings)
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
    with session.planning():
        for cell in plan.cells:
            stale = session.stale(cell, current=plan.results[cell]) if not plan.results[cell].exists() else []
            state, detail = cell_state(plan, manifest, live, final, cell, stale)
            counts[state] += 1
            lines.append(f"  {state:8s} {cell.label}  {detail}")
    lines.append(", ".join(f"{counts[s]} {s}" for s in ("done", "stale", "running", "failed", "missing")))
    return "\n".join(lines)
