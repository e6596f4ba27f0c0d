"""Weight files of other code bases read without their code: both ``torch.save`` formats, the
authors' objects (argparse options, pickled optimisers and schedulers) as inert stand-ins.

Layouts from the baselines' contract (shared/reference/baselines.md): SSLFER's
``checkpoint_best.pth.tar`` pickles its ``CosineAnnealingLR`` with the Adam inside; FAb-Net's and
TCAE's files were written by Python 2 and PyTorch 0.4 in the legacy format, options included.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import pickletools
from pathlib import Path

import pytest
import torch

from harness.checkpoints import READ_HELD, ForeignCall, foreign_globals, load_weights, read_once
from harness.errors import BenchError


def python2_strings(path: Path) -> None:
    """Rewrite a legacy file's short strings as Python 2 pickled its ``str`` (SHORT_BINSTRING)."""
    data, out = path.read_bytes(), bytearray()
    stream = io.BytesIO(data)
    for _ in range(4):  # magic number, protocol, system info, the object; storages follow as they are
        ops = list(pickletools.genops(stream))
        bounds = [pos for _, _, pos in ops] + [stream.tell()]
        for (op, arg, _), start, end in zip(ops, bounds, bounds[1:]):
            raw = arg.encode() if op.name == "BINUNICODE" else b""
            out += b"U" + bytes([len(raw)]) + raw if 0 < len(raw) < 256 else data[start:end]
    path.write_bytes(bytes(out) + data[stream.tell():])


def is_stand_in(obj: object, name: str) -> bool:
    return getattr(type(obj), "__foreign_name__", None) == name


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_sslfer_checkpoint_with_a_pickled_scheduler_loads_without_torchs_optimiser_code(tmp_path, legacy) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    adam = torch.optim.Adam(net.parameters(), lr=3e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=7)
    net(torch.randn(5, 4)).square().sum().backward()
    adam.step()
    scheduler.step()
    path = tmp_path / "checkpoint_best.pth.tar"
    state = {"epoch": 11, "arch": "resnet50", "state_dict": net.state_dict(), "optimizer": adam.state_dict(), "scheduler": scheduler}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert {"torch.optim.adam.Adam", "torch.optim.lr_scheduler.CosineAnnealingLR", "collections.defaultdict"} <= foreign_globals(path)

    loaded = load_weights(path, "sslfer.checkpoint")
    assert loaded["epoch"] == 11 and loaded["arch"] == "resnet50"
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded["state_dict"].items()) and loaded["state_dict"].keys() == net.state_dict().keys()
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], adam.state_dict()["state"][0]["exp_avg"])
    inert = loaded["scheduler"]
    # stand-ins holding the data, not torch's classes (whose __setstate__ would have run)
    assert is_stand_in(inert, "torch.optim.lr_scheduler.CosineAnnealingLR") and is_stand_in(inert.optimizer, "torch.optim.adam.Adam")
    assert not isinstance(inert, torch.optim.lr_scheduler.LRScheduler) and not isinstance(inert.optimizer, torch.optim.Optimizer)
    assert inert.T_max == 7 and inert.last_epoch == 1 and inert.base_lrs == [3e-4]
    assert type(inert.optimizer.state) is dict  # the defaultdict rebuilt as a plain dict
    moments = sorted(s["exp_avg"].sum().item() for s in inert.optimizer.state.values())
    assert moments == sorted(s["exp_avg"].sum().item() for s in adam.state.values()) and len(moments) == 4
    with pytest.raises(ForeignCall, match="CosineAnnealingLR"):
        type(inert)(adam, T_max=7)  # a stand-in refuses to be called


def test_fabnet_python2_legacy_file_with_options_loads(tmp_path) -> None:
    """PyTorch 0.4 under Python 2: legacy format, byte strings, no num_batches_tracked, options."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, 2, 1), torch.nn.BatchNorm2d(4), torch.nn.LeakyReLU(0.2))
    weights = collections.OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    sgd = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    opts = argparse.Namespace(lr=1e-4, batch_size=128, name="nv2_curriculum", use_cuda=True)
    path = tmp_path / "nv2_curriculum.pth"
    content = {"state_dict": weights, "optimizer": sgd.state_dict(), "epoch": 10, "lr": 1e-4, "momentum": 0.9, "opts": opts}
    torch.save(content, path, _use_new_zipfile_serialization=False)
    python2_strings(path)
    assert b"U\x0astate_dict" in path.read_bytes()  # the keys are Python 2 strings now

    loaded = load_weights(path, "fabnet.checkpoint")
    assert list(loaded["state_dict"]) == list(weights) and all(torch.equal(loaded["state_dict"][k], v) for k, v in weights.items())
    assert is_stand_in(loaded["opts"], "argparse.Namespace") and vars(loaded["opts"]) == vars(opts)
    assert (loaded["epoch"], loaded["lr"], loaded["momentum"]) == (10, 1e-4, 0.9)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"not a PyTorch weight file \(neither format torch.save writes\)"),
        (b"name,score\nlfw,0.9\n", r"not a PyTorch weight file \(neither format torch.save writes\)"),
        (b"PK\x03\x04 truncated", r"not a PyTorch weight file \(neither format torch.save writes\)"),
    ],
)
def test_a_file_of_other_bytes_is_a_one_line_error(tmp_path, content, message) -> None:
    (tmp_path / "w.pth").write_bytes(content)
    with pytest.raises(BenchError, match=message) as info:
        load_weights(tmp_path / "w.pth", "timm.weights")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep, message", [(300, "a legacy torch.save file, truncated or damaged"), (-100, "unexpected EOF")])
def test_a_truncated_legacy_file_is_a_one_line_error(tmp_path, keep, message) -> None:
    """Cut in its pickle (the scan sees it) or in its tensors' bytes (torch.load does)."""
    torch.save({"w": torch.zeros(64), "name": "x" * 200}, tmp_path / "w.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "w.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:keep])
    with pytest.raises(BenchError, match=rf"timm.weights=.*w.pth: not a PyTorch weight file \({message}") as info:
        load_weights(tmp_path / "w.pth", "timm.weights")
    assert "\n" not in str(info.value)


def test_an_authors_file_is_read_once_per_content_and_few_are_held(tmp_path):
    reads = []

    def reader(path: Path) -> dict:
        reads.append(path.name)
        return load_weights(path, "x.checkpoint")

    first = tmp_path / "a.pth"
    torch.save({"w": torch.zeros(2)}, first)
    assert read_once(first, "x.checkpoint", reader) is read_once(first, "x.checkpoint", reader)
    assert reads == ["a.pth"]
    read_once(first, "x.checkpoint", reader, "other shapes")  # what the reader checked is part of the key
    assert reads == ["a.pth"] * 2
    stamp = first.stat().st_mtime_ns
    torch.save({"w": torch.ones(2)}, first)  # new content at the same path is read again
    os.utime(first, ns=(stamp + 10**9, stamp + 10**9))  # a later write, even where clocks are coarse
    assert read_once(first, "x.checkpoint", reader)["w"].sum() == 2
    others = []
    for i in range(READ_HELD + 1):
        others.append(tmp_path / f"o{i}.pth")
        torch.save({"w": torch.full((2,), float(i))}, others[-1])
        read_once(others[-1], "x.checkpoint", reader)
    read_once(others[0], "x.checkpoint", reader)  # pushed out by the later ones: read again
    assert reads.count("o0.pth") == 2
    with pytest.raises(BenchError, match=r"x.checkpoint=.*none.pth: no such file"):
        read_once(tmp_path / "none.pth", "x.checkpoint", reader)
