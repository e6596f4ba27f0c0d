"""Kill trials: a run killed with SIGKILL and resumed gives the numbers of an uninterrupted run.

The sweep trial kills a smoke sweep once in each stage (data, training, features, protocol,
result write) at a point drawn at random (``BENCH_KILL_SEED`` picks another draw), reruns it
after each kill, and compares every result file's metrics with an uninterrupted sweep. The
training trials kill single training loops in the middle of an epoch and compare weights and
loss histories bit for bit.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.datasets.base import ImageSet
from harness.method import MethodContext
from harness.train import fit
from methods.latentface.method import IdentityModel, LatentFaceConfig, train_kind
from methods.simclr import SimCLR, SimCLRConfig, SimCLRNet

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so that "tests.kill_points" imports as a --plugins module
    sys.path.insert(0, str(REPO))
#: A smoke sweep with a data stage (synthetic splits), training with mid-epoch checkpoints
#: (stage 1) and with augmentations from the global generator over two epochs (SimCLR).
SWEEP = [
    "--preset", "smoke", "--methods", "pixels,unsup3d,simclr", "--datasets", "synthetic", "--protocol", "fer,verification",
    "--set", "unsup3d.ckpt_every=1", "--set", "simclr.epochs=2",
    "--set", "synthetic.fer_train_images=140", "--set", "synthetic.fer_test_images=70",
]


def in_child(function, *args, env: dict[str, str] | None = None) -> int:
    """Run ``function(*args)`` in a forked child process and return its exit code (-9: SIGKILLed).

    Forking skips the seconds a fresh interpreter spends importing torch; the child is killed
    exactly as a separate process would be. This process runs torch on one thread (conftest),
    so no thread pool is forked.
    """
    def target() -> None:
        os.environ.update(env or {})
        sys.exit(function(*args) or 0)

    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    child.join(600)
    return child.exitcode


def metrics(results: Path) -> dict[str, dict]:
    return {str(f.relative_to(results)): json.loads(f.read_text())["metrics"] for f in sorted(results.glob("*/*/*.json"))}


def kill_plan(rng: random.Random) -> list[str]:
    """One kill per stage, at a random event of it (``tests/kill_points.py`` counts the events).

    Ranges stay within what the smoke sweep does in that run, so that every kill happens: stage 1
    has 4 steps (32 images, batch 8), SimCLR 2 epochs of 4 (64 images, batch 16); the features and
    protocol kills land in SimCLR's fer cell (one batch per split; the probe takes 2 steps per epoch
    for 20 epochs), which leaves two cells for the write kill.
    """
    return [
        f"data={rng.randint(1, 3)}",
        f"train:unsup3d stage 1={rng.randint(2, 3)}",  # the middle of its only epoch
        f"train:simclr={rng.randint(5, 7)}",  # the middle of its second epoch
        f"features={rng.randint(1, 2)}",
        f"protocol={rng.randint(1, 40)}",
        f"write={rng.randint(1, 2)}",
    ]


def test_killed_sweep_resumes_to_the_uninterrupted_results(tmp_path, capfd):
    argv = [*SWEEP, "--results-dir", str(tmp_path / "ref" / "results"), "--cache-dir", str(tmp_path / "ref" / "cache")]
    assert in_child(main, argv) == 0
    reference = metrics(tmp_path / "ref" / "results")
    assert len(reference) == 6

    seed = int(os.environ.get("BENCH_KILL_SEED", "15"))
    plan = kill_plan(random.Random(seed))
    argv = [*SWEEP, "--results-dir", str(tmp_path / "trial" / "results"), "--cache-dir", str(tmp_path / "trial" / "cache"),
            "--plugins", "tests.kill_points"]
    logs = []
    capfd.readouterr()
    for spec in [*plan, ""]:
        code = in_child(main, argv, env={"BENCH_KILL": spec})
        out, err = capfd.readouterr()
        logs.append(f"--- BENCH_KILL={spec!r}: exit {code}\n{out}{err}")
        assert code == (-signal.SIGKILL if spec else 0), f"kill plan {plan} (seed {seed}):\n" + "\n".join(logs)[-6000:]
    assert "cannot be trusted (its description is missing); rebuilding" in "\n".join(logs), "the data kill left a split without its JSON"
    assert "left by a killed writer" in logs[-1], "the write kill left its temporary file, removed at the next start"
    assert metrics(tmp_path / "trial" / "results") == reference, f"kill plan {plan} (seed {seed})"
    assert not list((tmp_path / "trial").rglob("*.tmp"))


# --- single training loops --------------------------------------------------------------------------
def train_toy(workdir: Path, kill_at: int = 0) -> None:
    """``fit`` on a model whose steps draw from every kind of generator; SIGKILL at step ``kill_at``."""
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # the rate drops at the last epoch only: a scheduler restarted by the resume (in epoch 2) would
    # count from 0 and miss the drop, where StepLR(1) would recompute the same rate from the optimiser
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
    noise = torch.Generator().manual_seed(7)
    data = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    steps = []

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        steps.append(1)
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        # dropout and rand draw from torch's generator; then numpy's, Python's and the step's own
        jitter = torch.rand(1) + float(np.random.rand()) + random.random() + torch.rand(1, generator=noise)
        target = batch.sum(1, keepdim=True) * jitter
        return {"loss": torch.nn.functional.mse_loss(model(batch), target), "jitter": jitter.squeeze()}

    result = fit(model=model, optimizer=optimizer, step=step, data=data, epochs=3, batch_size=8, seed=3, workdir=workdir,
                 device=torch.device("cpu"), scheduler=scheduler, ckpt_every=1, generators={"noise": noise})
    torch.save({"model": model.state_dict(), "history": result.history}, workdir / "final.pt")


def test_training_killed_mid_epoch_resumes_bit_identically(tmp_path):
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
    assert in_child(train_toy, tmp_path / "whole") == 0
    kill_at = random.Random(int(os.environ.get("BENCH_KILL_SEED", "15"))).randint(7, 9)  # epoch 2 of 3 (5 steps each)
    assert in_child(train_toy, tmp_path / "killed", kill_at) == -signal.SIGKILL
    state = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, kill_at - 6), "the resume point is in the middle of epoch 2"
    assert state["sums"], "the partial epoch's loss sums are saved"
    assert in_child(train_toy, tmp_path / "killed") == 0
    whole = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    assert whole["history"] == resumed["history"]  # exact floats, the partial epoch included
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def smooth_images(n: int, size: int = 32) -> torch.Tensor:
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 255).to(torch.uint8)


def interrupt_after(monkeypatch, cls, method: str, calls: int) -> None:
    """Make ``cls.method`` raise KeyboardInterrupt on its ``calls``-th call (a preempted job)."""
    real, count = getattr(cls, method), []

    def wrapped(self, *args, **kwargs):
        count.append(1)
        if len(count) == calls:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)


def test_simclr_resumed_in_an_early_epoch_trains_the_same_weights(tmp_path, monkeypatch):
    """SimCLR's crops, flips and jitter draw from torch's global generator: the checkpoint restores
    it. Killed in epoch 2 of 4, the resume must also restore the warm-up + cosine schedule: two
    more scheduler steps follow, and a schedule restarted at epoch 0 would set other rates there."""
    cfg = SimCLRConfig.resolve("smoke", {"epochs": "4", "warmup_epochs": "1", "train_images": "32"})  # batch 16: 2 steps per epoch
    images = ImageSet(smooth_images(32))

    def trained(name: str) -> dict[str, torch.Tensor]:
        method = SimCLR(cfg, "default", MethodContext.standalone(images, tmp_path / name, name="test"))
        method.prepare()
        return method.net.state_dict()

    whole = trained("whole")
    with monkeypatch.context() as patch:
        interrupt_after(patch, SimCLRNet, "loss", 4)  # killed in epoch 2, resumed from the end of epoch 1
        with pytest.raises(KeyboardInterrupt):
            trained("resumed")
    (ckpt,) = (tmp_path / "resumed").rglob("last.pt")
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"], state["scheduler"]["last_epoch"]) == (1, 0, 1), "3 of 4 epochs left"
    torch.manual_seed(12345)  # whatever the generator holds now, the checkpoint's state is what counts
    resumed = trained("resumed")
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name


def test_stage2_resumed_in_an_early_epoch_draws_the_same_noise_and_rates(tmp_path, monkeypatch):
    """Killed in epoch 2 of 4: the diffusion noise generator and the cosine schedule (two more
    steps of it follow the resume) come back from the checkpoint."""
    cfg = LatentFaceConfig.resolve("smoke", {"stage2_epochs": "4"})
    g = torch.Generator().manual_seed(0)
    z_exp, z_id = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)  # batch 16: 2 steps per epoch

    def trained(name: str) -> tuple[dict, dict]:
        stage2 = IdentityModel("rdm", ("texture",), 16, cfg, {"texture": 5})
        summary = train_kind(stage2, "texture", z_exp, z_id, 5, tmp_path / name, torch.device("cpu"))
        return stage2.state_dict(), summary["history"]

    whole, history = trained("whole")
    with monkeypatch.context() as patch:
        interrupt_after(patch, IdentityModel, "loss", 4)  # killed in epoch 2, resumed from the end of epoch 1
        with pytest.raises(KeyboardInterrupt):
            trained("resumed")
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["scheduler"]["last_epoch"]) == (1, 1), "3 of 4 epochs left"
    resumed, resumed_history = trained("resumed")
    assert resumed_history == history
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name
