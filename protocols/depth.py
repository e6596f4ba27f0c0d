"""Depth accuracy on synthetic faces: Unsup3D's headline metric (Wu et al., CVPR 2020, Sec. 4.1).

For methods that predict depth (``Method.predicts_depth``), on held-out people's images (the FER
test split, which carries ground-truth depth and a head mask): the scale-invariant depth error
(SIDE) and the mean angle deviation (MAD) of surface normals between predicted and true depth,
over the head (face, hair, ears). Unsup3D reports SIDE 0.793 +- 0.140 x 10^-2 and MAD
16.51 +- 1.56 degrees on its own synthetic faces (another dataset: not comparable number for number).

Floors, scored the same way: a flat plane, and the mean training depth (per pixel, over the FER
train split's people).

Relief scale: monocular self-supervised depth is known only up to the amplitude of its relief
(the bas-relief ambiguity, resolved by each method's own priors and depth range; Unsup3D's
synthetic benchmark sidestepped it by rendering the ground truth into the model's depth range).
So one scalar per result rescales the predicted relief about its median, ``1 + s (d / median - 1)``,
with ``s`` chosen from a grid to minimise the mean SIDE on training images (the FER train split,
never the test split); SIDE and MAD are reported after it, and also as predicted (``_raw``).

Camera convention: a monocular method recovers depth only relative to its own focal length, so
the ground truth is expressed in the method's camera before scoring. Each true depth map is
taken relative to its median head depth and its relief scaled by tan(fov_method / 2) /
tan(fov_true / 2) (weak perspective: the same picture seen by the narrower camera is further
away, so its relief is smaller relative to the distance); a perfect reconstruction then scores
SIDE ~ 0 and MAD ~ 0. Normals of both maps come from lifting them with the method's camera.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from harness import plots
from harness.config import Config, at_least
from harness.datasets.base import FaceDataset, ImageSet
from harness.errors import BenchError
from harness.method import Method
from harness.protocol import Features, Measure, Protocol, Shown, shown
from harness.stats import weighted_mean
from harness.registry import register_protocol

EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class DepthConfig(Config):
    """Attributes:
    examples: test images kept in the result file for the figure (input, depths, normals).
    calibration_images: training images the relief scale is fit on.
    """

    examples: int = 4
    calibration_images: int = 500

    RULES = {"examples": at_least(0), "calibration_images": at_least(1)}


#: relief scales tried by the calibration: 0.1 to 10, 41 steps (12 % apart)
RELIEF_SCALES = np.logspace(-1, 1, 41)


# --- metrics -----------------------------------------------------------------------------------------
def side(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth error per image (B,): the sd over the mask of ln pred - ln target.

    SIDE = sqrt(mean(d^2) - mean(d)^2), d = ln pred - ln target (Eigen et al. 2014; Unsup3D), so
    a global depth scale costs nothing. Computed in two passes (the one-pass form cancels in
    float32).

    Args:
        pred, target: positive depth maps (B, H, W).
        mask: pixels to score (B, H, W).
    """
    d = pred.clamp_min(EPS).log() - target.clamp_min(EPS).log()
    m = mask.to(d.dtype)
    d = torch.where(mask, d, 0.0)
    count = m.sum((1, 2))
    mean = (d * m).sum((1, 2)) / count.clamp_min(1)
    error = (((d - mean[:, None, None]).pow(2) * m).sum((1, 2)) / count.clamp_min(1)).sqrt()
    return torch.where(count > 0, error, torch.nan)  # nothing to score is not a perfect score


def lift(depth: torch.Tensor, tan_half: float) -> torch.Tensor:
    """Camera-space points (B, H, W, 3) of depth maps (B, H, W) seen by a pinhole camera whose
    field of view spans ``2 * atan(tan_half)`` across the image (pixel centres at (i + 0.5) / H)."""
    size = depth.shape[-1]
    centres = ((torch.arange(size, dtype=depth.dtype, device=depth.device) + 0.5) / size * 2 - 1) * tan_half
    v, u = torch.meshgrid(-centres, centres, indexing="ij")
    return torch.stack([u * depth, v * depth, depth], dim=-1)


def normals(depth: torch.Tensor, tan_half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals (B, H, W, 3) of depth maps by central differences, and where they are defined
    (B, H, W): inside the image border, with finite depth at the pixel and its four neighbours."""
    points = lift(torch.nan_to_num(depth, nan=1.0), tan_half)
    along_cols = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    along_rows = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    inner = F.normalize(torch.linalg.cross(along_cols, along_rows, dim=-1), dim=-1, eps=EPS)
    out = F.pad(inner.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
    return out, erode(torch.isfinite(depth))


def erode(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose four neighbours are in ``mask`` too, and not on the image border."""
    m = mask[:, None].float()
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]).to(m)[None, None]
    return F.conv2d(m, kernel, padding=1)[:, 0] >= 5 - 1e-3


def mad(pred_normals: torch.Tensor, true_normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angle deviation in degrees per image (B,) between unit normal maps, over ``mask``
    (``nan`` for an image with nothing to score)."""
    # atan2 of |a x b| and a . b: exact near 0, where arccos of a float32 dot product is not
    sine = torch.linalg.cross(pred_normals, true_normals, dim=-1).norm(dim=-1)
    cosine = (pred_normals * true_normals).sum(-1)
    angle = torch.where(mask, torch.rad2deg(torch.atan2(sine, cosine)), 0.0)
    count = mask.sum((1, 2))
    return torch.where(count > 0, angle.sum((1, 2)) / count.clamp_min(1), torch.nan)


def true_depth(images: ImageSet, size: int, tan_method: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth depth at ``size`` px in the method's camera, and the head mask (see the module
    docstring): ``1 + (z / median - 1) * tan_method / tan_true``, ``nan`` off the head."""
    depth, head = images.extras["depth"].float(), images.extras["head"]
    factor = depth.shape[-1] // size
    if factor < 1 or depth.shape[-1] != factor * size:
        raise BenchError(f"depth: predicted depth of {size} px cannot be scored against {depth.shape[-1]} px ground truth")
    # average each factor x factor block; keep blocks that lie wholly on the head
    depth = F.avg_pool2d(depth[:, None], factor)[:, 0]
    head = F.avg_pool2d(head[:, None].float(), factor)[:, 0] > 1 - 1e-6
    relief = torch.where(head, depth, torch.nan)
    median = relief.flatten(1).nanmedian(dim=1).values[:, None, None]
    tan_true = torch.tan(images.extras["fov"].float() / 2)[:, None, None]
    return 1 + (relief / median - 1) * tan_method / tan_true, head


def score(pred: torch.Tensor, target: torch.Tensor, tan_half: float) -> dict[str, torch.Tensor]:
    """SIDE and MAD per image of predicted against true depth (``nan`` = not defined), and the
    share of the true head's pixels the prediction covers."""
    valid = torch.isfinite(pred) & torch.isfinite(target)
    pred_n, pred_ok = normals(pred, tan_half)
    true_n, true_ok = normals(target, tan_half)
    coverage = valid.sum((1, 2)) / torch.isfinite(target).sum((1, 2)).clamp_min(1)
    return {"side": side(pred, target, valid), "mad": mad(pred_n, true_n, pred_ok & true_ok), "coverage": coverage.float()}


def rescale_relief(depth: torch.Tensor, scale: float) -> torch.Tensor:
    """Depth maps with their relief about each map's median multiplied by ``scale``."""
    median = depth.flatten(1).nanmedian(dim=1).values[:, None, None]
    return median * (1 + scale * (depth / median - 1))


def fit_relief_scale(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The grid scale that minimises the mean SIDE of rescaled predictions against ``target``."""
    valid = torch.isfinite(pred) & torch.isfinite(target)
    errors = [float(side(rescale_relief(pred, float(k)), target, valid).nanmean()) for k in RELIEF_SCALES]
    return float(RELIEF_SCALES[int(np.nanargmin(errors))])


def summarise(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and sd over the images where each per-image value is defined."""
    out = {}
    for name, v in values.items():
        v = v[torch.isfinite(v)]
        out[name] = float(v.mean()) if len(v) else math.nan
        out[f"{name}_sd"] = float(v.std(unbiased=False)) if len(v) else math.nan
    return out


@register_protocol("depth")
class Depth(Protocol):
    """SIDE and MAD of predicted depth on held-out people's images, with flat and mean floors."""

    task = "depth"
    Config = DepthConfig
    table = ("table_depth", "Depth accuracy on synthetic faces (SIDE x 10^-2 / MAD in degrees; lower is better)")
    metric = "SIDE ×10⁻² / MAD °"
    note = (
        "Depth: mean±sd over seeds of the per-image means, after a relief scale fit on training images (also as "
        "predicted); floors scored on the same images. Unsup3D's paper reports SIDE 0.793±0.140 x 10^-2 and MAD "
        "16.51±1.56 on its own synthetic faces (another dataset)."
    )

    @classmethod
    def supports(cls, method: type[Method]) -> bool:
        return method.predicts_depth

    def images(self, dataset: FaceDataset, split: str) -> ImageSet:
        return dataset.fer_split(split)

    def extract(self, method: Method, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return method.depth(x)

    def feature_key(self, method: Method) -> str:
        return "depth"

    def evaluate(self, dataset: FaceDataset, features: Features, seed: int) -> dict:
        pred = features.get("test").float()
        tan_half = math.tan(math.radians(features.method.depth_fov) / 2)
        test, train = dataset.fer_split("test"), dataset.fer_split("train")
        target, _ = true_depth(test, pred.shape[-1], tan_half)
        train_target = true_depth(train, pred.shape[-1], tan_half)[0]
        n = self.cfg.calibration_images
        scale = fit_relief_scale(features.get("train")[:n].float(), train_target[:n])
        floors = {
            "flat": torch.ones_like(target),
            "mean_train": train_target.nanmean(0).nan_to_num(1.0).expand_as(target),
        }
        rescaled = rescale_relief(pred, scale)
        scored = {"": score(rescaled, target, tan_half), "_raw": score(pred, target, tan_half)}
        metrics = summarise(scored[""])
        metrics.update({f"{k}_raw": v for k, v in summarise(scored["_raw"]).items() if not k.startswith("coverage")})
        metrics["relief_scale"] = scale
        for name, floor in floors.items():
            scored[name] = score(floor, target, tan_half)
            metrics.update({f"{name}_{k}": v for k, v in summarise(scored[name]).items()})
        # per test image (nan: not defined), in the split's order: what a paired comparison needs
        metrics["outcomes"] = {
            measure_key(prefix, error, suffix): scored[suffix or prefix.rstrip("_")][error].numpy()
            for prefix, suffix in OUTCOME_SETS for error in ("side", "mad")
        }
        shown = min(self.cfg.examples, len(pred))
        small = F.interpolate(test.images[:shown].float(), size=pred.shape[-2:], mode="area").round().to(torch.uint8)
        metrics["examples"] = {
            "image": small.tolist(),
            "true": rounded(target[:shown]),
            "predicted": rounded(rescaled[:shown]),
            "tan_half": tan_half,
        }
        metrics.update(n_test=int(len(pred)), resolution=int(pred.shape[-1]))
        return metrics

    @classmethod
    def main_metric(cls, metrics: dict) -> float:
        return float(metrics["side"])

    @classmethod
    def main_measure(cls, metrics: dict) -> str:
        return "side"

    @classmethod
    def measures(cls, metrics: dict) -> dict[str, Measure]:
        """SIDE and MAD after calibration (SIDE first: the main metric), as predicted, and the floors'."""
        return {measure_key(prefix, error, suffix): Measure(lambda o, w, key=measure_key(prefix, error, suffix): weighted_mean(o[key], w),
                                                           higher_is_better=False, scale=100.0 if error == "side" else 1.0,
                                                           bounds=(0.0, math.inf))
                for prefix, suffix in OUTCOME_SETS for error in ("side", "mad")}

    @classmethod
    def floors(cls, metrics: dict) -> dict[str, float]:
        return {"flat plane": float(metrics["flat_side"]), "mean training depth": float(metrics["mean_train_side"])}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        return (
            f"SIDE {100 * metrics['side']:.3f} x 10^-2  MAD {metrics['mad']:.2f} deg at relief x{metrics['relief_scale']:.2f} "
            f"(as predicted {100 * metrics['side_raw']:.3f} / {metrics['mad_raw']:.2f}; flat plane "
            f"{100 * metrics['flat_side']:.3f} / {metrics['flat_mad']:.2f}; mean training depth "
            f"{100 * metrics['mean_train_side']:.3f} / {metrics['mean_train_mad']:.2f})"
        )

    @classmethod
    def cell(cls, records: list[dict], stats: Optional[dict[str, Shown]] = None, prefix: str = "", suffix: str = "") -> str:
        if not records:
            return ""
        stats = stats or {}
        sides = 100 * np.array([r["metrics"][f"{prefix}side{suffix}"] for r in records])
        mads = np.array([r["metrics"][f"{prefix}mad{suffix}"] for r in records])
        one = len(records) == 1
        side_text = shown(f"{sides[0]:.3f}" if one else f"{sides.mean():.3f}±{sides.std(ddof=1):.3f}",
                          stats.get(measure_key(prefix, "side", suffix)), digits=3)
        mad_text = shown(f"{mads[0]:.2f}" if one else f"{mads.mean():.2f}±{mads.std(ddof=1):.2f}",
                         stats.get(measure_key(prefix, "mad", suffix)), scale=1, digits=2)
        return f"{side_text} / {mad_text}" + ("" if one else f" (n={len(records)})")

    @classmethod
    def tables(cls, grid) -> dict[str, tuple[str, str]]:
        """Methods, then the two floors (per dataset, from the records that scored them)."""
        rows = grid.rows(protocols=[cls.name])
        datasets = grid.columns(cls.name, rows)
        headers = ["Method"]
        for d in datasets:
            headers += [f"{d} {cls.metric}", f"{d} as predicted", f"{d} relief scale"]
        body = []
        stats = {d: grid.column_stats(cls, d, rows) for d in datasets}
        for k in rows:
            line = [grid.label(k)]
            for d in datasets:
                records = grid.records(k, cls.name, d)
                scales = [r["metrics"]["relief_scale"] for r in records]
                line += [cls.cell(records, stats[d][k]), cls.cell(records, stats[d][k], suffix="_raw"),
                         f"{np.mean(scales):.2f}" if scales else ""]
            body.append(line)
        # the floors as scored by the first result the table shows on each dataset (intervals, no ranks)
        first = {d: next((rs[:1] for k in rows if (rs := grid.records(k, cls.name, d))), []) for d in datasets}
        for prefix, label in (("flat_", "flat plane (floor)"), ("mean_train_", "mean training depth (floor)")):
            floor_stats = {d: {key: Shown(grid.stats.estimate(cls, first[d], key))
                               for key in (measure_key(prefix, "side", ""), measure_key(prefix, "mad", ""))} for d in datasets}
            body.append([label, *(cell for d in datasets for cell in (cls.cell(first[d], floor_stats[d], prefix), "", ""))])
        return {cls.table[0]: (cls.table[1], tabulate(body, headers=headers, tablefmt="github"))}

    @classmethod
    def figures(cls, grid, folder: Path) -> list[Path]:
        """Per result: input, true and predicted depth, and both normal maps of a few test images."""
        return [path for r in grid.records_of(cls.name) if (path := depth_figure(r, folder / r["cell"]["dataset"]))]


#: The per-image errors a result keeps: (prefix, suffix) of the metrics: calibrated, as predicted, floors.
OUTCOME_SETS = (("", ""), ("", "_raw"), ("flat_", ""), ("mean_train_", ""))


def measure_key(prefix: str, error: str, suffix: str) -> str:
    """The metric name of an error (``side``, ``mad``) of one outcome set: ``flat_side``, ``mad_raw``."""
    return f"{prefix}{error}{suffix}"


def rounded(maps: torch.Tensor) -> list:
    """Depth maps as nested lists with 5 decimals, ``None`` where not defined (JSON-able)."""
    return [[[None if math.isnan(v) else round(v, 5) for v in row] for row in image] for image in maps.tolist()]


def from_json(maps: list) -> torch.Tensor:
    return torch.tensor([[[math.nan if v is None else v for v in row] for row in image] for image in maps])


def depth_figure(record: dict, folder: Path) -> Path | None:
    """PNG of a result's examples (rows: images; columns: input, true depth, predicted depth,
    true normals, predicted normals); None when an up-to-date one exists."""
    png = plots.result_png(record, folder, "depth")
    if png is None:
        return None
    plt = plots.pyplot()
    ex = record["metrics"]["examples"]
    true, pred = from_json(ex["true"]), from_json(ex["predicted"])
    true_n, pred_n = normals(true, ex["tan_half"])[0], normals(pred, ex["tan_half"])[0]
    images = torch.tensor(ex["image"], dtype=torch.uint8).permute(0, 2, 3, 1)
    columns = ["input", "true depth", "predicted depth", "true normals", "predicted normals"]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2 * len(columns), 2 * len(images)), squeeze=False)
    for i in range(len(images)):
        both = torch.cat([true[i][torch.isfinite(true[i])], pred[i][torch.isfinite(pred[i])]])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.9, 1.1)
        panels = [
            (images[i].numpy(), {}),
            (true[i].numpy(), {"cmap": "viridis_r", "vmin": lo, "vmax": hi}),
            (pred[i].numpy(), {"cmap": "viridis_r", "vmin": lo, "vmax": hi}),
            (normal_rgb(true_n[i], torch.isfinite(true[i])), {}),
            (normal_rgb(pred_n[i], torch.isfinite(pred[i])), {}),
        ]
        for j, (panel, style) in enumerate(panels):
            axes[i, j].imshow(panel, interpolation="nearest", **style)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(columns[j], fontsize=9)
    c, m = record["cell"], record["metrics"]
    fig.suptitle(f"{c['method']} [{c['variant']}] on {c['dataset']}, seed {c['seed']}: SIDE {100 * m['side']:.2f}e-2, "
                 f"MAD {m['mad']:.1f}° at relief x{m['relief_scale']:.2f} (nearer = brighter)", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, png, dpi=80)


def normal_rgb(normal: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """Normals (H, W, 3) as colours (x, y, z in [-1, 1] -> [0, 1]); white where undefined."""
    rgb = (normal / 2 + 0.5).clamp(0, 1)
    return torch.where(valid[..., None], rgb, 1.0).numpy()
