"""The ``train`` section's device switches (harness/accel.py): the CPU path is unchanged with them
off, each switch does what it says when on, and runs record them."""
import contextlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.accel import Accel, TrainConfig
from harness.cli import main
from harness.datasets.base import ClipSet, ImageSet
from harness.errors import BenchError
from harness.method import MethodContext, to_input
from harness.registry import METHODS
from harness.runner import run_cell
from harness.session import Cell, Settings, Session

#: Smoke training on ``smooth_images`` with one thread, recorded on an AMD EPYC (AVX-512) with the
#: code before the switches existed (commits 1537b8a and 0809618 give the same): each artifact's
#: mean training losses over its epoch, and the sum of the trained model's ``fer`` features of 8
#: probe images. Another CPU rounds differently, so only the losses are compared with these, at
#: ``RECORDED_REL``; regenerate with ``smoke_numbers`` on a commit whose numbers are known right.
BEFORE = {
    "unsup3d": ({"stage1": 0.939656600356102}, 13.204962406307459),
    "simclr": ({"simclr": 3.5364126563072205}, 30.507977041494087),
    "mae": ({"mae": 0.46881355345249176}, -0.13207907788455486),
    "latentface": (
        {"stage1": 0.939656600356102, "stage2-texture": 0.012380521245566862, "stage2-shape": 0.006012110854499042},
        15.21465278416872,
    ),
}
#: How far another CPU may move those losses. Measured on the recording machine by swapping the
#: kernels (ATEN_CPU_CAPABILITY): AVX2 moves them by at most 1.4e-7, unvectorised kernels by
#: 2.8e-3 (stage2-texture; 4.3e-5 for stage 1); an Intel AVX-512 CPU moved stage 1 by 2.0e-5.
#: Rounding differences grow through the few training steps, so 1e-2 leaves a 3x margin over the
#: worst kernels while a changed loss, step count, learning rate or seed moves them further.
RECORDED_REL = 1e-2


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).to(torch.uint8)


def smoke_numbers(cache: Path, train: TrainConfig, names=tuple(BEFORE)) -> dict[str, tuple[dict[str, float], float]]:
    """Train each method at the smoke preset on fixed images; (losses per artifact, feature sum)."""
    frames = smooth_images(8 * 16, seed=1)
    clips = ClipSet(frames=ImageSet(frames, identities=torch.arange(8).repeat_interleave(16)), clips=list(torch.arange(128).view(8, 16)))
    ctx = MethodContext.standalone(ImageSet(smooth_images(64)), cache, clips=clips, name="golden", train=train)
    probe = smooth_images(8, seed=2)
    out = {}
    for name in names:
        cls = METHODS.get(name)
        method = cls(cls.Config.resolve("smoke"), cls.variants[0], ctx)
        method.prepare()
        losses = {}
        for artifact in method.artifacts():
            done = json.loads((artifact.path(cache) / "done.json").read_text())
            if "history" in done:
                losses[artifact.kind] = done["history"][-1]["loss"]
            for kind in ("texture", "shape"):
                if kind in done:
                    losses[f"{artifact.kind}-{kind}"] = done[kind]["history"][-1]["loss"]
        features = method.encode(to_input(probe, method.input_size, torch.device("cpu")), "fer", torch.arange(8))
        out[name] = (losses, float(features.double().sum()))
    return out


def test_cpu_defaults_are_the_plain_path_and_leave_keys_alone():
    cpu = Accel.resolve(TrainConfig(), "cpu")
    assert cpu == Accel() and cpu.key() == {}
    assert cpu.describe() == {"precision": "fp32", "channels_last": False, "tf32": False, "data": "host", "compile": False}
    gpu = Accel.resolve(TrainConfig(), "cuda")
    assert (gpu.bf16, gpu.channels_last, gpu.tf32, gpu.data) == (True, True, True, "auto")
    assert gpu.key() == {"train": {"precision": "bf16", "tf32": True}}
    plain_gpu = Accel.resolve(TrainConfig(precision="fp32", tf32=False, compile=True, channels_last="on"), "cuda")
    assert plain_gpu.key() == {}  # layout and compilation reorder float32 work: same key
    assert Accel.resolve(TrainConfig(precision="bf16"), "cpu").key() == {"train": {"precision": "bf16"}}


class _PlainFeed:
    """Batches as the training loop took them before the switches: rows of the data, as they are."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        return self.data[index]


@pytest.fixture(scope="module")
def cpu_numbers(tmp_path_factory) -> dict:
    """Smoke numbers at the CPU defaults, shared by the tests that compare with them."""
    return smoke_numbers(tmp_path_factory.mktemp("defaults"), TrainConfig())


@pytest.mark.numerics
def test_cpu_numbers_are_those_from_before_the_switches(cpu_numbers, tmp_path, monkeypatch):
    """At the CPU defaults training computes bit for bit what it computes with the switches taken
    out (plain batches, networks untouched), in this process; and near the recorded numbers."""
    monkeypatch.setattr(Accel, "feed", lambda self, model, data, device: _PlainFeed(data))
    monkeypatch.setattr(Accel, "networks", lambda self, *modules: contextlib.nullcontext())
    assert cpu_numbers == smoke_numbers(tmp_path, TrainConfig())
    for name, (losses, _) in BEFORE.items():
        assert cpu_numbers[name][0] == pytest.approx(losses, rel=RECORDED_REL), name


def test_switches_off_do_nothing():
    accel = Accel()
    data = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    net = nn.Conv2d(3, 4, 3)
    feed = accel.feed(net, data, torch.device("cpu"))
    index = torch.tensor([3, 1, 7])
    batch = feed.batch(index)
    assert torch.equal(batch, data[index]) and batch.is_contiguous() and net.weight.is_contiguous()
    with accel.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with accel.networks(net):
        assert "forward" not in net.__dict__


def test_bf16_autocasts_the_networks_only_and_hands_back_float32():
    accel = Accel(bf16=True)
    inner = nn.Linear(4, 4)
    net = nn.Sequential(inner, nn.ReLU())
    seen = []
    inner.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.randn(2, 4)
    with accel.networks(net, None):
        y = net(x)
        between = x @ x.T  # code between the networks: no autocast
    assert seen == [torch.bfloat16] and y.dtype == torch.float32 and between.dtype == torch.float32
    assert "forward" not in net.__dict__  # restored
    assert net(x).dtype == torch.float32 and seen[-1] == torch.float32
    with accel.autocast():
        assert torch.is_autocast_enabled("cpu")


def test_compile_wraps_each_network_while_it_trains_only(monkeypatch):
    compiled = []

    def fake_compile(fn, **kwargs):  # records what would be compiled; a real compile takes minutes on a CPU
        compiled.append((fn, kwargs))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    nets = nn.Linear(3, 3), nn.Conv2d(3, 3, 1)
    with Accel(compile=True).networks(*nets):
        assert nets[0](torch.randn(2, 3)).shape == (2, 3)
    assert [fn for fn, _ in compiled] == [n.forward for n in nets]  # each network's own forward
    assert all(kwargs == {"options": {"fallback_random": True}} for _, kwargs in compiled)  # eager random numbers
    assert all("forward" not in n.__dict__ for n in nets) and set(nets[0].state_dict()) == {"weight", "bias"}


def test_channels_last_converts_the_model_and_image_batches():
    accel = Accel(channels_last=True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    batch = accel.feed(net, images, torch.device("cpu")).batch(torch.arange(4))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert batch.is_contiguous(memory_format=torch.channels_last) and torch.equal(batch, images[:4])
    rows = torch.randn(6, 5)
    assert torch.equal(accel.feed(net, rows, torch.device("cpu")).batch(torch.arange(3)), rows[:3])


@pytest.mark.numerics
def test_bf16_training_on_the_cpu_stays_close_and_is_keyed_apart(cpu_numbers, tmp_path):
    """Stage 1 in bf16: only the networks are bfloat16, so the loss stays within a few percent of
    the float32 one; the artifact is a different one (its key names the precision). The epoch's
    mean loss moves little (2.7e-5 here), but it moves: in one process float32 training repeats
    bit for bit, so bf16 ignored would give the float32 numbers exactly."""
    numbers = smoke_numbers(tmp_path, TrainConfig(precision="bf16"), names=("unsup3d",))
    (bf16, bf16_features), (fp32, fp32_features) = numbers["unsup3d"], cpu_numbers["unsup3d"]
    assert bf16["stage1"] == pytest.approx(fp32["stage1"], rel=0.05)
    assert bf16["stage1"] != fp32["stage1"] and bf16_features != fp32_features
    runs = sorted(p.parent.name for p in (tmp_path / "artifacts" / "stage1").glob("*/done.json"))
    assert len(runs) == 1
    ctx = MethodContext.standalone(ImageSet(smooth_images(64)), tmp_path, name="golden")
    cls = METHODS.get("unsup3d")
    assert cls(cls.Config.resolve("smoke"), "default", ctx).artifacts()[0].hash not in runs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_resident_and_pinned_batches_agree():
    data = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    index = torch.randperm(64)[:16]
    device = torch.device("cuda")
    resident = Accel(device_type="cuda", data="device").feed(nn.Identity(), data, device)
    pinned = Accel(device_type="cuda", data="host").feed(nn.Identity(), data, device)
    assert resident.resident and not pinned.resident and pinned.pin
    assert torch.equal(resident.batch(index).cpu(), data[index]) and torch.equal(pinned.batch(index).cpu(), data[index])


def test_result_files_record_the_switches_and_bf16_is_another_cell(tmp_path):
    base = dict(preset="smoke", cache_dir=str(tmp_path / "cache"), results_dir=str(tmp_path / "results"))
    cell = Cell("unsup3d", "default", "fer", "toy", 0)
    plain = Session(Settings(**base, overrides={"pretrain": {"data": "toy"}}))
    bf16 = Session(Settings(**base, overrides={"pretrain": {"data": "toy"}, "train": {"precision": "bf16"}}))
    assert "train" not in plain.resolve(cell)
    assert bf16.resolve(cell)["train"] == {"precision": "bf16"}
    assert plain.result_path(cell) != bf16.result_path(cell)
    # a fixed method's cell does not depend on training switches at all
    floor = Cell("pixels", "default", "fer", "toy", 0)
    assert plain.result_path(floor) == bf16.result_path(floor)
    record = json.loads(Path(run_cell(floor, Settings(**base))).read_text())
    assert record["train"]["effective"] == Accel().describe()
    assert record["train"]["config"] == TrainConfig().to_dict()


def test_bad_switch_value_is_one_line_error(tmp_path, capsys):
    with pytest.raises(BenchError, match="train.precision=fp16"):
        TrainConfig.resolve("quick", {"precision": "fp16"}, "train")
    argv = ["--methods", "pixels", "--datasets", "toy", "--set", "train.data=gpu"]
    assert main([*argv, "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.data=gpu: choose one of auto, device, host") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
