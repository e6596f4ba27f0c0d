"""FAb-Net and TCAE: training on frame pairs lowers the loss, the curriculum follows the official
schedule, a killed run resumes bit for bit, trained and official-layout files reload to the same
features, a wrong file is one ``error:`` line, and the paper networks train a step at 256 px.

Official-layout files are written from the project's own networks through ``official_state``
(the key names are the official ones; ``methods/fabnet/checkpoint.py``), in PyTorch 0.4's
legacy (non-zip) format, with random values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods  # noqa: F401  (registers the methods)
from harness.cli import main
from harness.datasets.base import ClipSet, ImageSet
from harness.errors import BenchError
from harness.method import MethodContext, to_input
from methods.fabnet.checkpoint import official_state
from methods.fabnet.curriculum import Curriculum, window_mean
from methods.fabnet.method import FabNetMethod, FlowMethod, TCAEMethod, to_unit
from methods.fabnet.models import TCAE, FabNet

METHODS_UNDER_TEST = [FabNetMethod, TCAEMethod]


def moving_clips(n_clips: int = 6, frames: int = 4, size: int = 16) -> ClipSet:
    """Clips of a smooth random pattern translated a little from frame to frame (uint8)."""
    g = torch.Generator().manual_seed(0)
    images, clips = [], []
    for c in range(n_clips):
        pattern = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(2 * size, 2 * size), mode="bilinear", align_corners=False)
        for f in range(frames):
            images.append(pattern[0, :, f : f + size, f : f + size])
        clips.append(torch.arange(c * frames, (c + 1) * frames))
    frames_set = ImageSet((torch.stack(images) * 255).to(torch.uint8), identities=torch.arange(n_clips).repeat_interleave(frames))
    return ClipSet(frames=frames_set, clips=clips)


def make_ctx(tmp_path: Path, clips: ClipSet) -> MethodContext:
    return MethodContext.standalone(clips.frames, tmp_path, clips=clips, name="test")


def smoke(cls: type[FlowMethod], ctx: MethodContext, **overrides: str) -> FlowMethod:
    return cls(cls.Config.resolve("smoke", overrides), "default", ctx)


def save_legacy(path: Path, content: dict) -> Path:
    torch.save(content, path, _use_new_zipfile_serialization=False)  # as PyTorch 0.4 wrote them
    return path


def random_official(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = official_state(net)
    return {k: (torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=g) * 0.2) for k, v in state.items()}


# --- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", METHODS_UNDER_TEST, ids=lambda c: c.name)
def test_training_steps_lower_the_windowed_loss(cls, tmp_path):
    method = smoke(cls, make_ctx(tmp_path, moving_clips()), lr="0.05")
    torch.manual_seed(0)
    net = method.build_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=method.cfg.lr, momentum=method.cfg.momentum)
    frames = to_unit(to_input(moving_clips().frames.images, 16, torch.device("cpu")))
    target, source = frames[1::2], frames[0::2]  # the next frame is the target of the one before
    assert set(net.per_sample_losses(target, source)) == set(cls.Net.WEIGHTS)

    def loss() -> torch.Tensor:
        return method.weighted(net.per_sample_losses(target, source), (0.0, 0.5))["loss"]

    # training-mode BatchNorm (batch statistics) in both measurements: only the weights differ
    with torch.no_grad():
        first = float(loss())
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(8):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with torch.no_grad():
        assert float(loss()) < first


def test_window_mean_is_the_official_slice_and_the_curriculum_moves_then_lowers_the_lr():
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 7.0, 6.0, 9.0, 8.0])
    assert float(window_mean(values, (0.0, 0.5))) == pytest.approx((0 + 1 + 2 + 3 + 4) / 5)
    assert float(window_mean(values, (0.4, 0.9))) == pytest.approx((4 + 5 + 6 + 7 + 8) / 5)

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    curriculum = Curriculum(optimizer, validate=lambda: 1.0, patience=2, plateau_patience=0)
    windows = []
    for _ in range(24):
        curriculum.step()  # the validation loss never improves after the first epoch
        windows.append(tuple(round(w, 6) for w in curriculum.window))
    # stalls of more than 2 epochs: epochs 3, 7, 11, 15 move the window, then it stays
    assert windows[2] == (0.0, 0.5) and windows[3] == (0.1, 0.6) and windows[7] == (0.2, 0.7)
    assert windows[15] == (0.4, 0.9) == windows[-1]
    assert optimizer.param_groups[0]["lr"] < 1.0  # stalls after that step ReduceLROnPlateau

    with pytest.raises(BenchError, match="fabnet.window_top=0.1: keeps no sample of a batch of 8"):
        FabNetMethod.Config.resolve("smoke", {"window_top": "0.1"}, "fabnet")

    copy = Curriculum(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), validate=lambda: 1.0)
    copy.load_state_dict(curriculum.state_dict())
    assert copy.state_dict() == curriculum.state_dict()


@pytest.mark.parametrize("cls", METHODS_UNDER_TEST, ids=lambda c: c.name)
def test_trained_artifact_reloads_to_the_same_features_without_training(cls, tmp_path):
    clips = moving_clips()
    ctx = make_ctx(tmp_path, clips)
    method = smoke(cls, ctx)
    method.prepare()
    (artifact,) = method.artifacts()
    done = json.loads((artifact.path(tmp_path) / "done.json").read_text())
    assert len(done["history"]) == 1 and len(done["validation_loss"]) == 1 and done["validation_pairs"] > 0
    assert set(done["history"][0]) == {"loss", *cls.Net.WEIGHTS}

    x = to_input(clips.frames.images[:5], method.input_size, ctx.device)
    index = torch.arange(5)
    features = method.encode(x, "fer", index)
    embedding = method.cfg.embedding
    assert features.shape == (5, embedding) and torch.equal(method.encode(x, "verification", index), features)
    parts = method.encode(x, "parts", index)
    assert list(method.parts()) == list(cls.Net.PARTS) and parts.shape == (5, embedding * len(cls.Net.PARTS))
    assert torch.equal(parts[:, method.parts()[cls.Net.PARTS[0]]], features)  # fer reads the first part (TCAE: au)

    ctx.load_video = lambda: pytest.fail("a built artifact must not be retrained")
    reloaded = smoke(cls, ctx)
    reloaded.prepare()
    assert torch.equal(reloaded.encode(x, "fer", index), features)


def test_killed_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    clips = moving_clips()
    overrides = {"epochs": "2", "batch_size": "4"}  # 20 training frames: 5 steps per epoch
    reference = smoke(TCAEMethod, make_ctx(tmp_path / "reference", clips), **overrides)
    reference.prepare()
    calls = []
    original = TCAE.per_sample_losses

    def per_sample_losses(self, target, source):
        calls.append(1)
        if len(calls) == 8 and self.training:
            raise KeyboardInterrupt  # killed in the middle of epoch 2
        return original(self, target, source)

    monkeypatch.setattr(TCAE, "per_sample_losses", per_sample_losses)
    ctx = make_ctx(tmp_path / "killed", clips)
    with pytest.raises(KeyboardInterrupt):
        smoke(TCAEMethod, ctx, **overrides).prepare()
    monkeypatch.setattr(TCAE, "per_sample_losses", original)
    resumed = smoke(TCAEMethod, ctx, **overrides)
    resumed.prepare()
    a = torch.load(reference.artifacts()[0].path(tmp_path / "reference") / "model.pt")
    b = torch.load(resumed.artifacts()[0].path(tmp_path / "killed") / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the authors' files -----------------------------------------------------------------------------
LAYOUTS = {
    # the training scripts also pickle their argparse options (``opts``)
    "training": lambda state: {
        "state_dict": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 10, "lr": 1e-4, "momentum": 0.9,
        "opts": argparse.Namespace(lr=1e-4, batch_size=128, minpercentile=0.4, maxpercentile=0.9),
    },
    "classifier": lambda state: {"state_dict_model": state, "state_dict": {"batch_norm.weight": torch.ones(8), "linear.weight": torch.zeros(3, 8)}},
    "bare": lambda state: {f"module.{k}": v for k, v in state.items()},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cls", METHODS_UNDER_TEST, ids=lambda c: c.name)
def test_official_layouts_load_strictly_and_give_the_networks_features(cls, layout, tmp_path):
    clips = moving_clips()
    ctx = make_ctx(tmp_path, clips)
    net = smoke(cls, ctx).build_net()
    state = random_official(net, seed=3)
    path = save_legacy(tmp_path / f"{cls.name}.pth", LAYOUTS[layout](state))
    ctx.load_video = lambda: pytest.fail("a loaded checkpoint must not train")
    method = smoke(cls, ctx, checkpoint=str(path))
    assert method.artifacts() == []
    method.prepare()
    record = method.weights_file()
    assert record["layout"] == layout and record["module_prefix"] == (layout == "bare") and len(record["sha256"]) == 64
    assert method.fingerprint()["weights"] == record["sha256"]

    net.load_state_dict(state, strict=False)  # the same values; the 0.4 files lack num_batches_tracked
    x = to_input(clips.frames.images[:4], method.input_size, ctx.device)
    with torch.no_grad():
        expected = net.eval().embed((x + 1) / 2)  # official input: [0, 1]
    assert torch.equal(method.encode(x, "fer", torch.arange(4)), expected[cls.Net.PARTS[0]])


def test_an_encoder_only_file_serves_the_features(tmp_path):
    ctx = make_ctx(tmp_path, moving_clips())
    net = smoke(TCAEMethod, ctx).build_net()
    state = {k: v for k, v in random_official(net, seed=4).items() if k.startswith("encoder.")}
    path = save_legacy(tmp_path / "tcae.pth", state)
    method = smoke(TCAEMethod, ctx, checkpoint=str(path))
    method.prepare()
    assert method.weights_file()["encoder_only"]
    assert all(torch.equal(method.net.encoder.state_dict()[k[len("encoder.") :]], v) for k, v in state.items())


def test_another_methods_file_is_one_error_line(tmp_path, capsys):
    fabnet = FabNet(16, 2, 8)
    path = save_legacy(tmp_path / "fabnet.pth", {"state_dict": random_official(fabnet, seed=5)})
    argv = ["--methods", "tcae", "--preset", "smoke", "--datasets", "toy", "--protocol", "fer", "--set", f"tcae.checkpoint={path}"]
    argv += ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: tcae.checkpoint=") and "missing tensors encoder.batch_norm.bias, encoder.batch_norm.running_mean" in err[0]
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_a_file_of_other_sizes_names_the_settings(tmp_path):
    ctx = make_ctx(tmp_path, moving_clips())
    path = save_legacy(tmp_path / "wide.pth", {"state_dict": random_official(FabNet(16, 4, 8), seed=6)})
    with pytest.raises(BenchError, match=r"encoder\.0\.weight has shape \(4, 3, 4, 4\), the model expects \(2, 3, 4, 4\).*width"):
        smoke(FabNetMethod, ctx, checkpoint=str(path)).prepare()


def test_paper_networks_have_the_official_tensor_counts_and_train_a_step_at_256_px(tmp_path):
    """Official files hold 128 (FAb-Net) and 146 (TCAE) tensors without num_batches_tracked."""
    ctx = make_ctx(tmp_path, moving_clips())
    for cls, tensors in ((FabNetMethod, 128), (TCAEMethod, 146)):
        method = cls(cls.Config.resolve("paper"), "default", ctx)
        cfg = method.cfg
        assert (cfg.input_size, cfg.width, cfg.embedding, cfg.window_top, cfg.patience) == (256, 32, 256, 0.5, 15)
        torch.manual_seed(0)
        net = method.build_net()
        assert len(official_state(net)) == tensors
        optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        frames = torch.rand(2, 3, 256, 256)
        losses = method.weighted(net.per_sample_losses(frames[:1].expand(2, -1, -1, -1), frames.flip(0)), (0.0, 1.0))
        losses["loss"].backward()
        optimizer.step()
        method.net = net.eval()
        assert torch.isfinite(losses["loss"]) and method.encode(frames * 2 - 1, "fer", torch.arange(2)).shape == (2, 256)
    assert (FabNetMethod.Config.resolve("paper").lr, TCAEMethod.Config.resolve("paper").lr) == (1e-4, 1e-3)
    assert (FabNetMethod.Config.resolve("paper").batch_size, TCAEMethod.Config.resolve("paper").batch_size) == (128, 64)

