"""Modules imported on first use, so that registering a method does not import its heavy libraries.

``python run_bench.py --tables-only`` or ``--status`` registers every method (tables list them,
plans resolve their configs) but builds no network; timm, torchvision, lightly and diffusers
take seconds to import, longer than the rest of such a command.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``: the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)


def lazy(name: str) -> Any:
    """The module ``name``, imported when first used (``timm = lazy("timm")``)."""
    return LazyModule(name)
