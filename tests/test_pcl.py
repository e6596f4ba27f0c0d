"""PCL: the authors' two file layouts load strictly and give the encoder's features, a wrong file
is one line, the losses are the authors' (NT-Xent without mixing), training runs its three
steps, resumes bit for bit, and the paper preset takes a step at the authors' network size."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from lightly.loss import NTXentLoss

import methods  # noqa: F401  (registers the methods)
from harness.cli import main
from harness.datasets.base import ImageSet
from harness.io import torch_load
from harness.method import MethodContext
from methods.pcl import method as pcl_method
from methods.pcl.checkpoint import official_name, official_state, project_name
from methods.pcl.method import PCL, PCLConfig, dwa_weights
from methods.pcl.networks import TRAINING_STATE, PCLModel
from methods.pcl.objective import ContrastiveViews, face_contrastive, orthogonality, pose_contrastive

SMALL = {"input_size": 32, "width": 0.125, "proj_dim": 16}
TOY = ["--methods", "pcl", "--datasets", "toy", "--preset", "smoke", "--set", "pretrain.data=toy"]


def blobs(n: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 255).to(torch.uint8)


def context(tmp_path: Path, n: int = 16) -> MethodContext:
    return MethodContext.standalone(ImageSet(blobs(n)), tmp_path / "cache", name="blobs")


def random_model(seed: int = 0) -> PCLModel:
    """A small PCL model with every tensor random (BatchNorm statistics too)."""
    model = PCLModel(SMALL["input_size"], SMALL["width"], SMALL["proj_dim"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point and name not in TRAINING_STATE:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=g) * 0.2)
    return model.eval()


def cli(tmp_path: Path, *argv: str) -> int:
    return main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])


# --- the authors' files ----------------------------------------------------------------------------
def test_paper_size_layout_has_the_authors_tensor_counts_and_names() -> None:
    with torch.device("meta"):
        model = PCLModel(64, 1.0, 512)
    names = list(official_state(model, "pcl-train")["state_dict"])
    count = {part: sum(n.startswith(f"module.{part}.") for n in names) for part in ("encoder", "exp_fc", "pose_fc", "decoder")}
    assert count == {"encoder": 48, "exp_fc": 9, "pose_fc": 9, "decoder": 39}
    assert model.feature_dim == 2048
    assert "module.exp_fc.3.running_var" in names and "module.decoder.model.22.weight" in names
    assert "module.encoder.layer3_2_pose.2.weight" in names and "module.encoder.layer1.2.theta.weight" in names
    assert all(project_name(official_name(k)) == k for k in model.state_dict())


@pytest.mark.parametrize("layout", ["pcl-train", "pcl-linear-eval"])
def test_the_authors_files_round_trip_to_the_encoders_features(tmp_path, layout) -> None:
    model = random_model()
    path = tmp_path / f"{layout}.pth"
    torch.save(official_state(model, layout), path)
    cfg = PCLConfig.resolve("smoke", {**SMALL, "checkpoint": str(path)})
    pcl = PCL(cfg, "default", context(tmp_path))
    assert pcl.artifacts() == [] and pcl.weights_file()["layout"] == layout
    pcl.prepare()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    trunk, face, pose = model((x + 1) / 2)
    assert torch.equal(pcl.encode(x, "fer", torch.arange(5)), trunk)
    parts = pcl.encode(x, "parts", torch.arange(5))
    assert {k: parts[:, s].shape[1] for k, s in pcl.parts().items()} == {"trunk": 64, "face": 64, "pose": 64}
    assert torch.equal(parts[:, pcl.parts()["pose"]], pose) and torch.equal(parts[:, pcl.parts()["face"]], face)
    if layout == "pcl-train":  # heads and decoder load too
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in pcl.net.state_dict().items())


@pytest.mark.parametrize(
    "content, message",
    [
        # another method's file: a LatentFace/Unsup3D release
        (lambda s: {"netD": {"network.0.weight": torch.zeros(1)}, "netA": {}}, "not a PCL checkpoint"),
        (lambda s: {"epoch": 3, "state_dict": {k: v for k, v in s["state_dict"].items() if "layer1.2.g." not in k}},
         r"missing tensors module\.encoder\.layer1\.2\.g\.bias"),
        (lambda s: {"state_dict": {**s["state_dict"], "module.extra.weight": torch.zeros(1)}}, r"unexpected tensors module\.extra\.weight"),
        (lambda s: {"state_dict": {**s["state_dict"], "module.exp_fc.0.weight": torch.zeros(3, 3)}}, r"module\.exp_fc\.0\.weight has shape \(3, 3\)"),
    ],
)
def test_a_wrong_file_is_one_error_line(tmp_path, capsys, content, message) -> None:
    path = tmp_path / "weights.pth"
    torch.save(content(official_state(random_model(), "pcl-train")), path)
    argv = [*TOY, "--protocol", "fer", *[f"--set=pcl.{k}={v}" for k, v in SMALL.items()], f"--set=pcl.checkpoint={path}"]
    assert cli(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err and re.search(message, err), err
    assert not (tmp_path / "results").exists()


def test_a_checkpoint_cell_never_trains_and_records_the_files_sha256(tmp_path) -> None:
    path = tmp_path / "best.pth"
    torch.save(official_state(random_model(), "pcl-linear-eval"), path)
    argv = [*TOY, "--protocol", "verification", *[f"--set=pcl.{k}={v}" for k, v in SMALL.items()], f"--set=pcl.checkpoint={path}"]
    assert cli(tmp_path, *argv) == 0
    (result,) = (tmp_path / "results" / "verification" / "toy").glob("pcl--*.json")
    record = json.loads(result.read_text())
    assert record["config"]["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["method_info"]["weights"]["layout"] == "pcl-linear-eval"
    assert not (tmp_path / "cache" / "artifacts").exists()


# --- the objective ----------------------------------------------------------------------------------
def test_face_loss_without_mixing_is_nt_xent_and_mixing_changes_it() -> None:
    z = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(face_contrastive(z, 0.07, None), NTXentLoss(temperature=0.07)(z[:6], z[6:]))
    torch.manual_seed(0)
    assert not torch.allclose(face_contrastive(z, 0.07, 1.6), face_contrastive(z, 0.07, None))


def test_pose_loss_groups_negatives_in_draw_order_and_orthogonality_vanishes_for_independent_codes() -> None:
    g = torch.Generator().manual_seed(2)
    views, negatives = torch.randn(6, 8, generator=g), torch.randn(3 * 4, 8, generator=g)
    # without mixing: face i's negatives are rows 4i..4i+3 of the drawn mirror views
    z, n = torch.nn.functional.normalize(views, dim=1), torch.nn.functional.normalize(negatives, dim=1)
    expected = []
    for r in range(6):
        logits = torch.cat([(z[r] * z[(r + 3) % 6]).sum()[None], n[4 * (r % 3) : 4 * (r % 3) + 4] @ z[r]]) / 0.5
        expected.append(torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)))
    torch.testing.assert_close(pose_contrastive(views, negatives, 0.5, None), torch.stack(expected).mean())
    a = torch.randn(8, 4, generator=g)
    assert float(orthogonality(a, a)) > 0.05
    assert float(orthogonality(a[:, :2], torch.stack([a[:, 0] * 0 + 1, a[:, 0] * 0 + 1], 1))) == 0.0  # a constant code


def test_dynamic_weight_averaging() -> None:
    costs = torch.tensor([[4.0, 2.0], [2.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    assert dwa_weights(costs, 1, 2.0) == (1.0, 1.0)  # the first two epochs: no history
    face, pose = dwa_weights(costs, 2, 2.0)
    # ratios 0.5 (face fell) and 1.0: the loss that fell less gets more weight, the two sum to 2
    assert face + pose == pytest.approx(2.0) and face == pytest.approx(2 / (1 + torch.exp(torch.tensor(0.25)).item()))
    assert dwa_weights(costs, 2, 0.0) == (1.0, 1.0)


def test_quadrant_crops_come_from_two_different_quadrants() -> None:
    views = ContrastiveViews(16)
    image = torch.zeros(1, 3, 40, 40)
    for q, (y, x) in enumerate([(0, 0), (0, 20), (20, 0), (20, 20)]):
        image[:, :, y : y + 20, x : x + 20] = q / 4
    for _ in range(10):
        first, second = views.quadrant_crops(image)
        a, b = first.mean().item(), second.mean().item()
        assert a in {0, 0.25, 0.5, 0.75} and b in {0, 0.25, 0.5, 0.75} and a != b  # each inside one quadrant


# --- training ---------------------------------------------------------------------------------------
def test_smoke_training_runs_three_steps_and_evaluates(tmp_path) -> None:
    assert cli(tmp_path, *TOY, "--protocol", "fer,verification") == 0
    (folder,) = (tmp_path / "cache" / "artifacts").glob("pcl*/*")
    history = torch_load(folder / "last.pt")["history"]
    assert set(history[0]) == {"loss", "reconstruction", "orthogonality", "face_nce", "pose_nce"}
    assert history[0]["loss"] == pytest.approx(history[0]["reconstruction"] + history[0]["orthogonality"]
                                               + history[0]["face_nce"] + history[0]["pose_nce"], rel=1e-5)
    for protocol in ("fer", "verification"):
        (result,) = (tmp_path / "results" / protocol / "toy").glob("pcl--*.json")
        assert json.loads(result.read_text())["method_info"]["feature_dim"] == 16  # 16 px, width 1/8


def test_training_interrupted_after_two_epochs_resumes_bit_for_bit(tmp_path, monkeypatch) -> None:
    cfg = PCLConfig.resolve("smoke", {"epochs": "3"})  # weight averaging starts in epoch 3
    straight = PCL(cfg, "default", context(tmp_path / "straight"))
    straight.prepare()

    real = pcl_method.training_steps

    def failing(*args, **kwargs):
        step, calls = real(*args, **kwargs), []

        def wrapped(batch):
            calls.append(1)
            if len(calls) == 5:  # the first step of epoch 3 (two steps per epoch)
                raise KeyboardInterrupt
            return step(batch)

        return wrapped

    monkeypatch.setattr(pcl_method, "training_steps", failing)
    killed = PCL(cfg, "default", context(tmp_path / "killed"))
    with pytest.raises(KeyboardInterrupt):
        killed.prepare()
    monkeypatch.setattr(pcl_method, "training_steps", real)
    killed.prepare()
    (a,) = (tmp_path / "straight" / "cache" / "artifacts").glob("pcl*/*/model.pt")
    (b,) = (tmp_path / "killed" / "cache" / "artifacts").glob("pcl*/*/model.pt")
    for name, value in torch_load(a).items():
        torch.testing.assert_close(torch_load(b)[name], value, rtol=0, atol=0, msg=name)


def test_paper_preset_takes_a_step_at_the_authors_size(tmp_path) -> None:
    cfg = PCLConfig.resolve("paper", {"epochs": "1", "batch_size": "2", "train_images": "2", "pose_batch": "2", "pose_negatives": "2"})
    assert (cfg.input_size, cfg.width, cfg.proj_dim, cfg.lr, cfg.weight_decay, cfg.temperature) == (64, 1.0, 512, 1e-4, 1e-3, 0.07)
    ctx = MethodContext.standalone(ImageSet(blobs(2, 64)), tmp_path, name="blobs")
    pcl = PCL(cfg, "default", ctx)
    pcl.prepare()
    assert pcl.feature_dim == 2048 and pcl.encode(torch.zeros(1, 3, 64, 64), "fer", torch.arange(1)).shape == (1, 2048)
    (folder,) = (tmp_path / "artifacts").glob("pcl*/*")
    assert len(torch_load(folder / "last.pt")["history"]) == 1
