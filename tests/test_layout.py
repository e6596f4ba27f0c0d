"""The layout's rules, checked on the source: harness/ imports nothing from methods/ or protocols/,
and the modules of the dispatch package import only from those below them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The dispatch package, lowest first: each module may import only from those before it.
DISPATCH = ["profiles", "plan", "jobs", "manifest", "executors", "commands"]


def imported(path: Path) -> set[str]:
    """Every module a file imports, as written (``from a.b import c`` gives ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_harness_finds_plugins_only_through_the_registry():
    for path in sorted((ROOT / "harness").rglob("*.py")):
        bad = {m for m in imported(path) if m.split(".")[0] in ("methods", "protocols")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_dispatch_modules_import_only_from_below():
    package = ROOT / "harness" / "dispatch"
    assert sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__") == sorted(DISPATCH)
    for i, name in enumerate(DISPATCH):
        assert "harness.dispatch" not in imported(package / f"{name}.py"), f"{name}.py imports the package above it"
        inside = {m.split(".")[2] for m in imported(package / f"{name}.py") if m.startswith("harness.dispatch.")}
        assert inside <= set(DISPATCH[:i]), f"harness/dispatch/{name}.py imports {sorted(inside - set(DISPATCH[:i]))}"


#: Scripts that no other test runs: each must at least start from a checkout (its imports resolve
#: from where it lives) and parse its arguments.
UNTESTED_SCRIPTS = ["docs/depth_study/depth_curve.py", "docs/checkpoint_loading/bench_checkpoint.py", "docs/synthetic_contact_sheet.py"]


@pytest.mark.parametrize("script", UNTESTED_SCRIPTS)
def test_study_scripts_start(script, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
