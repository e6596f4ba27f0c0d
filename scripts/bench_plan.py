"""How long planning a large sweep takes: ``--dry-run`` and ``--status`` beside ``import torch``.

The sweep is the one of issue #28: every method and ablation variant of the paper's tables
(pixels, random-cnn, unsup3d and its four ablations, SimCLR, MAE, LatentFace's five variants:
14), every protocol on ``synthetic``, 50 seeds, on Slurm with the ``gpu-example`` profile:
3,300 cells. ``--methods all`` adds the six face-specific baselines (every variant of every
method of the default run).

Each command runs in its own process, as a user runs it, and is measured by the kernel
(``os.wait4``): CPU time (user + sys, what the command costs on a shared machine), wall time
and peak memory. The commands alternate within each round; the table shows medians over rounds.

- ``--dry-run`` is given ``--slurm max_array_size=1001``: otherwise it asks ``scontrol``, which
  on a machine without a Slurm controller waits seconds for an answer that a cluster gives at once.
- ``--status`` reads a manifest of the whole sweep as a ``--detach``ed submission records it
  (every training and evaluation job, arrays split at ``max_array_size``), made here without a
  cluster; ``squeue`` and ``sacct`` are stand-ins that answer at once from files: the first
  training level runs, the rest waits. What a real cluster adds is its own answer time.

Examples:
    python scripts/bench_plan.py                        # the 3,300-cell sweep, 3 rounds
    python scripts/bench_plan.py --methods all --rounds 5
    python scripts/bench_plan.py --also /path/to/other/checkout   # the same commands there, side by side
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from harness import dispatch  # noqa: E402
from harness.cli import build_parser, plan, settings_of  # noqa: E402
from harness.dispatch.executors import chunks  # noqa: E402
from harness.dispatch.profiles import CELLS_PER_JOB, load_profile  # noqa: E402
from harness.registry import METHODS, load_plugins  # noqa: E402
from harness.session import session_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: issue #28's sweep: every method and ablation variant of the paper's Tables 1-4 (14)
PAPER_ROWS = ("pixels,random-cnn,unsup3d:default,unsup3d:no-light,unsup3d:no-pose,unsup3d:no-shape,unsup3d:no-texture,"
              "simclr,mae,latentface:rdm-both,latentface:rdm-texture,latentface:rdm-shape,latentface:encoder,latentface:none")
PROFILE = ("--executor", "slurm", "--slurm-profile", "gpu-example", "--slurm", "max_array_size=1001")


def sweep_argv(methods: str, seeds: int, folder: Path) -> list[str]:
    if methods == "all":
        load_plugins()
        methods = ",".join(f"{n}:{v}" for n in METHODS.names() if METHODS.get(n).in_default_run for v in METHODS.get(n).variants)
    # absolute paths name the same sweep from any checkout (--also)
    data_root = Path(os.environ.get("BENCH_DATA_ROOT", ROOT / "data")).resolve()
    return ["--methods", methods, "--seeds", ",".join(map(str, range(seeds))), *PROFILE, "--data-root", str(data_root),
            "--results-dir", str(folder / "results"), "--cache-dir", str(folder / "cache")]


def submitted(argv: list[str], folder: Path) -> tuple[int, int]:
    """Write the sweep's manifest as a detached Slurm submission records it, and the answers of
    stand-in ``squeue`` / ``sacct`` (in ``folder/bin``): the first training level runs, the rest
    waits. Returns the number of jobs."""
    args = build_parser().parse_args(argv)
    load_plugins()
    settings = settings_of(args)
    with session_for(settings).planning():
        cells = plan(args)
        sweep = dispatch.make_plan(cells, settings)
    params = load_profile(args.slurm_profile, args.slurm_overrides)
    groups = dispatch.job_groups(sweep, dispatch.Manifest(sweep), {}, params.get("cells_per_job", CELLS_PER_JOB))
    sweep.folder.mkdir(parents=True)
    manifest = dispatch.Manifest(sweep)
    queue, array = [], 1000
    for level, group in enumerate(groups):
        for chunk in chunks(len(group.tasks), params["max_array_size"], None):
            array += 1
            log = sweep.folder / "slurm" / f"{array}"
            jobs = [SimpleNamespace(job_id=f"{array}_{i}", paths=SimpleNamespace(stdout=f"{log}_{i}_log.out", stderr=f"{log}_{i}_log.err"))
                    for i in range(len(chunk.tasks))]
            part = slice(chunk.tasks.start, chunk.tasks.stop)
            manifest.record(group.keys[part], group.labels[part], jobs, "slurm")
            queue += [f"{j.job_id}|{'RUNNING' if level == 0 else 'PENDING'}" for j in jobs]
    tools = folder / "bin"
    tools.mkdir()
    for tool, lines in (("squeue", queue), ("sacct", queue)):  # sacct lists live jobs too
        (folder / f"{tool}.txt").write_text("\n".join(lines) + "\n")
        (tools / tool).write_text(f"#!/bin/sh\ncat {folder / f'{tool}.txt'}\n")
        (tools / tool).chmod(0o755)
    return len(queue)


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """CPU s (user + sys), wall s and peak MB of one command, its output kept in a file."""
    with tempfile.TemporaryFile() as out:
        tic = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - tic
        out.seek(0)
        text = out.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"error: {' '.join(command[:4])}... failed (exit status {status}):\n{text[-2000:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "mb": usage.ru_maxrss / 1024, "last": (text.strip().splitlines() or [""])[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=PAPER_ROWS, help="method[:variant] list, or all (default: the 14 of the paper's tables)")
    parser.add_argument("--seeds", type=int, default=50, help="seeds 0..N-1 (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every command, medians shown (default 3)")
    parser.add_argument("--also", metavar="CHECKOUT", help="also time the same commands with another checkout's run_bench.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        folder = Path(tmp)
        argv = sweep_argv(args.methods, args.seeds, folder / "submitted")
        jobs = submitted(argv, folder)
        fresh = sweep_argv(args.methods, args.seeds, folder / "planned")  # a sweep not submitted yet
        env = {**os.environ, "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        checkouts = [ROOT] + ([Path(args.also).resolve()] if args.also else [])
        commands = {"python -c 'import torch'": (ROOT, [sys.executable, "-c", "import torch"])}
        for checkout in checkouts:
            where = "" if checkout == ROOT else f" [{checkout}]"
            commands[f"--dry-run{where}"] = (checkout, [sys.executable, "run_bench.py", *fresh, "--dry-run"])
            commands[f"--status{where}"] = (checkout, [sys.executable, "run_bench.py", *argv, "--status"])
        figures: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (cwd, command) in commands.items():
                figures[name].append(measure(command, cwd, env))
    torch_cpu = statistics.median(f["cpu"] for f in figures["python -c 'import torch'"])
    torch_wall = statistics.median(f["wall"] for f in figures["python -c 'import torch'"])
    print(f"sweep: python run_bench.py --methods {args.methods if args.methods != PAPER_ROWS else '<the 14 of the paper tables>'} "
          f"--seeds 0..{args.seeds - 1} {' '.join(PROFILE)}")
    print(f"  dry run: {figures['--dry-run'][0]['last']}")
    print(f"  status (manifest of {jobs} jobs, queued or running): {figures['--status'][0]['last']}")
    print(f"medians of {args.rounds} rounds; CPU = user + sys, as the kernel counts it (wall time depends on the machine's load)")
    print(f"{'command':58} {'CPU s':>7} {'wall s':>7} {'peak MB':>8} {'CPU - torch':>12} {'wall - torch':>13}")
    for name, runs in figures.items():
        cpu, wall = statistics.median(r["cpu"] for r in runs), statistics.median(r["wall"] for r in runs)
        mb = statistics.median(r["mb"] for r in runs)
        print(f"{name[:58]:58} {cpu:7.2f} {wall:7.2f} {mb:8.0f} {cpu - torch_cpu:+12.2f} {wall - torch_wall:+13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
