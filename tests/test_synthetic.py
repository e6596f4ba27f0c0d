"""The built-in synthetic face world: determinism, shapes, splits and their protocol invariants."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_script
from harness.datasets.synthetic import SyntheticConfig, SyntheticFaces, SyntheticPose30, world
from harness.datasets.synthetic import dataset as synthetic_dataset
from harness.datasets.synthetic.render import render
from harness.errors import BenchError
from harness.registry import DATASETS
from protocols.fer import FERConfig, predict, train_probe


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> SyntheticFaces:
    """The smoke preset, generated once for the module (a few seconds)."""
    return SyntheticFaces(SyntheticConfig.resolve("smoke"), None, tmp_path_factory.mktemp("cache"))


def tiny(**changes) -> SyntheticConfig:
    return SyntheticConfig.resolve("smoke").replace(pretrain_images=6, **changes)


def test_registered_under_both_names():
    assert DATASETS.get("synthetic") is SyntheticFaces
    assert DATASETS.get("synthetic-pose30") is SyntheticPose30
    assert not SyntheticFaces.needs_root


def test_same_seed_same_bytes_other_seed_other_bytes():
    first = synthetic_dataset.build_split(tiny(), "pretrain")
    again = synthetic_dataset.build_split(tiny(), "pretrain")
    other = synthetic_dataset.build_split(tiny(seed=1), "pretrain")
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.extras["depth"], again.extras["depth"])
    assert not torch.equal(first.images, other.images)


def test_workers_do_not_change_the_bytes(monkeypatch):
    """Chunks rendered by DataLoader workers equal the same batches rendered in this process."""
    rng = np.random.default_rng(0)
    n = 2 * synthetic_dataset.RENDER_BATCH
    scene = world.compose(
        world.identity_table(0, 5), rng.integers(0, 5, n), world.sample_expressions(rng, rng.integers(0, 7, n)),
        world.sample_poses(rng, n, 60.0), world.sample_environments(rng, n),
    )
    monkeypatch.setattr(synthetic_dataset, "CHUNK", synthetic_dataset.RENDER_BATCH)  # two chunks -> two workers
    images, depth, head = synthetic_dataset.render_scenes(scene, 32)
    with synthetic_dataset._one_thread():  # the workers render on one thread too
        direct = [render(world.take(scene, slice(k, k + synthetic_dataset.RENDER_BATCH)), 32) for k in (0, n // 2)]
    assert torch.equal(images, torch.cat([d[0] for d in direct]))
    assert torch.equal(depth, torch.cat([d[1] for d in direct]))
    assert torch.equal(head, torch.cat([d[2] for d in direct]))
    assert head.any() and (depth[head] > 0).all()  # the head is in front of the background


def test_shapes_dtypes_and_ground_truth(smoke):
    images = smoke.pretrain()
    n = len(images)
    assert images.images.shape == (128, 3, 64, 64) and images.images.dtype == torch.uint8
    assert images.labels is None and images.identities.dtype == torch.int64
    extras = images.extras
    assert extras["pose"].shape == (n, 3) and extras["light"].shape == (n, 8)
    assert extras["units"].shape == (n, len(world.ACTION_UNITS))
    assert extras["expression"].dtype == torch.int64 and extras["expression"].max() < 7
    depth = extras["depth"]
    assert depth.shape == (n, 64, 64) and depth.dtype == torch.float32
    assert (depth[:, 32, 32] > 0).all(), "the image centre shows the face"
    head = extras["head"]
    assert head.dtype == torch.bool and head[:, 32, 32].all() and (depth[head] > 0).all()
    assert ((depth > 0) & ~head).any(), "the neck and shoulders are not the head"
    assert extras["fov"].min() >= math.radians(12) and extras["fov"].max() <= math.radians(35)
    # identity factors are the person's: equal for two images of one person
    ids = images.identities
    a, b = next((i, j) for i in range(n) for j in range(i + 1, n) if ids[i] == ids[j])
    assert torch.equal(extras["shape"][a], extras["shape"][b]) and torch.equal(extras["texture"][a], extras["texture"][b])
    assert extras["shape"].shape == (n, len(world.SHAPE_FACTORS)) and extras["texture"].shape == (n, 12)
    assert (depth == 0).any(dim=(1, 2)).float().mean() > 0.9, "most images show some background"
    assert extras["pose"][:, 0].abs().max() <= 60.0
    assert images.images.float().std() > 30, "images are not flat"


def test_fer_splits_labelled_balanced_and_identity_disjoint(smoke):
    train, test = smoke.fer_split("train"), smoke.fer_split("test")
    assert (len(train), len(test)) == (700, 350)
    assert train.class_names == world.EXPRESSIONS == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    assert torch.bincount(train.labels, minlength=7).tolist() == [100] * 7
    assert torch.bincount(test.labels, minlength=7).tolist() == [50] * 7
    assert torch.equal(train.labels, train.extras["expression"])
    with pytest.raises(BenchError):
        smoke.fer_split("val")


def test_test_people_never_train(smoke):
    training = torch.cat([smoke.pretrain().identities, smoke.clips().frames.identities, smoke.fer_split("train").identities])
    fer_test = smoke.fer_split("test").identities
    verification = smoke.verification()[0].identities
    assert not set(training.tolist()) & set(fer_test.tolist())
    assert not set(training.tolist()) & set(verification.tolist())
    assert not set(fer_test.tolist()) & set(verification.tolist())


def test_clips_hold_sixteen_frames_of_one_person(smoke):
    clips = smoke.clips()
    assert len(clips.clips) == 8
    for clip in clips.clips:
        assert len(clip) == 16
        assert len(set(clips.frames.identities[clip].tolist())) == 1
        assert clips.frames.extras["expression"][clip].unique().numel() > 1, "expressions vary within a clip"
        assert clips.frames.extras["pose"][clip, 0].std() > 0, "the head moves within a clip"


# --- smooth clips (video()) ------------------------------------------------------------------------
def steps(values: torch.Tensor, clips: int) -> torch.Tensor:
    """|change| between neighbouring frames of each clip: (clips, frames - 1, ...)."""
    v = values.float().view(clips, -1, *values.shape[1:])
    return (v[:, 1:] - v[:, :-1]).abs()


def test_smooth_clips_go_through_one_expression_episode(smoke):
    video = smoke.video()
    n = len(video.clips)
    assert n == 8 and all(len(c) == 16 for c in video.clips)
    assert video.fps == synthetic_dataset.VIDEO_FPS and torch.equal(video.positions, torch.arange(16).repeat(8))
    extras = video.frames.extras
    phase, label = extras["phase"].view(n, 16), extras["expression"].view(n, 16)
    intensity, units = extras["intensity"].view(n, 16), extras["units"].view(n, 16, -1)
    for c, clip in enumerate(video.clips):
        assert len(set(video.frames.identities[clip].tolist())) == 1
        assert (extras["light"][clip] == extras["light"][clip[0]]).all(), "one light, camera and background per clip"
        order = torch.unique_consecutive(phase[c]).tolist()
        assert order in ([0, 1, 2, 3], [0, 1, 2, 3, 0]), f"clip {c}: phases {order}"
        apex, rest = phase[c] == 2, phase[c] == 0
        shown = int(label[c][apex][0])
        assert shown > 0 and (label[c][apex] == shown).all() and set(label[c].tolist()) == {0, shown}
        assert (units[c][rest] == 0).all() and (intensity[c][rest] == 0).all()
        assert torch.allclose(intensity[c][apex], intensity[c].max().expand(int(apex.sum()))), "the apex holds the peak"
        assert 0.7 <= float(intensity[c].max()) <= 1.0
        onset, offset = intensity[c][phase[c] == 1], intensity[c][phase[c] == 3]
        assert (onset.diff() >= 0).all() and (offset.diff() <= 0).all(), "rises in the onset, falls in the offset"


def test_smooth_clips_change_little_between_frames(smoke):
    """Neighbouring frames of a smooth clip differ far less than those of the stage-2 clips,
    whose expression is drawn per frame: in action units, pose and pixels."""
    video, clips = smoke.video().frames, smoke.clips().frames
    smooth_units, drawn_units = steps(video.extras["units"], 8), steps(clips.extras["units"], 8)
    assert smooth_units.mean() < 0.2 * drawn_units.mean()
    # no jump: one step moves a unit by at most half its largest value in the clip
    peak = video.extras["units"].view(8, 16, -1).abs().amax(1, keepdim=True)
    assert (smooth_units <= 0.5 * peak + 1e-6).all()
    smooth_pose, drawn_pose = steps(video.extras["pose"], 8), steps(clips.extras["pose"], 8)
    assert (smooth_pose.mean((0, 1)) < 0.5 * drawn_pose.mean((0, 1))).all()
    assert smooth_pose[..., 0].max() < 5.0, "yaw moves less than 5 degrees per frame"
    assert steps(video.images, 8).mean() < 0.6 * steps(clips.images, 8).mean()


def test_smooth_clips_are_deterministic_cached_and_leave_the_stage2_clips_alone(smoke, monkeypatch):
    cfg = tiny(clips=2)
    first, again = synthetic_dataset.build_split(cfg, "video"), synthetic_dataset.build_split(cfg, "video")
    assert torch.equal(first.images, again.images) and torch.equal(first.extras["phase"], again.extras["phase"])
    assert not torch.equal(first.images, synthetic_dataset.build_split(tiny(clips=2, seed=1), "video").images)
    stored = smoke.video()
    monkeypatch.setattr(synthetic_dataset, "build_split", lambda *a: pytest.fail("cached clips were rendered again"))
    reread = SyntheticFaces(smoke.cfg, None, smoke.cache_dir).video()
    assert torch.equal(reread.frames.images, stored.frames.images) and torch.equal(reread.positions, stored.positions)
    assert reread.fps == stored.fps and torch.equal(reread.frames.extras["phase"], stored.frames.extras["phase"])
    # their own split and key: the stage-2 clips (and what is trained on them) stay as they were
    assert smoke.fingerprint("video") != smoke.fingerprint("clips")
    assert smoke.fingerprint("clips")["split"] == "clips" and smoke.size("video") == smoke.size("clips") == 128
    assert smoke.clips().fps is None


def test_smooth_clips_need_room_for_three_phases(tmp_path):
    with pytest.raises(BenchError, match="clip_frames=8 .* raise it"):
        SyntheticFaces(tiny(clip_frames=8), None, tmp_path).video()


def test_methods_get_the_video_from_the_runner_and_standalone(smoke, tmp_path):
    from harness.method import MethodContext
    from harness.session import Session, Settings

    ctx = Session(Settings(preset="smoke", cache_dir=str(smoke.cache_dir))).method("pixels", "default", 0).ctx
    video = ctx.load_video()
    assert torch.equal(video.frames.images, smoke.video().frames.images) and video.fps == synthetic_dataset.VIDEO_FPS
    assert ctx.video_fingerprint == smoke.fingerprint("video") and ctx.clips_fingerprint == smoke.fingerprint("clips")
    images = smoke.pretrain()
    clips = smoke.clips()
    alone = MethodContext.standalone(images, tmp_path, clips=clips, video=video, name="toy")
    assert alone.load_video() is video and alone.load_clips() is clips
    assert alone.video_fingerprint == {"name": "toy", "clips": 8, "fps": synthetic_dataset.VIDEO_FPS}
    assert MethodContext.standalone(images, tmp_path, clips=clips).load_video() is clips, "the clips stand in for video"
    with pytest.raises(BenchError, match="toy: no clips or video"):
        MethodContext.standalone(images, tmp_path, name="toy").load_video()


def test_verification_folds_are_balanced_valid_and_person_disjoint(smoke):
    images, pairs = smoke.verification()
    assert pairs.n_folds == 10 and len(pairs) == 10 * 20
    assert int(pairs.left.max()) < len(images) and int(pairs.right.max()) < len(images)
    ids = images.identities
    assert torch.equal(pairs.same, ids[pairs.left] == ids[pairs.right])
    assert not (pairs.left == pairs.right).any()
    people_seen: set[int] = set()
    for fold in range(10):
        in_fold = pairs.fold == fold
        assert int(pairs.same[in_fold].sum()) == 10 and int((~pairs.same[in_fold]).sum()) == 10
        people = set(ids[pairs.left[in_fold]].tolist()) | set(ids[pairs.right[in_fold]].tolist())
        assert not people & people_seen
        people_seen |= people
        keys = {tuple(sorted(p)) for p in zip(pairs.left[in_fold].tolist(), pairs.right[in_fold].tolist())}
        assert len(keys) == 20, "no pair repeats"


def test_pose30_keeps_large_yaw_test_images_and_the_same_training(smoke):
    pose = SyntheticPose30(smoke.cfg, None, smoke.cache_dir)
    test = pose.fer_split("test")
    assert 0 < len(test) < len(smoke.fer_split("test"))
    assert (test.extras["pose"][:, 0].abs() >= 30).all()
    assert torch.equal(pose.fer_split("train").images, smoke.fer_split("train").images)


def test_pose30_without_large_poses_says_so(tmp_path):
    cfg = SyntheticConfig.resolve("smoke").replace(max_yaw=20.0, fer_test_images=7)
    with pytest.raises(BenchError, match="max_yaw"):
        SyntheticPose30(cfg, None, tmp_path).fer_split("test")


def test_cache_returns_the_stored_split(smoke, monkeypatch):
    """A second dataset over the same cache reads the stored split (nothing is rendered) and
    gets what rendering gives: images, labels, identities, ground truth and the pair list."""
    fresh = synthetic_dataset.build_split(smoke.cfg, "verification")
    smoke.verification()  # stored (if an earlier test did not store it already)
    monkeypatch.setattr(synthetic_dataset, "build_split", lambda *a: pytest.fail("a cached split was rendered again"))
    images, pairs = SyntheticFaces(smoke.cfg, None, smoke.cache_dir).verification()
    assert torch.equal(images.images, fresh[0].images) and torch.equal(images.identities, fresh[0].identities)
    assert images.extras.keys() == fresh[0].extras.keys()
    assert all(torch.equal(images.extras[k], fresh[0].extras[k]) for k in images.extras)
    assert all(torch.equal(getattr(pairs, f), getattr(fresh[1], f)) for f in ("left", "right", "same", "fold"))
    stored = sorted(p.suffix for p in (smoke.cache_dir / "synthetic").iterdir())
    assert stored.count(".pt") == stored.count(".json") >= 1  # tensors, and their checked description


def test_identity_rows_do_not_depend_on_the_table_size():
    small, large = world.identity_table(3, 4), world.identity_table(3, 50)
    for name, values in small.items():
        assert np.array_equal(values, large[name][:4]), name


@pytest.mark.parametrize("change", [dict(pretrain_images=0), dict(images_per_person=1), dict(max_yaw=120.0)])
def test_impossible_sizes_are_rejected(change):
    with pytest.raises(BenchError):
        SyntheticConfig.resolve("smoke", {k: str(v) for k, v in change.items()}, section="synthetic")


def test_fingerprints_name_the_generator_and_narrow_to_a_task(tmp_path):
    """Models keyed by the pretraining data survive a resized FER split, not a new world."""
    base = SyntheticFaces(tiny(), None, tmp_path)
    bigger_fer = SyntheticFaces(tiny(fer_train_images=1400), None, tmp_path)
    more_pretrain = SyntheticFaces(tiny(train_identities=41), None, tmp_path)
    assert base.fingerprint("pretrain") == bigger_fer.fingerprint("pretrain")
    assert base.fingerprint("clips") == bigger_fer.fingerprint("clips")
    assert base.fingerprint("pretrain") != more_pretrain.fingerprint("pretrain")
    assert base.fingerprint() != bigger_fer.fingerprint()  # features and results still see it
    assert base.fingerprint()["generator"] == base.fingerprint("pretrain")["generator"] == synthetic_dataset.GENERATOR_VERSION


# --- the FER headroom report (docs/fer_headroom/fer_headroom.py) --------------------------------------------
def test_expression_share_known_answer():
    headroom = load_script("fer_headroom", "docs/fer_headroom")
    images = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    images[4:] = 255  # class 1 is white, class 0 black: all the variance is between classes
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # between-class 0.25 per pixel; total variance (ddof 1) 0.25 * 8 / 7
    assert headroom.expression_share(images, labels) == pytest.approx(7 / 8)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])  # classes independent of the pixels
    assert headroom.expression_share(images, labels) == pytest.approx(0.0, abs=1e-6)


def test_fer_headroom_report_on_smoke_data(tmp_path, capsys):
    """The report's numbers are what its description says, recomputed here independently."""
    headroom = load_script("fer_headroom", "docs/fer_headroom")
    figures = headroom.main(["--preset", "smoke", "--methods", "pixels", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    train = SyntheticFaces(SyntheticConfig.resolve("smoke"), None, tmp_path).fer_split("train")
    val = train.identities % 5 == 0  # held-out training people, never the test split
    assert f"held-out training people (id % 5 == 0): {int(val.sum())} images" in out
    assert set(figures) == {"share", "pixels:default", "supervised"}
    assert figures["share"] == pytest.approx(headroom.expression_share(train.images, train.labels))
    # the pixels probe: 16 px, per-image standardised pixels, the fer probe over three seeds
    x = torch.nn.functional.interpolate(train.images.float() / 127.5 - 1, size=(16, 16), mode="bilinear", antialias=True).flatten(1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    accuracies = []
    for seed in (0, 1, 2):
        probe = train_probe(x[~val], train.labels[~val], 7, FERConfig(), seed)
        accuracies.append(float((predict(probe, x[val]) == train.labels[val]).float().mean()))
    assert figures["pixels:default"] == pytest.approx(sum(accuracies) / 3, abs=1e-6)
    assert (figures["supervised"] * int(val.sum())) == pytest.approx(round(figures["supervised"] * int(val.sum())))


def test_pose_variation_holds_everything_but_person_and_pose_fixed():
    cfg = SyntheticConfig.resolve("smoke", {"variation": "pose", "train_identities": "1"})
    full = SyntheticConfig.resolve("smoke", {"train_identities": "1"})
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    ids, labels = np.zeros(6, dtype=int), np.arange(6) % 7
    fixed = synthetic_dataset._scene(cfg, rng(), ids, labels)
    varied = synthetic_dataset._scene(full, rng(), ids, labels)
    assert np.array_equal(fixed["pose"], varied["pose"])  # the same poses as the full world
    assert (fixed["units"] == 0).all() and (varied["units"] != 0).any()
    for name in ("light_dir", "ambient", "fov", "background"):
        assert (fixed[name] == fixed[name][:1]).all() and not (varied[name] == varied[name][:1]).all()
    assert cfg.to_dict()["variation"] == "pose" and SyntheticFaces(cfg, None, None).fingerprint("pretrain") != SyntheticFaces(full, None, None).fingerprint("pretrain")
