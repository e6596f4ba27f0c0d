"""Where a run's time goes: exclusive wall time per stage, printed at the end of a run.

Stages nest (training happens inside feature extraction, which happens inside a protocol), so
each stage is charged only the time not spent in a stage inside it; the parts add up to the
whole. Only this process is measured: jobs of ``--executor local/slurm`` keep their own logs.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

_totals: dict[str, float] = defaultdict(float)
_stack: list[list] = []  # [stage, time spent in stages inside it]


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the block's wall time, less that of stages inside it, to ``name``."""
    start = time.perf_counter()
    _stack.append([name, 0.0])
    try:
        yield
    finally:
        _, inner = _stack.pop()
        elapsed = time.perf_counter() - start
        _totals[name] += elapsed - inner
        if _stack:
            _stack[-1][1] += elapsed


def totals() -> dict[str, float]:
    """Seconds per stage so far, largest first."""
    return dict(sorted(_totals.items(), key=lambda item: -item[1]))


def reset() -> None:
    _totals.clear()


def report(wall: float) -> str:
    """``time split of the run's W s: training stage1 100 s (45%), ...``, and what no stage covers."""
    parts = totals()
    other = max(wall - sum(parts.values()), 0.0)
    items = [*parts.items(), ("other (planning, tables, loading)", other)]
    shown = ", ".join(f"{name} {_seconds(seconds)} s ({100 * seconds / max(wall, 1e-9):.0f}%)" for name, seconds in items if seconds > 0)
    return f"time split of the run's {_seconds(wall)} s: {shown}"


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 10 else f"{value:.0f}"
