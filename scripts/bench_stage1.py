"""Time one stage-1 training step and the share of it spent outside the networks.

Runs, interleaved on the same batch: the full step (networks, renderer, losses, backward, Adam)
and the networks alone (same forward and backward through the five nets, same Adam step). The
difference is the renderer and the losses. Defaults are the paper's setting: full widths,
batch 16, 64 px, with a perceptual term (a random VGG16 costs what the ImageNet one does).

    python scripts/bench_stage1.py                  # this CPU
    python scripts/bench_stage1.py --device cuda
    python scripts/bench_stage1.py --preset quick --perceptual off
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methods.unsup3d.losses import PerceptualSource  # noqa: E402
from methods.unsup3d.method import Unsup3DConfig, build_model  # noqa: E402
from methods.unsup3d.model import Unsup3D  # noqa: E402


def networks_loss(model: Unsup3D, x: torch.Tensor) -> torch.Tensor:
    """A scalar that depends on every network output, computed by the networks alone."""
    outputs = [*model.texture_net(x), *model.depth_net(x), *model.confidence_net(x)]
    outputs += [net(x) for net in (model.light_net, model.pose_net) if net is not None]
    return sum(o.mean() for o in outputs)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="paper", choices=("smoke", "quick", "paper"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--perceptual", default="random", choices=("random", "off"))
    parser.add_argument("--steps", type=int, default=5, help="timed repetitions of each kind (after one warm-up)")
    args = parser.parse_args()

    device = torch.device(args.device)
    cfg = Unsup3DConfig.resolve(args.preset)
    model = build_model(cfg, seed=0, perceptual=PerceptualSource(args.perceptual)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.rand(args.batch, 3, cfg.input_size, cfg.input_size, device=device) * 2 - 1

    def step(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn().backward()
            optimizer.step()

        return run

    full = step(lambda: model(x).losses["loss"])
    nets = step(lambda: networks_loss(model, x))
    times: dict[str, list[float]] = {"full": [], "nets": []}
    for i in range(args.steps + 1):
        for name, fn in (("full", full), ("nets", nets)):
            t = timed(fn, device)
            if i:  # the first round warms up allocators and kernels
                times[name].append(t)
    t_full, t_nets = statistics.median(times["full"]), statistics.median(times["nets"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"stage-1 step, preset {args.preset} ({cfg.input_size} px, width {cfg.width}, batch {args.batch}, perceptual {args.perceptual}) on {where}")
    print(f"  full step      {t_full:8.3f} s   {1000 * t_full / args.batch:8.1f} ms/image   {args.batch / t_full:7.1f} images/s")
    print(f"  networks only  {t_nets:8.3f} s   {1000 * t_nets / args.batch:8.1f} ms/image")
    print(f"  outside networks (renderer + losses): {max(t_full - t_nets, 0.0) / t_full:6.1%} of the step")


if __name__ == "__main__":
    main()
