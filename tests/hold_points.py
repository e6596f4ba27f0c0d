"""Test plugin (``--plugins tests.hold_points``): stop while holding a feature entry's lock.

``BENCH_HOLD=DIR:K``: when the process is about to compute its K-th features cache entry (the
cell's and the entry's locks held), it writes its process id to ``DIR/held`` and sleeps until
``DIR/go`` exists (a minute at most), so that a test can start a second process that waits on
those locks and then kill this one while it holds them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import harness.features

SPEC = os.environ.get("BENCH_HOLD", "")
FOLDER, _, COUNT = SPEC.rpartition(":")
built = 0

if SPEC:
    real_cached = harness.features.cached

    def cached(cache_dir, kind, key, build):
        def held_build():
            global built
            built += 1
            if built == int(COUNT):
                (Path(FOLDER) / "held").write_text(str(os.getpid()))
                deadline = time.monotonic() + 60
                while not (Path(FOLDER) / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return build()

        return real_cached(cache_dir, kind, key, held_build)

    harness.features.cached = cached
