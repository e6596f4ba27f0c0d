"""Pair-list verification datasets (``register_pairs_dataset``), LFW's image folder, image names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.datasets.lfw import LFW, LFWConfig
from harness.datasets.pairs import PairsDataset, person_of, register_pairs_dataset
from harness.errors import BenchError
from harness.registry import DATASETS


def jpeg(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 4, size[1]))  # a white left strip: shows crops
    image.save(path, quality=95)


def dataset(name: str, root: Path, tmp_path: Path, **overrides) -> PairsDataset:
    cls = DATASETS.get(name)
    return cls(cls.Config.resolve("quick", {k: str(v) for k, v in overrides.items()}, name), root, tmp_path / "cache")


def register_once(name: str, **kwargs) -> None:
    if name not in DATASETS:
        register_pairs_dataset(name, **kwargs)


def cplfw_lines(matched: int, mismatched: int) -> list[str]:
    return ["Ann_0001.jpg 1", "Ann_0002.jpg 1"] * matched + ["Ann_0001.jpg 0", "Bob_0001.jpg 0"] * mismatched


@pytest.fixture
def cplfw_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for name, colour in (("Ann_0001", (200, 0, 0)), ("Ann_0002", (150, 0, 0)), ("Bob_0001", (0, 0, 200))):
        jpeg(root / f"cplfw/aligned/{name}.jpg", (90, 120), colour)  # not square, like many aligned crops
    register_once("test-cplfw", images="cplfw/aligned", pairs="cplfw/pairs_CPLFW.txt", format="cplfw")
    return root


def test_cplfw_format_folds_labels_identities_and_names(cplfw_root, tmp_path) -> None:
    (cplfw_root / "cplfw/pairs_CPLFW.txt").write_text("\n".join(cplfw_lines(300, 300) * 2) + "\n")
    images, pairs = dataset("test-cplfw", cplfw_root, tmp_path).verification()
    assert len(pairs) == 1200 and pairs.n_folds == 2
    assert [int(pairs.same[pairs.fold == f].sum()) for f in (0, 1)] == [300, 300]
    assert images.names == ("Ann_0001.jpg", "Ann_0002.jpg", "Bob_0001.jpg")
    assert torch.equal(pairs.same, images.identities[pairs.left] == images.identities[pairs.right])
    # crop_fraction 1: the whole (non-square) image is resized, as the release's Resize(64) does
    expected = Image.open(cplfw_root / "cplfw/aligned/Ann_0001.jpg").convert("RGB").resize((64, 64), Image.BILINEAR)
    assert torch.equal(images.images[0], torch.from_numpy(np.asarray(expected).transpose(2, 0, 1).copy()))


@pytest.mark.parametrize(
    "lines, message",
    [
        (cplfw_lines(301, 299), "fold 1 .* 301 matched"),
        (cplfw_lines(300, 299), "truncated"),
        (cplfw_lines(300, 299) + ["Ann_0001.jpg 0", "Bob_0001.jpg 2"], "lines 1199 and 1200 form a pair but carry labels 0 and 2"),
        (cplfw_lines(300, 299) + ["Ann_0001.jpg", "Bob_0001.jpg 0"], "line 1199 should be '<image file> <label>'"),
    ],
)
def test_cplfw_format_rejects_unbalanced_or_malformed_lists(cplfw_root, tmp_path, lines, message) -> None:
    (cplfw_root / "cplfw/pairs_CPLFW.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchError, match=message) as info:
        dataset("test-cplfw", cplfw_root, tmp_path).verification()
    assert "\n" not in str(info.value)


def test_sllfw_and_lfw_formats_through_the_generic_dataset(tmp_path) -> None:
    root = tmp_path / "data"
    for person, n in (("Ann", 2), ("Bob", 1)):
        for i in range(1, n + 1):
            jpeg(root / f"faces/{person}/{person}_{i:04d}.jpg", (64, 64), (40 * i, 80, 120))
    (root / "lists").mkdir()
    (root / "lists/sllfw.txt").write_text("\n".join(["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg"] * 300 + ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg"] * 300))
    (root / "lists/lfw.txt").write_text("1\t2\nAnn\t1\t2\nAnn\t2\t1\nAnn\t1\tBob\t1\nBob\t1\tAnn\t2\n")
    register_once("test-sllfw-list", images="faces", pairs="lists/sllfw.txt", format="sllfw")
    register_once("test-lfw-list", images="faces", pairs="lists/lfw.txt", format="lfw")
    images, pairs = dataset("test-sllfw-list", root, tmp_path).verification()
    assert len(pairs) == 600 and int(pairs.same.sum()) == 300 and images.names[2] == "Bob/Bob_0001.jpg"
    images, pairs = dataset("test-lfw-list", root, tmp_path).verification()
    assert pairs.same.tolist() == [True, True, False, False] and len(images) == 3
    with pytest.raises(BenchError, match="missing .*elsewhere"):  # per-run paths, with the usual one-line error
        dataset("test-lfw-list", root, tmp_path, images="elsewhere").verification()
    with pytest.raises(BenchError, match="test-lfw-list.format=nope: choose one of"):
        dataset("test-lfw-list", root, tmp_path, format="nope")
    with pytest.raises(ValueError, match="format must be one of"):
        register_pairs_dataset("test-bad-format", images="x", pairs="y", format="csv")


def test_lfw_format_over_png_files_finds_their_extension(tmp_path) -> None:
    """An ORL-style PNG collection in LFW's pair format registers as it is, no renaming."""
    root = tmp_path / "data"
    for person, n in (("s1", 2), ("s2", 1)):
        for i in range(1, n + 1):
            path = root / f"orl/{person}/{person}_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (46, 56), (60 * i, 90, 30 * n)).save(path)
    (root / "orl.txt").write_text("1\t2\ns1\t1\t2\ns1\t2\t1\ns1\t1\ts2\t1\ns2\t1\ts1\t2\n")
    register_once("test-orl", images="orl", pairs="orl.txt", format="lfw")
    images, pairs = dataset("test-orl", root, tmp_path).verification()
    assert images.names == ("s1/s1_0001.png", "s1/s1_0002.png", "s2/s2_0001.png") and len(pairs) == 4
    expected = Image.open(root / "orl/s2/s2_0001.png").convert("RGB").resize((64, 64), Image.BILINEAR)
    assert torch.equal(images.images[2], torch.from_numpy(np.asarray(expected).transpose(2, 0, 1).copy()))
    assert dataset("test-orl", root, tmp_path, extension="png").verification()[0].names == images.names
    with pytest.raises(BenchError, match="test-orl.extension=bmp: .*s1_0001.bmp does not exist"):
        dataset("test-orl", root, tmp_path, extension="bmp").verification()
    for path in (root / "orl").glob("*/*.png"):
        path.rename(path.with_suffix(".gif"))
    with pytest.raises(BenchError, match="names s1/s1_0001, but .*orl has no such image .*set test-orl.extension"):
        dataset("test-orl", root, tmp_path).verification()


def test_person_of_both_namings() -> None:
    assert person_of("Ann_Lee/Ann_Lee_0003.jpg") == "Ann_Lee" == person_of("Ann_Lee_0003.jpg")


def test_lfw_reads_the_released_lfw_crop_folder_whole(tmp_path) -> None:
    root = tmp_path / "data"
    for folder, colour in (("lfw-deepfunneled", (10, 10, 10)), ("lfw_crop", (200, 100, 50))):
        for person, n in (("Ann", 2), ("Bob", 1)):
            for i in range(1, n + 1):
                jpeg(root / f"lfw/{folder}/{person}/{person}_{i:04d}.jpg", (100, 100), colour)
    (root / "lfw/pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    funneled, _ = LFW(LFWConfig(size=32), root, tmp_path / "cache").verification()
    cropped, pairs = LFW(LFWConfig(size=32, image_dir="lfw_crop", crop_fraction=1.0), root, tmp_path / "cache").verification()
    assert funneled.names == cropped.names == ("Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg")
    assert funneled.images[0, 2, 16, 16] < 30 and cropped.images[0, 2, 16, 16] > 30, "the other folder's images"
    assert cropped.images[0, :, 16, 2].min() > 240 and funneled.images[0, :, 16, 2].max() < 40, "no crop vs the centred crop"
    with pytest.raises(BenchError, match="crop_fraction"):
        LFWConfig.resolve("quick", {"crop_fraction": "0"})


def test_image_names_of_a_folder_dataset(tmp_path) -> None:
    from harness.datasets.folder import FolderConfig, FolderDataset

    for split in ("train", "test"):
        for label in ("happy", "sad"):
            jpeg(tmp_path / f"fer/{split}/{label}/{label}_1.jpg", (48, 48), (100, 100, 100))
    cls = type("Folder_test", (FolderDataset,), {"subdir": "fer", "name": "fer-test"})
    train = cls(FolderConfig(), tmp_path, tmp_path / "cache").fer_split("train")
    assert train.names == ("train/happy/happy_1.jpg", "train/sad/sad_1.jpg") and train.labels.tolist() == [0, 1]
