"""SLLFW (Similar-Looking LFW): verification on LFW images with look-alike mismatched pairs.

Layout under ``--data-root``: the LFW images (``lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``,
see ``lfw.py``; same centred crop) and the SLLFW pair list::

    sllfw/pair_SLLFW.txt     two lines per pair, one image path per line, no header:
                             Abel_Pacheco/Abel_Pacheco_0001.jpg
                             Abel_Pacheco/Abel_Pacheco_0004.jpg

A pair is matched when both paths are in the same person's folder. The list holds 6,000 pairs in
10 folds of 600 consecutive pairs; every fold must hold 300 matched and 300 mismatched pairs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.datasets.lfw import LFW, LFWConfig, Pair
from harness.errors import BenchError
from harness.registry import register_dataset

FOLD_PAIRS = 600  # pairs per fold: 300 matched + 300 mismatched


@dataclasses.dataclass(frozen=True)
class SLLFWConfig(LFWConfig):
    """LFW's settings (size, crop); ``pairs_file`` is the pair list inside ``sllfw/``."""

    pairs_file: str = "pair_SLLFW.txt"


def parse_sllfw_pairs(path: Path) -> list[Pair]:
    """Parse an SLLFW pair list and check that each fold of 600 pairs is 300 + 300."""
    lines = [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    for number, line in lines:
        if line.count("/") != 1 or " " in line:
            raise BenchError(f"{path}: line {number} should be one image path '<Name>/<Name>_NNNN.jpg', got {line!r}")
    if not lines or len(lines) % (2 * FOLD_PAIRS):
        raise BenchError(
            f"{path}: {len(lines)} image lines, expected two per pair in folds of {FOLD_PAIRS} pairs "
            f"(12,000 for SLLFW); the file is truncated or not an SLLFW pair list"
        )
    pairs = []
    for k in range(len(lines) // 2):
        left, right = lines[2 * k][1], lines[2 * k + 1][1]
        pairs.append(Pair(left, right, left.split("/")[0] == right.split("/")[0], k // FOLD_PAIRS))
    for fold in range(len(pairs) // FOLD_PAIRS):
        matched = sum(p.same for p in pairs[fold * FOLD_PAIRS : (fold + 1) * FOLD_PAIRS])
        if matched != FOLD_PAIRS // 2:
            first_line = 2 * fold * FOLD_PAIRS + 1
            raise BenchError(
                f"{path}: fold {fold + 1} (from line {first_line}) has {matched} matched and {FOLD_PAIRS - matched} "
                f"mismatched pairs, expected {FOLD_PAIRS // 2} + {FOLD_PAIRS // 2}"
            )
    return pairs


@register_dataset("sllfw")
class SLLFW(LFW):
    """SLLFW verification (paper Table 2): LFW's images and crop, SLLFW's 10 x 600 pairs."""

    tasks = frozenset({"verification"})
    Config = SLLFWConfig

    def pairs_path(self) -> Path:
        return self.require(f"sllfw/{self.cfg.pairs_file}")

    def pair_list(self) -> list[Pair]:
        return parse_sllfw_pairs(self.pairs_path())
