"""Frozen features, computed once per (trained model, dataset split, flip, protocol view) and cached.

A protocol rerun on cached features never loads the model: the cache key is built from the
method's fingerprint (config + artifact hashes + seed), so nothing needs training to check it.
Which images a split holds and what is read from the method are the protocol's to say
(``Protocol.images``, ``Protocol.extract``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from harness.datasets.base import FaceDataset, ImageSet
from harness.io import atomic_path, cached, write_json
from harness.method import Method, to_input
from harness.progress import progress
from harness.protocol import Protocol


class FeatureSource:
    """Features of one method on one dataset for one protocol (see ``harness.protocol.Features``)."""

    def __init__(self, method: Method, dataset: FaceDataset, protocol: Protocol, cache_dir: Path, batch_size: int = 256) -> None:
        self.method = method
        self.dataset = dataset
        self.protocol = protocol
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self._prepared = False
        self.served: dict[tuple[str, bool], torch.Tensor] = {}  # what the protocol read, for ``dump``

    def images(self, split: str) -> ImageSet:
        return self.protocol.images(self.dataset, split)

    def key(self, split: str, flip: bool = False) -> dict:
        """What identifies one split's features (the cache key)."""
        return {
            "method": self.method.fingerprint(),
            "dataset": self.dataset.fingerprint(),
            "split": split,
            "flip": flip,
            "view": self.protocol.feature_key(self.method),
        }

    def get(self, split: str, flip: bool = False) -> torch.Tensor:
        features = cached(self.cache_dir, "features", self.key(split, flip), lambda: self._compute(split, flip))
        self.served[(split, flip)] = features
        return features

    def dump(self, folder: Path, cell: dict) -> list[Path]:
        """Write the features the protocol read, one ``<split>.npz`` per split, then ``cell.json``.

        Each file holds ``features`` (float32, N x D; ``features_flipped`` too where the protocol
        read the mirrored images'), ``index`` (position in the split), ``names`` (image paths
        relative to the dataset folder, where the images are files), ``labels`` and
        ``identities`` where known, and ``cell`` (JSON: the cell, its config hash and the
        split). ``cell.json`` is written last: a dump without it is incomplete.
        """
        written = []
        for split in sorted({s for s, _ in self.served}):
            images = self.images(split)
            arrays: dict[str, np.ndarray] = {"index": np.arange(len(images))}
            for flip, key in ((False, "features"), (True, "features_flipped")):
                if (split, flip) in self.served:
                    arrays[key] = self.served[(split, flip)].float().flatten(1).numpy()
            if images.names:
                arrays["names"] = np.array(images.names)
            for key in ("labels", "identities"):
                if getattr(images, key) is not None:
                    arrays[key] = getattr(images, key).numpy()
            arrays["cell"] = np.array(json.dumps({**cell, "split": split}, sort_keys=True))
            path = Path(folder) / f"{split}.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
            written.append(path)
        write_json(Path(folder) / "cell.json", {**cell, "files": [p.name for p in written]})
        return written

    def _compute(self, split: str, flip: bool) -> torch.Tensor:
        if not self._prepared:  # train or load the model only when a feature is missing
            self.method.prepare()
            self._prepared = True
        with torch.no_grad():
            return self._encode_all(split, flip)

    def _encode_all(self, split: str, flip: bool) -> torch.Tensor:
        images = self.images(split).images
        device = self.method.ctx.device
        out = []
        with progress(total=len(images), desc=f"{self.method.name} features {split}", unit="img") as bar:
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                if flip:
                    batch = batch.flip(-1)
                x = to_input(batch, self.method.input_size, device)
                index = torch.arange(start, start + len(batch))
                out.append(self.protocol.extract(self.method, x, index).float().cpu())
                bar.update(len(batch))
        return torch.cat(out)
