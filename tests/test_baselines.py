"""SimCLR and MAE baselines: training moves the weights and lowers the loss, features have the
documented sizes, a trained artifact reloads to identical features, presets resolve."""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightly.transforms import SimCLRTransform
from torchvision.transforms.v2 import functional as TF

import methods  # noqa: F401  (registers the methods)
from harness.datasets.base import ImageSet
from harness.errors import BenchError, TrainingDiverged
from harness.registry import METHODS
from harness.method import MethodContext, to_input
from methods.mae import MAE, MAEConfig, MAENet
from methods.selfsup import SelfSupervisedBaseline
from methods.simclr import (
    CJ_BRIGHTNESS,
    CJ_CONTRAST,
    CJ_HUE,
    CJ_SATURATION,
    SimCLR,
    SimCLRAugment,
    SimCLRConfig,
    shift_hue,
)

BASELINES = [SimCLR, MAE]


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_images(n: int, size: int = 32) -> torch.Tensor:
    """Random low-frequency colour images (uint8), so there is structure to learn."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).to(torch.uint8)


def make_ctx(tmp_path: Path, images: torch.Tensor) -> MethodContext:
    return MethodContext.standalone(ImageSet(images), tmp_path, name="test")  # no clips: baselines never use them


def smoke(cls: type[SelfSupervisedBaseline], ctx: MethodContext) -> SelfSupervisedBaseline:
    return cls(cls.Config.resolve("smoke"), "default", ctx)


@pytest.mark.parametrize("cls", BASELINES, ids=lambda c: c.name)
def test_training_steps_change_weights_and_lower_loss(cls, tmp_path):
    images = smooth_images(16)
    net, optimizer, _, step = smoke(cls, make_ctx(tmp_path, images)).training_setup()

    @torch.no_grad()
    def fixed_loss() -> float:
        torch.manual_seed(123)  # same crops / masks each time: only the weights differ
        return float(step(images)["loss"])

    before = [p.detach().clone() for p in net.parameters()]
    first = fixed_loss()
    for _ in range(5):
        loss = step(images)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert fixed_loss() < first


@pytest.mark.parametrize("cls", BASELINES, ids=lambda c: c.name)
def test_artifact_features_and_checkpoint_round_trip(cls, tmp_path):
    images = smooth_images(64)
    ctx = make_ctx(tmp_path, images)
    method = smoke(cls, ctx)
    method.prepare()
    (artifact,) = method.artifacts()
    done = json.loads((artifact.path(tmp_path) / "done.json").read_text())
    assert done["kind"] == cls.name and len(done["history"]) == 1 and done["images_per_second"] > 0

    x = to_input(images[:5], method.input_size, ctx.device)
    index = torch.arange(5)
    features = method.encode(x, "fer", index)
    assert features.shape == (5, method.feature_dim) == (5, method.info()["feature_dim"])
    assert torch.equal(method.encode(x, "verification", index), features)

    # A second instance loads the built artifact: no training (the data is never read), same features.
    ctx.load_pretrain = lambda: pytest.fail("a built artifact must not be retrained")
    reloaded = smoke(cls, ctx)
    reloaded.prepare()
    assert torch.equal(reloaded.encode(x, "fer", index), features)


def test_killed_training_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, smooth_images(64))
    cfg = MAEConfig.resolve("smoke", {"epochs": "2"})  # 64 images / batch 16: 4 steps per epoch
    calls = []
    original = MAENet.loss

    def loss(self, x):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt  # killed in the middle of epoch 2
        return original(self, x)

    monkeypatch.setattr(MAENet, "loss", loss)
    with pytest.raises(KeyboardInterrupt):
        MAE(cfg, "default", ctx).prepare()
    calls.clear()
    method = MAE(cfg, "default", ctx)
    method.prepare()
    assert len(calls) == 4  # only epoch 2 was trained again
    (artifact,) = method.artifacts()
    assert len(json.loads((artifact.path(tmp_path) / "done.json").read_text())["history"]) == 2


def test_diverged_training_says_which_setting_to_change(tmp_path, monkeypatch):
    monkeypatch.setattr(MAENet, "loss", lambda self, x: self.prediction_head.bias.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"--set mae\.lr="):
        smoke(MAE, make_ctx(tmp_path, smooth_images(64))).prepare()


def test_feature_sizes_are_the_documented_ones(tmp_path):
    ctx = make_ctx(tmp_path, smooth_images(2))
    sizes = {
        (SimCLR, "smoke"): 8 * 8,  # ResNet-18, width 8: 8 x width
        (SimCLR, "quick"): 8 * 32,
        (SimCLR, "paper"): 2048,  # ResNet-50
        (MAE, "smoke"): 32,  # embed_dim
        (MAE, "quick"): 192,
        (MAE, "paper"): 768,  # ViT-Base
    }
    for (cls, preset), size in sizes.items():
        assert cls(cls.Config.resolve(preset), "default", ctx).feature_dim == size, (cls.name, preset)


def test_mae_pools_without_masking(tmp_path):
    images = smooth_images(4)
    ctx = make_ctx(tmp_path, images)
    x = to_input(images, 32, ctx.device)
    nets = {
        pool: MAE(MAEConfig.resolve("smoke", {"pool": pool}), "default", ctx).build_net().eval() for pool in ("cls", "mean")
    }
    nets["mean"].load_state_dict(nets["cls"].state_dict())
    with torch.no_grad():
        tokens = nets["cls"].encoder.encode(x)  # all 1 + 16 tokens: nothing masked at eval
        assert tokens.shape[1] == 1 + (32 // 8) ** 2
        assert torch.allclose(nets["cls"](x), tokens[:, 0])
        assert torch.allclose(nets["mean"](x), tokens[:, 1:].mean(1))
    assert MAE(MAEConfig.resolve("smoke", {"pool": "mean"}), "default", ctx).info()["pool"] == "mean"


def test_presets_resolve():
    assert {"simclr", "mae"} <= set(METHODS.names())
    for cls in BASELINES:
        for preset in ("smoke", "quick", "paper"):
            cfg = cls.Config.resolve(preset)
            # it keys the artifact: JSON that rebuilds the same config
            assert cls.Config(**json.loads(json.dumps(cfg.to_dict()))) == cfg
            assert {k: v for k, v in cfg.to_dict().items() if k in cls.Config.PRESETS.get(preset, {})} == cls.Config.PRESETS.get(preset, {})
    simclr, mae = SimCLRConfig.resolve("paper"), MAEConfig.resolve("paper")
    assert (simclr.backbone, simclr.input_size, simclr.epochs) == ("resnet50", 224, 30)
    assert (mae.embed_dim, mae.depth, mae.patch_size, mae.input_size, mae.epochs) == (768, 12, 16, 224, 30)
    assert mae.mask_ratio == 0.75
    assert MAEConfig.resolve("quick", {"pool": "mean", "mask_ratio": "0.6"}).mask_ratio == 0.6
    with pytest.raises(BenchError, match="pool"):
        MAEConfig.resolve("quick", {"pool": "max"})
    with pytest.raises(BenchError, match="multiple"):
        MAEConfig.resolve("quick", {"patch_size": "7"})


def test_no_deprecated_lightly_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        MAE.build_net(MAE(MAEConfig.resolve("smoke"), "default", make_ctx(Path("."), smooth_images(1))))


def test_augmentation_follows_lightly_and_torchvision():
    defaults = inspect.signature(SimCLRTransform).parameters
    assert (CJ_BRIGHTNESS, CJ_CONTRAST, CJ_SATURATION, CJ_HUE) == tuple(
        defaults[k].default for k in ("cj_bright", "cj_contrast", "cj_sat", "cj_hue")
    )
    for field in ("min_scale", "cj_prob", "random_gray_scale", "hf_prob"):
        assert getattr(SimCLRConfig(), field) == defaults[field].default, field

    images = torch.rand(3, 3, 8, 8)
    shifts = torch.tensor([-0.3, 0.0, 0.2])
    expected = torch.stack([TF.adjust_hue(im, float(s)) for im, s in zip(images, shifts)])
    assert torch.allclose(shift_hue(images, shifts), expected, atol=1e-6)

    torch.manual_seed(0)
    cfg = SimCLRConfig.resolve("smoke", {"gaussian_blur": "0.5"})
    views = SimCLRAugment(cfg)(torch.rand(6, 3, 48, 48))
    assert views.shape == (6, 3, cfg.input_size, cfg.input_size) and 0 <= views.min() and views.max() <= 1


def test_runs_end_to_end_from_the_cli(tmp_path):
    from harness.cli import main

    argv = ["--methods", "simclr,mae", "--datasets", "toy", "--protocol", "fer", "--preset", "smoke"]
    argv += ["--set", "pretrain.data=toy"]
    argv += ["--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    records = [json.loads(f.read_text()) for f in sorted((tmp_path / "results").glob("*/*/*.json"))]
    assert {r["cell"]["method"] for r in records} == {"simclr", "mae"}
    assert {r["method_info"]["feature_dim"] for r in records} == {64, 32}


def test_mae_pool_reuses_the_trained_network(tmp_path):
    """The pool only chooses how features are read: both settings key the same checkpoint."""
    ctx = make_ctx(tmp_path, smooth_images(4))
    cls_token, mean = (MAE(MAEConfig.resolve("smoke", {"pool": p}), "default", ctx) for p in ("cls", "mean"))
    assert cls_token.artifacts()[0].hash == mean.artifacts()[0].hash
    assert cls_token.fingerprint() != mean.fingerprint()  # but the cached features differ
    other = MAE(MAEConfig.resolve("smoke", {"mask_ratio": "0.5"}), "default", ctx)
    assert other.artifacts()[0].hash != cls_token.artifacts()[0].hash


def test_tables_list_the_paper_baselines_in_its_order():
    """Tables list rows in registration order: the paper's Tables 1 and 2 put the general
    baselines first, then the six face-specific ones, then LatentFace."""
    from harness.registry import METHODS

    order = ["simclr", "mae", "fabnet", "tcae", "temporal", "facecycle", "sslfer", "pcl", "latentface"]
    assert [n for n in METHODS.names() if n in order] == order
