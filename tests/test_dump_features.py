"""``--dump-features DIR``: the features each cell evaluated, one .npz per split."""
from __future__ import annotations

import json

import numpy as np
import torch

from harness.cli import main
from harness.method import to_input
from harness.registry import DATASETS


def run(tmp_path, *argv) -> int:
    return main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])


def pixels(images: torch.Tensor) -> np.ndarray:
    """The ``pixels`` method's features, computed here from its definition (16 px, standardised)."""
    flat = to_input(images, 16, torch.device("cpu")).flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)).numpy()


def test_dump_holds_the_evaluated_features_with_labels_and_the_cell(tmp_path) -> None:
    argv = ["--methods", "pixels", "--datasets", "toy", "--preset", "smoke", "--dump-features", str(tmp_path / "dump")]
    argv += ["--set", "fer.flip_aug=true"]
    assert run(tmp_path, *argv) == 0
    toy = DATASETS.get("toy")(DATASETS.get("toy").Config(), None, tmp_path)
    fer = sorted((tmp_path / "dump" / "fer" / "toy").iterdir())
    assert len(fer) == 1 and sorted(p.name for p in fer[0].iterdir()) == ["cell.json", "test.npz", "train.npz"]
    train = np.load(fer[0] / "train.npz")
    split = toy.fer_split("train")
    assert train["features"].dtype == np.float32 and np.allclose(train["features"], pixels(split.images), atol=1e-6)
    assert np.allclose(train["features_flipped"], pixels(split.images.flip(-1)), atol=1e-6)  # flip_aug read them
    assert (train["labels"] == split.labels.numpy()).all() and (train["index"] == np.arange(len(split))).all()
    assert "names" not in train  # generated images have no files
    cell = json.loads(str(train["cell"]))
    assert (cell["method"], cell["protocol"], cell["dataset"], cell["split"], cell["seed"]) == ("pixels", "fer", "toy", "train", 0)
    result = json.loads(open(cell["result"]).read())
    assert result["cell"]["config_hash"] == cell["config_hash"] and fer[0].name.endswith(cell["config_hash"])
    (pairs_dir,) = (tmp_path / "dump" / "verification" / "toy").iterdir()
    pairs = np.load(pairs_dir / "pairs.npz")
    images, _ = toy.verification()
    assert np.allclose(pairs["features"], pixels(images.images), atol=1e-6) and "features_flipped" not in pairs
    assert (pairs["identities"] == images.identities.numpy()).all()


def test_finished_cells_without_a_dump_are_evaluated_again(tmp_path, capsys) -> None:
    argv = ["--methods", "pixels", "--datasets", "toy", "--preset", "smoke", "--protocol", "verification"]
    assert run(tmp_path, *argv) == 0
    assert run(tmp_path, *argv) == 0
    assert "1 already done, 0 to run" in capsys.readouterr().out
    assert run(tmp_path, *argv, "--dump-features", str(tmp_path / "dump")) == 0
    assert "0 already done, 1 to run" in capsys.readouterr().out
    assert len(list((tmp_path / "dump").glob("verification/toy/*/pairs.npz"))) == 1
    assert len(list((tmp_path / "results").glob("verification/toy/*.json"))) == 1  # the same cell, rewritten
    assert run(tmp_path, *argv, "--dump-features", str(tmp_path / "dump")) == 0
    assert "1 already done, 0 to run" in capsys.readouterr().out
