"""Released checkpoints: layouts, strict loading, safe reading, and the released evaluation settings.

Fixture files are built in each released layout from the documented key mapping (implementation
notes, section 8): the key lists come from the project's own networks through the inverse
mapping (``released_name``, ``diffusers014_name``), the values are random. Most tests use the
released 64 px layout at a small width (the key names do not depend on the width); one uses
paper shapes to check the documented parameter counts and the full LatentFace file.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.checkpoints import load_weights
from harness.cli import main
from harness.config import load_config_file
from harness.errors import BenchError
from harness.method import MethodContext
from harness.session import Session, Settings
from harness.datasets.base import ImageSet
from methods.latentface.checkpoint import diffusers014_name, project_denoiser_name, released_denoisers, save_latentface
from methods.latentface.method import IdentityModel, LatentFace, LatentFaceConfig, train_kind
from methods.unsup3d.checkpoint import PROJECT_ONLY, project_name, released_name, released_stage1
from methods.unsup3d.method import Unsup3DConfig, Unsup3DMethod, build_model

SMALL = {"input_size": "64", "width": "0.125", "latent_dim": "16", "stage2_width": "32"}
ROOT = Path(__file__).resolve().parents[1]


# --- fixture files in the released layouts ------------------------------------------------------
def released_state(cfg: Unsup3DConfig, layout: str, seed: int = 0) -> dict:
    """Random tensors under every released name of the stage-1 nets (and the denoisers): the
    names come from the project's networks through the inverse mapping."""
    state = released_stage1(build_model(cfg, seed=0), split=layout == "latentface-release")
    if layout == "latentface-release":
        state.update(released_denoisers(IdentityModel("rdm", ("texture", "shape"), cfg.latent_dim, cfg)))
    g = torch.Generator().manual_seed(seed)
    return {net: {k: torch.randn(v.shape, generator=g) for k, v in tensors.items()} for net, tensors in state.items()}


class _MetricsTrace:
    """Stands for Unsup3D's ``meters.MetricsTrace``; saved under the authors' module name."""

    def __init__(self) -> None:
        self.data = {"train": [{"loss": 0.5}], "val": [{"loss": 0.6}]}


def save_unsup3d_training_checkpoint(path: Path, state: dict, monkeypatch: pytest.MonkeyPatch, legacy: bool = False) -> None:
    """What Unsup3D's ``trainer.save_checkpoint`` writes: nets, optimizers, metrics_trace, epoch;
    ``legacy``: in the non-zip format of PyTorch before 1.6, as the release (PyTorch 1.2) is."""
    package, module = types.ModuleType("unsup3d"), types.ModuleType("unsup3d.meters")
    _MetricsTrace.__module__, _MetricsTrace.__qualname__ = "unsup3d.meters", "MetricsTrace"
    module.MetricsTrace, package.meters = _MetricsTrace, module
    with monkeypatch.context() as patch:  # the authors' module exists only while saving
        patch.setitem(sys.modules, "unsup3d", package)
        patch.setitem(sys.modules, "unsup3d.meters", module)
        full = dict(state)
        for net in ("netD", "netA", "netL", "netV", "netC"):
            full[net.replace("net", "optimizer")] = {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 5e-4, "params": [0]}]}
        full.update(metrics_trace=_MetricsTrace(), epoch=30)
        torch.save(full, path, _use_new_zipfile_serialization=not legacy)
    assert "unsup3d.meters" not in sys.modules


def context(tmp_path: Path) -> MethodContext:
    return MethodContext.standalone(ImageSet(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), tmp_path / "cache")


def small_cfg(cls: type = LatentFaceConfig, **overrides: str):
    return cls.resolve("smoke", {k: v for k, v in {**SMALL, **overrides}.items() if k in cls.__dataclass_fields__})


# --- the mapping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "released, project",
    [
        ("netD.network.11.weight", "depth_net.encoder.11.weight"),  # the conv to the 256-d latent
        ("netD.network.13.weight", "depth_net.decoder.0.weight"),  # the decoder's first ConvTranspose
        ("netA.network.42.weight", "texture_net.decoder.29.weight"),  # the last conv
        ("netL.network.10.weight", "light_net.net.10.weight"),
        ("netV.network.0.weight", "pose_net.net.0.weight"),
        ("netC.network.16.bias", "confidence_net.trunk.16.bias"),
        ("netC.out_net1.6.weight", "confidence_net.photometric_head.6.weight"),
        ("netC.out_net2.0.weight", "confidence_net.perceptual_head.0.weight"),
        ("netA.network1.1.weight", "texture_net.encoder.1.weight"),  # the LatentFace split
        ("netD.network2.29.weight", "depth_net.decoder.29.weight"),
    ],
)
def test_documented_names_map_both_ways(released: str, project: str) -> None:
    assert project_name(released, encoder_layers=13) == project
    assert released_name(project, encoder_layers=13, split="network1" in released or "network2" in released) == released


def test_diffusers_014_attention_names() -> None:
    for old, new in [("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0")]:
        for param in ("weight", "bias"):
            assert project_denoiser_name(f"mid_block.attentions.0.{old}.{param}") == f"mid_block.attentions.0.{new}.{param}"
            assert diffusers014_name(f"mid_block.attentions.0.{new}.{param}") == f"mid_block.attentions.0.{old}.{param}"
    for unchanged in ("mid_block.attentions.0.group_norm.weight", "conv_in.weight", "up_blocks.0.resnets.2.conv_shortcut.bias"):
        assert project_denoiser_name(unchanged) == unchanged == diffusers014_name(unchanged)


def test_paper_size_released_layout_has_the_documented_parameter_counts() -> None:
    state = released_state(LatentFaceConfig.resolve("paper"), "latentface-release")
    counts = {net: sum(t.numel() for t in tensors.values()) for net, tensors in state.items()}
    assert counts == {
        "netD": 12_979_648, "netA": 12_982_848, "netL": 1_739_264, "netV": 1_739_776, "netC": 7_678_208,
        "netEA": 4_351_616, "netED": 4_351_616,
    }
    attention = sorted(k for k in state["netEA"] if ".attentions." in k)
    assert attention == sorted(f"mid_block.attentions.0.{n}.{p}" for n in ("group_norm", "query", "key", "value", "proj_attn") for p in ("weight", "bias"))


# --- strict loading -------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_unsup3d_training_checkpoint_loads_every_tensor_without_the_authors_code(tmp_path, monkeypatch, legacy) -> None:
    cfg = small_cfg(Unsup3DConfig)
    state = released_state(cfg, "unsup3d-release")
    path = tmp_path / "checkpoint030.pth"
    save_unsup3d_training_checkpoint(path, state, monkeypatch, legacy)
    trace = load_weights(path, "unsup3d.checkpoint")["metrics_trace"]
    assert trace.data == {"train": [{"loss": 0.5}], "val": [{"loss": 0.6}]} and "unsup3d.meters" not in sys.modules

    method = Unsup3DMethod(cfg.replace(checkpoint=str(path)), "default", context(tmp_path))
    assert method.artifacts() == []  # nothing to train
    method.prepare()
    loaded = method.model.state_dict()
    for net, tensors in state.items():
        for key, value in tensors.items():
            assert torch.equal(loaded[project_name(f"{net}.{key}", 13)], value), key
    assert len(loaded) == sum(map(len, state.values())) + len(PROJECT_ONLY)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = method.model.encode_latents(x)
    assert torch.equal(method.encode(x, "verification", torch.arange(2)), torch.cat([latents["texture"], latents["shape"]], 1))
    assert method.depth(x).shape == (2, 64, 64)  # a loaded model is used like a trained one
    record = method.weights_file()
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["layout"] == "unsup3d-release"


def test_paper_size_latentface_release_loads_every_tensor(tmp_path) -> None:
    cfg = LatentFaceConfig.resolve("paper")
    state = released_state(cfg, "latentface-release")
    path = tmp_path / "diffusion_64.pth"
    torch.save(state, path)
    method = LatentFace(cfg.replace(checkpoint=str(path)), "rdm-both", context(tmp_path))
    method.prepare()
    stage1, stage2 = method.stage1.state_dict(), method.stage2.state_dict()
    for net, tensors in state.items():
        for key, value in tensors.items():
            if net in ("netEA", "netED"):
                mine = stage2[f"nets.{'texture' if net == 'netEA' else 'shape'}.unet.{project_denoiser_name(key)}"]
            else:
                mine = stage1[project_name(f"{net}.{key}", 13)]
            assert torch.equal(mine, value), f"{net}.{key}"
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    features = method.encode(x, "verification", torch.arange(2))
    assert features.shape == (2, 1024) and torch.isfinite(features).all()
    assert set(method.parts()) == {"Z_id_t", "dZ_t", "Z_id_s", "dZ_s", "light", "pose"}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s["netA"].pop("network1.0.weight"), "missing tensors netA.network1.0.weight"),
        (lambda s: s["netD"].update({"network1.99.weight": torch.zeros(1)}), "unexpected tensors netD.network1.99.weight"),
        (lambda s: s["netL"].update({"network.0.weight": torch.zeros(5, 3, 4, 4)}), r"netL.network.0.weight has shape \(5, 3, 4, 4\)"),
        (lambda s: s["netEA"].pop("mid_block.attentions.0.proj_attn.bias"), "missing tensors netEA.mid_block.attentions.0.proj_attn.bias"),
        (lambda s: s.pop("netED"), "missing entries netED"),
        (lambda s: s.update({"something": 1}), "unexpected entries something"),
    ],
)
def test_a_damaged_file_is_a_one_line_error(tmp_path, capsys, damage, message) -> None:
    state = released_state(small_cfg(), "latentface-release")
    damage(state)
    path = tmp_path / "diffusion_64.pth"
    torch.save(state, path)
    argv = ["--methods", "latentface", "--protocol", "verification", "--datasets", "toy", "--preset", "smoke"]
    argv += [f"--set=latentface.{k}={v}" for k, v in SMALL.items()] + [f"--set=latentface.checkpoint={path}"]
    assert main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err
    assert re.search(message, err), err
    assert not (tmp_path / "results").exists()


class _RunsCode:
    """A payload torch's own loader does not block by module (as it blocks ``os``): only the
    harness's stand-ins, which refuse to be called, keep it from running."""

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_file_that_would_run_code_is_refused(tmp_path, capsys, legacy) -> None:
    marker = tmp_path / "ran"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    state = released_state(small_cfg(), "latentface-release")
    torch.save({**state, "epoch": payload}, path, _use_new_zipfile_serialization=not legacy)
    argv = ["--methods", "unsup3d", "--protocol", "verification", "--datasets", "toy", "--preset", "smoke"]
    argv += [f"--set=unsup3d.{k}={v}" for k, v in SMALL.items() if k != "stage2_width"] + [f"--set=unsup3d.checkpoint={path}"]
    assert main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err
    assert "refused to load (loading it would call builtins.exec)" in err
    assert not marker.exists() and not (tmp_path / "results").exists()


def test_calling_a_class_of_the_authors_code_is_refused_too(tmp_path, monkeypatch) -> None:
    """Stand-ins may be created the way pickle restores plain objects, never called."""
    module = types.ModuleType("meters")

    class Trace:
        def __reduce__(self):
            return (module.Trace, ("arg",))

    Trace.__module__, Trace.__qualname__ = "meters", "Trace"
    module.Trace = Trace
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "meters", module)
        torch.save({"x": Trace()}, tmp_path / "calls.pth")
    with pytest.raises(BenchError, match=r"refused to load \(loading it would call meters.Trace\)"):
        load_weights(tmp_path / "calls.pth", "unsup3d.checkpoint")


def test_variants_a_file_cannot_serve_fail_early(tmp_path) -> None:
    cfg = small_cfg()
    torch.save(released_state(cfg, "unsup3d-release"), tmp_path / "u3.pth")
    with pytest.raises(BenchError, match="holds no stage-2 networks; this variant needs rdm networks"):
        LatentFace(cfg.replace(checkpoint=str(tmp_path / "u3.pth")), "rdm-both", context(tmp_path))
    none = LatentFace(cfg.replace(checkpoint=str(tmp_path / "u3.pth")), "none", context(tmp_path))
    none.prepare()  # stage 1 alone is fine
    with pytest.raises(BenchError, match="no-light ablation retrains stage 1"):
        Unsup3DMethod(small_cfg(Unsup3DConfig, checkpoint=str(tmp_path / "u3.pth")), "no-light", context(tmp_path))
    with pytest.raises(BenchError, match="no such file"):
        small_cfg(Unsup3DConfig, checkpoint=str(tmp_path / "nope.pth"))


def test_the_projects_own_files_load_too(tmp_path) -> None:
    cfg = small_cfg()
    stage1 = build_model(cfg, seed=3)
    torch.save(stage1.state_dict(), tmp_path / "model.pt")  # the stage-1 artifact's file
    unsup3d = Unsup3DMethod(small_cfg(Unsup3DConfig, checkpoint=str(tmp_path / "model.pt")), "no-texture", context(tmp_path))
    unsup3d.prepare()
    assert all(torch.equal(v, stage1.state_dict()[k]) for k, v in unsup3d.model.state_dict().items())
    encoder = IdentityModel("encoder", ("texture", "shape"), cfg.latent_dim, cfg, seeds={"texture": 1, "shape": 2})
    save_latentface(tmp_path / "latentface.pt", stage1, encoder)
    method = LatentFace(cfg.replace(checkpoint=str(tmp_path / "latentface.pt")), "encoder", context(tmp_path))
    method.prepare()
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in method.stage2.state_dict().items())
    with pytest.raises(BenchError, match="holds encoder networks for shape, texture; this variant needs rdm"):
        LatentFace(cfg.replace(checkpoint=str(tmp_path / "latentface.pt")), "rdm-shape", context(tmp_path))


def test_a_checkpoint_cell_never_trains_and_records_the_files_sha256(tmp_path) -> None:
    cfg = small_cfg()
    path = tmp_path / "diffusion_64.pth"
    torch.save(released_state(cfg, "latentface-release"), path)
    argv = ["--methods", "latentface:rdm-texture,latentface:none", "--protocol", "verification", "--datasets", "toy", "--preset", "smoke"]
    argv += [f"--set=latentface.{k}={v}" for k, v in SMALL.items()] + [f"--set=latentface.checkpoint={path}"]
    dirs = ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, *dirs]) == 0
    files = sorted((tmp_path / "results").glob("verification/toy/*.json"))
    assert len(files) == 2
    assert not (tmp_path / "cache" / "artifacts").exists(), "nothing was trained"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for record in map(json.loads, map(Path.read_text, files)):
        assert record["config"]["weights"]["sha256"] == sha and "pretrain" not in record["config"]
        assert record["method_info"]["weights"]["layout"] == "latentface-release"
    # a different file at the same path is a different cell (and never reuses cached features)
    torch.save(released_state(cfg, "latentface-release", seed=1), path)
    assert main([*argv, *dirs]) == 0
    assert len(list((tmp_path / "results").glob("verification/toy/*.json"))) == 4


# --- the released evaluation's options ---------------------------------------------------------------
def test_per_call_noise_draws_fresh_start_noise_at_every_forward(tmp_path) -> None:
    cfg = small_cfg()
    path = tmp_path / "diffusion_64.pth"
    torch.save(released_state(cfg, "latentface-release"), path)
    x, index = torch.rand(4, 3, 64, 64) * 2 - 1, torch.arange(4)
    seeded = LatentFace(cfg.replace(checkpoint=str(path)), "rdm-both", context(tmp_path))
    seeded.prepare()
    assert torch.equal(seeded.encode(x, "verification", index), seeded.encode(x, "verification", index))
    fresh = LatentFace(cfg.replace(checkpoint=str(path), noise="per-call"), "rdm-both", context(tmp_path))
    fresh.prepare()
    first, second = fresh.encode(x, "verification", index), fresh.encode(x, "verification", index)
    d = cfg.latent_dim
    assert torch.equal(first[:, d : 2 * d], second[:, d : 2 * d]), "Z_t is deterministic"
    assert not torch.allclose(first[:, :d], second[:, :d]), "Z_id_t comes from new noise at every call"
    again = LatentFace(cfg.replace(checkpoint=str(path), noise="per-call"), "rdm-both", context(tmp_path))
    again.prepare()
    assert torch.equal(again.encode(x, "verification", index), first), "the stream is seeded by the cell"


def test_paper_preset_follows_the_released_training_where_the_paper_is_silent(tmp_path) -> None:
    assert Unsup3DConfig.resolve("paper").weight_decay == 5e-4
    paper = LatentFaceConfig.resolve("paper")
    assert (paper.weight_decay, paper.stage2_weight_decay, paper.stage2_lr_period, paper.stage2_min_lr) == (5e-4, 5e-4, 100, 1e-5)
    assert (paper.stage2_lr, paper.batch_size) == (1e-4, 16)  # the paper's own numbers stay
    cfg = small_cfg(stage2_epochs="2", stage2_lr="1e-3", stage2_lr_period="100", stage2_min_lr="1e-5")
    stage2 = IdentityModel("rdm", ("texture",), cfg.latent_dim, cfg, seeds={"texture": 0})
    z = torch.rand(32, cfg.latent_dim)
    train_kind(stage2, "texture", z, z, 0, tmp_path / "stage2", torch.device("cpu"))
    lr = torch.load(tmp_path / "stage2" / "last.pt", weights_only=False)["scheduler"]["_last_lr"][0]
    expected = 1e-5 + (1e-3 - 1e-5) * (1 + torch.cos(torch.tensor(torch.pi * 2 / 100))) / 2
    assert lr == pytest.approx(float(expected))


def test_released_settings_file(tmp_path) -> None:
    overrides = load_config_file(str(ROOT / "configs" / "released.toml"))
    session = Session(Settings(preset="quick", overrides=overrides, data_root=str(tmp_path)))
    method = session.method("latentface", "rdm-both", 0)
    assert (method.cfg.input_size, method.cfg.width, method.cfg.latent_dim, method.cfg.stage2_width) == (64, 1.0, 256, 128)
    assert (method.cfg.sampler, method.cfg.noise, method.cfg.sample_steps) == ("legacy", "per-call", 5)
    protocol = session.protocol("verification")
    assert (protocol.cfg.mode, protocol.cfg.flip_concat) == ("pair-linear-legacy", True)
    for name in ("lfw", "sllfw"):
        assert (session.dataset(name).cfg.image_dir, session.dataset(name).cfg.crop_fraction) == ("lfw_crop", 1.0)


def test_new_fields_leave_existing_config_hashes_alone() -> None:
    """Results stored before these options existed keep their hashes (they are not rerun)."""
    assert not {"checkpoint", "noise", "stage2_lr_period", "stage2_min_lr"} & set(LatentFaceConfig().to_dict())
    assert LatentFaceConfig(checkpoint="x.pth", noise="per-call").to_dict()["noise"] == "per-call"


def test_a_trained_model_exported_to_one_file_evaluates_identically_without_the_cache(tmp_path, capsys) -> None:
    from conftest import load_script

    common = ["--preset", "smoke", "--set", "pretrain.data=toy"]
    argv = ["--methods", "unsup3d", "--protocol", "verification", "--datasets", "toy", *common]
    assert main([*argv, "--results-dir", str(tmp_path / "trained"), "--cache-dir", str(tmp_path / "cache")]) == 0
    export = load_script("export_checkpoint")
    out = tmp_path / "unsup3d.pt"
    assert export.main(["--method", "unsup3d", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *common]) == 0
    assert "evaluate it anywhere with --set unsup3d.checkpoint=" in capsys.readouterr().out
    elsewhere = ["--results-dir", str(tmp_path / "loaded"), "--cache-dir", str(tmp_path / "elsewhere")]
    assert main([*argv, f"--set=unsup3d.checkpoint={out}", *elsewhere]) == 0
    (trained,), (loaded,) = (list((tmp_path / d).glob("verification/toy/*.json")) for d in ("trained", "loaded"))
    trained, loaded = json.loads(trained.read_text()), json.loads(loaded.read_text())
    assert loaded["metrics"] == trained["metrics"] and loaded["method_info"]["weights"]["layout"] == "project"
    assert not (tmp_path / "elsewhere" / "artifacts").exists()
    assert export.main(["--method", "unsup3d", "--out", str(out), "--cache-dir", str(tmp_path / "empty"), *common]) == 2
    assert "is not trained in" in capsys.readouterr().err
