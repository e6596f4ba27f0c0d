"""Test plugin (``--plugins tests.kill_points``): SIGKILL the process at a chosen point of a stage.

``BENCH_KILL=STAGE[:WHICH]=K`` kills the process right after the K-th event of that stage:

- ``data``: a synthetic split's tensor file is saved (its JSON description is not yet written);
- ``train:DESC``: the K-th step of the training loop whose progress label starts with DESC
  (``unsup3d stage 1``, ``simclr``, ``latentface stage 2``), after its optimiser step;
- ``features``: the K-th batch of feature extraction;
- ``protocol``: the K-th optimiser step of a protocol's probe or classifier;
- ``write``: the K-th result file, half written into its temporary file.

The dispatch of a real sweep is unchanged; only these module attributes are wrapped.
"""
from __future__ import annotations

import os
import signal

import torch

import harness.features
import harness.io
import harness.runner
import harness.train
from harness.registry import PROTOCOLS, load_plugins

SPEC = os.environ.get("BENCH_KILL", "")
STAGE, _, COUNT = SPEC.rpartition("=")
KIND, _, WHICH = STAGE.partition(":")
TARGET = int(COUNT) if COUNT else 0
seen = 0


def tick(kind: str, which: str = "") -> None:
    """Count one event; die (SIGKILL, no cleanup of any kind) on the chosen one."""
    global seen
    if kind != KIND or not which.startswith(WHICH):
        return
    seen += 1
    if seen == TARGET:
        os.kill(os.getpid(), signal.SIGKILL)


def counting_progress(real, kind: str):
    def progress(**kwargs):
        bar = real(**kwargs)
        update = bar.update

        def counted(n: int = 1):
            result = update(n)
            tick(kind, kwargs.get("desc", ""))
            return result

        bar.update = counted
        return bar

    return progress


if KIND:
    real_torch_save = harness.io.torch_save

    def torch_save(path, obj):
        real_torch_save(path, obj)
        if "synthetic" in str(path):
            tick("data")

    harness.io.torch_save = torch_save
    harness.train.progress = counting_progress(harness.train.progress, "train")
    harness.features.progress = counting_progress(harness.features.progress, "features")

    load_plugins()
    in_protocol = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        if in_protocol:
            tick("protocol")
        return result

    torch.optim.Adam.step = step
    for name in PROTOCOLS.names():
        cls = PROTOCOLS.get(name)

        def evaluate(self, *args, _real=cls.evaluate, **kwargs):
            in_protocol.append(1)
            try:
                return _real(self, *args, **kwargs)
            finally:
                in_protocol.pop()

        cls.evaluate = evaluate

    real_write_json = harness.runner.write_json

    def write_json(path, payload):
        global seen
        if KIND == "write" and seen + 1 == TARGET:
            with harness.io.atomic_path(path) as tmp:
                tmp.write_text(str(payload)[:100])
                os.kill(os.getpid(), signal.SIGKILL)
        tick("write")
        real_write_json(path, payload)

    harness.runner.write_json = write_json
