"""FaceCycle: both cycles train and resume bit for bit, the official layout round-trips, bad files
give one line, the paper-size networks take a step, and the loss terms match hand cases."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods  # noqa: F401  (registers the methods)
import methods.facecycle.method as fc_method
from harness.datasets.base import ClipSet, ImageSet
from harness.errors import BenchError
from harness.method import MethodContext, to_input
from methods.facecycle.checkpoint import EXPRESSION_STAGE, official_state
from methods.facecycle.cycles import FaceCycleNets, augment, normalise
from methods.facecycle.losses import VGGSource, gram, margin_loss, resolve_vgg19, ssim_loss, symmetry_loss, vgg19_layers
from methods.facecycle.method import FaceCycle, FaceCycleConfig
from methods.facecycle.networks import SelfAttention


def clips(n_clips: int = 8, frames: int = 4, size: int = 32) -> ClipSet:
    """Smooth random colour frames; each clip drifts from its own start image."""
    g = torch.Generator().manual_seed(0)
    start = torch.rand(n_clips, 1, 3, 4, 4, generator=g)
    coarse = (start + 0.1 * torch.randn(n_clips, frames, 3, 4, 4, generator=g)).clamp(0, 1).flatten(0, 1)
    images = (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).to(torch.uint8)
    return ClipSet(ImageSet(images), list(torch.arange(n_clips * frames).view(n_clips, frames)))


def context(tmp_path: Path, clipset: ClipSet) -> MethodContext:
    return MethodContext.standalone(clipset.frames, tmp_path, clips=clipset, name="test")


def smoke(tmp_path: Path, **overrides: str) -> FaceCycle:
    return FaceCycle(FaceCycleConfig.resolve("smoke", overrides), "default", context(tmp_path, clips()))



def test_smoke_trains_both_cycles_in_order_and_reads_the_documented_features(tmp_path):
    method = smoke(tmp_path, exp_epochs="2")  # 8 clips, 4 pairs a step: 2 steps per epoch
    method.prepare()
    expression, identity = (json.loads((a.path(tmp_path) / "done.json").read_text()) for a in method.artifacts())
    assert len(expression["history"]) == 2 and len(identity["history"]) == 1
    assert {"pixel", "ssim", "symmetry"} <= set(expression["history"][0]) and "margin" in identity["history"][0]
    # the identity cycle keeps the expression networks frozen: the final model holds the same ones
    stage = torch.load(method.artifacts()[0].path(tmp_path) / "model.pt")
    final = official_state(method.nets)
    for net in EXPRESSION_STAGE:
        for key, value in stage[net].items():
            assert torch.equal(value, final[net][key]), f"{net}.{key}"
    x = to_input(clips().frames.images[:3], method.input_size, torch.device("cpu"))
    fer = method.encode(x, "fer", torch.arange(3))
    # width 1/8 at 32 px: 16 channels x 2 x 2
    assert fer.shape == (3, method.feature_dim) == (3, 64)
    parts = method.encode(x, "parts", torch.arange(3))
    assert parts.shape[1] == max(s.stop for s in method.parts().values()) == 64 + 64 + 32 + 32
    assert torch.equal(parts[:, method.parts()["exp"]], fer)
    assert not torch.allclose(parts[:, method.parts()["id"]], fer)
    assert torch.equal(method.encode(x, "verification", torch.arange(3)), fer)
    # the identity map for verification, on request: the same trained model, other cached features
    by_id = FaceCycle(method.cfg.replace(verification_features="id"), "default", method.ctx)
    assert by_id.artifacts() == method.artifacts() and by_id.feature_view("verification") != method.feature_view("verification")
    by_id.prepare()
    assert torch.equal(by_id.encode(x, "verification", torch.arange(3)), parts[:, method.parts()["id"]])


def test_training_killed_mid_epoch_resumes_bit_identically(tmp_path, monkeypatch):
    """Frames, augmentation and the generator's noise come from a checkpointed generator."""

    def trained(folder: str) -> dict:
        method = FaceCycle(FaceCycleConfig.resolve("smoke", {"exp_epochs": "2", "id_epochs": "2"}), "default", context(tmp_path / folder, clips()))
        method.prepare()
        return official_state(method.nets)

    whole = trained("whole")
    calls = []
    original = fc_method.identity_losses

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # 2 steps per epoch: killed in the identity cycle's second epoch
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(fc_method, "identity_losses", interrupted)
        with pytest.raises(KeyboardInterrupt):
            trained("resumed")
    torch.manual_seed(12345)  # the global generator plays no part
    resumed = trained("resumed")
    for net, state in whole.items():
        for key, value in state.items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key}"


def official_file(tmp_path: Path, identity: bool, seed: int = 3) -> tuple[Path, FaceCycleNets]:
    """Random paper-size networks written in the official layout (the project's inverse mapping)."""
    torch.manual_seed(seed)
    nets = FaceCycleNets(1.0, 64, identity).eval()
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-zero biases, so a mixed-up tensor shows
    path = tmp_path / ("finalmodel.tar" if identity else "ExpCode_19.tar")
    torch.save(official_state(nets), path)
    return path, nets


def test_official_layout_round_trip_gives_the_same_features(tmp_path):
    path, nets = official_file(tmp_path, identity=True)
    cfg = FaceCycleConfig.resolve("paper", {"checkpoint": str(path)})
    method = FaceCycle(cfg, "default", context(tmp_path, clips(2, 2, 100)))
    assert method.artifacts() == [] and method.fingerprint()["weights"] == method.weights_file()["sha256"]
    method.prepare()
    x = to_input(clips(1, 2, 100).frames.images, 100, torch.device("cpu"))
    with torch.no_grad():
        expected = nets.expression.features(normalise(x / 2 + 0.5))
    fer = method.encode(x, "fer", torch.arange(2))
    assert fer.shape == (2, 6272) and method.feature_dim == 6272
    assert torch.allclose(fer, expected, atol=1e-5, rtol=0)
    parts = method.encode(x, "parts", torch.arange(2))
    assert parts.shape == (2, 6272 * 2 + 512)


def test_expression_stage_file_refuses_the_identity_parts(tmp_path):
    path, _ = official_file(tmp_path, identity=False)
    method = FaceCycle(FaceCycleConfig.resolve("paper", {"checkpoint": str(path)}), "default", context(tmp_path, clips(2, 2)))
    method.prepare()
    x = torch.zeros(1, 3, 100, 100)
    assert method.encode(x, "verification", torch.arange(1)).shape == (1, 6272)
    with pytest.raises(BenchError, match=r"ExpCode_19.tar: the expression stage alone .* identity features \(parts\) need the final model") as err:
        method.encode(x, "parts", torch.arange(1))
    assert "\n" not in str(err.value)


def test_bad_files_give_one_line(tmp_path):
    other = tmp_path / "model.pt"  # another method's file: a flat state dict
    torch.save({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}, other)
    for path, message in [(other, r"unexpected entries backbone.conv1.weight; a FaceCycle file holds codegeneration")]:
        with pytest.raises(BenchError, match=message):
            FaceCycle(FaceCycleConfig.resolve("paper", {"checkpoint": str(path)}), "default", context(tmp_path, clips(2, 2)))
    state = official_state(FaceCycleNets(0.125, 64, identity=False))  # the right names, the wrong sizes
    small = tmp_path / "small.tar"
    torch.save(state, small)
    method = FaceCycle(FaceCycleConfig.resolve("paper", {"checkpoint": str(small)}), "default", context(tmp_path, clips(2, 2)))
    with pytest.raises(BenchError, match=r"small.tar \(facecycle\): codegeneration.conv1.0.weight has shape \(8, 3, 7, 7\)"):
        method.prepare()
    with pytest.raises(BenchError, match=r"authors' networks are width 1.*not width=0.125, train_size=32"):
        FaceCycleConfig.resolve("smoke", {"checkpoint": str(small)})


def test_paper_preset_takes_a_step_at_the_paper_size(tmp_path):
    """64 px training at width 1 (34.9 M parameters with the identity branch), one step per cycle."""
    cfg = FaceCycleConfig.resolve("paper", {"batch_size": "2", "exp_epochs": "1", "id_epochs": "1"})
    method = FaceCycle(cfg, "default", context(tmp_path, clips(2, 2, 64)))
    method.prepare()
    assert sum(p.numel() for p in method.nets.parameters()) == 34_900_294
    for artifact in method.artifacts():
        history = json.loads((artifact.path(tmp_path) / "done.json").read_text())["history"]
        assert len(history) == 1 and history[0]["perceptual"] > 0


def test_loss_terms_on_hand_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    assert ssim_loss(x, x).abs() < 1e-6 and ssim_loss(x, torch.rand(2, 3, 16, 16, generator=g)) > 0.5
    symmetric = torch.cat([x[..., :8], x[..., :8].flip(-1)], dim=-1)
    assert symmetry_loss(symmetric) == 0 and symmetry_loss(x) > 0
    assert torch.isclose(margin_loss(x, x), torch.tensor(-0.1))  # the official hinge is discarded
    assert torch.allclose(gram(x), torch.einsum("bchw,bdhw->bcd", x, x) / 256)


def test_self_attention_softmaxes_positions_and_channels():
    block = SelfAttention(4)
    x = torch.randn(2, 4, 3, 5)
    b, c = 2, 4
    theta = F.softmax(block.theta(x).view(b, c, -1), dim=-1)
    g = F.softmax(block.g(x).view(b, c, -1), dim=1)
    attention = block.phi(x).view(b, c, -1) @ theta.transpose(1, 2) @ g
    assert torch.allclose(block(x), F.leaky_relu(x + attention.view_as(x), 0.1), atol=1e-6)


def test_augmentation_is_drawn_from_the_given_generator():
    x = torch.rand(4, 3, 32, 32)
    a, b = (augment(x, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1


def test_vgg19_from_a_local_file_or_a_recorded_fallback(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache, whatever this machine holds
    missing = str(tmp_path / "missing.pth")
    with caplog.at_level(logging.WARNING):
        assert resolve_vgg19(missing, "random").mode == resolve_vgg19(missing, "random").mode == "random"
    assert sum("VGG19 weights not found" in r.message for r in caplog.records) == 1
    method = smoke(tmp_path)
    assert method.info()["vgg19"] == "random"
    keys = {fc_method.expression_artifact(method.cfg.replace(vgg_fallback=f), method.ctx).hash for f in ("random", "off")}
    assert len(keys) == 2  # the resolved choice keys the trained model
    reference = vgg19_layers(VGGSource("random"), seed=3)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, path)
    source = resolve_vgg19(str(path), "random")
    assert source.mode == "imagenet"
    loaded = vgg19_layers(source, seed=0)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
