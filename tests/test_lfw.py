import pytest
import torch
from PIL import Image

from harness.datasets.lfw import LFW, LFWConfig
from harness.datasets.pairs import pairs_to_tensors, parse_lfw_pairs as parse_pairs
from harness.errors import BenchError

PAIRS = """2\t2
A\t1\t2
B\t1\t2
A\t1\tB\t2
B\t1\tC\t1
C\t1\t2
A\t2\t3
A\t3\tC\t2
B\t2\tC\t1
"""


def write_lfw(root, pairs_text=PAIRS, broken=None):
    for person, n in (("A", 3), ("B", 2), ("C", 2)):
        folder = root / "lfw" / "lfw-deepfunneled" / person
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            path = folder / f"{person}_{i:04d}.jpg"
            if path.name == broken:
                path.write_bytes(b"not a jpeg")
            else:
                Image.new("RGB", (250, 250), (40 * i, 80, 120)).save(path)
    (root / "lfw" / "pairs.txt").write_text(pairs_text)


def test_pairs_folds_and_indices(tmp_path):
    write_lfw(tmp_path)
    pairs = parse_pairs(tmp_path / "lfw" / "pairs.txt")
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (True, 0), (False, 0), (False, 0), (True, 1), (True, 1), (False, 1), (False, 1)]
    assert pairs[2].left == "A/A_0001.jpg" and pairs[2].right == "B/B_0002.jpg"
    names, pl = pairs_to_tensors(pairs)
    assert names[:3] == ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]
    assert pl.n_folds == 2 and pl.same.sum() == 4
    assert all(names[int(i)] in (p.left, p.right) for i, p in zip(pl.left, pairs))


def test_dataset_loads_and_caches(tmp_path):
    write_lfw(tmp_path)
    ds = LFW(LFWConfig(size=32), tmp_path, tmp_path / "cache")
    images, pairs = ds.verification()
    assert images.images.shape == (len(set(pairs.left.tolist()) | set(pairs.right.tolist())), 3, 32, 32)
    assert images.images.dtype == torch.uint8
    assert len(ds.pretrain()) == 7
    assert list((tmp_path / "cache" / "images").glob("*.pt"))


@pytest.mark.parametrize(
    "text,message",
    [
        (PAIRS.rsplit("\n", 3)[0] + "\n", "found 6; the file is truncated"),
        ("ten 300\n", "first line must be"),
        (PAIRS.replace("B\t1\tC\t1", "B\t1\tC"), "line 5 should be 'name1 i name2 j'"),
    ],
)
def test_malformed_pairs_file(tmp_path, text, message):
    write_lfw(tmp_path, text)
    with pytest.raises(BenchError, match=message) as info:
        LFW(LFWConfig(), tmp_path, tmp_path / "cache").verification()
    assert "pairs.txt" in str(info.value) and "\n" not in str(info.value)


def test_unreadable_jpeg_and_missing_root(tmp_path):
    write_lfw(tmp_path, broken="B_0002.jpg")
    with pytest.raises(BenchError, match=r"cannot read image .*B_0002.jpg"):
        LFW(LFWConfig(), tmp_path, tmp_path / "cache").verification()
    with pytest.raises(BenchError, match="missing .*pairs.txt"):
        LFW(LFWConfig(), tmp_path / "elsewhere", tmp_path / "cache").verification()


@pytest.mark.realdata
def test_real_lfw_view2(real_data_root, tmp_path):
    pairs = parse_pairs(real_data_root / "lfw" / "pairs.txt")
    names, pl = pairs_to_tensors(pairs)
    assert len(pl) == 6000 and pl.n_folds == 10
    for k in range(10):
        assert int(pl.same[pl.fold == k].sum()) == 300 and int((~pl.same[pl.fold == k]).sum()) == 300
    assert all((real_data_root / "lfw" / "lfw-deepfunneled" / n).exists() for n in names)
