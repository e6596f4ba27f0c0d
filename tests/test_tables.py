"""Stores, tables and their figures: what a person reads after a run."""
import json
import re

import numpy as np
import pytest

from harness import tables
from harness.cli import main
from harness.registry import ABLATIONS, PROTOCOLS, Ablation

SMOKE = ["--datasets", "toy", "--preset", "smoke"]


def run(store, *argv):
    return main([*argv, "--results-dir", str(store), "--cache-dir", str(store.parent / "cache")])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two floors and one learned method on three protocols, two seeds (about 5 s)."""
    root = tmp_path_factory.mktemp("store") / "results"
    # the protocols named, so that one registered by another test's plugin does not join in
    assert run(root, "--methods", "pixels,random-cnn,simclr", "--protocol", "fer,knn,verification", "--seeds", "0,1", *SMOKE) == 0
    return root


def test_tables_only_draws_a_figure_per_table_embeds_it_and_regenerates_identically(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ABLATIONS, "toy", Ablation((("pixels", "default"), ("simclr", "default")), "Toy ablation", "ablation_toy"))
    copy = tmp_path / "results"
    for path in store.glob("*/*/*.json"):  # a store of its own, so the module's store stays as it is
        (copy / path.relative_to(store)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(store)).write_bytes(path.read_bytes())
    assert main(["--tables-only", "--results-dir", str(copy)]) == 0
    stems = sorted(p.stem for p in (copy / "tables").glob("*.md"))
    assert stems == ["ablation_toy", "table1_fer", "table2_verification", "table2_verification_roc", "table_knn"]
    # the ROC view: AUC of a row is the mean over seeds of the results' AUCs
    auc = [100 * json.loads(p.read_text())["metrics"]["auc"] for p in sorted(copy.glob("verification/toy/simclr--*.json"))]
    simclr = next(line for line in (copy / "tables" / "table2_verification_roc.md").read_text().splitlines() if line.startswith("| simclr"))
    assert f"{sum(auc) / 2:.2f}±{abs(auc[0] - auc[1]) / 2**0.5:.2f} [" in simclr and simclr.count("(n=2)") == 4
    for stem in ["ablation_toy", "table1_fer", "table2_verification", "table_knn"]:  # the tables laid out as bars
        png = copy / "figures" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{stem}](../figures/{stem}.png)" in (copy / "tables" / f"{stem}.md").read_text()
    # a protocol's own figure named after its table is embedded under it: verification's ROC curves
    assert (copy / "figures" / "table2_verification_roc-toy.png").exists()
    assert "![table2_verification_roc-toy](../figures/table2_verification_roc-toy.png)" in (copy / "tables" / "table2_verification_roc.md").read_text()
    files = sorted((copy / "tables").glob("*.md")) + sorted((copy / "figures").glob("*.png"))
    before = {p: p.read_bytes() for p in files}
    assert main(["--tables-only", "--results-dir", str(copy)]) == 0
    assert {p: p.read_bytes() for p in files} == before  # byte for byte, figures included


def test_tables_only_removes_what_no_result_makes_any_more(store, tmp_path):
    copy = tmp_path / "results"
    for path in store.glob("*/*/*.json"):
        (copy / path.relative_to(store)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(store)).write_bytes(path.read_bytes())
    assert main(["--tables-only", "--results-dir", str(copy)]) == 0
    gone = sorted(copy.glob("fer/toy/simclr--*.json"))[0]
    confusion = copy / "figures" / "toy" / f"{gone.stem}.png"
    kept = copy / "figures" / "toy" / f"{sorted(copy.glob('fer/toy/simclr--*.json'))[1].stem}.png"
    assert confusion.exists() and kept.exists()
    old_name = copy / "figures" / "table2_verification-roc-toy.png"  # an earlier version's name
    old_name.write_bytes((copy / "figures" / "table2_verification_roc-toy.png").read_bytes())
    (copy / "tables" / "table9_gone.md").write_text("# a table no protocol makes now\n")
    gone.rename(tmp_path / gone.name)  # as a rerun moves a result to superseded/
    assert main(["--tables-only", "--results-dir", str(copy)]) == 0
    assert not confusion.exists() and not old_name.exists() and not (copy / "tables" / "table9_gone.md").exists()
    assert kept.exists() and (copy / "figures" / "table2_verification_roc-toy.png").exists()
    assert "roc-toy" not in (copy / "tables" / "table2_verification.md").read_text()


def metric_of(record: dict, key: str) -> float:
    """The number a result's metrics hold for one of its protocol's measures."""
    m = record["metrics"]
    if key.startswith("accuracy k="):
        return m["per_k"][key.split("=")[1]]["accuracy"]
    if "/" in key:  # factors: part/score
        part, score = key.split("/")
        return m["parts"][part][score]
    return m[key]


def assert_measures_are_the_metrics(records: list[dict]) -> None:
    """Every measure, on the stored outcomes of all items, is the number the result's metrics hold
    (what a table shows beside its interval), after the outcomes' round trip through the file."""
    from harness import compare

    checked = 0
    for r in records:
        protocol, outcomes = PROTOCOLS.get(r["cell"]["protocol"]), compare.unpack(r)
        n = len(next(iter(outcomes.values())))
        for key, measure in protocol.measures(r["metrics"]).items():
            # outcomes keep 7 significant digits: far below the 0.01 points of percent a table shows
            assert measure.statistic(outcomes, np.ones((1, n)))[0] == pytest.approx(metric_of(r, key), rel=1e-6, abs=1e-6), key
            checked += 1
    assert checked


def test_measures_on_the_stored_outcomes_are_the_metrics(store):
    assert_measures_are_the_metrics(tables.load_results(store))


def test_bars_are_means_over_seeds_with_their_intervals_and_floors_apart(store):
    records = tables.load_results(store)
    grid, built = tables.build_tables(records)
    bars = grid.bars(built["table1_fer"].layout, "t")
    assert bars.groups == ["toy"] and list(bars.series) == ["simclr"]
    assert list(bars.floors) == ["pixels", "random-cnn"]  # Method.floor: lines, not bars
    acc = [100 * json.loads(p.read_text())["metrics"]["accuracy"] for p in sorted(store.glob("fer/toy/simclr--*.json"))]
    mean, low, high = bars.series["simclr"][0]
    row = next(k for k in grid.rows() if k[0] == "simclr")
    interval = grid.stats.estimate(PROTOCOLS.get("fer"), grid.records(row, "fer", "toy"), "accuracy")
    assert mean == pytest.approx(sum(acc) / 2) and (low, high) == pytest.approx((100 * interval.low, 100 * interval.high))
    assert low < mean and bars.paper == {}  # the paper reports nothing on toy
    # results without per-item outcomes (format 1): the error bar is the sd over seeds
    old = [{k: v for k, v in r.items() if k not in ("format", "outcomes")} for r in records]
    grid, built = tables.build_tables(old)
    mean, low, high = grid.bars(built["table1_fer"].layout, "t").series["simclr"][0]
    sd = abs(acc[0] - acc[1]) / 2**0.5
    assert (low, high) == pytest.approx((mean - sd, mean + sd))


def test_paper_number_only_beside_rows_measured_on_its_dataset(store, tmp_path, monkeypatch):
    fer = PROTOCOLS.get("fer")
    monkeypatch.setattr(fer, "paper", {("simclr", "default"): {"toy": (50.0, 40.0)}})
    # the same method with another setting, measured on another dataset only
    records = tables.load_results(store)
    other = json.loads(json.dumps(next(r for r in records if r["cell"]["method"] == "simclr" and r["cell"]["protocol"] == "fer")))
    other["cell"]["dataset"] = "elsewhere"
    other["config"]["method"]["config"]["epochs"] = 9
    grid, built = tables.build_tables([*records, other])
    lines = built["table1_fer"].body.splitlines()
    assert "toy paper" in lines[0]
    row = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines[2:]}
    assert set(row) == {"pixels", "random-cnn", "simclr (epochs=1)", "simclr (epochs=9)"}
    columns = [c.strip() for c in lines[0].split("|")[2:-1]]
    paper = columns.index("toy paper")
    assert row["simclr (epochs=1)"][paper] == "50.00 / 40.00"
    assert row["simclr (epochs=9)"][paper] == "" and row["pixels"][paper] == ""
    bars = grid.bars(built["table1_fer"].layout, "t")
    assert bars.groups == ["elsewhere", "toy"]
    assert bars.paper == {"simclr (epochs=1)": [None, 50.0]}  # the marker too, only where measured


def test_a_run_prints_only_its_own_cells_and_the_store_keeps_all(tmp_path, capsys):
    store = tmp_path / "results"
    assert run(store, "--methods", "pixels,random-cnn", "--set", "pixels.input_size=8", *SMOKE) == 0
    capsys.readouterr()
    assert run(store, "--methods", "pixels", "--protocol", "fer", *SMOKE) == 0
    out = capsys.readouterr().out
    printed = out[out.index("Tables of this run's 1 cell:"):]
    rows = re.findall(r"^\| (\S.*?) +\|", printed, flags=re.M)
    assert rows == ["Method", "pixels"]  # one row, no label: this run has one setting
    assert "Table 2" not in printed and "random-cnn" not in printed
    stored = (store / "tables" / "table1_fer.md").read_text()
    assert "| pixels (input_size=8) " in stored and "| pixels (input_size=16) " in stored and "| random-cnn " in stored


def test_rows_differing_in_pretraining_data_are_labelled_by_its_name(tmp_path):
    store = tmp_path / "results"
    for data in ("toy", "synthetic"):
        assert run(store, "--methods", "simclr", "--protocol", "fer", "--set", f"pretrain.data={data}", *SMOKE) == 0
    grid = tables.Grid(tables.load_results(store))
    # the fingerprints of the two datasets differ too; the name says it all
    assert sorted(grid.label(k) for k in grid.rows()) == ["simclr (pretrain.data=synthetic)", "simclr (pretrain.data=toy)"]


def test_plot_helpers_write_the_same_png_for_the_same_numbers(tmp_path):
    from harness import plots

    def draw(folder):
        return [
            plots.roc_figure({"a": ([0.0, 0.01, 0.1, 1.0], [0.0, 0.3, 0.7, 1.0])}, folder / "roc.png", "ROC"),
            plots.heatmap([[0.9, 0.1], [0.2, 0.8]], ["x", "y"], ["x", "y"], folder / "cm.png", "cm", vmin=0, vmax=1),
            plots.bar_chart(plots.Bars("t", "acc (%)", ["d1", "d2"], {"m": [(50.0, 47.0, 52.0), None]},
                                       {"floor": [(40.0, float("nan"), float("nan")), (45.0, 44.0, 46.0)]}, {"m": [55.0, None]}), folder / "bars.png"),
        ]

    first, second = draw(tmp_path / "a"), draw(tmp_path / "b")
    for one, two in zip(first, second):
        assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and one.read_bytes() == two.read_bytes()


def test_depth_chart_draws_its_floors_and_the_parts_table_its_heatmap(tmp_path):
    """The floors a depth result scores become lines of its chart; every method's parts one
    heatmap under the part x factor table (synthetic smoke, about 10 s)."""
    store = tmp_path / "results"
    assert run(store, "--methods", "unsup3d", "--protocol", "depth,factors", "--datasets", "synthetic", "--preset", "smoke") == 0
    grid, built = tables.build_tables(tables.load_results(store))
    bars = grid.bars(built["table_depth"].layout, "t")
    record = json.loads(next(store.glob("depth/synthetic/unsup3d--*.json")).read_text())["metrics"]
    assert list(bars.series) == ["unsup3d"] and bars.series["unsup3d"][0][0] == pytest.approx(100 * record["side"])
    assert {name: [stat[0] for stat in stats] for name, stats in bars.floors.items()} == {
        "flat plane": [pytest.approx(100 * record["flat_side"])],
        "mean training depth": [pytest.approx(100 * record["mean_train_side"])],
    }
    assert_measures_are_the_metrics(tables.load_results(store))
    parts = (store / "tables" / "table5_factors_parts.md").read_text()
    assert "![table5_factors_parts-synthetic](../figures/table5_factors_parts-synthetic.png)" in parts
    assert (store / "figures" / "table5_factors_parts-synthetic.png").read_bytes()[:4] == b"\x89PNG"
