"""Times loading a paper-size LatentFace release (``diffusion_64.pth`` layout) into the project.

Writes random paper-size weights in the released layout (the project's networks through the
inverse key mapping: five stage-1 nets and two denoisers, about 46 M parameters, 183 MB) to a
temporary folder, then prints the median over repeats, side by side, of:

- ``torch.load``: a plain ``torch.load(weights_only=True)`` of the file (the floor any loader pays);
- ``sha256``: hashing the file (identifies the model in caches and result files);
- ``safe read``: reading it with ``harness.checkpoints.load_weights`` and sorting the tensors;
- ``method load``: everything ``latentface:rdm-both`` does to become ready from the file
  (hash, read, build both stages, map every name, strict checks, copy in), caches cleared.

    python docs/checkpoint_loading/bench_checkpoint.py [--repeats 5] [--threads 1] [--folder DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from harness.checkpoints import _READ, _sha256, file_sha256, load_weights  # noqa: E402
from harness.datasets.base import ImageSet  # noqa: E402
from harness.method import MethodContext  # noqa: E402
from methods.latentface.checkpoint import released_denoisers  # noqa: E402
from methods.latentface.method import IdentityModel, LatentFace, LatentFaceConfig  # noqa: E402
from methods.unsup3d.checkpoint import read_checkpoint, released_stage1  # noqa: E402
from methods.unsup3d.method import build_model  # noqa: E402


def write_release(path: Path) -> None:
    cfg = LatentFaceConfig.resolve("paper")
    state = released_stage1(build_model(cfg, seed=0), split=True)
    state.update(released_denoisers(IdentityModel("rdm", ("texture", "shape"), cfg.latent_dim, cfg, {"texture": 1, "shape": 2})))
    torch.save(state, path)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sha256.cache_clear()
        _READ.clear()
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--folder", help="where to write the file (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.folder:
        Path(args.folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        path = Path(tmp) / "diffusion_64.pth"
        write_release(path)
        cfg = LatentFaceConfig.resolve("paper").replace(checkpoint=str(path))
        ctx = MethodContext.standalone(ImageSet(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), Path(tmp) / "cache")

        def method_load() -> None:
            LatentFace(cfg, "rdm-both", ctx).load()

        rows = {
            "torch.load": median_seconds(lambda: torch.load(path, map_location="cpu", weights_only=True), args.repeats),
            "sha256": median_seconds(lambda: file_sha256(path), args.repeats),
            "safe read": median_seconds(lambda: load_weights(path, "bench"), args.repeats),
            "read_checkpoint": median_seconds(lambda: read_checkpoint(path, "bench"), args.repeats),
            "method load": median_seconds(method_load, args.repeats),
        }
        print(f"paper-size LatentFace release, {path.stat().st_size / 1e6:.0f} MB, median of {args.repeats}, {args.threads} thread(s)")
        for name, seconds in rows.items():
            print(f"  {name:16s} {seconds:7.3f} s   x{seconds / rows['torch.load']:.2f} of torch.load")


if __name__ == "__main__":
    main()
