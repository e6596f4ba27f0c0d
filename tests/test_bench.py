"""scripts/bench.py: the smoke form runs in CI with figures that agree with each other, its rates
are what a clock the test moves says they must be, and the paper-sweep projection adds up."""
import json
import math
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch
from conftest import load_script

from harness.datasets.synthetic.dataset import SyntheticConfig
from harness.registry import METHODS

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


def test_smoke_bench_figures_agree_with_each_other_and_the_known_counts(tmp_path):
    """Figures related by construction must agree: rates with the counts and seconds they come
    from, the counts with the sizes the smoke data and configs give, a training step's time with
    the training's wall time, the renderer's share with the stage-1 step it divides."""
    out = tmp_path / "bench.json"
    done = bench("--smoke", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"meta", "synthetic", "train_step", "features", "renderer", "protocol_rerun"}
    assert set(result["train_step"]) == {"smoke"} and set(result["train_step"]["smoke"]) == set(TRAINED)
    assert set(result["features"]["smoke"]) == set(EXTRACTED)
    assert set(result["renderer"]["torch"]) == {"rasterize_forward_ms", "rasterize_backward_ms", "render_forward_backward_ms"}
    assert (result["renderer"]["batch"], result["renderer"]["size"]) == (16, 64)
    assert set(result["protocol_rerun"]) == {"fer", "verification"}
    # Without PyTorch3D the bench says so instead of quoting figures from elsewhere.
    assert isinstance(result["renderer"]["pytorch3d"], dict) or "not importable" in result["renderer"]["pytorch3d"]
    numbers = dict(figures({k: v for k, v in result.items() if k != "meta"}))
    assert all(0 < v < math.inf for v in numbers.values()), {k: v for k, v in numbers.items() if not 0 < v < math.inf}
    assert "images/s" in done.stdout or "img/s" in done.stdout

    # the synthetic world: every split of the bench's smoke data (its DATA), the rate over all of them;
    # relations recompute the bench's own arithmetic on figures JSON stores exactly: rel 1e-9 is
    # room for a sum taken in another order, far below any wrong count or missing factor
    cfg = SyntheticConfig.resolve("smoke", {"fer_train_images": "140", "fer_test_images": "70"}, "synthetic")
    synthetic = result["synthetic"]
    splits = synthetic["splits"]
    assert {name: split["images"] for name, split in splits.items()} == {
        "pretrain": cfg.pretrain_images, "clips": cfg.clips * cfg.clip_frames, "fer_train": cfg.fer_train_images,
        "fer_test": cfg.fer_test_images, "verification": cfg.verification_folds * cfg.people_per_fold * cfg.images_per_person,
    }
    assert synthetic["images"] == sum(split["images"] for split in splits.values())
    assert synthetic["seconds"] == pytest.approx(sum(split["seconds"] for split in splits.values()), rel=1e-9)
    assert synthetic["images_per_s"] == pytest.approx(synthetic["images"] / synthetic["seconds"], rel=1e-9)

    # training: a step is its batch at the rate; the timed steps happened inside the training's wall time
    for name, step in result["train_step"]["smoke"].items():
        method_cfg = METHODS.get(name.removesuffix("-encoder")).Config.resolve("smoke")
        assert step["batch"] == getattr(method_cfg, "stage2_batch_size", method_cfg.batch_size), name
        assert step["timed_steps"] == result["meta"]["steps"]["smoke"], name
        assert step["ms_per_step"] == pytest.approx(1000 * step["batch"] / step["images_per_s"], rel=1e-9), name
        assert step["wall_s"] >= step["timed_steps"] * step["ms_per_step"] / 1000, name

    # the renderer's share divides its time by the stage-1 step timed above
    share = result["renderer"]["share_of_stage1_step"]["smoke"]
    assert share["step_ms"] == result["train_step"]["smoke"]["unsup3d"]["ms_per_step"]
    assert share["share"] == pytest.approx(share["render_forward_backward_ms"] / share["step_ms"], rel=1e-9)

    # protocol reruns: what the probe trains on (FER training images; every fold's pairs, matched and mismatched)
    reruns = result["protocol_rerun"]
    assert reruns["fer"]["items"] == cfg.fer_train_images
    assert reruns["verification"]["items"] == 2 * cfg.verification_pairs * cfg.verification_folds


# --- the bench's arithmetic under a clock the test moves --------------------------------------------
class Clock:
    """Stands in for the ``time`` module: ``perf_counter`` moves only when the test advances it,
    so a figure is exactly what the work it timed took (a timer that measures nothing reads 0)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clocked(monkeypatch):
    """(bench module, clock): scripts/bench.py with its timer on the test's clock."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # bench.py imports its neighbour bench_sweep_cost
    module, clock = load_script("bench"), Clock()
    monkeypatch.setattr(module, "time", clock)
    return module, clock


def test_median_times_the_call_alone_after_the_warm_up(clocked):
    module, clock = clocked
    took = iter([0.5, 0.003, 0.001, 0.002])  # the warm-up, then three timed calls

    def setup() -> None:
        clock.advance(10.0)  # setup is not the timed work

    assert module.median_ms(lambda _: clock.advance(next(took)), torch.device("cpu"), 3, setup) == pytest.approx(2.0)


def test_extraction_rate_counts_the_images_it_timed(clocked):
    """1 ms per image over 600 images in batches of 256 (the last one 88): 1000 images/s exactly,
    whatever the warm-up batch cost; a rate from the batch size or with the warm-up counted is not."""
    module, clock = clocked
    calls = []

    def encode(x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        clock.advance(0.001 * len(x) + (5.0 if len(calls) == 1 else 0.0))  # the warm-up is slow
        return x.flatten(1)

    method = types.SimpleNamespace(ctx=types.SimpleNamespace(device=torch.device("cpu")), input_size=4, encode=encode)
    images = torch.zeros(600, 3, 4, 4, dtype=torch.uint8)
    assert module.extraction_rate(method, images, 256, budget_s=10.0) == pytest.approx(1000.0)
    assert calls == [256, 256, 256, 88]


def test_synthetic_rate_is_images_over_seconds(clocked, monkeypatch):
    """Splits that take 2 ms per image: 500 images/s, each split's count and seconds as generated."""
    module, clock = clocked
    sizes = {"pretrain": 10, "clips": 32, "fer_train": 14, "fer_test": 7, "verification": 12}

    def images(n: int) -> torch.Tensor:
        clock.advance(0.002 * n)
        return torch.zeros(n, 3, 2, 2, dtype=torch.uint8)

    class World:
        def __init__(self, *args) -> None:
            pass

        def pretrain(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(images=images(sizes["pretrain"]))

        def clips(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(frames=types.SimpleNamespace(images=images(sizes["clips"])))

        def fer_split(self, split: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(images=images(sizes[f"fer_{split}"]))

        def verification(self) -> tuple:
            return types.SimpleNamespace(images=images(sizes["verification"])), None

    monkeypatch.setattr(module, "SyntheticFaces", World)
    figures, _ = module.bench_synthetic("smoke", Path("unused"))
    assert {name: split["images"] for name, split in figures["splits"].items()} == sizes
    assert {name: split["seconds"] for name, split in figures["splits"].items()} == pytest.approx({k: 0.002 * n for k, n in sizes.items()})
    assert (figures["images"], figures["images_per_s"]) == (sum(sizes.values()), pytest.approx(500.0))


def test_training_rates_are_the_images_over_their_steps_time(monkeypatch):
    """The bench's training figure is ``fit``'s warm rate: with 1 ms per image after a first step
    of 0.5 s, the warm rate is 1000 images/s and the overall one 40 images over 0.532 s."""
    import harness.train

    clock = Clock()
    monkeypatch.setattr(harness.train, "time", clock)
    model = torch.nn.Linear(2, 1)
    steps = []

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        steps.append(1)
        clock.advance(0.5 if len(steps) == 1 else 0.001 * len(batch))
        return {"loss": model(batch).pow(2).mean()}

    with tempfile.TemporaryDirectory() as folder:
        result = harness.train.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step=step,
                                   data=torch.randn(42, 2), epochs=1, batch_size=8, seed=0, workdir=Path(folder),
                                   device=torch.device("cpu"))
    assert len(steps) == 5  # 42 rows, batch 8: the partial batch is dropped
    assert result.warm_images_per_second == pytest.approx(1000.0)
    assert result.images_per_second == pytest.approx(40 / 0.532)


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
