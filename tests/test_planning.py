"""What keeps planning a large sweep quick (``--dry-run``, ``--status``, a submission's plan): it
builds no network and imports no heavy library, and what it remembers while planning
(``Session.planning``) gives exactly the plan that working every cell out afresh gives.
Its speed is measured by ``python scripts/bench_plan.py``, not here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import dispatch
from harness.dispatch.plan import absolute
from harness.registry import DATASETS, METHODS, PROTOCOLS
from harness.session import Cell, Session, Settings

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy.stats", "timm", "torchvision", "diffusers", "lightly", "torch._dynamo", "matplotlib", "pandas")


def every_variant() -> list[str]:
    """``method:variant`` of every method of the default run, every variant (the ablations too);
    the project's methods only (other tests register their own)."""
    return [
        f"{name}:{variant}" for name in METHODS.names()
        if METHODS.get(name).in_default_run and METHODS.get(name).__module__.startswith("methods.")
        for variant in METHODS.get(name).variants
    ]


def test_planning_builds_no_network_and_imports_no_heavy_library(tmp_path):
    code = (
        "import sys, torch\n"
        "def refuse(self, *args, **kwargs):\n"
        "    raise AssertionError(f'planning built a network: {type(self).__name__}')\n"
        "torch.nn.Module.__init__ = refuse\n"
        "from harness.cli import main\n"
        "argv = sys.argv[1:]\n"
        "codes = [main([*argv, '--dry-run', '--executor', 'slurm', '--slurm', 'max_array_size=1001']), main([*argv, '--status'])]\n"
        f"print(codes, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    argv = ["--methods", ",".join(every_variant()), "--seeds", "0,1", "--preset", "smoke",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[0, 0] []", out.stderr[-3000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # planning writes nothing


def sweep(seeds: tuple[int, ...] = (0, 1)) -> list[Cell]:
    """Every method and variant of the default run, every protocol on ``synthetic``."""
    tasks = DATASETS.get("synthetic").tasks
    return [
        Cell(*item.split(":"), protocol, "synthetic", seed)
        for item in every_variant()
        for protocol in PROTOCOLS.names()
        if PROTOCOLS.get(protocol).task in tasks and PROTOCOLS.get(protocol).supports(METHODS.get(item.split(":")[0]))
        for seed in seeds
    ]


def test_a_plan_equals_every_cell_worked_out_afresh(tmp_path, monkeypatch):
    """Relative paths, as a user types them: the plan's result paths are absolute, as jobs need."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(preset="smoke", results_dir="results", cache_dir="cache")
    cells = sweep()
    todo = [c for c in cells if c.protocol != "knn"]  # the knn cells count as done
    plan = dispatch.make_plan(todo, settings, cells)

    fresh = Session(absolute(settings))  # nothing remembered: every call makes its method anew
    assert fresh.method("unsup3d", "default", 0) is not fresh.method("unsup3d", "default", 0)
    for cell in cells:
        assert plan.results[cell] == fresh.result_path(cell)
        assert plan.results[cell].is_absolute()
    for cell in todo:
        assert plan.needs[cell] == [dispatch.artifact_id(a) for a in fresh.method(cell.method, cell.variant, cell.seed).artifacts()]
    # a two-stage method needs stage 1 too, and models of different seeds are different models
    assert len(plan.needs[Cell("latentface", "rdm-both", "fer", "synthetic", 1)]) == 2
    assert {n.level for n in plan.nodes.values()} == {0, 1}
    seeds_of = {aid: {c.seed for c in node.cells} for aid, node in plan.nodes.items()}
    assert all(len(s) == 1 for s in seeds_of.values())

    remembering = Session(settings)
    with remembering.planning():
        made = remembering.method("unsup3d", "default", 0)
        assert remembering.method("unsup3d", "default", 0) is made
        for cell in cells:
            assert remembering.resolve(cell) == fresh.resolve(cell)
            assert remembering.stale(cell, current=plan.results[cell]) == []
    assert remembering.method("unsup3d", "default", 0) is not made  # a run after planning makes its own


def test_stale_finds_older_results_of_the_cell_only(tmp_path):
    """``Session.stale`` lists a results folder once while planning: it must find what a glob of
    ``<method>--<variant>--seed<N>--*.json`` finds, and keep only results of older code."""
    settings = Settings(preset="smoke", results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"))
    session = Session(settings)
    cell = Cell("unsup3d", "default", "fer", "synthetic", 1)
    resolved = session.resolve(cell)
    current = session.result_path(cell, resolved)
    current.parent.mkdir(parents=True)
    older = {**resolved, "artifacts": [{**a, "hash": "0" * 12} for a in resolved["artifacts"]]}
    other = {**older, "preset": "quick"}  # other settings: not this cell's result
    files = {
        current: resolved,
        current.with_name("unsup3d--default--seed1--000000000001.json"): older,
        current.with_name("unsup3d--default--seed1--000000000002.json"): other,
        current.with_name("unsup3d--default--seed10--000000000003.json"): older,  # another seed
        current.with_name("unsup3d--no-pose--seed1--000000000004.json"): older,  # another variant
        current.with_name("unsup3d--default--seed1--000000000005.txt"): older,  # not .json
        current.with_name("unsup3d--default--seed1--000000000006.json"): None,  # not a result file
    }
    for path, config in files.items():
        path.write_text("{" if config is None else json.dumps({"config": config}))
    found = [(path.name, why) for path, why in session.stale(cell)]
    assert found == [("unsup3d--default--seed1--000000000001.json", "stage1 key changed")]
    with session.planning():
        assert [(path.name, why) for path, why in session.stale(cell, current=current)] == found
    assert session.stale(Cell("unsup3d", "default", "fer", "nowhere", 1), resolved) == []  # no folder


def test_the_planning_benchmark_prints_the_sweep_beside_import_torch():
    """``scripts/bench_plan.py`` at its smallest: a dry run and the status of the same submitted sweep."""
    out = subprocess.run(
        [sys.executable, "scripts/bench_plan.py", "--methods", "pixels,latentface:rdm-both", "--seeds", "2", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    # cells: (4 protocols + LatentFace's depth) x 2 seeds; jobs: 2 stage-1, 2 stage-2, 4 evaluations (one per model)
    assert "  dry run: 18 cells, 8 jobs, 3 arrays" in lines
    assert "  status (manifest of 8 jobs, queued or running): 0 done, 0 stale, 18 running, 0 failed, 0 missing" in lines
    rows = [line.split()[0] for line in lines[lines.index(next(x for x in lines if x.startswith("command"))) + 1:]]
    assert rows == ["python", "--dry-run", "--status"]
