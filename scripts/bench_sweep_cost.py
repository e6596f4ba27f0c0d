"""What a ``--preset paper`` sweep of the paper's Tables 1-4 costs, from measured bench figures.

Part of ``scripts/bench.py`` (its ``--project``), kept in its own file because it only does arithmetic.

``python scripts/bench.py --project`` prints this after measuring; ``python scripts/bench.py
--project --from bench.json`` reprojects a saved bench (for example one from a GPU). Every job of
the sweep is a number of images pushed through a measured rate:

- training: images per epoch x epochs / the method's training rate at the ``paper`` preset;
- features: the images each trained model encodes / its feature-extraction rate;
- probes: the bench's protocol rerun on cached features, scaled by the training-set size
  (FER training images, verification pairs; feature width and probe epochs as in the bench).

The sizes are the paper's data (``SIZES``, each with where it comes from). The figure is the
device-hours of the device the bench ran on, one job after another: no overlap, no data
loading or decoding (the harness decodes each dataset once into its cache), no queueing.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

#: The paper's data, and where each number comes from.
SIZES: dict[str, tuple[int, str]] = {
    "celeba_train": (162_770, "CelebA's official training partition (list_eval_partition.txt); the paper's text says 162,257"),
    "vox_clips": (
        140_755,
        "VoxCeleb1 has 153,516 clips of 1,251 speakers and the paper trains on 1,147 speakers (Sec. 3.1): "
        "153,516 x 1,147 / 1,251, assuming clips spread evenly over speakers",
    ),
    "clip_frames": (16, "frames per clip (paper Sec. 3.1); VoxCeleb pretraining images = clips x frames, as the harness's voxceleb dataset gives them"),
    "epochs": (30, "every training run: stage 1, stage 2, SimCLR and MAE (paper Sec. 3.1-3.2)"),
    "rafdb_train": (12_271, "RAF-DB basic, official training split"),
    "rafdb_test": (3_068, "RAF-DB basic, official test split"),
    "affectnet_train": (
        47_770,
        "AffectNet's 8-class training images (class counts of Mollahosseini et al. 2017) down-sampled as the released "
        "code does (neutral 1/10, happy 1/20, sad 1/4, surprise 1/2, anger 1/4); pose30/45 train on the same",
    ),
    "affectnet_val": (4_000, "AffectNet validation, 500 per class (the test set; pose30/45 use subsets of it: counted whole)"),
    "lfw_images": (7_701, "the distinct images of LFW View 2's 6,000 pairs (pairs.txt)"),
    "sllfw_images": (12_000, "SLLFW's 6,000 pairs over LFW images: at most 12,000 images (upper bound)"),
    "pairs": (6_000, "pairs of LFW and of SLLFW, 10 folds each"),
}
#: Trained models per row group: Tables 1-2 evaluate the floors, unsup3d, SimCLR and MAE (each
#: trained on CelebA and on VoxCeleb) and LatentFace; Table 3 adds four unsup3d variants, Table
#: 4 four latentface variants (its rdm-both row is Table 1's model).
MAIN_MODELS = ["pixels", "random-cnn", "unsup3d", "simclr", "simclr", "mae", "mae", "latentface"]


@dataclasses.dataclass
class Job:
    """One line of the projection: ``images`` through ``rate`` images/s of bench figure ``source``."""

    table: str
    what: str
    images: float
    source: str
    rate: float

    @property
    def hours(self) -> float:
        return self.images / self.rate / 3600 if self.rate > 0 else math.inf  # render() says a rate was zero


def size(name: str) -> int:
    return SIZES[name][0]


def jobs(bench: dict[str, Any], seeds: int = 1) -> list[Job]:
    """Every job of the paper sweep, priced with the bench's ``paper`` rates."""
    train = bench["train_step"]["paper"]
    feats = bench["features"]["paper"]
    epochs = size("epochs")
    celeba = size("celeba_train")
    frames = size("vox_clips") * size("clip_frames")

    def train_job(table: str, what: str, method: str, images: int) -> Job:
        return Job(table, what, seeds * epochs * images, f"train_step.paper.{method}", train[method]["images_per_s"])

    out = [
        train_job("1-3", "stage 1 on CelebA (unsup3d, latentface)", "unsup3d", celeba),
        train_job("3", "stage 1 without light / without pose on CelebA: 2 runs at the full model's rate", "unsup3d", 2 * celeba),
        train_job("1-2", "SimCLR on CelebA and on VoxCeleb frames", "simclr", celeba + frames),
        train_job("1-2", "MAE on CelebA and on VoxCeleb frames", "mae", celeba + frames),
        Job("1-2, 4", "stage-1 latents of the VoxCeleb frames (once for every stage-2 variant)", seeds * frames,
            "features.paper.unsup3d", feats["unsup3d"]["images_per_s"]),
        train_job("1-2, 4", "RDM networks on VoxCeleb frames: rdm-both 2, rdm-texture 1, rdm-shape 1", "latentface", 4 * frames),
        train_job("4", "encoder-ablation networks on VoxCeleb frames: 2", "latentface-encoder", 2 * frames),
    ]
    # Features: the paper preset's FER probe also trains on flipped copies (fer.flip_aug): 2x train.
    rafdb = 2 * size("rafdb_train") + size("rafdb_test")
    affectnet = 2 * size("affectnet_train") + size("affectnet_val")
    fer_main, fer_ablation = rafdb + 3 * affectnet, rafdb + affectnet  # Table 1: RAF-DB, AffectNet, pose30, pose45
    verification = size("lfw_images") + size("sllfw_images")
    models = {  # bench feature figure -> (models, images each)
        "Tables 1-2": [(m, fer_main + verification) for m in MAIN_MODELS],
        "Table 3": [("unsup3d", fer_ablation)] * 4,
        "Table 4": [("unsup3d", fer_ablation + verification)] * 2 + [("latentface", fer_ablation + verification)] * 3,
    }
    for table, entries in models.items():
        for method in dict.fromkeys(m for m, _ in entries):
            n = sum(images for m, images in entries if m == method)
            count = sum(1 for m, _ in entries if m == method)
            out.append(Job(table.split(" ")[-1], f"features of {count} {method} model(s) ({table})", seeds * n,
                           f"features.paper.{method}", feats[method]["images_per_s"]))
    # Probes: each cell's training set over the bench rerun's (feature width and epochs as measured).
    fer_cells = len(MAIN_MODELS) * (size("rafdb_train") + 3 * size("affectnet_train")) + 8 * (size("rafdb_train") + size("affectnet_train"))
    verification_cells = (len(MAIN_MODELS) + 4) * 2 * size("pairs")
    for protocol, n in (("fer", fer_cells), ("verification", verification_cells)):
        rerun = bench["protocol_rerun"][protocol]  # items: the bench probe's training images / pairs
        rate = rerun["items"] / rerun["seconds"]
        out.append(Job("1-4", f"{protocol} probes of every cell, scaled by training-set size", seeds * n, f"protocol_rerun.{protocol}", rate))
    return out


def project(bench: dict[str, Any], seeds: int = 1) -> dict[str, Any]:
    """The projection as JSON: the jobs, the total, the sizes assumed and the bench's device."""
    listed = jobs(bench, seeds)
    paper_batches = {m: v["batch"] for m, v in bench["train_step"]["paper"].items()}
    return {
        "device": bench["meta"]["device"],
        "seeds": seeds,
        "device_hours": sum(j.hours for j in listed),
        "training_device_hours": sum(j.hours for j in listed if j.source.startswith("train_step")),
        "jobs": [{**dataclasses.asdict(j), "hours": j.hours} for j in listed],
        "paper_batches_timed": paper_batches,
        "sizes": {k: {"value": v, "source": s} for k, (v, s) in SIZES.items()},
    }


def render(projection: dict[str, Any]) -> str:
    """The projection as a readable table with its assumptions."""
    lines = [
        f"Projected cost of --preset paper for the paper's Tables 1-4 on {projection['device']} "
        f"({projection['seeds']} seed{'s' if projection['seeds'] > 1 else ''}), one job after another:",
        f"{'table':7} {'job':88} {'images':>13} {'img/s':>10} {'hours':>9}",
    ]
    for j in projection["jobs"]:
        lines.append(f"{j['table']:7} {j['what'][:88]:88} {j['images']:13,.0f} {j['rate']:10.1f} {j['hours']:9.2f}")
    total, training = projection["device_hours"], projection["training_device_hours"]
    lines.append(f"total: {total:,.1f} device-hours ({training:,.1f} of them training; {total / 24:,.1f} device-days)")
    batches = ", ".join(f"{m} {b}" for m, b in projection["paper_batches_timed"].items())
    lines.append(f"paper-preset batches timed: {batches} (a smaller batch than the preset's runs slower per image on a GPU)")
    lines.append("sizes assumed:")
    for name, item in projection["sizes"].items():
        lines.append(f"  {name} = {item['value']:,}: {item['source']}")
    if not math.isfinite(total):
        lines.append("a rate was missing or zero; rerun the bench with the paper preset")
    return "\n".join(lines)
