"""How fast is the synthetic face generator?

Prints the renderer's throughput on one thread, then times building every split of a preset
from an empty cache (in parallel processes, as the benchmark does):

    python scripts/bench_synthetic.py                 # quick preset
    python scripts/bench_synthetic.py --preset smoke --images 256
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.datasets.synthetic import world  # noqa: E402
from harness.datasets.synthetic.dataset import RENDER_BATCH, SyntheticConfig, SyntheticFaces  # noqa: E402
from harness.datasets.synthetic.render import render  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", help="config preset whose splits are timed (default: quick)")
    parser.add_argument("--images", type=int, default=256, help="images for the single-thread throughput test")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    n = args.images
    people = world.identity_table(0, 100)
    scene = world.compose(
        people, rng.integers(0, 100, n), world.sample_expressions(rng, rng.integers(0, 7, n)),
        world.sample_poses(rng, n, 60.0), world.sample_environments(rng, n),
    )
    torch.set_num_threads(1)
    start = time.perf_counter()
    for first in range(0, n, RENDER_BATCH):
        render(world.take(scene, slice(first, first + RENDER_BATCH)), args.size)
    seconds = time.perf_counter() - start
    print(f"renderer, one thread: {n / seconds:.0f} images/s ({n} images of {args.size}x{args.size} in {seconds:.1f} s)")

    torch.set_num_threads(threads)
    cfg = SyntheticConfig.resolve(args.preset)
    with tempfile.TemporaryDirectory() as cache:
        dataset = SyntheticFaces(cfg, None, Path(cache))
        total, count = 0.0, 0
        for name, load in [
            ("pretrain", dataset.pretrain),
            ("clips", lambda: dataset.clips().frames),
            ("fer train", lambda: dataset.fer_split("train")),
            ("fer test", lambda: dataset.fer_split("test")),
            ("verification", lambda: dataset.verification()[0]),
        ]:
            start = time.perf_counter()
            images = load()
            seconds = time.perf_counter() - start
            total, count = total + seconds, count + len(images)
            print(f"{args.preset} {name:<13} {len(images):>6} images in {seconds:6.1f} s")
        print(f"{args.preset} preset, all splits: {count} images in {total:.1f} s ({count / total:.0f} images/s, cache written)")


if __name__ == "__main__":
    main()
