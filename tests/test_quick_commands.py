"""What keeps commands on a finished sweep quick: registering methods imports no heavy library,
and figures whose numbers did not change are not drawn again."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import timm

from harness import plots
from harness.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("timm", "torchvision", "diffusers", "lightly", "torch._dynamo", "matplotlib", "pandas")


def test_registering_plugins_imports_no_heavy_library():
    code = (
        "import sys; from harness.registry import load_plugins, METHODS; load_plugins(); "
        f"print(len(METHODS.names()), sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) >= 5 and loaded == "[]"


def test_backbones_checked_without_timm_are_timm_resnets():
    from methods.simclr import PRESET_BACKBONES, SimCLRConfig

    assert all(timm.is_model(name) and name.startswith("resnet") for name in PRESET_BACKBONES)
    assert {SimCLRConfig.resolve(preset).backbone for preset in PRESETS} <= set(PRESET_BACKBONES)


def bars(value: float) -> plots.Bars:
    return plots.Bars("title", "accuracy", ["synthetic"], {"a": [(value, 1.0, 3)], "b": [(50.0, 0.0, 1)]})


def test_a_figure_is_drawn_again_only_when_its_numbers_change(tmp_path, monkeypatch):
    path = tmp_path / "chart.png"
    plots.bar_chart(bars(70.0), path)
    first = path.read_bytes()
    key = plots.png_text(path)[plots.KEY_FIELD]

    def no_drawing():
        raise AssertionError("drew a figure whose numbers did not change")

    with monkeypatch.context() as patch:
        patch.setattr(plots, "pyplot", no_drawing)
        assert plots.bar_chart(bars(70.0), path) == path
    assert path.read_bytes() == first
    plots.bar_chart(bars(70.5), path)  # one number changed
    assert plots.png_text(path)[plots.KEY_FIELD] != key
    plots.bar_chart(bars(70.0), path)  # back: the same bytes as the first drawing
    assert path.read_bytes() == first


def test_the_key_covers_arrays_and_keywords(tmp_path):
    path = tmp_path / "heat.png"
    matrix = np.eye(3)
    plots.heatmap(matrix, ["a", "b", "c"], ["x", "y", "z"], path, "t")
    key = plots.png_text(path)[plots.KEY_FIELD]
    matrix[2, 2] = 0.5
    plots.heatmap(matrix, ["a", "b", "c"], ["x", "y", "z"], path, "t")
    changed = plots.png_text(path)[plots.KEY_FIELD]
    plots.heatmap(matrix, ["a", "b", "c"], ["x", "y", "z"], path, "t", vmax=2.0)
    assert len({key, changed, plots.png_text(path)[plots.KEY_FIELD]}) == 3
