import json
import re
from pathlib import Path

import pytest
import torch

from harness.cli import main


def run(tmp_path, *argv):
    return main([*argv, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])


def result_files(tmp_path):
    return sorted((tmp_path / "results").glob("*/*/*.json"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--methods", "nosuch"], "unknown method 'nosuch'"),
        (["--methods", "pixels", "--datasets", "nosuch"], "unknown dataset 'nosuch'"),
        (["--methods", "pixels", "--protocol", "fer", "--datasets", "lfw"], "cannot be used with protocol fer"),
        (["--methods", "pixels", "--ablation", "rdm"], "give only one of them"),
        (["--methods", "pixels", "--seeds", "a"], "expected comma-separated non-negative integers"),
        (["--methods", "pixels", "--datasets", "lfw", "--data-root", "/nonexistent"], "needs the data root"),
        (["--methods", "pixels", "--set", "fer.nosuch=1", "--datasets", "toy"], "unknown setting fer.nosuch"),
        (["--methods", "pixels:nosuch", "--datasets", "toy"], "has no variant 'nosuch'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    assert run(tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "results").exists()


def test_list_and_dry_run(tmp_path, capsys):
    assert run(tmp_path, "--list") == 0
    out = capsys.readouterr().out
    assert "pixels" in out and "verification" in out and "lfw" in out
    assert run(tmp_path, "--methods", "pixels,random-cnn", "--datasets", "toy", "--seeds", "0,1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "12 of 12 cells to run" in out  # 2 methods x 3 protocols on toy (fer, knn, verification) x 2 seeds
    assert not result_files(tmp_path)


def test_smoke_run_writes_results_skips_and_reruns_identically(tmp_path, capsys):
    argv = ["--methods", "pixels,random-cnn", "--datasets", "toy", "--preset", "smoke"]
    assert run(tmp_path, *argv) == 0
    files = result_files(tmp_path)
    assert len(files) == 6  # 2 methods x the 3 protocols toy supports (fer, knn, verification)
    record = json.loads(files[0].read_text())
    assert set(record) >= {"cell", "config", "metrics", "provenance", "method_info"}
    assert set(record["cell"]) >= {"method", "variant", "protocol", "dataset", "seed", "config_hash", "preset"}
    prov = record["provenance"]
    assert set(prov) >= {"git", "libraries", "device", "machine", "host", "wall_seconds", "start_time", "end_time", "executor"}
    assert prov["libraries"]["torch"] == torch.__version__.split("+")[0]
    machine = prov["machine"]  # what makes numbers machine-dependent
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cpu"]["model"] and machine["interop_threads"] == torch.get_num_interop_threads()
    assert machine["onednn"] is None or re.fullmatch(r"\d+\.\d+(\.\d+)?", machine["onednn"])
    metrics = {f.name: json.loads(f.read_text())["metrics"] for f in files}
    # toy classes differ in which half is bright: both fixed methods must find it
    fer = [m for name, m in metrics.items() if "accuracy_std" not in m and "per_k" not in m]
    assert len(fer) == 2
    assert all(m["accuracy"] > 0.8 for m in fer)
    stamps = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    assert run(tmp_path, *argv) == 0
    assert "6 already done, 0 to run" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert run(tmp_path, *argv, "--rerun") == 0
    assert {f.name: json.loads(f.read_text())["metrics"] for f in result_files(tmp_path)} == metrics
    tables = tmp_path / "results" / "tables"
    assert (tables / "table1_fer.md").exists() and (tables / "table2_verification.md").exists()
    assert len(list((tmp_path / "results" / "figures" / "toy").glob("*.png"))) == 2


def test_tables_only_regenerates_identically(tmp_path, capsys):
    assert run(tmp_path, "--methods", "pixels", "--datasets", "toy", "--preset", "smoke", "--seeds", "0,1", "--set", "fer.epochs=1",
               "--set", "verification.epochs=1", "--set", "verification.lr=0.0001") == 0  # short: the seeds differ
    table = tmp_path / "results" / "tables" / "table1_fer.md"
    first = table.read_text()
    # the cell, by hand from the two result files: mean ± sd (ddof 1) over the seeds, in percent
    fer = [json.loads(p.read_text())["metrics"] for p in sorted((tmp_path / "results" / "fer" / "toy").glob("*.json"))]
    assert len(fer) == 2

    def mean_sd(values):
        mean = sum(values) / 2
        return f"{100 * mean:.2f}±{100 * (sum((v - mean) ** 2 for v in values)) ** 0.5:.2f}"

    # each with its interval, in bold: the only row is its column's best
    acc, f1 = (re.escape(mean_sd([m[key] for m in fer])) for key in ("accuracy", "macro_f1"))
    row = next(line for line in first.splitlines() if line.startswith("| pixels"))
    interval = r" \[\d+\.\d, \d+\.\d\]"
    assert re.search(rf"\*\*{acc}{interval}\*\* / \*\*{f1}{interval}\*\* \(n=2\)", row), row
    ver = [json.loads(p.read_text())["metrics"] for p in sorted((tmp_path / "results" / "verification" / "toy").glob("*.json"))]
    mean, fold_sd = sum(100 * m["accuracy"] for m in ver) / 2, sum(100 * m["accuracy_std"] for m in ver) / 2
    seed_sd = (sum((100 * m["accuracy"] - mean) ** 2 for m in ver)) ** 0.5
    verification = (tmp_path / "results" / "tables" / "table2_verification.md").read_text()
    assert re.search(rf"\*\*{mean:.2f}±{fold_sd:.2f}{interval}\*\* \(n=2, seed sd {seed_sd:.2f}\)", verification)
    assert main(["--tables-only", "--results-dir", str(tmp_path / "results")]) == 0
    strip = lambda text: [ln for ln in text.splitlines() if not ln.startswith("Generated")]  # noqa: E731
    assert strip(table.read_text()) == strip(first)


def test_config_file_applies_before_set(tmp_path, capsys):
    cfg = tmp_path / "settings.toml"
    cfg.write_text('[fer]\nepochs = 3\nselect = "val"\n[pixels]\ninput_size = 8\n')
    argv = ["--methods", "pixels", "--datasets", "toy", "--protocol", "fer", "--config", str(cfg), "--set", "fer.epochs=4"]
    assert run(tmp_path, *argv) == 0
    record = json.loads(result_files(tmp_path)[0].read_text())
    assert record["config"]["protocol"]["config"]["epochs"] == 4  # --set wins
    assert record["config"]["protocol"]["config"]["select"] == "val"
    assert record["config"]["method"]["config"]["input_size"] == 8
    assert record["metrics"]["feature_dim"] == 3 * 8 * 8
    (tmp_path / "bad.toml").write_text("[fer\n")
    capsys.readouterr()
    assert run(tmp_path, "--config", str(tmp_path / "bad.toml")) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_a_protocol_from_a_plugin_is_listed_run_and_tabulated(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    assert run(tmp_path, "--plugins", "tests.protocol_plugin", "--list") == 0
    assert "centroid" in capsys.readouterr().out
    argv = ["--plugins", "tests.protocol_plugin", "--methods", "pixels", "--datasets", "toy", "--protocol", "centroid", "--preset", "smoke"]
    assert run(tmp_path, *argv) == 0
    (result,) = result_files(tmp_path)
    assert result.parent.parent.name == "centroid"
    assert json.loads(result.read_text())["metrics"]["accuracy"] > 0.9  # toy classes: which half is bright
    table = (tmp_path / "results" / "tables" / "table_centroid.md").read_text()
    assert table.startswith("# Nearest class centroid") and "| pixels " in table
