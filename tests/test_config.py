import json
import subprocess
import sys

import pytest

from harness.config import PretrainConfig, config_hash, parse_overrides
from harness.errors import BenchError
from protocols.fer import FERConfig
from protocols.verification import VerificationConfig


def test_presets_and_overrides():
    assert FERConfig.resolve("quick").epochs == 20
    assert FERConfig.resolve("paper").batch_size == 32
    cfg = FERConfig.resolve("quick", {"epochs": "5", "flip_aug": "true", "lr": "0.01"})
    assert (cfg.epochs, cfg.flip_aug, cfg.lr) == (5, True, 0.01)


@pytest.mark.parametrize(
    "preset,overrides,message",
    [
        ("huge", {}, "unknown preset"),
        ("quick", {"epoch": "5"}, "unknown setting fer.epoch"),
        ("quick", {"epochs": "five"}, "expected a value of type int"),
        ("quick", {"select": "test"}, "never the test split"),
    ],
)
def test_bad_settings_are_one_line_errors(preset, overrides, message):
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
