"""SLLFW (Similar-Looking LFW): verification on LFW images with look-alike mismatched pairs.

Layout under ``--data-root``: the LFW images (``lfw/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``,
see ``lfw.py``; same crop and ``image_dir``) and the SLLFW pair list::

    sllfw/pair_SLLFW.txt     two lines per pair, one image path per line, no header:
                             Abel_Pacheco/Abel_Pacheco_0001.jpg
                             Abel_Pacheco/Abel_Pacheco_0004.jpg

A pair is matched when both paths are in the same person's folder. The list holds 6,000 pairs in
10 folds of 600 consecutive pairs; every fold must hold 300 matched and 300 mismatched pairs
(the ``sllfw`` format of ``harness/datasets/pairs.py``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.datasets.lfw import LFW, LFWConfig
from harness.datasets.pairs import FORMATS, Pair
from harness.registry import register_dataset


@dataclasses.dataclass(frozen=True)
class SLLFWConfig(LFWConfig):
    """LFW's settings (size, crop, image folder); ``pairs_file`` is the pair list inside ``sllfw/``."""

    pairs_file: str = "pair_SLLFW.txt"


@register_dataset("sllfw")
class SLLFW(LFW):
    """SLLFW verification (paper Table 2): LFW's images and crop, SLLFW's 10 x 600 pairs."""

    tasks = frozenset({"verification"})
    Config = SLLFWConfig

    def pairs_path(self) -> Path:
        return self.require(f"sllfw/{self.cfg.pairs_file}")

    def pair_list(self) -> list[Pair]:
        return FORMATS["sllfw"](self.pairs_path())  # each fold of 600 pairs checked to be 300 + 300
