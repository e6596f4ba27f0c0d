"""Frozen dataclass configs with named presets, ``--set`` overrides, validation and a stable hash.

Every registered method, protocol and dataset owns a ``Config`` subclass; its field defaults are
the ``quick`` preset and ``PRESETS`` holds the differences for ``smoke`` (tests: seconds) and
``paper`` (the published hyperparameters). ``--set section.key=value`` overrides any field, where
the section is the registered name (``fer.epochs=5``, ``mae.mask_ratio=0.6``) or ``pretrain``.

Validation lives here, in one place, and runs before any work starts: each config declares
``RULES`` for its fields (``"epochs": at_least(1)``, ``"lr": positive``, ``"renderer":
choice("torch", "pytorch3d", needs={"pytorch3d": "pytorch3d"})``...), ``Config.resolve`` checks
them and then the config's own ``check()`` (relations between fields), and
``check_sections`` rejects unknown sections and keys with a "did you mean".
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import json
import typing
from typing import Any, Callable, ClassVar, Mapping, Optional

from harness.errors import BenchError

PRESETS = ("smoke", "quick", "paper")

#: A field check: returns None when the value is allowed, else what is wrong ("must be at least 1").
Rule = Callable[[Any], Optional[str]]


def at_least(minimum: float) -> Rule:
    """Numbers >= ``minimum`` (``epochs``: 1, ``weight_decay``: 0)."""
    return lambda v: None if v >= minimum else f"must be at least {minimum:g}"


def positive(value: float) -> Optional[str]:
    """Numbers > 0 (learning rates, temperatures)."""
    return None if value > 0 else "must be greater than 0"


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Rule:
    """Numbers in the interval from ``low`` to ``high``; ``fraction`` is the open (0, 1)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def rule(v: float) -> Optional[str]:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return None if above and below else f"must be in {shown}"

    return rule


fraction = between(0, 1, low_open=True, high_open=True)
probability = between(0, 1)


def power_of_two(minimum: int = 1) -> Rule:
    """Sizes the networks halve down to a fixed map (16, 32, 64...)."""
    return lambda v: None if v >= minimum and v & (v - 1) == 0 else f"must be a power of two >= {minimum}"


def choice(*options: str, needs: Mapping[str, str] = {}) -> Rule:
    """One of ``options``; ``needs`` maps an option to the optional package it imports."""

    def rule(v: str) -> Optional[str]:
        if v not in options:
            near = difflib.get_close_matches(str(v), options, n=1)
            return f"choose one of {', '.join(options)}" + (f" (did you mean {near[0]}?)" if near else "")
        package = needs.get(v)
        if package and importlib.util.find_spec(package) is None:
            others = ", ".join(o for o in options if o not in needs) or "another option"
            return f"needs the optional package {package}, which is not installed (pip install {package}), or choose {others}"
        return None

    return rule


def existing_file(advice: str) -> Rule:
    """Empty (the field's "off"), or the path of an existing file; ``advice`` ends the message."""
    from pathlib import Path

    return lambda v: None if not v or Path(v).expanduser().is_file() else f"no such file; {advice}"


def optional(rule: Rule) -> Rule:
    """``rule``, or None (the field's "off")."""
    return lambda v: None if v is None else rule(v)


def each(rule: Rule) -> Rule:
    """A non-empty tuple whose every item passes ``rule``."""

    def check(values: tuple) -> Optional[str]:
        if not values:
            return "must list at least one value"
        return next((f"item {v!r} {problem}" for v in values if (problem := rule(v))), None)

    return check


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """A config class's field types, evaluated once (a large plan resolves thousands of configs)."""
    return typing.get_type_hints(cls)


def dotted(section: str) -> str:
    """The prefix that names a key of ``section`` in messages (``mae.``; empty without a section)."""
    return f"{section}." if section else ""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of all config sections.

    Subclasses declare ``RULES`` (field -> rule, inherited and extended along the class
    hierarchy) and may override ``check`` for relations between fields.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    RULES: ClassVar[dict[str, Rule]] = {}
    #: other sections whose ``--set`` values this config takes too, before its own (for a
    #: config that embeds another method's settings, e.g. LatentFace's stage 1 = ``unsup3d``)
    SHARED_SECTIONS: ClassVar[tuple[str, ...]] = ()
    #: fields added after results were stored: left out of ``to_dict`` (so of config hashes)
    #: while at their defaults, so that those results and trained models stay valid
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def resolve(cls, preset: str, overrides: Mapping[str, Any] | None = None, section: str = "") -> "Config":
        """Build the config of ``preset`` with ``overrides`` (strings are parsed by field type),
        and validate it (``BenchError`` naming the first bad field)."""
        if preset not in PRESETS:
            raise BenchError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = dict(cls.PRESETS.get(preset, {}))
        hints = _type_hints(cls)
        names = cls.field_names()
        for key, raw in (overrides or {}).items():
            if key not in names:
                raise BenchError(unknown_message(f"setting {section + '.' if section else ''}{key}", key, names, "valid keys"))
            values[key] = _coerce(raw, hints[key], f"{section}.{key}")
        cfg = cls(**values)
        cfg.validate(section)
        return cfg

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """Every field rule of this config, its parents' first."""
        out: dict[str, Rule] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("RULES", {}))
        return out

    def validate(self, section: str = "") -> None:
        """Check every field against its rule, then ``check()``; raises BenchError."""
        prefix = dotted(section)
        for name, rule in self.rules().items():
            value = getattr(self, name)
            problem = rule(value)
            if problem:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                raise BenchError(f"{prefix}{name}={shown}: {problem}")
        self.check(section)

    def check(self, section: str) -> None:
        """Relations between fields; subclasses raise BenchError for impossible combinations,
        naming each key as ``section.key`` (``dotted(section) + key``) and saying what to set."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (f.name in self.LATE_FIELDS and getattr(self, f.name) == f.default)
        }

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


def unknown_message(what: str, name: str, known: list[str] | tuple[str, ...], label: str) -> str:
    """``unknown setting fer.epoch; did you mean epochs? valid keys: ...`` (one line)."""
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else ""
    return f"unknown {what}{hint} ({label}: {', '.join(sorted(known))})"


def check_sections(overrides: Mapping[str, Mapping[str, Any]], sections: Mapping[str, type[Config]], source: str) -> None:
    """Reject sections and keys that no config has: a typo would otherwise silently do nothing.

    Args:
        overrides: ``{section: {key: value}}`` from ``--set`` or a ``--config`` file.
        sections: every known section name and its config class.
        source: where the overrides came from, for the message (``--set``, ``--config FILE``).
    """
    for section, values in overrides.items():
        if section not in sections:
            raise BenchError(f"{source}: " + unknown_message(f"section {section!r}", section, list(sections), "sections"))
        names = sections[section].field_names()
        for key in values:
            if key not in names:
                raise BenchError(f"{source}: " + unknown_message(f"setting {section}.{key}", key, names, "valid keys"))


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
        raise BenchError(f"{key}={raw}: expected a value of type {getattr(hint, '__name__', hint)}") from None
    raise BenchError(f"{key}: fields of type {hint} cannot be set from the command line")


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
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"--config {path}: cannot read it ({getattr(exc, 'strerror', None) or exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"--config {path}: not valid TOML ({exc})") from None
    out: dict[str, dict[str, str]] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise BenchError(f"--config {path}: {section!r} must be a [section] table of key = value")
        for key, value in values.items():
            if isinstance(value, dict):
                raise BenchError(f"--config {path}: {section}.{key} is a table; sections hold plain key = value settings")
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

    The names are checked against the dataset registry by the runner, before any work.
    """

    data: str = "synthetic"
    clips: str = "synthetic"
