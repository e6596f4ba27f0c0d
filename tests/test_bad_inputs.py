"""The catalogue of bad inputs: every one ends as one ``error:`` line, exit code 2, no traceback and
no result file (the CLI's one boundary for user errors, ``harness.cli.main``).

Each case is a real invocation that would otherwise run (mostly the fast ``pixels`` method on
the in-memory ``toy`` data at the smoke preset), so a check that went missing would write a
result file and fail its case. The first six are the holes issue 15 measured.
"""
from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from test_lfw import PAIRS, write_lfw

from harness import io
from harness.cli import main
from harness.session import Settings, session_for
from methods.unsup3d.losses import resolve_perceptual

RUN = ["--methods", "pixels", "--datasets", "toy", "--preset", "smoke"]
LEARNED = ["--methods", "unsup3d", "--datasets", "toy", "--preset", "smoke", "--protocol", "fer", "--set", "pretrain.data=toy"]


def lfw_root(tmp: Path, pairs: str | None = PAIRS, broken: str | None = None) -> Path:
    write_lfw(tmp / "data", pairs or "", broken=broken)
    if pairs is None:
        (tmp / "data" / "lfw" / "pairs.txt").unlink()
    return tmp / "data"


def fer_root(tmp: Path, broken: bool = False) -> Path:
    for split in ("train", "test"):
        (tmp / "data" / "fer2013" / split).mkdir(parents=True)
    if broken:
        for split in ("train", "test"):
            (tmp / "data" / "fer2013" / split / "happy").mkdir()
            (tmp / "data" / "fer2013" / split / "happy" / "0.jpg").write_bytes(b"not a jpeg")
    return tmp / "data"


def settings_file(tmp: Path, text: str) -> str:
    (tmp / "settings.toml").write_text(text)
    return str(tmp / "settings.toml")


def a_file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("not a folder")
    return tmp / "a_file"


def broken_plugin(tmp: Path) -> str:
    (tmp / "plugin_needs_missing_package.py").write_text("import no_such_package_abc\n")
    return "plugin_needs_missing_package"


def damaged_checkpoint(tmp: Path) -> None:
    """A stage-1 resume point that is not a tensor file (a payload pickle)."""
    settings = Settings(preset="smoke", overrides={"pretrain": {"data": "toy"}}, cache_dir=str(tmp / "cache"))
    folder = session_for(settings).method("unsup3d", "default", 0).artifacts()[0].path(tmp / "cache")
    folder.mkdir(parents=True)
    torch.save({"model": os.system}, folder / "last.pt")  # a reference to a function: refused by weights_only


def foreign_result(tmp: Path) -> None:
    (tmp / "results" / "fer" / "toy").mkdir(parents=True)
    (tmp / "results" / "fer" / "toy" / "notes.json").write_text('{"hello": 1}')


def no_pytorch3d(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch3d" else real(name, *a))


def empty_model_caches(tmp: Path, monkeypatch) -> None:
    """No weights cached on this machine: empty Hugging Face and torch hub caches."""
    import huggingface_hub.constants  # a submodule: the package does not load it on its own

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp / "torch"))


def hub_offline(tmp: Path, monkeypatch) -> None:
    empty_model_caches(tmp, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def hub_unreachable(tmp: Path, monkeypatch) -> None:
    import huggingface_hub

    empty_model_caches(tmp, monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")  # never resolves (RFC 2606)


def disk_full(monkeypatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", fsync)


#: (id, argv(tmp) -> list, expected part of the message, setup(tmp, monkeypatch) or None)
Case = tuple[str, Callable[[Path], list[str]], str, Callable | None]
CASES: list[Case] = [
    # --- the six holes of the issue ---------------------------------------------------------------
    ("misspelt-section", lambda t: [*RUN, "--set", "nope.x=1"], "--set: unknown section 'nope'", None),
    ("negative-epochs", lambda t: [*RUN, "--set", "fer.epochs=-1"], "fer.epochs=-1: must be at least 1", None),
    ("zero-lr", lambda t: [*LEARNED, "--set", "unsup3d.lr=0"], "unsup3d.lr=0.0: must be greater than 0", None),
    ("batch-above-data", lambda t: [*LEARNED, "--set", "unsup3d.batch_size=100000"], "larger than the 32 pretrain images it batches (toy, unsup3d.train_images=32)", None),
    ("renderer-not-installed", lambda t: [*LEARNED, "--set", "unsup3d.renderer=pytorch3d"], "needs the optional package pytorch3d",
     lambda t, mp: no_pytorch3d(mp)),
    ("results-dir-under-a-file", lambda t: [*RUN, "--results-dir", str(a_file(t) / "results")], "is a file, not a folder", None),
    # --- unknown names ------------------------------------------------------------------------------
    ("unknown-method", lambda t: [*RUN, "--methods", "nosuch"], "unknown method 'nosuch'", None),
    ("unknown-variant", lambda t: [*RUN, "--methods", "pixels:nosuch"], "has no variant 'nosuch'", None),
    ("unknown-dataset", lambda t: [*RUN, "--datasets", "nosuch"], "unknown dataset 'nosuch'", None),
    ("unknown-protocol", lambda t: [*RUN, "--protocol", "nosuch"], "unknown protocol 'nosuch'", None),
    ("unknown-ablation", lambda t: ["--ablation", "nosuch", "--datasets", "toy"], "unknown ablation 'nosuch'", None),
    ("unknown-key", lambda t: [*RUN, "--set", "fer.epoch=3"], "unknown setting fer.epoch; did you mean epochs?", None),
    ("near-miss-section", lambda t: [*RUN, "--set", "unsup3.epochs=1"], "did you mean unsup3d?", None),
    ("unknown-preset", lambda t: [*RUN, "--preset", "huge"], "invalid choice: 'huge'", None),
    ("unknown-plugin", lambda t: [*RUN, "--plugins", "no_such_module"], "cannot import 'no_such_module'", None),
    ("plugin-missing-package", lambda t: [*RUN, "--plugins", broken_plugin(t)], "no_such_package_abc", None),
    # --- impossible combinations ---------------------------------------------------------------------
    ("protocol-dataset-mismatch", lambda t: [*RUN, "--protocol", "fer", "--datasets", "lfw"], "cannot be used with protocol fer", None),
    ("ablation-and-methods", lambda t: [*RUN, "--ablation", "rdm"], "give only one of them", None),
    ("tables-only-dry-run", lambda t: ["--tables-only", "--dry-run"], "are separate modes; give one of them", None),
    ("detach-without-slurm", lambda t: [*RUN, "--executor", "local", "--detach"], "--detach needs --executor slurm", None),
    ("nothing-to-run", lambda t: [*RUN, "--methods", ","], "nothing to run", None),
    ("pretrain-without-split", lambda t: [*LEARNED, "--set", "pretrain.data=fer2013"], "pretrain.data=fer2013: that dataset has no pretrain split", None),
    ("clips-without-split", lambda t: [*RUN, "--set", "pretrain.clips=lfw"], "pretrain.clips=lfw: that dataset has no clips split", None),
    # a relation between two keys names the section (simclr has the same two) and what to set
    ("relation-names-its-section", lambda t: [*RUN, "--preset", "paper", "--set", "mae.epochs=1"],
     "mae.warmup_epochs=3: must be below mae.epochs (1); set mae.warmup_epochs lower or mae.epochs higher", None),
    ("relation-of-an-inherited-key", lambda t: [*RUN, "--set", "latentface.width=0.1"],
     "latentface.width=0.1: use a positive multiple of 1/16", None),
    # --- bad settings ----------------------------------------------------------------------------------
    ("wrong-type", lambda t: [*RUN, "--set", "fer.epochs=five"], "expected a value of type int", None),
    ("fraction-out-of-range", lambda t: [*RUN, "--set", "mae.mask_ratio=1.5"], "mae.mask_ratio=1.5: must be in (0, 1)", None),
    ("not-a-power-of-two", lambda t: [*LEARNED, "--set", "unsup3d.input_size=48"], "must be a power of two >= 16", None),
    ("test-split-selection", lambda t: [*RUN, "--set", "fer.select=test"], "fer.select=test: choose one of last, val", None),
    ("malformed-set", lambda t: [*RUN, "--set", "epochs=5"], "expected section.key=value", None),
    ("bad-seeds", lambda t: [*RUN, "--seeds", "0,-1"], "non-negative integers", None),
    ("missing-vgg-weights", lambda t: [*LEARNED, "--set", f"unsup3d.vgg_weights={t / 'vgg.pth'}"], "vgg.pth: no such file", None),
    # --- settings files ---------------------------------------------------------------------------------
    ("config-missing", lambda t: [*RUN, "--config", str(t / "none.toml")], "no such file", None),
    ("config-not-toml", lambda t: [*RUN, "--config", settings_file(t, "[fer\n")], "not valid TOML", None),
    ("config-unknown-section", lambda t: [*RUN, "--config", settings_file(t, "[fre]\nepochs = 2\n")], "unknown section 'fre'; did you mean fer?", None),
    ("config-bad-value", lambda t: [*RUN, "--config", settings_file(t, "[fer]\nlr = -1\n")], "fer.lr=-1.0: must be greater than 0", None),
    ("config-top-level-key", lambda t: [*RUN, "--config", settings_file(t, "epochs = 2\n")], "must be a [section] table", None),
    # --- missing or malformed data -------------------------------------------------------------------------
    ("no-data-root", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(t / "nowhere")], "needs the data root", None),
    ("data-root-is-a-file", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(a_file(t))], "is not a folder", None),
    ("pretrain-data-without-root", lambda t: [*LEARNED, "--set", "pretrain.data=lfw", "--data-root", str(t / "nowhere")],
     "dataset 'lfw' needs the data root", None),
    ("missing-pairs-file", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(lfw_root(t, pairs=None))], "missing", None),
    ("truncated-pairs-file", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(lfw_root(t, PAIRS.rsplit("\n", 3)[0] + "\n"))],
     "truncated or corrupt", None),
    ("malformed-pairs-line", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(lfw_root(t, PAIRS.replace("B\t1\tC\t1", "B\t1\tC")))],
     "line 5 should be 'name1 i name2 j'", None),
    ("unreadable-image", lambda t: [*RUN, "--datasets", "lfw", "--data-root", str(lfw_root(t, broken="B_0002.jpg"))], "cannot read image", None),
    ("no-class-folders", lambda t: [*RUN, "--datasets", "fer2013", "--data-root", str(fer_root(t))], "has no class folders", None),
    ("unreadable-fer-image", lambda t: [*RUN, "--datasets", "fer2013", "--data-root", str(fer_root(t, broken=True))], "cannot read image", None),
    ("checkpoint-not-tensors", lambda t: [*LEARNED], "does not load as plain tensors", lambda t, mp: damaged_checkpoint(t)),
    ("foreign-json-in-results", lambda t: ["--tables-only"], "is not a result file of this harness", lambda t, mp: foreign_result(t)),
    # --- devices ----------------------------------------------------------------------------------------------
    ("cuda-absent", lambda t: [*RUN, "--device", "cuda"], "no CUDA device is visible", None),
    ("unknown-device", lambda t: [*RUN, "--device", "tpu"], "invalid choice: 'tpu'", None),
    # --- weights that cannot be had: found before any cell (pixels first) runs ------------------------------
    ("timm-weights-offline", lambda t: [*RUN, "--methods", "pixels,timm:resnet50"],
     "timm:resnet50: no timm.weights, no cached copy of its pretrained weights, and the model hub cannot be reached (HF_HUB_OFFLINE is set)",
     hub_offline),
    ("timm-hub-unreachable", lambda t: [*RUN, "--methods", "pixels,timm:resnet50"], "the model hub cannot be reached (hub.invalid ", hub_unreachable),
    # --- clusters -----------------------------------------------------------------------------------------------
    ("no-slurm", lambda t: [*RUN, "--executor", "slurm"], "`sbatch` is not on PATH", lambda t, mp: mp.setenv("PATH", str(t))),
    ("unknown-profile", lambda t: [*RUN, "--executor", "local", "--slurm-profile", "nosuch"], "known profiles", None),
    ("unknown-profile-key", lambda t: [*RUN, "--executor", "local", "--slurm", "gpus=1"], "unknown key 'gpus'", None),
    ("bad-profile-value", lambda t: [*RUN, "--executor", "local", "--slurm", "timeout_min=soon"], "expected a value of type int", None),
    # --- places that cannot be written -------------------------------------------------------------------------
    ("cache-dir-is-a-file", lambda t: [*RUN, "--cache-dir", str(a_file(t))], "--cache-dir", None),
    ("dump-folder-under-a-file", lambda t: [*RUN, "--dump-features", str(a_file(t) / "feats")], "--dump-features", None),
    ("read-only-results-dir", lambda t: [*RUN, "--results-dir", "/proc/sys/bench-results"], "cannot be written", None),
    ("disk-full", lambda t: [*RUN], "No space left on device", lambda t, mp: disk_full(mp)),
]


@pytest.fixture(autouse=True)
def quiet_perceptual_notice():
    """The once-per-process notice that VGG16 weights are absent is not an error: print it now."""
    resolve_perceptual("", "off")


def result_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "results").rglob("*") if p.is_file() and p.name != "notes.json")


@pytest.mark.parametrize("name, argv, message, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, name, argv, message, setup):
    if name == "cuda-absent" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    monkeypatch.chdir(tmp_path)  # relative paths (plugins, default folders) land in the test's folder
    monkeypatch.syspath_prepend(str(tmp_path))
    if setup:
        setup(tmp_path, monkeypatch)
    args = argv(tmp_path)
    if "--results-dir" not in args:
        args += ["--results-dir", str(tmp_path / "results")]
    if "--cache-dir" not in args:
        args += ["--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err!r}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one error line: {err!r}"
    assert message in err, err
    assert "Traceback" not in out + err
    assert not result_files(tmp_path), "nothing may be written to the results"


def test_the_entry_point_prints_one_line_too(tmp_path):
    """The same boundary through ``run_bench.py`` in a fresh interpreter (argparse and a checked setting)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    for args, message in ((["--preset", "huge"], "invalid choice"), ([*RUN, "--set", "nope.x=1"], "unknown section 'nope'")):
        run = subprocess.run([sys.executable, str(repo / "run_bench.py"), *args, "--results-dir", str(tmp_path / "results")],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 2 and run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
        assert message in run.stderr and not (tmp_path / "results").exists()
