"""Frozen dataclass configs with named presets, ``--set`` overrides and a stable hash.

Every registered method, protocol and dataset owns a ``Config`` subclass; its field defaults are
the ``quick`` preset and ``PRESETS`` holds the differences for ``smoke`` (tests: seconds) and
``paper`` (the published hyperparameters). ``--set section.key=value`` overrides any field, where
the section is the registered name (``fer.epochs=5``, ``mae.mask_ratio=0.6``) or ``pretrain``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any, ClassVar, Mapping

from harness.errors import BenchError

PRESETS = ("smoke", "quick", "paper")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of all config sections."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: other sections whose ``--set`` values this config takes too, before its own (for a
    #: config that embeds another method's settings, e.g. LatentFace's stage 1 = ``unsup3d``)
    SHARED_SECTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def resolve(cls, preset: str, overrides: Mapping[str, Any] | None = None, section: str = "") -> "Config":
        """Build the config of ``preset`` with ``overrides`` (strings are parsed by field type)."""
        if preset not in PRESETS:
            raise BenchError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = dict(cls.PRESETS.get(preset, {}))
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        for key, raw in (overrides or {}).items():
            if key not in names:
                raise BenchError(
                    f"unknown setting {section + '.' if section else ''}{key}; "
                    f"valid keys: {', '.join(sorted(names))}"
                )
            values[key] = _coerce(raw, hints[key], f"{section}.{key}")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Per-config validation; subclasses raise BenchError for impossible values."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _coerce(raw: Any, hint: Any, key: str) -> Any:
    """Parse a ``--set`` string into the field's declared type."""
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if raw.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint in (int, float, str):
            return hint(raw)
        if origin is tuple:
            item = args[0]
            return tuple(item(v) for v in raw.split(",") if v != "")
    except ValueError:
        raise BenchError(f"--set {key}={raw}: expected a value of type {getattr(hint, '__name__', hint)}") from None
    raise BenchError(f"--set {key}: fields of type {hint} cannot be set from the command line")


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """``["fer.epochs=5", "pretrain.data=lfw"]`` -> ``{"fer": {"epochs": "5"}, "pretrain": {...}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or not section or not field:
            raise BenchError(f"--set {item!r}: expected section.key=value, e.g. fer.epochs=5")
        out.setdefault(section, {})[field] = value
    return out


def load_config_file(path: str) -> dict[str, dict[str, str]]:
    """Read a TOML settings file (``[fer]\\nepochs = 5``) as ``--set`` overrides."""
    import tomllib
    from pathlib import Path

    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BenchError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"--config {path}: not valid TOML ({exc})") from None
    out: dict[str, dict[str, str]] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise BenchError(f"--config {path}: {section!r} must be a [section] table of key = value")
        out[section] = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in values.items()}
    return out


def config_hash(payload: Mapping[str, Any]) -> str:
    """A short hash of a JSON-able mapping, stable across processes and Python versions."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class PretrainConfig(Config):
    """Where learned methods get their unlabeled training data (paper: CelebA, then VoxCeleb clips).

    Attributes:
        data: registered dataset whose ``pretrain`` split trains stage 1 / SimCLR / MAE.
        clips: registered dataset whose clips train LatentFace stage 2.
    """

    data: str = "synthetic"
    clips: str = "synthetic"
