"""The ``timm`` method: any timm model by name, weights from a file (timm's tiny test models)."""
from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from harness.cli import main, method_variants
from harness.cli import build_parser
from harness.datasets.base import ImageSet
from harness.errors import BenchError
from harness.method import MethodContext
from methods.timm_encoder import TimmConfig, TimmEncoder


def context(tmp_path) -> MethodContext:
    return MethodContext.standalone(ImageSet(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), tmp_path / "cache")


def in_memory_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the method must compute: the model's pooled pre-logits of its normalised input."""
    cfg = timm.data.resolve_model_data_config(model)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        return model.forward_head(model.forward_features(((x + 1) / 2 - mean) / std), pre_logits=True)


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("how", ["state_dict", "headless", "safetensors", "wrapped"])
def test_saved_weights_give_the_in_memory_features(tmp_path, name, how) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    if how == "headless":  # a backbone saved without its classifier
        model.reset_classifier(0)
    state = model.state_dict()
    path = tmp_path / ("w.safetensors" if how == "safetensors" else "w.pth")
    if how == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3} if how == "wrapped" else state, path)

    method = TimmEncoder(TimmConfig(weights=str(path)), name, context(tmp_path))
    method.prepare()
    size = model.pretrained_cfg["input_size"][-1]
    assert method.input_size == size
    x = torch.rand(3, 3, size, size) * 2 - 1
    ours = method.encode(x, "verification", torch.arange(3))
    assert torch.allclose(ours, in_memory_features(model, x), atol=1e-6)
    assert ours.shape == (3, model.num_features)
    assert method.weights_file()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_names_and_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(BenchError, match="timm has no model 'no_such_net'"):
        TimmEncoder(TimmConfig(), "no_such_net", context(tmp_path))
    with pytest.raises(BenchError, match="no such file"):
        TimmConfig.resolve("quick", {"weights": str(tmp_path / "missing.pth")}, "timm")
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    method = TimmEncoder(TimmConfig(weights=str(tmp_path / "vit.pth")), "test_resnet", context(tmp_path))
    with pytest.raises(BenchError, match=r"vit.pth \(timm:test_resnet\): missing tensors"):
        method.prepare()


def test_timm_runs_by_name_only_and_lands_in_tables(tmp_path, capsys) -> None:
    assert ("timm", "resnet50") not in method_variants(build_parser().parse_args([]))  # needs weights: never by default
    torch.manual_seed(0)
    path = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    argv = ["--methods", "timm:test_resnet", "--protocol", "fer,verification", "--datasets", "toy", "--preset", "smoke"]
    argv.append(f"--set=timm.weights={path}")
    assert main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "| timm [test_resnet] <test_resnet.pth>" in out  # named with its weights
    files = sorted((tmp_path / "results").glob("*/toy/*.json"))
    assert len(files) == 2  # fer and verification
    record = json.loads(files[0].read_text())
    assert record["config"]["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["method_info"]["weights"]["path"] == str(path) and record["method_info"]["input_size"] == [3, 160, 160]


def test_cached_pretrained_weights_need_no_hub(tmp_path, monkeypatch) -> None:
    """Offline, a model whose weights timm cached earlier is accepted; one without is refused."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError, match="timm:resnet18: no timm.weights, no cached copy .*HF_HUB_OFFLINE is set"):
        TimmEncoder(TimmConfig(), "resnet18", context(tmp_path))
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # the hub cache's layout: refs, snapshots
    folder = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc")
    (folder / "snapshots" / "abc").mkdir(parents=True)
    (folder / "snapshots" / "abc" / "model.safetensors").write_bytes(b"cached")
    assert TimmEncoder(TimmConfig(), "resnet18", context(tmp_path)).input_size == 224
