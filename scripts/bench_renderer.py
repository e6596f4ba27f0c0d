"""Times the depth-grid renderer (methods/unsup3d/renderer.py) at the training configuration.

Prints the median over repeats of: the rasterizer (``render_depth``) forward and backward, and
the full ``render`` (depth rasterization + image warp) forward + backward, for a batch of
face-like depth maps under random poses in the training range (rotations up to 60 degrees,
x/y translations up to 0.1). For comparison, PyTorch3D's CPU ``rasterize_meshes`` on this mesh
(batch 16, 64 px) takes about 2.2 s forward and 1.3 s backward (implementation notes, section 1).

    python scripts/bench_renderer.py [--device cuda] [--batch 16] [--size 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import torch

from methods.unsup3d.renderer import Renderer


def face_like_depth(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth bumps in [0.9, 1.1] with random centres, plus the 1.04 border columns of Unsup3D."""
    axis = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    centre = (torch.rand(batch, 2, 1, 1, generator=generator) - 0.5) * 0.4
    bump = torch.exp(-3 * ((cols - centre[:, 0]) ** 2 + (rows - centre[:, 1]) ** 2))
    depth = 1.1 - 0.2 * bump
    depth[:, :, :2] = depth[:, :, -2:] = 1.04
    return depth


def random_pose(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Tanh-range outputs mapped as the model does: rotations * 60 deg, tx, ty * 0.1, tz * 0."""
    raw = torch.rand(batch, 6, generator=generator) * 2 - 1
    return raw * torch.tensor([math.radians(60)] * 3 + [0.1, 0.1, 0.0])


def median_ms(
    step: Callable[[Any], object],
    device: torch.device,
    repeats: int,
    setup: Callable[[], Any] = lambda: None,
) -> tuple[float, float]:
    """Median wall and process-CPU time of ``step(setup())`` in ms (``setup`` untimed).

    CPU time is reported because the benchmark machine may be shared: it counts this process's
    work on all its threads, whereas wall time also counts waiting for other processes.
    """
    step(setup())  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        state = setup()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backend", default="torch", choices=["torch", "pytorch3d", "auto"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    renderer = Renderer(image_size=args.size, backend=args.backend)
    depth = face_like_depth(args.batch, args.size, generator).to(device)
    pose = random_pose(args.batch, generator).to(device)
    image = torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1
    image = image.to(device)

    def leaves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(x.clone().requires_grad_() for x in (depth, pose, image))

    def rasterize(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        d, p, _ = inputs
        return renderer.render_depth(d, p)

    def render_and_backward(inputs: tuple[torch.Tensor, ...]) -> None:
        d, p, t = inputs
        rendered, mask, _ = renderer.render(d, t, p)
        (rendered * mask).sum().backward()

    timings = {
        "render_depth forward": median_ms(rasterize, device, args.repeats, setup=leaves),
        "render_depth backward": median_ms(
            lambda view_depth: view_depth.sum().backward(),
            device,
            args.repeats,
            setup=lambda: rasterize(leaves()),
        ),
        "render forward+backward": median_ms(
            render_and_backward, device, args.repeats, setup=leaves
        ),
    }
    print(
        f"device={device} backend={args.backend} batch={args.batch} size={args.size} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} (medians)"
    )
    for name, (wall_ms, cpu_ms) in timings.items():
        print(f"{name:<25} wall {wall_ms:7.1f} ms   process CPU {cpu_ms:7.1f} ms")


if __name__ == "__main__":
    main()
