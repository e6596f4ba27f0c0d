"""Decoding image files into the uint8 tensors every dataset hands out.

One helper for all adapters: open, convert to RGB (FER-2013 is grayscale), optionally crop a
box, resize to the storage size. Images come from files or, as ``Encoded`` bytes, from inside a
container file (the ``.bin`` verification sets). Unreadable images fail with a one-line error
naming the image.
"""
from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.errors import BenchError
from harness.progress import progress

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels


@dataclasses.dataclass(frozen=True)
class Encoded:
    """An encoded image (JPEG, PNG, ... bytes) held in memory; ``name`` says where it came from."""

    data: bytes
    name: str


def center_box(width: int, height: int, fraction: float) -> Box:
    """The centred square box covering ``fraction`` of the shorter side (pre-aligned faces)."""
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def load_image(path: Path | Encoded, size: int, box: Optional[Box] = None, center_fraction: Optional[float] = None) -> np.ndarray:
    """One image as uint8 (3, size, size): RGB, cropped to ``box`` (or a centred square), resized."""
    try:
        with Image.open(io.BytesIO(path.data) if isinstance(path, Encoded) else path) as im:
            im = im.convert("RGB")
            if box is None and center_fraction is not None:
                box = center_box(im.width, im.height, center_fraction)
            if box is not None:
                im = im.crop(tuple(int(round(v)) for v in box))
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except FileNotFoundError:
        raise BenchError(f"image file missing: {path}; check the dataset layout under --data-root") from None
    except (UnidentifiedImageError, OSError) as exc:
        if isinstance(path, Encoded):
            raise BenchError(f"cannot decode {path.name} ({exc.__class__.__name__}); the file holding it is damaged") from None
        raise BenchError(f"cannot read image {path} ({exc.__class__.__name__}); replace or remove the file") from None


def load_images(
    paths: Sequence[Path | Encoded],
    size: int,
    boxes: Optional[Sequence[Optional[Box]]] = None,
    center_fraction: Optional[float] = None,
    desc: str = "decode",
) -> torch.Tensor:
    """Decode many images with a thread pool (PIL releases the GIL) into (N, 3, size, size) uint8."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    boxes = boxes if boxes is not None else [None] * len(paths)

    def one(i: int) -> None:
        out[i] = load_image(paths[i], size, boxes[i], center_fraction)

    with ThreadPoolExecutor(max_workers=4) as pool, progress(total=len(paths), desc=desc, unit="img") as bar:
        for _ in pool.map(one, range(len(paths))):
            bar.update(1)
    return torch.from_numpy(out)
