"""Pair-list verification datasets: an image folder and a pair file, registered by name.

Three pair-file formats, the ones the LatentFace release's ``identity_test.py`` reads:

- ``lfw``: LFW View 2 ``pairs.txt``: a header ``<folds> <n>``, then per fold n matched lines
  ``name i j`` and n mismatched lines ``name1 i name2 j``; the image is ``name/name_%04d.<ext>``,
  the extension that of the files present (``.jpg`` first), or the ``extension`` setting.
- ``sllfw``: SLLFW ``pair_SLLFW.txt``: no header, two lines per pair, each an image path
  ``Name/Name_NNNN.jpg``; a pair is matched when both paths are in one person's folder.
- ``cplfw``: CPLFW / CALFW ``pairs_*.txt``: no header, two lines per pair ``file label``; the
  two labels agree, and a pair is matched when its label is not ``0``.

In the two-line formats the folds are consecutive blocks of 600 pairs, and each must hold 300
matched and 300 mismatched pairs (checked on load). Any such list becomes a dataset with one
call, e.g. in a module passed to ``--plugins``::

    register_pairs_dataset("cplfw-folder", images="cplfw/aligned", pairs="cplfw/pairs_CPLFW.txt", format="cplfw")

(``cplfw`` and ``calfw`` themselves name the ``.bin`` files, ``harness/datasets/bin.py``.) Paths
are relative to ``--data-root`` and can be changed per run (``--set cplfw-folder.images=...``).
The images are taken whole and resized (``crop_fraction=1``), as the release does with its
pre-cropped folders; a smaller fraction crops a centred square first.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Optional

import torch

from harness.config import Config, at_least, between, dotted
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.datasets.folder import IMAGE_SUFFIXES
from harness.datasets.images import load_images
from harness.errors import BenchError
from harness.io import cached
from harness.registry import register_dataset

FOLD_PAIRS = 600  # pairs per fold of the two-line formats: 300 matched + 300 mismatched


@dataclasses.dataclass(frozen=True)
class Pair:
    """One line of a pair list: two image paths relative to the image folder, same person?"""

    left: str
    right: str
    same: bool
    fold: int


def image_name(person: str, number: int) -> str:
    return f"{person}/{person}_{number:04d}.jpg"


def parse_lfw_pairs(path: Path) -> list[Pair]:
    """Parse an LFW ``pairs.txt``: header ``"<folds> <n>"``, then per fold n matched lines
    ``name i j`` followed by n mismatched lines ``name1 i name2 j``."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 2 or not all(t.isdigit() for t in lines[0]):
        raise BenchError(f"{path}: first line must be '<folds> <pairs per half-fold>' like '10 300'; the file is malformed")
    n_folds, n = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != 2 * n_folds * n:
        raise BenchError(
            f"{path}: header says {n_folds} folds x {2 * n} pairs = {2 * n_folds * n} lines, found {len(body)}; "
            "the file is truncated or corrupt, download it again"
        )
    pairs = []
    for k, tokens in enumerate(body):
        fold, same = k // (2 * n), (k % (2 * n)) < n
        try:
            if same and len(tokens) == 3:
                pairs.append(Pair(image_name(tokens[0], int(tokens[1])), image_name(tokens[0], int(tokens[2])), True, fold))
            elif not same and len(tokens) == 4:
                pairs.append(Pair(image_name(tokens[0], int(tokens[1])), image_name(tokens[2], int(tokens[3])), False, fold))
            else:
                raise ValueError
        except ValueError:
            kind = "'name i j'" if same else "'name1 i name2 j'"
            raise BenchError(f"{path}: line {k + 2} should be {kind}, got {' '.join(tokens)!r}") from None
    return pairs


def _path_line(path: Path, number: int, line: str) -> tuple[str, str]:
    """An SLLFW line: (image path, its person folder)."""
    if line.count("/") != 1 or " " in line:
        raise BenchError(f"{path}: line {number} should be one image path '<Name>/<Name>_NNNN.jpg', got {line!r}")
    return line, line.split("/")[0]


def _labelled_line(path: Path, number: int, line: str) -> tuple[str, str]:
    """A CPLFW/CALFW line: (image file, its pair label)."""
    tokens = line.split()
    if len(tokens) != 2:
        raise BenchError(f"{path}: line {number} should be '<image file> <label>', got {line!r}")
    return tokens[0], tokens[1]


def parse_two_line_pairs(path: Path, parse_line: Callable[[Path, int, str], tuple[str, str]], labelled: bool) -> list[Pair]:
    """Two lines per pair, folds of ``FOLD_PAIRS`` consecutive pairs, each 300 + 300.

    Args:
        parse_line: one line -> (image name, tag); the pair is matched when the tags agree
            (``labelled=False``: person folders) or when the shared label is not ``0``
            (``labelled=True``: the two labels must agree).
    """
    lines = [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    parsed = [(number, *parse_line(path, number, line)) for number, line in lines]
    if not parsed or len(parsed) % (2 * FOLD_PAIRS):
        raise BenchError(
            f"{path}: {len(parsed)} image lines, expected two per pair in folds of {FOLD_PAIRS} pairs "
            f"(12,000 for 10 folds); the file is truncated or not a pair list of this format"
        )
    pairs = []
    for k in range(len(parsed) // 2):
        (number, left, tag_l), (_, right, tag_r) = parsed[2 * k], parsed[2 * k + 1]
        if labelled and tag_l != tag_r:
            raise BenchError(f"{path}: lines {number} and {number + 1} form a pair but carry labels {tag_l} and {tag_r}")
        same = tag_l != "0" if labelled else tag_l == tag_r
        pairs.append(Pair(left, right, same, k // FOLD_PAIRS))
    for fold in range(len(pairs) // FOLD_PAIRS):
        matched = sum(p.same for p in pairs[fold * FOLD_PAIRS : (fold + 1) * FOLD_PAIRS])
        if matched != FOLD_PAIRS // 2:
            first_line = parsed[2 * fold * FOLD_PAIRS][0]
            raise BenchError(
                f"{path}: fold {fold + 1} (from line {first_line}) has {matched} matched and {FOLD_PAIRS - matched} "
                f"mismatched pairs, expected {FOLD_PAIRS // 2} + {FOLD_PAIRS // 2}"
            )
    return pairs


#: pair-file format -> parser
FORMATS: dict[str, Callable[[Path], list[Pair]]] = {
    "lfw": parse_lfw_pairs,
    "sllfw": lambda path: parse_two_line_pairs(path, _path_line, labelled=False),
    "cplfw": lambda path: parse_two_line_pairs(path, _labelled_line, labelled=True),
}


def pairs_to_tensors(pairs: list[Pair]) -> tuple[list[str], PairList]:
    """Unique image names in order of first use, and the pairs as indices into them."""
    index: dict[str, int] = {}
    for p in pairs:
        index.setdefault(p.left, len(index))
        index.setdefault(p.right, len(index))
    pair_list = PairList(
        left=torch.tensor([index[p.left] for p in pairs]),
        right=torch.tensor([index[p.right] for p in pairs]),
        same=torch.tensor([p.same for p in pairs]),
        fold=torch.tensor([p.fold for p in pairs]),
    )
    return list(index), pair_list


def person_of(name: str) -> str:
    """The person an image name belongs to: its folder (``Ann/Ann_0001.jpg``), or the file
    name without its trailing number (``Ann_0001.jpg``, the CPLFW/CALFW naming)."""
    if "/" in name:
        return name.split("/")[0]
    return re.sub(r"_\d+$", "", Path(name).stem)


@dataclasses.dataclass(frozen=True)
class PairsConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    crop_fraction: side of a centred square crop as a fraction of the shorter side; 1: no
        crop, the whole image is resized (the release's ``Resize(64)`` of pre-cropped images).
    images: the image folder, relative to the data root.
    pairs: the pair file, relative to the data root.
    format: the pair file's format: ``lfw``, ``sllfw`` or ``cplfw`` (see the module docstring).
    extension: of the image files a ``lfw``-format list names (e.g. ``png``); empty: that of
        the files present.
    """

    size: int = 64
    crop_fraction: float = 1.0
    images: str = ""
    pairs: str = ""
    format: str = "lfw"
    extension: str = ""

    LATE_FIELDS = ("extension",)

    RULES = {"size": at_least(8), "crop_fraction": between(0, 1, low_open=True)}

    def check(self, section: str) -> None:
        if self.format not in FORMATS:
            raise BenchError(f"{dotted(section)}format={self.format}: choose one of {', '.join(FORMATS)}")


class PairsDataset(FaceDataset):
    """Verification on a pair list over an image folder (what ``register_pairs_dataset`` makes)."""

    tasks = frozenset({"verification"})
    Config = PairsConfig

    # --- where the files are (subclasses with their own layouts override these) ---------------
    def image_folder(self) -> Path:
        return self.require(self.cfg.images)

    def pairs_path(self) -> Path:
        return self.require(self.cfg.pairs)

    def pair_list(self) -> list[Pair]:
        pairs = FORMATS[self.cfg.format](self.pairs_path())
        if self.cfg.format != "lfw":  # the other formats name whole files
            return pairs
        suffix = self.lfw_suffix(pairs[0].left)
        if suffix == ".jpg":
            return pairs
        swap = lambda name: name[: -len(".jpg")] + suffix  # noqa: E731
        return [dataclasses.replace(p, left=swap(p.left), right=swap(p.right)) for p in pairs]

    def lfw_suffix(self, first: str) -> str:
        """The image files' extension for an ``lfw``-format list, from its ``first`` image:
        the ``extension`` setting, or whichever image extension that file has on disk."""
        folder, stem = self.image_folder(), first[: -len(".jpg")]
        if self.cfg.extension:
            suffix = "." + self.cfg.extension.lstrip(".")
            if not (folder / (stem + suffix)).is_file():
                raise BenchError(f"{self.name}.extension={self.cfg.extension}: {folder / (stem + suffix)} does not exist; fix the setting or clear it")
            return suffix
        if (folder / first).is_file():
            return ".jpg"
        found = sorted(p.suffix for p in (folder / stem).parent.glob(Path(stem).name + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise BenchError(
                f"{self.name}: the pair list names {stem}, but {folder} has no such image "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); check {self.name}.images, or set {self.name}.extension"
            )
        return found[0]

    # --- loading -------------------------------------------------------------------------------
    def load(self, names: list[str], what: str) -> torch.Tensor:
        """Decode images of the image folder (cached on disk by folder, names, size and crop, so
        datasets that share a folder share the decoded images)."""
        folder = self.image_folder()
        crop = self.cfg.crop_fraction
        key = {"folder": str(folder.relative_to(self.data_root)), "names": names, "size": self.cfg.size, "crop": crop}
        return cached(
            self.cache_dir,
            "images",
            key,
            lambda: load_images(
                [folder / n for n in names], self.cfg.size, center_fraction=crop if crop < 1 else None, desc=f"{self.name} {what}"
            ),
        )

    def verification(self) -> tuple[ImageSet, PairList]:
        names, pairs = pairs_to_tensors(self.pair_list())
        people = [person_of(n) for n in names]
        person_id = {p: i for i, p in enumerate(sorted(set(people)))}
        identities = torch.tensor([person_id[p] for p in people])
        return ImageSet(self.load(names, "pairs"), identities=identities, names=tuple(names)), pairs

    def fingerprint(self, task: Optional[str] = None) -> dict:
        if "verification" not in self.tasks:  # e.g. lfw-clips: the pair list is never read
            return super().fingerprint(task)
        return {**super().fingerprint(task), "pairs_bytes": self.pairs_path().stat().st_size}


def register_pairs_dataset(
    name: str, images: str, pairs: str, format: str = "lfw", crop_fraction: float = 1.0, extension: str = ""
) -> type[PairsDataset]:
    """Register a verification dataset ``name`` from an image folder and a pair file.

    Args:
        name: the dataset's name (``--datasets NAME``, ``--set NAME.size=...``).
        images: the image folder, relative to the data root; pair files name images inside it.
        pairs: the pair file, relative to the data root.
        format: ``lfw``, ``sllfw`` or ``cplfw`` (see the module docstring).
        crop_fraction: 1 for pre-cropped faces (resize only), or a centred square to crop first.
        extension: the image files' extension for the ``lfw`` format (default: found on disk).
    """
    if format not in FORMATS:
        raise ValueError(f"register_pairs_dataset({name!r}): format must be one of {', '.join(FORMATS)}, got {format!r}")
    defaults = [("images", str, images), ("pairs", str, pairs), ("format", str, format), ("crop_fraction", float, crop_fraction),
                ("extension", str, extension)]
    config = dataclasses.make_dataclass(
        f"PairsConfig_{name}", [(field, kind, dataclasses.field(default=value)) for field, kind, value in defaults],
        bases=(PairsConfig,), frozen=True,
    )
    doc = f"{name}: verification on {pairs} ({format} format) over the images in {images}."
    return register_dataset(name)(type(f"Pairs_{name}", (PairsDataset,), {"Config": config, "__doc__": doc}))
