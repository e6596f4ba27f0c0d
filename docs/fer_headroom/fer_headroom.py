"""How much expression information does a FER training set hold, and how much of it does each
representation keep? A calibration aid for datasets and presets, not a benchmark result.

Everything is measured on a validation split carved from the FER *training* images, never on
the test split: on ``synthetic`` the people with ``id % 5 == 0`` (identity-disjoint, like the
test split), elsewhere a stratified 20 % (``protocols.fer.validation_split``). It prints:

* the expression share of pixel variance: the between-class variance of the 16 px pixels
  (classes weighted equally) over their total variance;
* a linear probe (the ``fer`` protocol's probe) on each method's features (``--methods``;
  methods that need training are trained, or loaded from ``--cache-dir``);
* a small CNN trained *supervised* on the same training images: what is learnable from them.

Examples:
    python docs/fer_headroom/fer_headroom.py                                   # synthetic, quick preset
    python docs/fer_headroom/fer_headroom.py --methods pixels,random-cnn,unsup3d --cache-dir .cache
    python docs/fer_headroom/fer_headroom.py --dataset fer2013 --data-root ~/data --set fer2013.train_limit=5000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from harness.cli import method_variants  # noqa: E402
from harness.config import parse_overrides  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.features import FeatureSource  # noqa: E402
from harness.registry import load_plugins  # noqa: E402
from harness.session import Session, Settings  # noqa: E402
from protocols.fer import FERConfig, predict, train_probe, validation_split  # noqa: E402

PROBE_SEEDS = (0, 1, 2)


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, val: torch.Tensor, n_classes: int) -> float:
    """Validation accuracy of the ``fer`` protocol's linear probe, mean over a few probe seeds."""
    accs = []
    for seed in PROBE_SEEDS:
        probe = train_probe(x[~val], y[~val], n_classes, FERConfig(), seed)
        accs.append(float((predict(probe, x[val]) == y[val]).float().mean()))
    return sum(accs) / len(accs)


def expression_share(images: torch.Tensor, y: torch.Tensor) -> float:
    """Between-class variance of 16 px pixels over their total variance (classes weighted equally)."""
    x = F.adaptive_avg_pool2d(images.float() / 255, 16).flatten(1)
    mean = x.mean(0)
    between = torch.stack([((x[y == c].mean(0) - mean) ** 2).sum() for c in y.unique()]).mean()
    return float(between / x.var(0).sum())


def supervised_accuracy(images: torch.Tensor, y: torch.Tensor, val: torch.Tensor, n_classes: int,
                        size: int = 32, epochs: int = 15, seed: int = 0) -> float:
    """Validation accuracy of a 4-layer CNN trained with the labels (last epoch, no selection)."""
    torch.manual_seed(seed)
    x = F.interpolate(images.float() / 127.5 - 1, size=(size, size), mode="bilinear", antialias=True)
    layers: list[nn.Module] = []
    width_in = 3
    for k, width in enumerate((32, 64, 128, 256)):
        layers += [nn.Conv2d(width_in, width, 3, stride=2 if k else 1, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        width_in = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width_in, n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_train, y_train = x[~val], y[~val]
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_train)).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(x[val]).argmax(1) == y[val]).float().mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints the report; returns its figures (fractions) by name."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="a registered dataset with a FER split (default: synthetic)")
    parser.add_argument("--methods", default="pixels,random-cnn", help="comma-separated methods to probe (default: the floors)")
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT"), help="parent of the real datasets")
    parser.add_argument("--cache-dir", default=os.environ.get("BENCH_CACHE_DIR", ".cache"),
                        help="shared with run_bench.py, so trained models are reused")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    settings = Settings(preset=args.preset, overrides=parse_overrides(args.overrides), data_root=args.data_root,
                        cache_dir=args.cache_dir, device=args.device)
    load_plugins()
    methods = method_variants(argparse.Namespace(ablation=None, methods=args.methods))  # fails early on a typo
    session = Session(settings)
    dataset = session.dataset(args.dataset)
    train = dataset.fer_split("train")
    y, n_classes = train.labels, len(train.class_names)
    if train.identities is not None:  # identity-disjoint, like the test split
        val = train.identities % 5 == 0
        how = "held-out training people (id % 5 == 0)"
    else:
        val = validation_split(y, 0.2, seed=0)
        how = "a stratified 20 % of the training images"
    print(f"{args.dataset} FER train: {len(y)} images, validation = {how}: {int(val.sum())} images")
    majority = float((y[val] == y[val].mode().values).float().mean())
    print(f"chance {100 / n_classes:.1f} %, majority class {100 * majority:.1f} %")
    figures = {"share": expression_share(train.images, y)}
    print(f"expression share of pixel variance (16 px): {100 * figures['share']:.2f} %")

    for name, variant in methods:
        start = time.perf_counter()
        method = session.method(name, variant, 0)
        spec = f"{name}:{variant}"
        x = FeatureSource(method, dataset, session.protocol("fer"), Path(args.cache_dir)).get("train").float()
        acc = figures[spec] = probe_accuracy(x, y, val, n_classes)
        print(f"linear probe, {spec:24s} {100 * acc:5.1f} %  ({x.shape[1]}-d, {time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    acc = figures["supervised"] = supervised_accuracy(train.images, y, val, n_classes)
    print(f"supervised 4-layer CNN, 32 px, 15 epochs: {100 * acc:.1f} %  ({time.perf_counter() - start:.0f} s)")
    return figures


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"error: {exc}")
