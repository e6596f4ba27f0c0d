"""Plain registries with timm-style ``@register_...`` decorators and ``list_...()`` lookups.

Three registries live here: methods, protocols and datasets. Each is an ordered dict from
name to class, so tables list methods in registration (registry) order.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from typing import Callable, Generic, Mapping, Sequence, TypeVar

from harness.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> class mapping with a decorator for registration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            obj.name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "(none)"
            raise BenchError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known} (see --list)") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, in registration order."""
        return [n for n in self._entries if fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


METHODS: Registry = Registry("method")
PROTOCOLS: Registry = Registry("protocol")
DATASETS: Registry = Registry("dataset")

register_method = METHODS.register
register_protocol = PROTOCOLS.register
register_dataset = DATASETS.register


#: Dataset suites by name (``--datasets NAME`` runs every member that is present), in order.
SUITES: dict[str, tuple[str, ...]] = {}


def register_suite(name: str, members: Sequence[str]) -> None:
    """Declare a dataset suite: ``--datasets NAME`` stands for the registered datasets
    ``members`` whose files are present (``FaceDataset.missing``); ``--set NAME.key=value``
    reaches every member whose config lists ``NAME`` in ``SHARED_SECTIONS``."""
    if name in SUITES or name in DATASETS:
        raise ValueError(f"dataset suite {name!r} is registered twice")
    SUITES[name] = tuple(members)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def load_plugins(extra: Sequence[str] = ()) -> None:
    """Import the method, protocol and dataset packages, and any ``extra`` modules (``--plugins``,
    ``$BENCH_PLUGINS``), so that their ``@register_...`` decorators run.

    The harness imports plugins only here, by name: nothing in ``harness/`` depends on them.
    """
    for name in ("harness.datasets", "methods", "protocols", *extra):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if name not in extra:
                raise
            raise BenchError(
                f"--plugins: cannot import {name!r} ({exc}); name a module importable from the "
                "current directory or installed, e.g. tests.dispatch_plugins"
            ) from None


@dataclasses.dataclass(frozen=True)
class Ablation:
    """A paper ablation table (``--ablation NAME``).

    Attributes:
        rows: the (method, variant) rows, in table order.
        title: the table's heading.
        table: the table's file stem under a store's ``tables/``.
        paper: the paper's numbers, (method, variant) -> {dataset: (value, spread)}, in percent.
    """

    rows: tuple[tuple[str, str], ...]
    title: str
    table: str
    paper: dict[tuple[str, str], dict[str, tuple[float, float]]] = dataclasses.field(default_factory=dict)


#: Ablation studies by name, in registration order.
ABLATIONS: dict[str, Ablation] = {}


def register_ablation(
    name: str,
    rows: list[tuple[str, str]],
    title: str,
    table: str = "",
    paper: Mapping[tuple[str, str], dict[str, tuple[float, float]]] | None = None,
) -> None:
    """Declare an ablation (``--ablation NAME``): the method variants it compares, its table's
    title and file stem (default ``ablation_NAME``) and the paper's numbers for them."""
    ABLATIONS[name] = Ablation(tuple(rows), title, table or f"ablation_{name}", dict(paper or {}))
