"""Training throughput of the SimCLR and MAE baselines, side by side.

Times the exact training step each method uses (resize, augment or mask, forward, backward,
AdamW) on 64x64 uint8 batches, and projects the time of a full training run. With ``--full`` it
also runs the real training (Artifact + ``harness.train.fit``, in a fresh temporary cache),
printing the wall and CPU time and the loss of each epoch. The images are smooth random colour
fields, or with ``--data NAME`` the pretraining split of a registered dataset.

Examples:
    python scripts/bench_baselines.py                      # quick preset on the CPU
    python scripts/bench_baselines.py --full --data synthetic --cache-dir ~/.cache/bench
    python scripts/bench_baselines.py --threads 1          # on a CPU shared with other jobs
    python scripts/bench_baselines.py --device cuda --preset paper --batch-size 256
    python scripts/bench_baselines.py --paper-steps 2      # plus a few paper-size steps
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from harness.datasets.base import ImageSet  # noqa: E402
from harness.method import MethodContext  # noqa: E402
from methods.mae import MAE  # noqa: E402
from methods.selfsup import SelfSupervisedBaseline  # noqa: E402
from methods.simclr import SimCLR  # noqa: E402

BASELINES: list[type[SelfSupervisedBaseline]] = [SimCLR, MAE]


def smooth_images(n: int, size: int) -> torch.Tensor:
    """Random low-frequency colour images (uint8): cheap data with structure to learn."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (smooth * 255).to(torch.uint8)


def load_images(args: argparse.Namespace) -> torch.Tensor:
    """The first ``args.images`` pretraining images of the dataset ``args.data``."""
    import harness.datasets  # noqa: F401  (registers the datasets)
    from harness.registry import DATASETS

    cls = DATASETS.get(args.data)
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp()).expanduser()
    dataset = cls(cls.Config.resolve(args.preset), Path(args.data_root) if args.data_root else None, cache_dir)
    return dataset.pretrain().images[: args.images]


def make_ctx(device: torch.device, images: torch.Tensor, cache_dir: Path) -> MethodContext:
    return MethodContext.standalone(ImageSet(images), cache_dir, device=device, name="bench")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(method: SelfSupervisedBaseline, batch: torch.Tensor, steps: int) -> dict[str, float]:
    """Images/s of ``steps`` training steps after one warm-up step."""
    net, optimizer, _, step = method.training_setup()
    batch = batch.to(method.ctx.device)
    wall = cpu = 0.0
    for i in range(steps + 1):
        sync(method.ctx.device)
        tic, cpu_tic = time.perf_counter(), time.process_time()
        loss = step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(method.ctx.device)
        if i:  # the first step pays for allocation and kernel selection
            wall += time.perf_counter() - tic
            cpu += time.process_time() - cpu_tic
    n = steps * batch.shape[0]
    return {"img_s": n / wall, "cpu_ms_per_img": 1e3 * cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--batch-size", type=int, default=0, help="override the preset's batch size")
    parser.add_argument("--images", type=int, default=4000, help="training-set size for the projected / full run")
    parser.add_argument("--data", default="", help="registered dataset whose pretraining split to use")
    parser.add_argument("--data-root", default=None, help="dataset root, for datasets that need one")
    parser.add_argument("--cache-dir", default=None, help="where the dataset caches its decoded images")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--full", action="store_true", help="also run the full training of each method")
    parser.add_argument("--paper-steps", type=int, default=0, help="also time this many paper-size steps")
    parser.add_argument("--paper-batch", type=int, default=8, help="batch size of the paper-size steps")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images(args) if args.data else smooth_images(args.images, 64)  # 64: the datasets' storage size
    print(f"device {device}, torch threads {torch.get_num_threads()}, preset {args.preset}, {len(images)} images")
    header = f"{'method':8} {'preset':6} {'batch':>5} {'img/s':>8} {'cpu ms/img':>10} {'projected train':>16}"
    print(header)
    runs = [(args.preset, args.batch_size, args.steps)]
    if args.paper_steps:
        runs.append(("paper", args.paper_batch, args.paper_steps))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_ctx(device, images, Path(tmp))
        for preset, batch_size, steps in runs:
            for cls in BASELINES:
                overrides = {"batch_size": batch_size} if batch_size else {}
                method = cls(cls.Config.resolve(preset, overrides), "default", ctx)
                cfg = method.cfg
                result = time_steps(method, images[: cfg.batch_size], steps)
                projected = cfg.epochs * len(images) / result["img_s"]
                print(
                    f"{cls.name:8} {preset:6} {cfg.batch_size:5d} {result['img_s']:8.1f} "
                    f"{result['cpu_ms_per_img']:10.1f} {projected:14.0f} s  "
                    f"({cfg.epochs} epochs x {len(images)} images)",
                    flush=True,
                )
        if args.full:
            print(f"\nfull {args.preset} training on {len(images)} images:")
            for cls in BASELINES:
                method = cls(cls.Config.resolve(args.preset), "default", ctx)
                tic, cpu_tic = time.perf_counter(), time.process_time()
                method.prepare()
                wall, cpu = time.perf_counter() - tic, time.process_time() - cpu_tic
                (artifact,) = method.artifacts()
                summary = json.loads((artifact.path(ctx.cache_dir) / "done.json").read_text())
                losses = ", ".join(f"{epoch['loss']:.3f}" for epoch in summary["history"])
                print(
                    f"{cls.name:8} wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
                    f"train img/s {summary['images_per_second']:.1f}  epoch losses [{losses}]",
                    flush=True,
                )


if __name__ == "__main__":
    main()
