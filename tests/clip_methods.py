"""Checks that every clip-trained baseline (``methods/clipbase.py``: Temporal, SSLFER) passes:
training and reloading, resuming after a kill, the authors' layout round trip, another method's
file refused in one line. ``tests/test_temporal.py`` and ``tests/test_sslfer.py`` run them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

from harness.datasets.base import ClipSet, ImageSet
from harness.errors import BenchError
from harness.io import torch_load
from harness.method import MethodContext, to_input
from methods.clipbase import ClipBaseline


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids waiting on a busy second core (the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_clips(n_clips: int = 8, length: int = 16, size: int = 32, seed: int = 0) -> ClipSet:
    """Clips of smooth random colour images that drift from frame to frame (something to rank)."""
    g = torch.Generator().manual_seed(seed)
    start, end = torch.rand(n_clips, 1, 3, 4, 4, generator=g), torch.rand(n_clips, 1, 3, 4, 4, generator=g)
    t = torch.linspace(0, 1, length).view(1, length, 1, 1, 1)
    coarse = (start + (end - start) * t).view(n_clips * length, 3, 4, 4)
    images = (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).to(torch.uint8)
    return ClipSet(ImageSet(images), list(torch.arange(n_clips * length).view(n_clips, length)))


def make_ctx(tmp_path: Path, clips: ClipSet) -> MethodContext:
    return MethodContext.standalone(clips.frames, tmp_path, clips=clips, name="test-clips")


def trains_and_reloads(cls: type[ClipBaseline], tmp_path: Path, feature_dim: int) -> None:
    """The smoke preset trains one epoch on clips, gives ``feature_dim`` features, and a second
    instance reloads the artifact (the clips are never read again) to identical features."""
    clips = tiny_clips()
    ctx = make_ctx(tmp_path, clips)
    method = cls(cls.Config.resolve("smoke"), "default", ctx)
    method.prepare()
    (artifact,) = method.artifacts()
    done = json.loads((artifact.path(tmp_path) / "done.json").read_text())
    assert done["kind"] == cls.name and len(done["history"]) == 1 and done["train_clips"] == 8
    x = to_input(clips.frames.images[:5], method.input_size, ctx.device)
    features = method.encode(x, "fer", torch.arange(5))
    assert features.shape == (5, feature_dim) and torch.isfinite(features).all()
    assert torch.equal(method.encode(x, "verification", torch.arange(5)), features)
    ctx.load_video = lambda: pytest.fail("a built artifact must not be retrained")
    reloaded = cls(cls.Config.resolve("smoke"), "default", ctx)
    reloaded.prepare()
    assert torch.equal(reloaded.encode(x, "fer", torch.arange(5)), features)


def resumes_after_kill(cls: type[ClipBaseline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss_name: str) -> None:
    """Killed in the middle of epoch 2, a rerun trains only the rest and ends with the weights of
    an uninterrupted run, bit for bit (frames, crops and masks drawn from checkpointed RNGs).

    ``loss_name``: the module-level loss function a step calls, wrapped to raise mid-run."""
    cfg = cls.Config.resolve("smoke", {"epochs": "2"})  # 8 clips / batch 4: 2 steps per epoch
    whole = cls(cfg, "default", make_ctx(tmp_path / "whole", tiny_clips()))
    whole.prepare()
    module = __import__(cls.__module__, fromlist=[loss_name])
    original = getattr(module, loss_name)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the second step of epoch 2
        return original(*args, **kwargs)

    monkeypatch.setattr(module, loss_name, counted)
    ctx = make_ctx(tmp_path / "killed", tiny_clips())
    with pytest.raises(KeyboardInterrupt):
        cls(cfg, "default", ctx).prepare()
    calls.clear()
    resumed = cls(cfg, "default", ctx)
    resumed.prepare()
    assert len(calls) == 2  # epoch 2 again (the checkpoint is per epoch), not epoch 1
    (a,), (b,) = whole.artifacts(), resumed.artifacts()
    first, second = torch_load(a.path(tmp_path / "whole") / "model.pt"), torch_load(b.path(tmp_path / "killed") / "model.pt")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def official_round_trip(
    cls: type[ClipBaseline], tmp_path: Path, overrides: dict, write: Callable[[dict, Path], None], official_keys: Optional[set] = None
) -> ClipBaseline:
    """Random weights written in the authors' layout (``write(state_dict, path)``, names from the
    project's inverse mapping) load through ``<name>.checkpoint`` to the same features as the
    network they came from; the cell trains nothing and its fingerprint holds the file's sha256."""
    clips = tiny_clips(n_clips=1)
    ctx = make_ctx(tmp_path, clips)
    cfg = cls.Config.resolve("smoke", overrides)
    source = cls(cfg, "default", ctx)
    torch.manual_seed(3)
    source.net = source.build_net()
    for module in source.net.modules():  # eval-mode BatchNorm that is not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    source.net.eval()
    state = source.official_state()
    if official_keys is not None:
        assert set(state) == official_keys
    path = tmp_path / "official.pth"
    write(state, path)
    ctx.load_video = lambda: pytest.fail("a loaded checkpoint must not train")
    loaded = cls(cfg.replace(checkpoint=str(path)), "default", ctx)
    assert loaded.artifacts() == []
    loaded.prepare()
    x = to_input(clips.frames.images[:3], loaded.input_size, ctx.device)
    with torch.no_grad():
        expected = source.encode(x, "fer", torch.arange(3))
    assert torch.equal(loaded.encode(x, "fer", torch.arange(3)), expected)
    assert loaded.fingerprint()["weights"] == loaded.weights_file()["sha256"]
    return loaded


def refuses_other_file(cls: type[ClipBaseline], overrides: dict, path: Path, names: str) -> None:
    """Another method's file is one ``BenchError`` line, raised when the method is made, naming
    tensors as the file names them."""
    cfg = cls.Config.resolve("smoke", {**overrides, "checkpoint": str(path)})
    with pytest.raises(BenchError, match=names) as info:
        cls(cfg, "default", make_ctx(path.parent, tiny_clips(n_clips=1)))
    assert "\n" not in str(info.value) and f"{cls.name}.checkpoint=" in str(info.value)
