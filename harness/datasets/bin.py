"""The standard face verification sets as the ``.bin`` files face-recognition toolkits distribute.

Each file (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...) is a pickle of two things: a list
of encoded images (JPEG or PNG bytes of 112x112 ArcFace-aligned faces, two per pair, pairs in
order) and a list of same/different flags, one per pair; the ten folds are the pairs in file
order cut into ten equal parts. A pickle can name any Python callable to run while it loads, so
these files are read by ``SafeUnpickler``, which builds only lists, tuples, bytes, booleans and
ints and refuses every global (the one exception: ``_codecs.encode`` to latin-1, the way Python 3
writes bytes into a protocol-2 pickle, through a stand-in that only converts text to bytes).
Python 2 pickles are read with ``encoding="bytes"``.

Each set is a registered dataset found at ``<data-root>/<folder>/<file>`` (``folder`` empty by
default; ``--set verification-suite.folder=DIR`` moves all of them), decoded by the harness's
image decoder and cached under the file's SHA-256. ``register_bin_dataset`` adds any other file of
the format; ``--datasets verification-suite`` runs every set that is present.

The crop: ArcFace's 112x112 alignment puts the eyes 35.2 px apart (31% of the side, at height
51.6) and the mouth at height 92.3. The paper's 64 px faces (CelebA's fixed crop, see
``celeba.py``) show the eyes about 35% of the side apart, so a centred square of 0.9 of the side
(``crop_fraction``, the default) frames the face as the methods were trained to see it; 1 keeps
the whole file image (what face-recognition models see).
"""
from __future__ import annotations

import dataclasses
import functools
import pickle
from pathlib import Path
from typing import Optional, Sequence

import torch

from harness.config import Config, at_least, between
from harness.datasets.base import FaceDataset, ImageSet, PairList
from harness.datasets.images import Encoded, load_images
from harness.errors import BenchError
from harness.io import atomic_path, cached, file_digest
from harness.registry import register_dataset, register_suite

FOLDS = 10
SUITE = "verification-suite"
#: The distributed sets: dataset name -> (file name, what it measures).
BIN_SETS: dict[str, tuple[str, str]] = {
    "lfw-bin": ("lfw.bin", "LFW: unconstrained news photos, 6,000 pairs"),
    "cfp-fp": ("cfp_fp.bin", "CFP frontal-profile: a frontal face against a profile, 7,000 pairs (pose)"),
    "cfp-ff": ("cfp_ff.bin", "CFP frontal-frontal: the same people, both faces frontal, 7,000 pairs"),
    "agedb-30": ("agedb_30.bin", "AgeDB-30: matched pairs 30 years apart in age, 6,000 pairs (age)"),
    "calfw": ("calfw.bin", "Cross-Age LFW: LFW people across ages, look-alike mismatches, 6,000 pairs (age)"),
    "cplfw": ("cplfw.bin", "Cross-Pose LFW: LFW people across poses, 6,000 pairs (cross-pose)"),
    "vgg2-fp": ("vgg2_fp.bin", "VGGFace2 frontal-profile: 5,000 pairs (pose)"),
}


# --- reading and writing the format ----------------------------------------------------------------
class Refused(pickle.UnpicklingError):
    """A pickle named a global: something a .bin file never holds."""


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode`` in protocol-2 pickles written by Python 3 (bytes are stored
    as latin-1 text): converts text to bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not how a .bin file stores bytes")
    return text.encode("latin-1")


class SafeUnpickler(pickle.Unpickler):
    """Builds plain data only: every global but the latin-1 stand-in is refused, so a crafted
    file can run nothing."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise Refused(f"it names the global {module}.{name}")


def read_bin(path: Path) -> tuple[list[bytes], list[bool]]:
    """The encoded images and the same/different flags of a ``.bin`` file, checked: two images
    per pair, pairs a multiple of ``FOLDS``, each fold with matched and mismatched pairs."""
    try:
        with open(path, "rb") as handle:
            content = SafeUnpickler(handle, encoding="bytes").load()
    except Refused as exc:
        raise BenchError(f"refusing {path}: {exc}, and a .bin file holds only images and flags; nothing in it was run") from None
    except EOFError:
        raise BenchError(f"{path} is truncated (the pickle ends early); download it again") from None
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())[:120] or exc.__class__.__name__
        truncated = "truncated" in detail
        raise BenchError(
            f"{path} is {'truncated' if truncated else 'not a verification .bin file (a pickle of images and flags)'}: {detail}"
        ) from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise BenchError(f"{path} holds a {type(content).__name__}, not the (images, flags) pair of a verification .bin file")
    images, flags = content
    if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise BenchError(f"{path}: the first item must be a list of encoded images (bytes); it is not")
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, (bool, int)) and f in (0, 1) for f in flags):
        raise BenchError(f"{path}: the second item must be a list of same/different flags (booleans); it is not")
    n = len(flags)
    if len(images) != 2 * n:
        raise BenchError(f"{path}: {len(images)} images for {n} pairs, expected {2 * n}; the file is damaged or of another format")
    if n == 0 or n % FOLDS:
        raise BenchError(f"{path}: {n} pairs do not split into {FOLDS} equal folds; the file is damaged or of another format")
    per_fold = n // FOLDS
    for fold in range(FOLDS):
        matched = sum(bool(f) for f in flags[fold * per_fold : (fold + 1) * per_fold])
        if matched in (0, per_fold):
            raise BenchError(f"{path}: fold {fold + 1} holds only {'matched' if matched else 'mismatched'} pairs; no threshold can be fit")
    return [bytes(b) for b in images], [bool(f) for f in flags]


def write_bin(path: Path, images: Sequence[bytes], same: Sequence[bool], protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    """Write a ``.bin`` file (encoded images, two per pair, and one flag per pair), atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        pickle.dump((list(images), [bool(s) for s in same]), handle, protocol=protocol)


# --- the datasets ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BinConfig(Config):
    """Attributes:
    size: stored image side in pixels (methods resize to their own input size).
    crop_fraction: centred square crop of the 112 px aligned face, as a fraction of its side
        (0.9: the paper's face framing; 1: the whole image; see the module docstring).
    folder: the folder holding the file, relative to the data root (empty: the data root).
    file: the file's name.
    """

    size: int = 64
    crop_fraction: float = 0.9
    folder: str = ""
    file: str = ""

    SHARED_SECTIONS = (SUITE,)  # --set verification-suite.folder=DIR reaches every set
    RULES = {"size": at_least(8), "crop_fraction": between(0, 1, low_open=True)}


class BinDataset(FaceDataset):
    """Verification on the pairs of one ``.bin`` file (what ``register_bin_dataset`` makes)."""

    tasks = frozenset({"verification"})
    Config = BinConfig

    def path(self) -> Path:
        """Where the file is, or a one-line error naming it."""
        return self.require(str(Path(self.cfg.folder) / self.cfg.file))

    def missing(self) -> Optional[str]:
        if self.data_root is None or not (self.data_root / self.cfg.folder / self.cfg.file).is_file():
            return f"no {Path(self.data_root or '.') / self.cfg.folder / self.cfg.file}"
        return None

    @functools.cached_property
    def digest(self) -> str:
        return file_digest(self.path())

    def verification(self) -> tuple[ImageSet, PairList]:
        key = {"bin": self.digest, "file": self.cfg.file, "size": self.cfg.size, "crop": self.cfg.crop_fraction}
        return cached(self.cache_dir, "images", key, self._decode)

    def _decode(self) -> tuple[ImageSet, PairList]:
        path = self.path()
        encoded, same = read_bin(path)
        sources = [Encoded(data, f"image {i} of {path}") for i, data in enumerate(encoded)]
        crop = self.cfg.crop_fraction if self.cfg.crop_fraction < 1 else None
        images = load_images(sources, self.cfg.size, center_fraction=crop, desc=self.name)
        n = len(same)
        pairs = PairList(
            left=torch.arange(0, 2 * n, 2), right=torch.arange(1, 2 * n, 2),
            same=torch.tensor(same), fold=torch.arange(n) // (n // FOLDS),
        )
        names = tuple(f"{self.cfg.file}[{i}]" for i in range(2 * n))
        return ImageSet(images, names=names), pairs

    def fingerprint(self, task: Optional[str] = None) -> dict:
        return {**super().fingerprint(task), "sha256": self.digest}


def register_bin_dataset(name: str, file: str, folder: str = "", crop_fraction: float = 0.9, about: str = "") -> type[BinDataset]:
    """Register a verification dataset ``name`` from a ``.bin`` file at ``<data-root>/<folder>/<file>``."""
    defaults = [("file", str, file), ("folder", str, folder), ("crop_fraction", float, crop_fraction)]
    config = dataclasses.make_dataclass(
        f"BinConfig_{name}", [(field, kind, dataclasses.field(default=value)) for field, kind, value in defaults],
        bases=(BinConfig,), frozen=True,
    )
    doc = f"{name}: {about or 'verification pairs'} (from {file})."
    return register_dataset(name)(type(f"Bin_{name}", (BinDataset,), {"Config": config, "__doc__": doc}))


for _name, (_file, _about) in BIN_SETS.items():
    register_bin_dataset(_name, _file, about=_about)
register_suite(SUITE, tuple(BIN_SETS))
