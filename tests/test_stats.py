"""Intervals and paired tests (harness.stats, harness.compare) on hand-made outcomes with known answers."""
import json
import math
from math import comb

import numpy as np
import pytest

from harness import compare, stats, tables
from harness.cli import main
from harness.registry import PROTOCOLS
from protocols.fer import classification_metrics
from protocols.verification import roc_auc, tar_at_far

FER = PROTOCOLS.get("fer")
CLASSES = ["a", "b", "c"]


def fer_record(method: str, seed: int, label: np.ndarray, pred: np.ndarray, dataset: dict | None = None, old: bool = False) -> dict:
    """A FER result file as the runner writes it, made by hand (``old``: format 1, no outcomes)."""
    record = {
        "cell": {"method": method, "variant": "default", "protocol": "fer", "dataset": "toy", "seed": seed},
        "config": {"preset": "smoke", "method": {"config": {}}, "protocol": {"name": "fer", "version": "1", "config": {}},
                   "dataset": dataset or {"name": "toy"}},
        "metrics": classification_metrics(label, pred, tuple(CLASSES)),
        "provenance": {"git": {"sha": "0" * 40}, "end_time": f"2026-01-01T00:00:0{seed}"},
    }
    if not old:
        record.update(format=compare.FORMAT, outcomes=compare.pack({"label": label, "pred": pred}))
    return record


def test_identical_methods_differ_by_zero_with_p_one():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.6, label, rng.integers(0, 3, 300))
    memo = compare.Stats()
    for seeds in ([0], [0, 1, 2]):
        a = [fer_record("a", s, label, pred) for s in seeds]
        b = [fer_record("b", s, label, pred) for s in seeds]
        for key in ("accuracy", "macro_f1"):  # exact McNemar, paired bootstrap
            result = memo.compare(FER, a, b, key)
            assert result.difference.mean == 0 and result.difference.low == 0 and result.difference.high == 0
            assert result.p == 1 and all(p == 1 for p in result.per_seed) and result.detectable == 0
    assert stats.mcnemar_exact(label == pred, label == pred) == 1.0
    assert stats.bootstrap_p(0.0, np.zeros(100)) == 1.0


def test_a_method_right_wherever_the_other_is_wrong_gets_the_exact_binomial_p():
    n = 12
    label = np.arange(n) % 3
    right, wrong = label.copy(), (label + 1) % 3
    result = compare.Stats().compare(FER, [fer_record("a", 0, label, right)], [fer_record("b", 0, label, wrong)], "accuracy")
    assert result.test == "exact McNemar" and result.p == pytest.approx(2 * 0.5**n, rel=1e-12)
    assert result.difference.mean == 1.0
    # 7 items only the first gets right, 2 only the second: twice P(X <= 2), X ~ Binomial(9, 1/2)
    a = np.r_[np.ones(7), np.zeros(2), np.ones(5), np.zeros(4)].astype(bool)
    b = np.r_[np.zeros(7), np.ones(2), np.ones(5), np.zeros(4)].astype(bool)
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 * (comb(9, 0) + comb(9, 1) + comb(9, 2)) / 2**9, rel=1e-12)
    assert stats.mcnemar_exact(b, a) == stats.mcnemar_exact(a, b)


def test_the_interval_of_an_accuracy_covers_the_true_rate_at_about_its_nominal_rate():
    """400 test sets of 200 items with a true accuracy of 0.7: the 95 % interval should miss the
    rate in about 5 % of them (binomial sd of the share over 400 sets: 1.1 points)."""
    rng = np.random.default_rng(0)
    n, rate, sets = 200, 0.7, 400
    weights = stats.bootstrap_weights(n)
    covered = 0
    for _ in range(sets):
        correct = (rng.random(n) < rate).astype(float)
        e = stats.estimate([correct.mean()], stats.weighted_mean(correct, weights)[None], bounds=(0, 1))
        covered += e.low <= rate <= e.high
    assert 0.92 <= covered / sets <= 0.98


def test_seeds_widen_the_item_interval_by_their_spread_in_quadrature():
    replicates = np.random.default_rng(0).normal(0.5, 0.02, 1000)
    lo, hi = stats.percentile_interval(replicates)
    one = stats.estimate([0.5], replicates[None])
    assert (one.low, one.high, one.sd) == (lo, hi, 0.0)
    points = [0.48, 0.50, 0.52]  # the seeds' shift does not move the replicates' spread
    three = stats.estimate(points, np.stack([replicates - 0.5 + p for p in points]))
    half = stats.z_quantile() * np.std(points, ddof=1) / math.sqrt(3)
    assert three.low == pytest.approx(0.5 - math.hypot(0.5 - lo, half))
    assert three.high == pytest.approx(0.5 + math.hypot(hi - 0.5, half))
    assert three.sd == pytest.approx(0.02)


def test_holm_and_the_minimum_detectable_difference_have_their_textbook_values():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.minimum_detectable(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def test_bootstrap_weights_keep_strata_sizes_and_clusters_whole():
    strata = np.repeat([0, 1, 2], [5, 7, 9])
    w = stats.bootstrap_weights(21, strata=strata, replicates=50, seed=3)
    assert all(np.all(w[:, strata == s].sum(1) == (strata == s).sum()) for s in range(3))
    clusters = np.repeat(np.arange(7), 3)
    w = stats.bootstrap_weights(21, clusters=clusters, replicates=50)
    assert np.all(w.reshape(50, 7, 3) == w.reshape(50, 7, 3)[:, :, :1]) and np.all(w.sum(1) == 21)
    assert np.array_equal(stats.bootstrap_weights(21, strata=strata), stats.bootstrap_weights(21, strata=strata))


def test_weighted_statistics_equal_the_metrics_on_the_resampled_items():
    """Each measure under integer weights is the protocol's own metric on the items repeated so often."""
    rng = np.random.default_rng(2)
    label = rng.integers(0, 3, 90)
    pred = np.where(rng.random(90) < 0.5, label, rng.integers(0, 3, 90))
    w = stats.bootstrap_weights(90, replicates=5, seed=7)
    measures = FER.measures({"class_names": CLASSES})
    for row in w:
        take = np.repeat(np.arange(90), row.astype(int))
        m = classification_metrics(label[take], pred[take], tuple(CLASSES))
        for key in ("accuracy", "macro_f1"):
            assert measures[key].statistic({"label": label, "pred": pred}, row[None])[0] == pytest.approx(m[key])
    verification = PROTOCOLS.get("verification")
    fold = np.repeat(np.arange(4), 50)
    same = np.tile(np.r_[np.ones(25), np.zeros(25)], 4).astype(bool)
    score = rng.normal(same.astype(float), 1.0).round(1)  # ties included
    outcomes = {"score": score, "decision": score > 0.5, "same": same, "fold": fold}
    measures = verification.measures({"auc": 0.0})
    for row in stats.bootstrap_weights(200, strata=fold, replicates=5, seed=1):
        take = np.repeat(np.arange(200), row.astype(int))
        s, y, f = score[take], same[take], fold[take]
        folds = [f == k for k in range(4)]
        expected = {
            "accuracy": np.mean([((s[k] > 0.5) == y[k]).mean() for k in folds]),
            "auc": np.mean([roc_auc(s[k], y[k]) for k in folds]),
            "tar_at_far_0.1": np.mean([tar_at_far(s[k], y[k], 0.1) for k in folds]),
            "tar_at_far_0.001_pooled": tar_at_far(s, y, 0.001),
        }
        for key, value in expected.items():
            assert measures[key].statistic(outcomes, row[None])[0] == pytest.approx(value)


def test_columns_mark_the_best_row_bold_and_ties_with_one_mark():
    label = np.arange(400) % 3
    item = np.arange(400)

    def right_on(keep):
        return np.where(keep, label, (label + 1) % 3)

    good = right_on(item < 360)
    # 10 items only the best gets right, 5 only this one: McNemar p = 2 P(X <= 5 | 15) = 0.30, a tie
    close = right_on((item < 350) | ((item >= 360) & (item < 365)))
    bad = right_on(item < 160)
    cells = {name: [fer_record(name, 0, label, pred)] for name, pred in (("good", good), ("close", close), ("bad", bad))}
    shown = compare.Stats().column(FER, cells)
    assert shown["good"]["accuracy"].best and not shown["good"]["accuracy"].tie
    assert shown["close"]["accuracy"].tie and not shown["bad"]["accuracy"].tie
    cell = FER.cell(cells["close"], shown["close"])
    assert cell.count("≈") == 2 and "[" in cell and FER.cell(cells["good"], shown["good"]).startswith("**")


def write(store, record):
    c = record["cell"]
    path = store / "fer" / c["dataset"] / f"{c['method']}--default--seed{c['seed']}--{c['dataset']}{'old' if 'format' not in record else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_compare_prints_values_difference_p_and_the_detectable_difference(tmp_path, capsys):
    n = 12
    label = np.arange(n) % 3
    write(tmp_path, fer_record("pixels", 0, label, label))
    write(tmp_path, fer_record("simclr", 0, label, (label + 1) % 3))
    assert main(["--compare", "pixels,simclr", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("accuracy:"))
    assert "pixels 100.00" in line and "simclr 0.00" in line and "difference +100.00" in line
    assert f"p = {2 * 0.5**n:.3g} (exact McNemar)" in line and "detectable at 80 % power" in line
    assert main(["--compare", "pixels,simclr", "--protocol", "verification", "--results-dir", str(tmp_path)]) == 2
    assert main(["--compare", "pixels,mae", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err) and "no results of mae:default" in err[1]


def test_compare_and_tables_say_why_results_cannot_be_compared(tmp_path, capsys):
    label = np.arange(30) % 3
    write(tmp_path, fer_record("pixels", 0, label, label))
    write(tmp_path, fer_record("simclr", 0, label, label, dataset={"name": "toy", "size": 8}))
    assert main(["--compare", "pixels,simclr", "--results-dir", str(tmp_path)]) == 0
    assert "cannot be compared: the results were measured on different test items" in capsys.readouterr().out
    old = tmp_path / "old"
    write(old, fer_record("pixels", 0, label, label, old=True))
    write(old, fer_record("simclr", 0, label, label, old=True))
    assert main(["--compare", "pixels,simclr", "--results-dir", str(old)]) == 0
    assert f"cannot be compared: {compare.NO_OUTCOMES}" in capsys.readouterr().out
    _, built = tables.build_tables(tables.load_results(old))
    table = built["table1_fer"]
    assert "[" not in table.body and "**" not in table.body
    assert f"Intervals and comparisons cannot be computed for 2 of these results: {compare.NO_OUTCOMES}." in table.footer


def test_rerun_adds_the_outcomes_to_an_old_result(tmp_path):
    argv = ["--methods", "pixels", "--protocol", "fer", "--datasets", "toy", "--preset", "smoke",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    (path,) = (tmp_path / "results").glob("fer/toy/*.json")
    record = json.loads(path.read_text())
    assert record["format"] == compare.FORMAT
    outcomes = compare.unpack(record)
    assert len(outcomes["pred"]) == record["metrics"]["n_test"]
    assert (outcomes["pred"] == outcomes["label"]).mean() == pytest.approx(record["metrics"]["accuracy"])
    path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("format", "outcomes")}))  # as format 1
    assert main(argv) == 0 and "outcomes" not in json.loads(path.read_text())  # done: kept as it is
    assert main([*argv, "--rerun"]) == 0
    again = json.loads(path.read_text())
    assert again["format"] == compare.FORMAT and again["outcomes"] == record["outcomes"]
