"""scripts/bench.py: the smoke form runs in CI, and the paper-sweep projection adds up."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("unsup3d", "simclr", "mae", "latentface", "latentface-encoder")
EXTRACTED = ("pixels", "random-cnn", "unsup3d", "simclr", "mae", "latentface")


def bench(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *argv], capture_output=True, text=True, env=env, timeout=600)


def figures(value, path=""):
    """(path, number) of every number in a JSON value (booleans are not figures)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from figures(item, f"{path}.{key}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_smoke_bench_writes_every_figure_and_each_is_positive(tmp_path):
    out = tmp_path / "bench.json"
    done = bench("--smoke", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"meta", "synthetic", "train_step", "features", "renderer", "protocol_rerun"}
    assert set(result["train_step"]) == {"smoke"} and set(result["train_step"]["smoke"]) == set(TRAINED)
    assert set(result["features"]["smoke"]) == set(EXTRACTED)
    assert set(result["renderer"]["torch"]) == {"rasterize_forward_ms", "rasterize_backward_ms", "render_forward_backward_ms"}
    assert (result["renderer"]["batch"], result["renderer"]["size"]) == (16, 64)
    assert 0 < result["renderer"]["share_of_stage1_step"]["smoke"]["share"] < 1
    assert set(result["protocol_rerun"]) == {"fer", "verification"}
    # Without PyTorch3D the bench says so instead of quoting figures from elsewhere.
    assert isinstance(result["renderer"]["pytorch3d"], dict) or "not importable" in result["renderer"]["pytorch3d"]
    numbers = dict(figures({k: v for k, v in result.items() if k != "meta"}))
    assert len(numbers) > 50
    assert all(v > 0 for v in numbers.values()), {k: v for k, v in numbers.items() if not v > 0}
    assert "images/s" in done.stdout or "img/s" in done.stdout


def fake_bench(rate: float) -> dict:
    """A bench result with every paper-preset rate equal to ``rate``."""
    return {
        "meta": {"device": "test device"},
        "train_step": {"paper": {name: {"images_per_s": rate, "batch": 16} for name in TRAINED}},
        "features": {"paper": {name: {"images_per_s": rate} for name in EXTRACTED}},
        "protocol_rerun": {"fer": {"items": 2000, "seconds": 2000 / rate}, "verification": {"items": 1200, "seconds": 1200 / rate}},
    }


def test_projection_prices_each_job_by_its_rate():
    sweep = load_script("bench_sweep_cost")
    one, two = sweep.project(fake_bench(100.0)), sweep.project(fake_bench(200.0))
    assert two["device_hours"] == pytest.approx(one["device_hours"] / 2)
    stage1 = next(j for j in one["jobs"] if j["what"].startswith("stage 1 on CelebA"))
    assert stage1["hours"] == pytest.approx(30 * 162_770 / 100.0 / 3600)
    assert one["device_hours"] == pytest.approx(sum(j["hours"] for j in one["jobs"]))
    assert sweep.project(fake_bench(100.0), seeds=3)["device_hours"] == pytest.approx(3 * one["device_hours"])
    text = sweep.render(one)
    assert "device-hours" in text and "162,770" in text and "140,755" in text


def test_project_from_a_saved_bench_and_bad_input(tmp_path):
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(fake_bench(50.0)))
    done = bench("--project", "--from", str(saved))
    assert done.returncode == 0, done.stderr
    assert "Projected cost" in done.stdout and "test device" in done.stdout
    for argv, message in [
        (["--smoke", "--project"], "--project needs the paper preset"),
        (["--from", str(saved)], "--from reads a saved bench for --project"),
        (["--project", "--from", str(tmp_path / "missing.json")], "cannot read a bench JSON"),
        (["--smoke", "--set", "nosuch.x=1"], "the bench takes the train section"),
    ]:
        failed = bench(*argv)
        err = failed.stderr
        assert failed.returncode == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
