"""Configs: presets, overrides, the field rules checked in one place, unknown names, settings files."""
import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from harness.checks import known_sections
from harness.config import (
    Config,
    PretrainConfig,
    at_least,
    between,
    check_sections,
    choice,
    config_hash,
    each,
    load_config_file,
    parse_overrides,
    power_of_two,
)
from harness.errors import BenchError
from methods.unsup3d.method import Unsup3DConfig
from protocols.fer import FERConfig
from protocols.verification import VerificationConfig

#: str fields that name a file, a folder, a model or a dataset: checked by the config's check() or where they are used
FREE_TEXT = {"vgg_weights", "checkpoint", "weights", "image_dir", "pairs_file", "backbone", "train_identities_file", "pose_list", "data", "clips"}


def test_presets_and_overrides():
    assert FERConfig.resolve("quick").epochs == 20
    assert FERConfig.resolve("paper").batch_size == 32
    cfg = FERConfig.resolve("quick", {"epochs": "5", "flip_aug": "true", "lr": "0.01"})
    assert (cfg.epochs, cfg.flip_aug, cfg.lr) == (5, True, 0.01)


@pytest.mark.parametrize(
    "section,overrides,message",
    [
        ("fer", {"epochs": "-1"}, "fer.epochs=-1: must be at least 1"),
        ("fer", {"epochs": "0"}, "fer.epochs=0: must be at least 1"),
        ("fer", {"lr": "0"}, "fer.lr=0.0: must be greater than 0"),
        ("fer", {"val_fraction": "1"}, "fer.val_fraction=1.0: must be in (0, 1)"),
        ("fer", {"batch_size": "1"}, "fer.batch_size=1: must be at least 2"),
        ("fer", {"select": "test"}, "fer.select=test: choose one of last, val"),
        ("fer", {"select": "lats"}, "did you mean last?"),
        ("unsup3d", {"lr": "0"}, "unsup3d.lr=0.0: must be greater than 0"),
        ("unsup3d", {"input_size": "48"}, "unsup3d.input_size=48: must be a power of two >= 16"),
        ("unsup3d", {"grad_clip": "-1"}, "unsup3d.grad_clip=-1.0: must be greater than 0"),
        ("unsup3d", {"vgg_weights": "/nonexistent/vgg.pth"}, "no such file"),
        ("mae", {"mask_ratio": "1.5"}, "mae.mask_ratio=1.5: must be in (0, 1)"),
        ("mae", {"embed_dim": "100", "num_heads": "3"}, "not a multiple of mae.num_heads"),
        ("simclr", {"hf_prob": "2"}, "simclr.hf_prob=2.0: must be in [0, 1]"),
        ("simclr", {"backbone": "resnet999"}, "timm ResNet"),
        ("latentface", {"holdout": "1"}, "latentface.holdout=1.0: must be in [0, 1)"),
        ("latentface", {"sample_steps": "2000"}, "latentface.sample_steps=2000: at most latentface.diffusion_steps"),
        ("random-cnn", {"widths": "32,0"}, "random-cnn.widths=32,0: item 0 must be at least 1"),
        ("synthetic", {"seed": "-1"}, "synthetic.seed=-1: must be at least 0"),
        ("verification", {"mode": "cosin"}, "did you mean cosine?"),
    ],
)
def test_bad_values_are_named_in_one_line(section, overrides, message):
    cls = known_sections()[section]
    with pytest.raises(BenchError) as info:
        cls.resolve("quick", overrides, section)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_renderer_backends_must_be_importable(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch3d" else real(name, *a))
    with pytest.raises(BenchError, match="unsup3d.renderer=pytorch3d: needs the optional package pytorch3d.*choose torch, auto"):
        Unsup3DConfig.resolve("quick", {"renderer": "pytorch3d"}, "unsup3d")
    assert Unsup3DConfig.resolve("quick", {"renderer": "auto"}, "unsup3d").renderer == "auto"  # falls back by itself


def test_rule_helpers():
    assert at_least(1)(1) is None and at_least(1)(0) == "must be at least 1"
    assert between(0, 1, low_open=True)(0) == "must be in (0, 1]" and between(0, 1, low_open=True)(1) is None
    assert [power_of_two(16)(v) is None for v in (8, 16, 24, 32, 64)] == [False, True, False, True, True]
    assert choice("a", "b")("c") == "choose one of a, b" and choice("a", "b")("b") is None
    assert each(at_least(1))(()) == "must list at least one value"
    assert each(at_least(1))((3, 0, 2)) == "item 0 must be at least 1"


def test_rules_are_inherited_and_extended():
    @dataclasses.dataclass(frozen=True)
    class Base(Config):
        epochs: int = 1
        RULES = {"epochs": at_least(1)}

    @dataclasses.dataclass(frozen=True)
    class Child(Base):
        lr: float = 0.1
        RULES = {"lr": at_least(0.01)}

    assert set(Child.rules()) == {"epochs", "lr"}
    with pytest.raises(BenchError, match="child.epochs=0"):
        Child.resolve("quick", {"epochs": "0"}, "child")


def numeric(hint) -> bool:
    hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if typing.get_origin(hint) is typing.Union else hint
    return hint in (int, float) or typing.get_origin(hint) is tuple


@pytest.mark.parametrize("section", sorted(known_sections()))
def test_every_field_is_validated(section):
    """Every number, size and choice of every config has a rule (a new field needs one too)."""
    cls = known_sections()[section]
    hints, rules = typing.get_type_hints(cls), cls.rules()
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if hint is bool or field.name in FREE_TEXT or field.name in ("crop_box",):  # crop_box: checked by celeba.check
            continue
        assert field.name in rules, f"{section}.{field.name} ({hint}) has no rule in {cls.__name__}.RULES"
        assert numeric(hint) or hint is str, (section, field.name, hint)
    for preset in ("smoke", "quick", "paper"):  # and every preset passes them
        cls.resolve(preset, section=section)


def test_unknown_sections_and_keys_say_did_you_mean():
    sections = known_sections()
    with pytest.raises(BenchError, match=r"--set: unknown section 'nope'.*\(sections: .*fer, .*pretrain"):
        check_sections({"nope": {"x": "1"}}, sections, "--set")
    with pytest.raises(BenchError, match=r"unknown section 'unsup3'; did you mean unsup3d\?"):
        check_sections({"unsup3": {"epochs": "1"}}, sections, "--set")
    with pytest.raises(BenchError, match=r"--config f.toml: unknown setting fer.epoch; did you mean epochs\?"):
        check_sections({"fer": {"epoch": "1"}}, sections, "--config f.toml")
    check_sections({"fer": {"epochs": "3"}, "pretrain": {"data": "lfw"}}, sections, "--set")  # known: no error
    with pytest.raises(BenchError, match="unknown setting fer.epoch; did you mean epochs"):
        FERConfig.resolve("quick", {"epoch": "5"}, "fer")


@pytest.mark.parametrize(
    "text,message",
    [
        ("[fer\n", "not valid TOML"),
        ("epochs = 3\n", "must be a [section] table"),
        ("[fer.sub]\nx = 1\n", "fer.sub is a table"),
    ],
)
def test_bad_settings_files(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=message.replace("[", r"\[")):
        load_config_file(str(path))
    with pytest.raises(BenchError, match="no such file"):
        load_config_file(str(tmp_path / "missing.toml"))
    with pytest.raises(BenchError, match="cannot read it"):
        load_config_file(str(tmp_path))  # a folder


def test_bad_settings_are_one_line_errors():
    for preset, overrides, message in [
        ("huge", {}, "unknown preset"),
        ("quick", {"epochs": "five"}, "expected a value of type int"),
    ]:
        with pytest.raises(BenchError, match=message) as info:
            FERConfig.resolve(preset, overrides, "fer")
        assert "\n" not in str(info.value)


def test_parse_overrides():
    assert parse_overrides(["fer.epochs=5", "pretrain.data=lfw"]) == {"fer": {"epochs": "5"}, "pretrain": {"data": "lfw"}}
    with pytest.raises(BenchError, match="section.key=value"):
        parse_overrides(["epochs=5"])


def test_config_hash_is_stable_across_processes():
    payload = {"method": VerificationConfig().to_dict(), "pretrain": PretrainConfig().to_dict(), "x": [1, 2.5]}
    code = (
        "import json,sys; from harness.config import config_hash; "
        "print(config_hash(json.loads(sys.argv[1])))"
    )
    other = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == config_hash(payload)
    assert config_hash(payload) != config_hash({**payload, "x": [1, 2.6]})
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
