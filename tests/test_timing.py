"""The time split: nested stages are charged exclusively, and the parts add up to the whole."""
from __future__ import annotations

import time

from harness import timing


def test_nested_stages_are_charged_exclusively():
    timing.reset()
    with timing.stage("outer"):
        time.sleep(0.05)
        with timing.stage("inner"):
            time.sleep(0.1)
        with timing.stage("outer"):  # re-entering a stage adds to it
            time.sleep(0.02)
    split = timing.totals()
    assert list(split) == ["inner", "outer"]
    assert 0.09 < split["inner"] < 0.2 and 0.06 < split["outer"] < 0.15
    line = timing.report(wall=split["inner"] + split["outer"] + 1.0)
    assert line.startswith("time split of the run's") and "inner" in line and "other" in line
    timing.reset()
    assert timing.totals() == {}


def test_a_run_prints_its_time_split(tmp_path, capsys):
    from harness.cli import main

    assert main(["--methods", "pixels", "--datasets", "toy", "--preset", "smoke", "--protocol", "fer",
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "time split of the run's" in out and "protocol fer" in out and "tables and figures" in out
