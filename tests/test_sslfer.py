"""SSLFER (methods/sslfer.py): MaskFN's loss, the TimeAug/HardNeg frame choice, the face-region
augmentations, training and resume, the authors' file with its pickled scheduler, one-line
refusals, the paper size."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.clipbase import imagenet_input, resnet
from methods.sslfer import REGIONS, SSLFER, SSLFERConfig, crops, face_swap, inner_face, mask_parts, maskfn_loss, region_mask
from methods.temporal import Temporal
from tests.clip_methods import make_ctx, official_round_trip, refuses_other_file, resumes_after_kill, tiny_clips, trains_and_reloads
from tests.clip_methods import one_thread  # noqa: F401  (an autouse fixture: one thread, the CPU is shared)

OFFICIAL_SIZE = {"width": "64", "backbone": "resnet50"}


def test_maskfn_loss_is_the_official_false_negative_loss():
    g = torch.Generator().manual_seed(0)
    z0, z1, desc = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(8, 5, generator=g)
    t, w = 0.07, 0.8
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    d = F.normalize(desc, dim=1)
    total = 0.0
    for i in range(8):  # per row, as info_nce_loss_withmask_agg builds its two logit rows
        pair = (i + 4) % 8
        negatives = [j for j in range(8) if j not in (i, pair)]
        fn = max(negatives, key=lambda j: float(d[i] @ d[j]))
        rest = [float(z[i] @ z[j]) / t for j in negatives if j != fn]

        def ce(target: float) -> float:
            return math.log(sum(math.exp(v) for v in [target, *rest])) - target

        total += ce(float(z[i] @ z[pair]) / t) + w * ce(float(z[i] @ z[fn]) / t)
    assert maskfn_loss(z0, z1, desc, t, w).item() == pytest.approx(total / 8, rel=1e-5)


def test_frames_follow_timeaug_and_hardneg(tmp_path):
    clips = tiny_clips(n_clips=6, length=16)
    cfg = SSLFERConfig.resolve("smoke")
    method = SSLFER(cfg, "default", make_ctx(tmp_path, clips))
    rows = torch.stack(clips.clips)
    torch.manual_seed(0)
    for _ in range(50):
        a, n, p, q = (v - rows[:, 0] for v in method.sample_frames(rows, torch.tensor(cfg.positive_offsets), torch.tensor(cfg.positive_weights)))
        assert ((a - n).abs() >= cfg.negative_gap).all()
        assert set((p - a).abs().tolist()) <= set(cfg.positive_offsets) and set((q - n).abs().tolist()) <= set(cfg.positive_offsets)
        assert all(((v >= 0) & (v < 16)).all() for v in (a, n, p, q))  # inside its own clip


def test_masking_covers_one_face_part_with_the_mean_colour():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    out = mask_parts(x, p=1.0)
    parts = torch.stack([region_mask(32, REGIONS[k], x.device) for k in ("left_eye", "right_eye", "mouth")])
    changed = (out != x).any(1)
    for i in range(16):
        part = next(m for m in parts if (changed[i] & ~m).sum() == 0)  # inside one part only
        assert changed[i].sum() > 0.8 * part.sum()
        assert torch.allclose(out[i][:, part], x[i].mean(dim=(1, 2))[:, None].expand(3, int(part.sum())))
    assert torch.equal(mask_parts(x, p=0.0), x)


def test_face_swap_keeps_the_head_outside_the_face_and_the_face_inside():
    torch.manual_seed(0)
    face, head = torch.rand(4, 3, 32, 32) * 0.5, torch.rand(4, 3, 32, 32) * 0.5 - 0.5
    out = face_swap(face, head, p=1.0)
    w = inner_face(32, face.device)
    assert torch.equal(out[:, :, w == 0], head[:, :, w == 0])
    shifted = face + (head * w).sum((2, 3), keepdim=True) / w.sum() - (face * w).sum((2, 3), keepdim=True) / w.sum()
    assert torch.allclose(out[:, :, w == 1], shifted[:, :, w == 1], atol=1e-6)
    assert torch.equal(face_swap(face, head, p=0.0), face)


def test_smoke_training_and_reload(tmp_path):
    trains_and_reloads(SSLFER, tmp_path, 128)


def test_pooled_features_reuse_the_trained_network(tmp_path):
    ctx = make_ctx(tmp_path, tiny_clips())
    head = SSLFER(SSLFERConfig.resolve("smoke"), "default", ctx)
    pooled = SSLFER(SSLFERConfig.resolve("smoke", {"features": "pooled"}), "default", ctx)
    assert head.artifacts()[0].hash == pooled.artifacts()[0].hash and head.fingerprint() != pooled.fingerprint()
    pooled.prepare()
    x = torch.zeros(2, 3, 32, 32)
    assert pooled.encode(x, "fer", torch.arange(2)).shape == (2, pooled.feature_dim) == (2, 64)  # 8 x width 8


def test_descriptor_choice_is_in_the_key_and_the_result(tmp_path):
    ctx = make_ctx(tmp_path, tiny_clips())
    pixels = SSLFER(SSLFERConfig.resolve("smoke"), "default", ctx)
    off = SSLFER(SSLFERConfig.resolve("smoke", {"descriptor_fallback": "off"}), "default", ctx)
    assert pixels.info()["maskfn_descriptor"] == "pixels" and off.info()["maskfn_descriptor"] == "off"
    assert pixels.artifacts()[0].key["maskfn"] == {"mode": "pixels"} and pixels.artifacts()[0].hash != off.artifacts()[0].hash


def test_maskfn_describes_eyes_and_mouth_with_an_imagenet_file(tmp_path):
    trunk = resnet("resnet18", 64)
    torch.save({**trunk.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "r18.pth")
    method = SSLFER(SSLFERConfig.resolve("smoke", {"imagenet_weights": str(tmp_path / "r18.pth")}), "default", make_ctx(tmp_path, tiny_clips()))
    assert method.info()["maskfn_descriptor"] == f"ImageNet ResNet-18 from {tmp_path / 'r18.pth'}"
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    expected = torch.cat([trunk.eval()(imagenet_input(crops(x, REGIONS[k], 64))) for k in ("eyes", "mouth")], 1)
    assert torch.allclose(method.descriptor_net()(x), expected, atol=1e-5)  # 2 x 512: the official 1024-d descriptor


def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    resumes_after_kill(SSLFER, tmp_path, monkeypatch, "maskfn_loss")


def write_checkpoint_best(state: dict, path) -> None:
    """trainer_maskclr.py's save: {epoch, arch, state_dict, optimizer, scheduler}, the scheduler
    a pickled CosineAnnealingLR holding its Adam (and the Adam's defaultdict state)."""
    params = [torch.nn.Parameter(v.float().clone()) for v in state.values() if v.is_floating_point()][:4]
    optimizer = torch.optim.Adam(params, 3e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    scheduler.step()
    torch.save({"epoch": 10, "arch": "resnet50", "state_dict": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler}, path)


def test_official_checkpoint_best_with_its_scheduler_round_trip(tmp_path):
    loaded = official_round_trip(SSLFER, tmp_path, OFFICIAL_SIZE, write_checkpoint_best)
    state = loaded.official_state()
    assert len(state) == 322 and {"backbone.fc.0.weight", "backbone.fc.2.bias", "backbone.layer4.2.bn3.running_var"} <= set(state)
    assert state["backbone.fc.0.weight"].shape == (2048, 2048) and state["backbone.fc.2.weight"].shape == (128, 2048)


def test_another_methods_file_is_one_line(tmp_path):
    temporal = Temporal(Temporal.Config.resolve("smoke", {"width": "64"}), "default", make_ctx(tmp_path, tiny_clips(n_clips=1)))
    temporal.net = temporal.build_net()
    torch.save({"state_dict": temporal.official_state(), "optimizer": {}}, tmp_path / "temporal.pth")
    refuses_other_file(SSLFER, OFFICIAL_SIZE, tmp_path / "temporal.pth", r"missing tensors backbone\.bn1\.bias")


def test_paper_preset_takes_a_step_at_the_official_size(tmp_path):
    cfg = SSLFERConfig.resolve("paper", {"batch_size": "1", "epochs": "1"})  # one clip: one step of 4 frames
    assert (cfg.input_size, cfg.backbone, cfg.width, cfg.lr, cfg.temperature) == (112, "resnet50", 64, 3e-4, 0.07)
    method = SSLFER(cfg, "default", make_ctx(tmp_path, tiny_clips(n_clips=1, length=16, size=64)))
    method.prepare()
    assert method.encode(torch.zeros(2, 3, 112, 112), "fer", torch.arange(2)).shape == (2, 128)
    assert method.net.backbone.num_features == 2048
