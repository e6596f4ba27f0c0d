"""``--export``: every result file of a store as one row of a tidy table."""
import json

import pandas as pd
import pytest

from harness.cli import main
from harness.export import COLUMNS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "results"
    argv = ["--methods", "pixels,random-cnn", "--protocol", "fer,verification", "--datasets", "toy", "--preset", "smoke", "--seeds", "0,1"]
    assert main([*argv, "--results-dir", str(root), "--cache-dir", str(root.parent / "cache")]) == 0
    return root


def test_csv_has_one_row_per_result_file_with_the_documented_columns(store, tmp_path, capsys):
    out = tmp_path / "all.csv"
    assert main(["--export", str(out), "--results-dir", str(store)]) == 0
    assert f"{out}: 8 results" in capsys.readouterr().out
    table = pd.read_csv(out)
    files = sorted(store.glob("*/*/*.json"))
    assert len(files) == 8 and len(table) == 8  # 2 methods x 2 protocols x 2 seeds
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert {"accuracy", "macro_f1", "accuracy_std", "n_test"} <= set(table.columns)  # every scalar metric
    for path in files:
        record = json.loads(path.read_text())
        (row,) = table[table["path"] == str(path)].itertuples()
        c = record["cell"]
        assert (row.protocol, row.dataset, row.method, row.variant, row.seed) == (c["protocol"], c["dataset"], c["method"], c["variant"], c["seed"])
        assert row.config_hash == c["config_hash"] and path.stem.endswith(row.config_hash)
        assert row.main_metric == pytest.approx(record["metrics"]["accuracy"]) == pytest.approx(row.accuracy)
        assert row.git_sha == record["provenance"]["git"]["sha"]
        assert row.wall_seconds == pytest.approx(record["provenance"]["wall_seconds"])
        assert row.row == c["method"]  # one setting per method: the plain table label
    fer = table[table.protocol == "fer"]
    assert fer["accuracy_std"].isna().all() and fer["macro_f1"].notna().all()  # absent metrics stay empty


def test_parquet_holds_the_same_table(store, tmp_path):
    pytest.importorskip("pyarrow")
    assert main(["--export", str(tmp_path / "a.csv"), "--results-dir", str(store)]) == 0
    assert main(["--export", str(tmp_path / "a.parquet"), "--results-dir", str(store)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_csv(tmp_path / "a.csv"), check_dtype=False)


@pytest.mark.parametrize("name,store_name,message", [
    ("a.xlsx", None, "name a .csv or .parquet file"),
    ("a.csv", "empty", "no result files in this store"),
])
def test_export_errors_are_one_line(store, tmp_path, capsys, name, store_name, message):
    target = store if store_name is None else tmp_path / store_name
    assert main(["--export", str(tmp_path / name), "--results-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / name).exists()
