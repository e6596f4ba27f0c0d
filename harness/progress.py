"""Progress of long work: a bar on a terminal, plain lines in logs (Slurm, nohup, CI, pipes).

A bar redrawn in place is unreadable in a log file, and a bar switched off leaves a log silent
for the ten minutes a training takes. So when stdout is not a terminal, ``progress`` prints one
plain line every ``$BENCH_PROGRESS_SECONDS`` seconds (default 30) -- stage, step/total, images
per second, ETA -- and a closing line when the stage is done.
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any, Optional

from tqdm.auto import tqdm

INTERVAL_ENV = "BENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def progress(*, total: int, desc: str, unit: str = "img", initial: int = 0, images_per_unit: int = 1) -> Any:
    """A progress reporter with tqdm's ``update`` / ``set_postfix`` / ``close`` (and ``with``).

    Args:
        total, initial: units of work in all, and already done (a resumed run).
        desc: the stage, as the log names it (``unsup3d stage 1``).
        unit: what one ``update(1)`` counts (``img``, ``step``).
        images_per_unit: images in one unit (the batch size for training steps), for images/s.

    On a terminal: a tqdm bar on stderr. Otherwise: ``LineProgress`` on stdout.
    """
    if sys.stdout.isatty():
        return tqdm(
            total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
            disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True,
        )
    return LineProgress(total=total, desc=desc, unit=unit, initial=initial, images_per_unit=images_per_unit)


def interval() -> float:
    """Seconds between two progress lines (``$BENCH_PROGRESS_SECONDS``; 0 prints every update)."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def duration(seconds: float) -> str:
    """``2h05m``, ``3m10s``, ``42s``, ``0.4s``: short and unambiguous in a log line."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress:
    """Plain progress lines at a steady interval, for logs.

    ``[14:02:10] unsup3d stage 1: 340/1200 steps (28%), 512 img/s, ETA 3m10s, loss=0.1234``
    """

    def __init__(self, *, total: int, desc: str, unit: str = "img", initial: int = 0, images_per_unit: int = 1,
                 every: Optional[float] = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.initial = self.n = initial
        self.images_per_unit = images_per_unit
        self.every = interval() if every is None else every
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every and self.n < self.total:
            self.last = now
            self._print(self._status(now))

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = time.monotonic() - self.start
        done = self.n - self.initial
        line = f"done, {done} {self._units} in {duration(elapsed)}"
        if done:
            line += f", {self._rate(elapsed):.0f} img/s"
        if self.postfix:
            line += f", {self.postfix}"
        self._print(line)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def _units(self) -> str:
        return "images" if self.unit == "img" else f"{self.unit}s"

    def _rate(self, elapsed: float) -> float:
        """Images per second since this stage started (a resumed run counts its own steps only)."""
        return (self.n - self.initial) * self.images_per_unit / max(elapsed, 1e-9)

    def _status(self, now: float) -> str:
        elapsed = now - self.start
        done = self.n - self.initial
        eta = duration((self.total - self.n) * elapsed / done) if done else "?"
        pct = 100 * self.n / self.total if self.total else 100.0
        line = f"{self.n}/{self.total} {self._units} ({pct:.0f}%), {self._rate(elapsed):.0f} img/s, ETA {eta}"
        return f"{line}, {self.postfix}" if self.postfix else line

    def _print(self, text: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {self.desc}: {text}", flush=True)
