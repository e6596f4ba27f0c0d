"""Track stage 1's depth accuracy epoch by epoch: does the "3D" part learn face shape?

Trains the stage-1 model (Unsup3D) on a synthetic pretraining split and, after every epoch,
scores its predicted depth on held-out images with the ``depth`` protocol's metrics (SIDE, MAD,
after a relief scale fit on other images, and as predicted; the flat-plane and mean-training-depth
floors). Training resumes from the run folder, so
more epochs can be added later, and every epoch's line is also written to ``curve.csv``; the
reconstruction grid is saved at chosen epochs.

    python docs/depth_study/depth_curve.py --out runs/depth-quick --epochs 30
    python docs/depth_study/depth_curve.py --out runs/one-head --epochs 30 --set synthetic.train_identities=1 --eval-split train
    python docs/depth_study/depth_curve.py --out runs/pose-only --epochs 30 --set synthetic.variation=pose --set synthetic.train_identities=1 --eval-split train
    python docs/depth_study/depth_curve.py --out runs/wide --epochs 20 --set unsup3d.input_size=64 --set unsup3d.width=0.5

``--eval-split test`` scores held-out people (the FER test split); ``train`` scores other images
of the training people (for the one-head sanity cases, whose only person is a training person).
``synthetic.variation=pose`` with one identity is the plainest case: one neutral head under one
light, camera and background, only the pose varying. Per epoch the curve also records whether
the pose is learned (correlation of predicted and true yaw and pitch) and whether the canonical
depth differs between faces at all (its sd across images against within one).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.cli import merge_overrides  # noqa: E402
from harness.config import load_config_file, parse_overrides  # noqa: E402
from harness.datasets.synthetic.dataset import subset  # noqa: E402
from harness.method import MethodContext, model_seed, to_input  # noqa: E402
from harness.session import Settings, Session  # noqa: E402
from methods.unsup3d.method import (  # noqa: E402
    Unsup3DConfig,
    build_model,
    perceptual_source,
    predicted_depth,
    train_stage1,
)
from methods.unsup3d.model import FOV_DEGREES, canonical_depth, save_reconstruction_grid  # noqa: E402
from protocols.depth import fit_relief_scale, rescale_relief, score, summarise, true_depth  # noqa: E402


@torch.no_grad()
def predict(model, images, cfg: Unsup3DConfig, device: torch.device, batch: int = 128) -> torch.Tensor:
    return torch.cat([
        predicted_depth(model, to_input(images.images[i : i + batch], cfg.input_size, device)).cpu()
        for i in range(0, len(images), batch)
    ])


@torch.no_grad()
def depth_scores(model, images, calibration, train_images, cfg: Unsup3DConfig, device: torch.device, batch: int = 128) -> dict:
    """The depth protocol's metrics of ``model`` on ``images`` (after a relief scale fit on the
    ``calibration`` images, and as predicted), the floors, and whether pose and shape vary."""
    model.eval()
    tan_half = math.tan(math.radians(FOV_DEGREES) / 2)
    pred = predict(model, images, cfg, device, batch)
    target, _ = true_depth(images, pred.shape[-1], tan_half)
    scale = fit_relief_scale(predict(model, calibration, cfg, device, batch), true_depth(calibration, pred.shape[-1], tan_half)[0])
    mean_train = true_depth(train_images, pred.shape[-1], tan_half)[0].nanmean(0).nan_to_num(1.0)
    out = summarise(score(rescale_relief(pred, scale), target, tan_half))
    out["relief_scale"] = scale
    out.update({f"raw_{k}": v for k, v in summarise(score(pred, target, tan_half)).items()})
    out.update({f"flat_{k}": v for k, v in summarise(score(torch.ones_like(target), target, tan_half)).items()})
    out.update({f"mean_{k}": v for k, v in summarise(score(mean_train.expand_as(target), target, tan_half)).items()})
    # does the canonical depth vary between faces at all? (a fixed template would not)
    x = to_input(images.images[:256], cfg.input_size, device)
    depth = canonical_depth(model.depth_net(x)[0][:, 0]).cpu()
    out["canonical_sd_across"] = float(depth.std(0).mean())
    out["canonical_sd_within"] = float(depth.flatten(1).std(1).mean())
    # is the pose learned? correlation of the predicted rotations with the true yaw and pitch
    if model.pose_net is not None:
        pose = torch.cat([model.pose_net(to_input(images.images[i : i + batch], cfg.input_size, device)).cpu()
                          for i in range(0, len(images), batch)])
        true = images.extras["pose"]
        out["yaw_corr"] = float(torch.corrcoef(torch.stack([pose[:, 1], true[:, 0]]))[0, 1])
        out["pitch_corr"] = float(torch.corrcoef(torch.stack([pose[:, 0], true[:, 1]]))[0, 1])
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder (checkpoints, curve.csv, grids); resumed when it exists")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--config", help="settings file applied before --set")
    parser.add_argument("--eval-split", default="test", choices=("train", "test"))
    parser.add_argument("--eval-images", type=int, default=400, help="held-out images scored per epoch")
    parser.add_argument("--grids", default="1,3,10,30", help="epochs after which to save the reconstruction grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=".cache")
    args = parser.parse_args()

    overrides = merge_overrides(load_config_file(args.config) if args.config else {}, parse_overrides(args.overrides))
    session = Session(Settings(preset=args.preset, overrides=overrides, cache_dir=args.cache_dir, device=args.device))
    cfg = Unsup3DConfig.resolve(args.preset, session.settings.section("unsup3d"), "unsup3d")
    data = session.dataset("synthetic")
    device = torch.device(args.device)
    pretrain = data.pretrain().images
    if cfg.train_images:
        pretrain = pretrain[: cfg.train_images]
    split = data.fer_split(args.eval_split)
    position = torch.arange(len(split))
    evaluation = subset(split, position < args.eval_images)
    floor_images = data.fer_split("train")
    # the relief scale is fit on other images than those scored: the next ones of the split
    calibration = subset(split, (position >= args.eval_images) & (position < 2 * args.eval_images))
    if not len(calibration):
        calibration = subset(floor_images, torch.arange(len(floor_images)) < args.eval_images)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps({"preset": args.preset, "overrides": overrides, "config": cfg.to_dict(),
                                                    "eval_split": args.eval_split, "train_images": len(pretrain)}, indent=2))
    ctx = MethodContext.standalone(data.pretrain(), out, seed=args.seed, device=device)
    seed = model_seed(ctx, "stage1")
    model = build_model(cfg, seed, perceptual=perceptual_source(cfg))
    grids = {int(e) for e in args.grids.split(",") if e}
    rows = list(csv.DictReader(open(out / "curve.csv"))) if (out / "curve.csv").exists() else []
    print(f"stage 1 on {len(pretrain)} synthetic images, {cfg.input_size} px, width {cfg.width}; depth scored on "
          f"{len(evaluation)} {args.eval_split} images", flush=True)
    if not rows:
        first = {"epoch": 0, "seconds": 0.0, "loss": math.nan, "recon_l1": math.nan,
                 **depth_scores(model, evaluation, calibration, floor_images, cfg, device)}
        rows.append(first)
        print(json.dumps(first), flush=True)
    for epoch in range(len(rows), args.epochs + 1):
        tic = time.time()
        result = train_stage1(model, pretrain, cfg.replace(epochs=epoch), seed, out / "train", device)
        row = {"epoch": epoch, "seconds": round(time.time() - tic, 1), "loss": result.history[-1]["loss"],
               "recon_l1": result.history[-1]["recon_l1"], **depth_scores(model, evaluation, calibration, floor_images, cfg, device)}
        rows.append(row)
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        with open(out / "curve.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(rows)
        if epoch in grids:
            save_reconstruction_grid(model.eval(), to_input(evaluation.images[:8], cfg.input_size, device), out / f"grid-epoch{epoch:03d}.png")
            model.train()


if __name__ == "__main__":
    main()
