"""What a job runs: build an artifact or evaluate a cell, as a call submitit can requeue."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import submitit

from harness.dispatch.plan import artifact_id
from harness.errors import BenchError
from harness.registry import load_plugins
from harness.runner import run_cell
from harness.session import Cell, Settings, session_for


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


def evaluate_cells(cells: tuple[Cell, ...], ctx: JobContext) -> list[str]:
    """Run cells that read one trained model and dataset (features and protocol), each written
    atomically to its own result file; returns their paths.

    The body of an evaluation job: one process loads the data, the model and the features once for
    all its cells. A cell whose result exists (a requeued job that finished it before, another
    process sharing the store) is kept; each result records the job id at run time.
    """
    load_plugins(ctx.plugins)
    job = submitit.JobEnvironment()
    return [run_cell(cell, ctx.settings, {**ctx.executor, "job_id": job.job_id}, seen=()) for cell in cells]


class Resumable(submitit.helpers.Checkpointable):
    """What is submitted: calls ``function``.

    On timeout or preemption submitit calls ``checkpoint`` (inherited), which requeues the same
    call; the work itself resumes from what it left on disk (``last.pt``, cached features).
    """

    def __init__(self, function: Callable[..., str]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> str:
        return self.function(*args)
