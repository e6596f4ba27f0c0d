"""The ``.bin`` verification sets: the safe reader, the registered datasets, the suite, the tables."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.cli import main
from harness.datasets.bin import BIN_SETS, FOLDS, SUITE, read_bin, register_bin_dataset, write_bin
from harness.errors import BenchError
from harness.registry import DATASETS, SUITES


def face(k: int, fmt: str = "JPEG") -> bytes:
    """A 112x112 encoded image, different for every k (a bright square whose place encodes k)."""
    image = Image.new("RGB", (112, 112), (20 + 7 * (k % 30), 60, 90))
    image.paste((240, 200, 160), (10 + k % 50, 10 + (k * 7) % 50, 50 + k % 50, 50 + (k * 7) % 50))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pairs_and_flags(n: int = 20) -> tuple[list[bytes], list[bool]]:
    """n pairs in 10 folds, each fold alternating matched and mismatched pairs."""
    return [face(k) for k in range(2 * n)], [k % 2 == 0 for k in range(n)]


def py2_pickle(images: list[bytes], flags: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((images, flags), f, 2)`` writes: ``str`` as BINSTRING."""
    out = b"\x80\x02](" + b"".join(b"T" + struct.pack("<I", len(b)) + b for b in images) + b"e]("
    return out + b"".join(b"\x88" if f else b"\x89" for f in flags) + b"e\x86."


def dataset(name: str, root: Path, tmp_path: Path, **overrides):
    cls = DATASETS.get(name)
    return cls(cls.Config.resolve("quick", {k: str(v) for k, v in overrides.items()}, name), root, tmp_path / "cache")


def decoded(data: bytes, crop: float) -> torch.Tensor:
    """What the harness should hand out for one stored image: the centred crop resized to 64."""
    with Image.open(io.BytesIO(data)) as im:
        side = 112 * crop
        left = (112 - side) / 2
        im = im.convert("RGB").crop(tuple(int(round(v)) for v in (left, left, left + side, left + side)))
        return torch.from_numpy(np.asarray(im.resize((64, 64), Image.BILINEAR, reducing_gap=None)).transpose(2, 0, 1).copy())


# --- the format --------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["protocol 2", "latest protocol", "python 2"])
def test_every_pickle_flavour_loads_the_same(tmp_path, writer):
    images, flags = pairs_and_flags()
    path = tmp_path / "data/lfw.bin"
    if writer == "python 2":
        path.parent.mkdir(parents=True)
        path.write_bytes(py2_pickle(images, flags))
    else:
        write_bin(path, images, flags, protocol=2 if writer == "protocol 2" else pickle.HIGHEST_PROTOCOL)
    assert read_bin(path) == (images, flags)


def test_the_dataset_decodes_pairs_folds_and_crop(tmp_path):
    images, flags = pairs_and_flags()
    write_bin(tmp_path / "data/cfp_fp.bin", images, flags)
    loaded, pairs = dataset("cfp-fp", tmp_path / "data", tmp_path).verification()
    assert loaded.images.shape == (40, 3, 64, 64) and len(pairs) == 20 and pairs.n_folds == FOLDS
    assert pairs.left.tolist() == list(range(0, 40, 2)) and pairs.right.tolist() == list(range(1, 40, 2))
    assert pairs.same.tolist() == flags and pairs.fold.tolist() == [k // 2 for k in range(20)]
    assert loaded.names[3] == "cfp_fp.bin[3]"
    assert torch.equal(loaded.images[5], decoded(images[5], 0.9)), "the default crop: 0.9 of the side"
    whole = dataset("cfp-fp", tmp_path / "data", tmp_path, crop_fraction=1.0).verification()[0]
    assert torch.equal(whole.images[5], decoded(images[5], 1.0))


def test_decoded_sets_are_cached_by_content(tmp_path, monkeypatch):
    from harness.datasets import bin as bin_module

    images, flags = pairs_and_flags()
    write_bin(tmp_path / "data/agedb_30.bin", images, flags)
    first = dataset("agedb-30", tmp_path / "data", tmp_path).verification()[0]
    monkeypatch.setattr(bin_module, "read_bin", lambda path: pytest.fail("a cached set was decoded again"))
    again = dataset("agedb-30", tmp_path / "data", tmp_path).verification()[0]
    assert torch.equal(first.images, again.images)
    fingerprint = dataset("agedb-30", tmp_path / "data", tmp_path).fingerprint()
    write_bin(tmp_path / "data/agedb_30.bin", images[::-1], flags)  # other content under the same name
    assert dataset("agedb-30", tmp_path / "data", tmp_path).fingerprint() != fingerprint


class Payload:
    """What a crafted file would carry: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Rot13:
    def __reduce__(self):
        import codecs

        return codecs.encode, ("abc", "rot13")


def test_a_crafted_file_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    images, flags = pairs_and_flags()
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"evil{protocol}.bin"
        path.write_bytes(pickle.dumps((images[:-1] + [Payload(marker)], flags), protocol=protocol))
        with pytest.raises(BenchError, match=r"refusing .*evil.*names the global (posix|os|nt)\.system.*nothing in it was run"):
            read_bin(path)
        assert not marker.exists(), "the command in the file never ran"
    path = tmp_path / "codec.bin"
    path.write_bytes(pickle.dumps(([Rot13()], flags), protocol=2))
    with pytest.raises(BenchError, match="rot13"):
        read_bin(path)
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload itself is live: plain pickle would run it
    assert marker.exists()


def test_truncated_foreign_and_malformed_files_say_so(tmp_path):
    images, flags = pairs_and_flags()
    good = tmp_path / "good.bin"
    write_bin(good, images, flags)
    cases = {
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "is truncated"),
        "jpeg": (images[0], "not a verification .bin file"),
        "text": (b"hello\n", "not a verification .bin file"),
        "dict": (pickle.dumps({"a": 1}), "not the \\(images, flags\\) pair"),
        "count": (pickle.dumps((images[:-2], flags)), "38 images for 20 pairs, expected 40"),
        "folds": (pickle.dumps((images[:30], flags[:15])), "15 pairs do not split into 10 equal folds"),
        "one-sided": (pickle.dumps((images, [True] * 20)), "fold 1 holds only matched pairs"),
        "numbers": (pickle.dumps((images, [0.5] * 20)), "same/different flags"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(content)
        with pytest.raises(BenchError, match=message) as info:
            read_bin(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
    bad_image = tmp_path / "data/calfw.bin"
    write_bin(bad_image, images[:7] + [b"not an image"] + images[8:], flags)
    with pytest.raises(BenchError, match="cannot decode image 7 of .*calfw.bin"):
        dataset("calfw", tmp_path / "data", tmp_path).verification()


# --- registration, the suite, tables ------------------------------------------------------------------
def test_the_distributed_sets_are_registered_under_their_file_names(tmp_path):
    assert SUITES[SUITE] == ("lfw-bin", "cfp-fp", "cfp-ff", "agedb-30", "calfw", "cplfw", "vgg2-fp")
    assert {name: DATASETS.get(name).Config().file for name in BIN_SETS} == {
        "lfw-bin": "lfw.bin", "cfp-fp": "cfp_fp.bin", "cfp-ff": "cfp_ff.bin", "agedb-30": "agedb_30.bin",
        "calfw": "calfw.bin", "cplfw": "cplfw.bin", "vgg2-fp": "vgg2_fp.bin",
    }
    with pytest.raises(BenchError, match="missing .*cplfw.bin"):
        dataset("cplfw", tmp_path, tmp_path).verification()
    images, flags = pairs_and_flags()
    write_bin(tmp_path / "faces/mine.bin", images, flags)
    if "test-mine" not in DATASETS:
        register_bin_dataset("test-mine", "mine.bin", folder="faces")
    assert len(dataset("test-mine", tmp_path, tmp_path).verification()[1]) == 20


def test_the_suite_runs_what_is_present_and_tables_it(tmp_path, capsys):
    root = tmp_path / "data"
    images, flags = pairs_and_flags()
    write_bin(root / "bins/lfw.bin", images, flags)
    write_bin(root / "bins/cfp_fp.bin", images[::-1], flags[::-1], protocol=2)
    argv = ["--methods", "pixels", "--protocol", "verification", "--datasets", SUITE, "--data-root", str(root),
            "--set", f"{SUITE}.folder=bins", "--set", "verification.mode=cosine", "--preset", "smoke",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith(f"{SUITE}: skipping")]
    assert len(skipped) == 5 and f"skipping cfp-ff (no {root / 'bins/cfp_ff.bin'})" in out
    results = sorted((tmp_path / "results/verification").glob("*/*.json"))
    assert [p.parent.name for p in results] == ["cfp-fp", "lfw-bin"]
    metrics = json.loads(results[1].read_text())["metrics"]
    assert {"accuracy", "auc", "tar_at_far_0.01", "tar_at_far_0.001_pooled", "roc"} <= set(metrics)
    table = (tmp_path / f"results/tables/table2_verification_{SUITE}.md").read_text()
    header, _, row = table.splitlines()[2:5]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Method", "lfw-bin", "cfp-fp", "Mean"]
    accuracies = [100 * json.loads(p.read_text())["metrics"]["accuracy"] for p in results]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[0] == "pixels" and cells[1:] == [f"{accuracies[1]:.2f}", f"{accuracies[0]:.2f}", f"{np.mean(accuracies):.2f}"]


def test_a_suite_with_nothing_present_is_one_error(tmp_path, capsys):
    argv = ["--methods", "pixels", "--protocol", "verification", "--datasets", SUITE, "--data-root", str(tmp_path),
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {SUITE}: none of its datasets") and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_the_contact_sheet_shows_what_the_dataset_hands_out(tmp_path):
    from conftest import load_script

    images, flags = pairs_and_flags()
    write_bin(tmp_path / "data/lfw.bin", images, flags)
    sheet = np.asarray(load_script("bin_contact_sheet", "docs").sheet(tmp_path / "data/lfw.bin", [0, 3], (1.0, 0.9)))
    assert sheet.shape == (14 + 4 * 112, 3 * 112 + 90, 3)
    handed_out = dataset("lfw-bin", tmp_path / "data", tmp_path).verification()[0].images[7]  # pair 3's right image
    shown = torch.nn.functional.interpolate(handed_out[None].float(), size=112, mode="nearest").to(torch.uint8)[0]
    assert torch.equal(torch.from_numpy(sheet[14 + 3 * 112 : 14 + 4 * 112, 224:336].copy()).permute(2, 0, 1), shown)
