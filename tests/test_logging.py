"""What a run leaves to read: loss curves beside each checkpoint, plain progress lines in logs."""
import csv
import re

import pytest
import torch
from torch import nn

from harness import trainlog
from harness.cli import main
from harness.progress import LineProgress, duration
from harness.train import fit

N, BATCH = 40, 8  # 5 steps per epoch


class Preempted(Exception):
    """Stands in for a job killed mid-training."""


def train(workdir, epochs, stop_after=None):
    """A linear model on random data through the shared loop; ``stop_after`` kills it after that
    many steps of this call (an exception, as a preempted job would die)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = torch.randn(N, 4)
    calls = []

    def step(batch):
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise Preempted
        pred = model(batch)
        return {"loss": pred.pow(2).mean(), "aux": pred.abs().mean()}

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return fit(model=model, optimizer=opt, step=step, data=data, epochs=epochs, batch_size=BATCH, seed=0,
               workdir=workdir, device=torch.device("cpu"), desc="toy fit")


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_keeps_one_csv_row_per_step_and_epoch_and_a_png(tmp_path):
    result = train(tmp_path, epochs=3)
    steps = rows(tmp_path / "losses_step.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 16))
    assert [int(r["epoch"]) for r in steps] == [1] * 5 + [2] * 5 + [3] * 5
    assert list(steps[0]) == ["step", "epoch", "lr", "loss", "aux"]
    assert all(float(r["lr"]) == 0.05 for r in steps)
    epochs = rows(tmp_path / "losses_epoch.csv")
    assert [(int(r["epoch"]), int(r["step"])) for r in epochs] == [(1, 5), (2, 10), (3, 15)]
    # the epoch rows are the means of their step rows, and match fit's own history
    for e, row in enumerate(epochs):
        mean = sum(float(r["loss"]) for r in steps[5 * e : 5 * e + 5]) / 5
        assert float(row["loss"]) == pytest.approx(mean) == pytest.approx(result.history[e]["loss"])
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_run_drops_the_rows_past_its_checkpoint(tmp_path):
    with pytest.raises(Preempted):
        train(tmp_path, epochs=3, stop_after=7)  # epoch 1 checkpointed, 2 steps of epoch 2 logged, then killed
    assert len(rows(tmp_path / "losses_step.csv")) == 7
    train(tmp_path, epochs=3)
    steps = rows(tmp_path / "losses_step.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 16))  # steps 6-7 were redone, not doubled
    assert len(rows(tmp_path / "losses_epoch.csv")) == 3
    train(tmp_path / "fresh", epochs=3)
    assert [r["loss"] for r in steps] == [r["loss"] for r in rows(tmp_path / "fresh" / "losses_step.csv")]


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "0")  # a line at every update
    train(tmp_path, epochs=2)
    lines = capsys.readouterr().out.splitlines()
    progress = [ln for ln in lines if re.fullmatch(r"\[\d\d:\d\d:\d\d\] toy fit: \d+/10 steps \(\d+%\), \d+ img/s, ETA \S+(, loss=.*)?", ln)]
    assert len(progress) == 9  # steps 1-9 (the 10th closes the stage)
    assert "toy fit: 5/10 steps (50%)" in progress[4]
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] toy fit: done, 10 steps in \S+, \d+ img/s, .*", lines[-1])


def test_line_progress_counts_images_and_estimates_the_rest(capsys):
    bar = LineProgress(total=100, desc="decode", every=0.0, initial=20)
    bar.start -= 8.0  # as if 8 s had passed
    bar.update(40)
    bar.close()
    first, last = capsys.readouterr().out.splitlines()
    # 40 images in 8 s: 5 img/s; 40 left: 8 s more
    assert first.endswith("decode: 60/100 images (60%), 5 img/s, ETA 8.0s")
    assert "decode: done, 40 images in" in last
    assert [duration(s) for s in (0.42, 42, 190, 7500)] == ["0.4s", "42s", "3m10s", "2h05m"]


def test_cli_run_prints_each_cell_as_it_finishes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "0")
    argv = ["--methods", "pixels,random-cnn", "--protocol", "fer,verification", "--datasets", "toy", "--preset", "smoke",
            "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    done = [ln for ln in out.splitlines() if ln.startswith("cell done: ")]
    assert len(done) == 4 and all(re.search(r"accuracy \d+\.\d\d .*\(\d+\.\d s\)$", ln) for ln in done)
    assert out.index(done[-1]) < out.index("finished in")  # before the end, not only at it
    assert re.search(r"random-cnn features train: done, 80 images", out)


def test_log_backends_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    base = ["--methods", "pixels", "--datasets", "toy", "--results-dir", str(tmp_path / "r")]
    assert main([*base, "--log", "mlflow"]) == 2
    assert "--log mlflow: unknown logger; choose from tensorboard, wandb" in capsys.readouterr().err
    monkeypatch.setattr(trainlog.importlib.util, "find_spec", lambda name: None)
    assert main([*base, "--log", "tensorboard"]) == 2
    assert "pip install -e '.[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_tensorboard_gets_every_step(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(trainlog.LOG_ENV, "tensorboard")
    train(tmp_path, epochs=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 11))
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in rows(tmp_path / "losses_step.csv")])
    assert [e.step for e in events.Scalars("epoch/loss")] == [5, 10]


def test_wandb_logs_offline_without_a_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv(trainlog.LOG_ENV, "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(tmp_path, epochs=1)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert len(rows(tmp_path / "losses_step.csv")) == 5  # the CSV is written whatever else logs
