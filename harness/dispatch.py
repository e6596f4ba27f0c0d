"""Where cells run: in this process, as local processes, or as Slurm job arrays (submitit)."""
from __future__ import annotations

from harness.runner import Cell, Settings, run_cell


def dispatch(cells: list[Cell], settings: Settings, executor: str) -> list[str]:
    """Run ``cells`` with the named executor; returns the result paths."""
    if executor == "inline":
        return [run_cell(cell, settings) for cell in cells]
    raise NotImplementedError(executor)
