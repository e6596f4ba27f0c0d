"""Draw contact sheets of the synthetic face world.

The still sheet: rows are people (each with its own light, camera and background), columns the
seven expressions at full intensity; the last row sweeps one person's yaw from -60 to +60 degrees.
The video sheet (``--video``): each row is one smooth clip (``SyntheticFaces.video()``) frame by
frame, each frame marked with its phase (n neutral, o onset, A apex, f offset).

    python docs/synthetic_contact_sheet.py --out docs/synthetic_contact_sheet.png
    python docs/synthetic_contact_sheet.py --video --out docs/synthetic_video_sheet.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.datasets.synthetic import SyntheticConfig, world  # noqa: E402
from harness.datasets.synthetic.dataset import VIDEO_FPS, build_split  # noqa: E402
from harness.datasets.synthetic.render import render  # noqa: E402


def sheet(people: int, seed: int, size: int, scale: int) -> Image.Image:
    """The contact sheet as one RGB image, with column titles."""
    n_expr = len(world.EXPRESSIONS)
    table = world.identity_table(seed, people)
    rng = np.random.default_rng([seed, 99])
    rows = []
    for person in range(people):
        labels = np.arange(n_expr)
        expressions = world.sample_expressions(rng, labels)
        expressions["units"] = world.PROTOTYPES[labels]  # full, noise-free displays
        env = {k: np.repeat(v, n_expr, axis=0) for k, v in world.sample_environments(rng, 1).items()}
        pose = np.repeat(world.sample_poses(rng, 1, 20.0), n_expr, axis=0)
        rows.append(world.compose(table, np.full(n_expr, person), expressions, pose, env))
    sweep_expr = world.sample_expressions(rng, np.zeros(n_expr, dtype=int))
    sweep_env = {k: np.repeat(v, n_expr, axis=0) for k, v in world.sample_environments(rng, 1).items()}
    yaws = np.linspace(-60.0, 60.0, n_expr)
    sweep_pose = np.stack([yaws, np.zeros(n_expr), np.zeros(n_expr)], axis=1)
    rows.append(world.compose(table, np.zeros(n_expr, dtype=int), sweep_expr, sweep_pose, sweep_env))

    scene = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    images = render(scene, size)[0]
    grid = images.view(len(rows), n_expr, 3, size, size).permute(0, 3, 1, 4, 2).reshape(len(rows) * size, n_expr * size, 3)
    faces = Image.fromarray(grid.numpy()).resize((n_expr * size * scale, len(rows) * size * scale), Image.NEAREST)

    title = 14
    canvas = Image.new("RGB", (faces.width, faces.height + title), "white")
    canvas.paste(faces, (0, title))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(world.EXPRESSIONS):
        draw.text((k * size * scale + 4, 1), name, fill="black")
    draw.text((4, title + people * size * scale + 2), "yaw -60 ... +60", fill="white")
    return canvas


def video_sheet(clips: int, seed: int, size: int, scale: int) -> Image.Image:
    """The first ``clips`` smooth clips of a ``clips``-clip world, one clip per row."""
    cfg = SyntheticConfig.resolve("quick").replace(clips=clips, seed=seed, size=size)
    frames = build_split(cfg, "video")
    length = cfg.clip_frames
    grid = frames.images.view(clips, length, 3, size, size).permute(0, 3, 1, 4, 2).reshape(clips * size, length * size, 3)
    faces = Image.fromarray(grid.numpy()).resize((length * size * scale, clips * size * scale), Image.NEAREST)

    title, side = 14, size * scale
    canvas = Image.new("RGB", (faces.width, faces.height + title), "white")
    canvas.paste(faces, (0, title))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 1), f"one clip per row, {length} frames at {VIDEO_FPS:g} fps; n neutral, o onset, A apex, f offset", fill="black")
    phase, expression = frames.extras["phase"].view(clips, length), frames.extras["expression"].view(clips, length)
    for row in range(clips):
        shown = world.EXPRESSIONS[int(expression[row].max())]
        draw.text((4, title + row * side + 2), shown, fill="white")
        for k in range(length):
            draw.text((k * side + side - 10, title + (row + 1) * side - 12), "noAf"[int(phase[row, k])], fill="white")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: docs/synthetic_contact_sheet.png, or _video_sheet.png")
    parser.add_argument("--people", type=int, default=6, help="identity rows above the pose sweep")
    parser.add_argument("--video", action="store_true", help="draw smooth clips instead of the still sheet")
    parser.add_argument("--clips", type=int, default=5, help="clips (rows) of the video sheet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="rendered image side in pixels")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling for viewing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path("docs/synthetic_video_sheet.png" if args.video else "docs/synthetic_contact_sheet.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    image = video_sheet(args.clips, args.seed, args.size, args.scale) if args.video else sheet(args.people, args.seed, args.size, args.scale)
    image.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
