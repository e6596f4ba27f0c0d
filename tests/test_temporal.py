"""Temporal (methods/temporal.py): the official ranking loss, frames drawn at the official
offsets, training and resume, the authors' DataParallel layout, one-line refusals, the paper size."""
from __future__ import annotations

import shutil

import pytest
import torch

from harness.errors import BenchError
from methods.clipbase import jitter_crop, resnet
from methods.sslfer import SSLFER
from methods.temporal import Temporal, TemporalConfig, ranking_loss
from tests.clip_methods import make_ctx, official_round_trip, refuses_other_file, resumes_after_kill, tiny_clips, trains_and_reloads
from tests.clip_methods import one_thread  # noqa: F401  (an autouse fixture: one thread, the CPU is shared)

PAPER_WIDTH = {"width": "64"}


def test_ranking_loss_is_the_official_tuplet_loss():
    g = torch.Generator().manual_seed(0)
    anchor, close, far = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(5, 10, 8, generator=g)
    margin = 0.03
    expected = []
    for i in range(5):  # the official loop: neighbour against far 1, then far k against far k + 1
        dist = [float(((anchor[i] - close[i]) ** 2).sum())] + [float(((anchor[i] - far[i, k]) ** 2).sum()) for k in range(10)]
        expected.append(sum(max(0.0, dist[k] - dist[k + 1] + margin) for k in range(10)))
    assert ranking_loss(anchor, close, far, margin).item() == pytest.approx(sum(expected) / 5, rel=1e-5)
    # frames already ordered by more than the margin cost nothing
    line = torch.arange(12, dtype=torch.float)[:, None].expand(12, 4)[None] * torch.tensor([1.0, 0, 0, 0])
    assert ranking_loss(line[:, 0], line[:, 1], line[:, 2:], margin).item() == 0.0


def test_jitter_crop_cuts_a_fixed_size_square_at_a_random_place():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(jitter_crop(x, 16, 1.0, 0.0), x, atol=1e-6)
    assert torch.allclose(jitter_crop(x, 8, 0.5, 0.0), x[:, :, 4:12, 4:12], atol=1e-6)  # no slack: the centre
    shifted = jitter_crop(x, 8, 0.5, 0.5)  # corners anywhere in [0, 8] px: crops of the image, never of padding
    assert shifted.shape == (4, 3, 8, 8) and not torch.allclose(shifted, jitter_crop(x, 8, 0.5, 0.0))


def test_a_step_embeds_anchor_neighbour_and_the_spaced_far_frames(tmp_path, monkeypatch):
    clips = tiny_clips(n_clips=4, length=16)
    method = Temporal(TemporalConfig.resolve("smoke", {"spacing": "1", "far_frames": "5"}), "default", make_ctx(tmp_path, clips))
    seen = []
    monkeypatch.setattr(method, "frames", lambda images, index: seen.append(index.clone()) or torch.zeros(index.numel(), 3, 32, 32))
    *_, step, _ = method.training_setup(clips.frames.images, 1)
    step(torch.stack(clips.clips))
    (index,) = seen
    t = index[:, :1]
    assert torch.equal(index, t + torch.tensor([0, 1, 2, 3, 4, 5, 6]))  # t, t + 1, far t + 1 + k
    assert (index // 16 == torch.arange(4)[:, None]).all()  # every frame from its own clip


def test_an_imagenet_file_initialises_the_trunk_and_keys_the_artifact_by_content(tmp_path, monkeypatch):
    trunk = resnet("resnet18", 64)
    state = {**trunk.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}  # torchvision's layout
    torch.save(state, tmp_path / "a.pth")
    shutil.copy(tmp_path / "a.pth", tmp_path / "b.pth")
    ctx = make_ctx(tmp_path, tiny_clips(n_clips=1))
    cfg = TemporalConfig.resolve("smoke", {"width": "64", "imagenet_weights": str(tmp_path / "a.pth")})
    method = Temporal(cfg, "default", ctx)
    net, *_ = method.training_setup(ctx.load_video().frames.images, 1)
    assert all(torch.equal(net.backbone.state_dict()[k], v) for k, v in trunk.state_dict().items())
    assert method.info()["init"] == f"ImageNet ResNet-18 from {tmp_path / 'a.pth'}"
    same = Temporal(cfg.replace(imagenet_weights=str(tmp_path / "b.pth")), "default", ctx)
    assert same.artifacts()[0].hash == method.artifacts()[0].hash  # the content counts, not the path
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    scratch = Temporal(cfg.replace(imagenet_weights=""), "default", ctx)
    assert scratch.info()["init"] == "scratch" and scratch.artifacts()[0].hash != method.artifacts()[0].hash


def test_smoke_training_and_reload(tmp_path):
    trains_and_reloads(Temporal, tmp_path, 256)


def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    resumes_after_kill(Temporal, tmp_path, monkeypatch, "ranking_loss")


def test_official_dataparallel_file_round_trip(tmp_path):
    keys = {f"module.resnet18.{i}.{k}" for i, k in [(0, "weight"), (1, "weight"), (1, "bias"), (1, "running_mean"), (1, "running_var"), (1, "num_batches_tracked")]}

    def write(state, path):  # train/triplet_rank_train.py's checkpoint(): {state_dict, optimizer}
        torch.save({"state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "momentum": 0.9}]}}, path)

    loaded = official_round_trip(Temporal, tmp_path, PAPER_WIDTH, write)
    state = loaded.official_state()
    assert len(state) == 122 and keys <= set(state) and {"module.fc1.weight", "module.fc1.bias"} <= set(state)
    assert all(k.startswith(("module.resnet18.", "module.fc1.")) for k in state)


def test_another_methods_file_is_one_line(tmp_path):
    sslfer = SSLFER(SSLFER.Config.resolve("smoke", {"width": "64"}), "default", make_ctx(tmp_path, tiny_clips(n_clips=1)))
    sslfer.net = sslfer.build_net()
    torch.save({"state_dict": sslfer.official_state()}, tmp_path / "sslfer.pth.tar")
    refuses_other_file(Temporal, PAPER_WIDTH, tmp_path / "sslfer.pth.tar", r"missing tensors module\.fc1\.bias")
    torch.save({"model": {}}, tmp_path / "odd.pth")
    refuses_other_file(Temporal, PAPER_WIDTH, tmp_path / "odd.pth", "not a temporal checkpoint")


def test_a_checkpoint_needs_the_official_width():
    with pytest.raises(BenchError, match="--preset paper"):
        TemporalConfig.resolve("smoke", {"checkpoint": __file__})


def test_paper_preset_takes_a_step_at_the_official_size(tmp_path):
    cfg = TemporalConfig.resolve("paper", {"batch_size": "1", "epochs": "1"})  # one clip: one step
    assert (cfg.input_size, cfg.width, cfg.lr, cfg.far_frames) == (256, 64, 1e-3, 10)
    clips = tiny_clips(n_clips=1, length=12, size=64)
    method = Temporal(cfg, "default", make_ctx(tmp_path, clips))
    method.prepare()
    assert method.net.fc1.in_features == 512
    x = torch.zeros(2, 3, 256, 256)
    assert method.encode(x, "fer", torch.arange(2)).shape == (2, 256)
