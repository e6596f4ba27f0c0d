"""Plain registries with timm-style ``@register_...`` decorators and ``list_...()`` lookups.

Three registries live here: methods, protocols and datasets. Each is an ordered dict from
name to class, so tables list methods in registration (registry) order.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

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


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def load_plugins() -> None:
    """Import the method, protocol and dataset packages so their decorators run."""
    import harness.datasets  # noqa: F401
    import methods  # noqa: F401
    import protocols  # noqa: F401


#: Ablation studies: name -> the (method, variant) rows of the paper's table, in table order.
ABLATIONS: dict[str, list[tuple[str, str]]] = {}


def register_ablation(name: str, rows: list[tuple[str, str]]) -> None:
    """Declare an ablation (``--ablation NAME``) as the method variants it compares."""
    ABLATIONS[name] = list(rows)
