"""Write a verification ``.bin`` file (the face-recognition toolkits' format) from a pair-list dataset.

The pairs of a registered pair-list dataset (``lfw``, ``sllfw``, your ``register_pairs_dataset``
sets) in their file order, two images per pair: each image file's centred square of ``--side``
pixels, resized to ``--out-size`` and encoded as JPEG or PNG. With LFW's ``pairs.txt`` the ten
folds of the file are LFW's own, so ``lfw-bin`` on the result can be checked against ``lfw``:

    python scripts/make_bin.py lfw /tmp/bins/lfw.bin --data-root ../shared/data --side 112
    python run_bench.py --methods pixels --protocol verification --datasets lfw,lfw-bin \\
        --data-root ../shared/data --set lfw-bin.folder=/tmp/bins --set lfw-bin.crop_fraction=1 \\
        --set lfw.crop_fraction=0.448
"""
from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.datasets.bin import write_bin  # noqa: E402
from harness.datasets.images import center_box  # noqa: E402
from harness.datasets.pairs import PairsDataset  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.registry import DATASETS, load_plugins  # noqa: E402


def encode(path: Path, side: int, out_size: int, fmt: str, quality: int) -> bytes:
    """The centred ``side`` px square of an image file, resized to ``out_size``, encoded."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        box = center_box(im.width, im.height, side / min(im.width, im.height))
        im = im.crop(tuple(int(round(v)) for v in box))
        if im.size != (out_size, out_size):
            im = im.resize((out_size, out_size), Image.BILINEAR)
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": quality} if fmt == "jpg" else {}))
        return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a registered pair-list dataset, e.g. lfw")
    parser.add_argument("out", type=Path, help="the .bin file to write")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--side", type=int, default=112, help="side of the centred square cut from each image, in pixels")
    parser.add_argument("--out-size", type=int, default=0, help="stored side (default: --side, no resizing)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--protocol", type=int, default=pickle.HIGHEST_PROTOCOL, help="pickle protocol (2: readable by Python 2)")
    args = parser.parse_args(argv)
    load_plugins()
    try:
        cls = DATASETS.get(args.dataset)
        if not issubclass(cls, PairsDataset):
            raise BenchError(f"{args.dataset} is not a pair-list dataset; choose e.g. lfw or sllfw")
        dataset = cls(cls.Config.resolve("quick"), args.data_root, Path("/nonexistent-cache"))
        folder, pairs = dataset.image_folder(), dataset.pair_list()
        images = []
        for pair in pairs:
            for name in (pair.left, pair.right):
                images.append(encode(folder / name, args.side, args.out_size or args.side, args.format, args.quality))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an image file missing or unreadable
        print(f"error: cannot read {exc.filename or 'an image'} ({exc.__class__.__name__}); check --data-root", file=sys.stderr)
        return 2
    write_bin(args.out, images, [p.same for p in pairs], args.protocol)
    print(f"wrote {args.out}: {len(pairs)} pairs, {len(images)} images, {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
