"""Stage 1 (Unsup3D): mappings, losses on hand-made cases, training, resume, the method's variants."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.datasets.base import ImageSet
from harness.errors import TrainingDiverged
from harness.registry import ABLATIONS
from harness.method import MethodContext
from methods.unsup3d.losses import (
    PerceptualLoss,
    PerceptualSource,
    calibrated_error,
    photometric_loss,
    resolve_perceptual,
    scale_invariant_depth_error,
    vgg16_relu3_3,
)
from methods.unsup3d.method import Unsup3DConfig, Unsup3DMethod, build_model, stage1_artifact, train_stage1
from methods.unsup3d.model import BORDER_DEPTH, canonical_depth, light_terms, view_pose

SMOKE = Unsup3DConfig.resolve("smoke")
NO_VGG = {"vgg_weights": "/nonexistent/vgg16.pth"}  # the tests must not depend on this machine's cache


def blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (upsampled 4x4 noise): learnable, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 255).to(torch.uint8)


def context(tmp_path: Path, images: torch.Tensor) -> MethodContext:
    return MethodContext.standalone(ImageSet(images), tmp_path, name="blobs")


# --- mappings --------------------------------------------------------------------------------------
def test_canonical_depth_range_border_and_offset_invariance() -> None:
    raw = torch.randn(2, 16, 16) * 3
    depth = canonical_depth(raw)
    assert depth.min() >= 0.9 and depth.max() <= 1.1
    assert torch.all(depth[..., :2] == BORDER_DEPTH) and torch.all(depth[..., -2:] == BORDER_DEPTH)
    assert BORDER_DEPTH == pytest.approx(1.04)
    torch.testing.assert_close(canonical_depth(raw + 5.0), depth)  # the per-image mean is removed
    assert torch.all(canonical_depth(torch.zeros(1, 8, 8))[..., 2:-2] == 1.0)


def test_light_terms() -> None:
    ambient, diffuse, direction = light_terms(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, 0.0]]))
    torch.testing.assert_close(ambient, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(diffuse, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(direction, torch.tensor([[0.0, 0.0, 1.0], [2**-0.5, 0.0, 2**-0.5]]))


def test_view_pose_scales() -> None:
    expected = torch.tensor([[math.radians(60)] * 3 + [0.1, 0.1, 0.0]])
    torch.testing.assert_close(view_pose(torch.ones(1, 6)), expected)


# --- losses ----------------------------------------------------------------------------------------
def test_photometric_loss_hand_cases() -> None:
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    ones = torch.ones(2, 1, 8, 8)
    assert photometric_loss(image, image, ones, ones).item() == pytest.approx(0.0, abs=1e-6)  # 0 + ln 1
    shifted = image + 0.5
    assert photometric_loss(shifted, image, ones, ones).item() == pytest.approx(0.5 * math.sqrt(2), rel=1e-5)
    assert photometric_loss(shifted, image, 2 * ones, ones).item() == pytest.approx(0.25 * math.sqrt(2) + math.log(2), rel=1e-5)
    # only masked pixels count: an error confined to the unmasked half costs nothing
    half = ones.clone()
    half[..., :4] = 0
    spoiled = image.clone()
    spoiled[..., :4] += 1
    assert photometric_loss(spoiled, image, ones, half).item() == pytest.approx(0.0, abs=1e-6)


def test_calibrated_error_forms() -> None:
    d, sigma = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 2.0)
    assert calibrated_error(d, sigma, "gaussian").item() == pytest.approx(4 / 8 + math.log(2), rel=1e-5)
    assert calibrated_error(d, sigma, "laplacian").item() == pytest.approx(math.sqrt(2) + math.log(2), rel=1e-5)
    with pytest.raises(ValueError):
        calibrated_error(d, sigma, "cauchy")


def test_perceptual_loss_pools_the_mask_to_the_feature_size() -> None:
    loss = PerceptualLoss(nn.AvgPool2d(4))  # stands in for relu3_3: a quarter of the image size
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    spoiled = image.clone()
    spoiled[..., :8] = 1.0
    sigma = torch.ones(1, 1, 4, 4)
    mask = torch.ones(1, 1, 16, 16)
    assert loss(image, loss.embed(image), sigma, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(spoiled, loss.embed(image), sigma, mask).item() > 0.1
    mask[..., :8] = 0
    assert loss(spoiled, loss.embed(image), sigma, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_scale_invariant_depth_error() -> None:
    target = 1 + torch.rand(2, 8, 8)
    assert scale_invariant_depth_error(3 * target, target).abs().max() < 1e-5  # global scale is free
    pred = target.clone()
    pred[:, :4] *= math.e  # half the pixels off by a factor e: log ratios 0 and 1, std 0.5
    torch.testing.assert_close(scale_invariant_depth_error(pred, target), torch.full((2,), 0.5))
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 4:] = True
    assert scale_invariant_depth_error(pred, target, mask).abs().max() < 1e-5


# --- perceptual weights: never downloaded, always recorded ----------------------------------------
def test_vgg_fallback_warns_once_and_is_recorded_in_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = str(tmp_path / "missing.pth")
    with caplog.at_level(logging.WARNING):
        assert resolve_perceptual(missing, "off").mode == "off"
        assert resolve_perceptual(missing, "off").mode == "off"
    assert sum("VGG16 weights not found" in r.message for r in caplog.records) == 1
    ctx = context(tmp_path, blobs(8))
    for fallback in ("off", "random"):
        cfg = SMOKE.replace(vgg_weights=missing, perceptual_fallback=fallback)
        assert Unsup3DMethod(cfg, "default", ctx).info()["perceptual_loss"] == fallback
    # "off" and "random" train different models, so they key different artifacts
    hashes = {stage1_artifact(SMOKE.replace(vgg_weights=missing, perceptual_fallback=f), ctx).hash for f in ("off", "random")}
    assert len(hashes) == 2


def test_vgg_weights_load_from_a_local_file(tmp_path: Path) -> None:
    reference = vgg16_relu3_3(PerceptualSource("random"), seed=3)
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in reference.named_buffers()}, path)
    source = resolve_perceptual(str(path), "off")
    assert source.mode == "imagenet"
    loaded = vgg16_relu3_3(source)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), reference(x))
    assert loaded.state_dict() == {}  # frozen weights stay out of checkpoints


# --- the model and its training --------------------------------------------------------------------
def test_forward_outputs_and_latents() -> None:
    model = build_model(SMOKE, seed=0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = model(x)
    assert out.recon.shape == (6, 3, 32, 32) and out.mask.shape == (6, 1, 32, 32)
    assert out.depth.shape == out.view_depth.shape == (6, 32, 32)
    assert not out.mask.requires_grad
    torch.testing.assert_close(out.depth[3:], out.depth[:3].flip(2))  # the flipped branch (paper Eq. 5)
    assert set(out.losses) == {"loss", "photometric", "photometric_flip", "recon_l1"}  # perceptual off
    latents = model.encode_latents(x)
    assert {k: tuple(v.shape) for k, v in latents.items()} == {"texture": (3, 16), "shape": (3, 16), "light": (3, 4), "pose": (3, 6)}
    no_light = build_model(SMOKE, seed=0, light=False, pose=False).encode_latents(x)
    assert no_light["light"].abs().sum() == 0 and no_light["pose"].abs().sum() == 0


def test_a_few_steps_lower_the_loss_on_a_fixed_batch() -> None:
    model = build_model(SMOKE, seed=0)
    x = blobs(8).float() / 127.5 - 1
    # a larger step than the paper's 1e-4 so that a handful of updates show the descent
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(x).losses["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_resume_after_one_epoch_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    images = blobs(16)
    cfg = SMOKE.replace(epochs=2)

    def train(workdir: Path, epochs: int) -> dict[str, torch.Tensor]:
        model = build_model(cfg, seed=1)
        train_stage1(model, images, cfg.replace(epochs=epochs), seed=1, workdir=workdir, device=torch.device("cpu"))
        return model.state_dict()

    train(tmp_path / "killed", 1)  # as if killed after the first epoch's checkpoint
    resumed = train(tmp_path / "killed", 2)
    straight = train(tmp_path / "straight", 2)
    assert int(straight["train_steps"]) == 4
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_nan_loss_raises_training_diverged(tmp_path: Path) -> None:
    model = build_model(SMOKE, seed=0)
    with torch.no_grad():
        model.texture_net.decoder[-2].weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="grad_clip"):
        train_stage1(model, blobs(16), SMOKE, seed=0, workdir=tmp_path, device=torch.device("cpu"))


# --- the registered method -------------------------------------------------------------------------
def test_variants_features_and_shared_stage1(tmp_path: Path) -> None:
    ctx = context(tmp_path, blobs(16, size=64))
    cfg = SMOKE.replace(**NO_VGG)
    methods = {v: Unsup3DMethod(cfg, v, ctx) for v in Unsup3DMethod.variants}
    hashes = {v: m.artifacts()[0].hash for v, m in methods.items()}
    # one stage-1 model for default / no-shape / no-texture; retrained ones for no-light / no-pose
    assert hashes["default"] == hashes["no-shape"] == hashes["no-texture"]
    assert len({hashes["default"], hashes["no-light"], hashes["no-pose"]}) == 3
    assert ABLATIONS["pixel"].rows[-1] == ("unsup3d", "default") and len(ABLATIONS["pixel"].rows) == 5

    x = torch.rand(4, 3, 32, 32) * 2 - 1
    index = torch.arange(4)
    sizes = {}
    for variant in ("default", "no-shape", "no-texture"):
        methods[variant].prepare()
        sizes[variant] = methods[variant].encode(x, "fer", index).shape
    assert sizes == {"default": (4, 32), "no-shape": (4, 16), "no-texture": (4, 16)}
    # the parts view: each named part is exactly that code
    method = methods["default"]
    parts, latents = method.parts(), method.model.encode_latents(x)
    view = method.encode(x, "parts", index)
    assert list(parts) == ["Z_t", "Z_s", "light", "pose"] and view.shape == (4, 16 + 16 + 4 + 6)
    for name, key in (("Z_t", "texture"), ("Z_s", "shape"), ("light", "light"), ("pose", "pose")):
        assert torch.equal(view[:, parts[name]], latents[key])
    assert list(methods["no-texture"].parts()) == ["Z_s", "light", "pose"]
    depth = method.depth(x)
    assert depth.shape == (4, 32, 32) and torch.isfinite(depth).float().mean() > 0.5
    assert ((depth[torch.isfinite(depth)] > 0.8) & (depth[torch.isfinite(depth)] < 1.2)).all()

    folder = methods["default"].artifacts()[0].path(tmp_path)
    done = json.loads((folder / "done.json").read_text())
    assert done["perceptual"] == "off" and len(done["history"]) == 1 and done["images_per_second"] > 0
    assert (folder / "reconstructions.png").stat().st_size > 0
    assert not methods["default"].model.training
