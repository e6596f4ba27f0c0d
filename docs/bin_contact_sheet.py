"""Draw what a method sees of a verification ``.bin`` file at each crop setting.

Each row is one image of the chosen pairs: the stored image (112 px), then the 64 px images the
dataset hands to methods at ``crop_fraction`` 1 and at the default 0.9 (shown at 112 px).

    python docs/bin_contact_sheet.py /tmp/bins/lfw.bin --out docs/verification_suite_crops.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.datasets.bin import BinConfig, read_bin  # noqa: E402
from harness.datasets.images import Encoded, load_image, load_images  # noqa: E402

SHOWN = 112  # every panel is drawn at the stored side


def sheet(path: Path, pairs: list[int], crops: tuple[float, ...]) -> Image.Image:
    """Rows: the images of ``pairs`` (indices); columns: stored, then each crop's 64 px input."""
    encoded, same = read_bin(path)
    images = [i for p in pairs for i in (2 * p, 2 * p + 1)]
    sources = [Encoded(encoded[i], f"image {i} of {path}") for i in images]
    panels = [torch.from_numpy(np.stack([load_image(s, SHOWN) for s in sources]))]
    for crop in crops:
        small = load_images(sources, BinConfig.size, center_fraction=crop if crop < 1 else None, desc=f"crop {crop:g}")
        panels.append(torch.nn.functional.interpolate(small.float(), size=SHOWN, mode="nearest").to(torch.uint8))
    grid = torch.stack(panels, 1)  # (images, columns, 3, S, S)
    rows, columns = grid.shape[:2]
    pixels = grid.permute(0, 3, 1, 4, 2).reshape(rows * SHOWN, columns * SHOWN, 3).numpy()
    title = 14
    canvas = Image.new("RGB", (columns * SHOWN + 90, rows * SHOWN + title), "white")
    canvas.paste(Image.fromarray(pixels), (0, title))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(["stored 112 px", *(f"crop {c:g} -> 64 px" + (" (default)" if c == BinConfig.crop_fraction else "") for c in crops)]):
        draw.text((k * SHOWN + 3, 1), name, fill="black")
    for i in range(rows):
        pair = pairs[i // 2]
        label = f"pair {pair}" + (f": {'same' if same[pair] else 'different'}" if i % 2 == 0 else "")
        draw.text((columns * SHOWN + 4, title + i * SHOWN + SHOWN // 2 - 6), label, fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bin", type=Path, help="a verification .bin file")
    parser.add_argument("--out", type=Path, default=Path("docs/verification_suite_crops.png"))
    parser.add_argument("--pairs", default="0,1,300", help="comma-separated pair indices (LFW: 0-299 matched, 300-599 not)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet(args.bin, [int(p) for p in args.pairs.split(",")], (1.0, BinConfig.crop_fraction)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
