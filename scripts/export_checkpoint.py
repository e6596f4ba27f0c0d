"""Write a trained ``unsup3d`` or ``latentface`` model as one file, to evaluate it elsewhere.

A model trained by ``run_bench.py`` (on a cluster, say) lives in the artifact cache, keyed by its
settings. This script finds it with the same settings and writes it in the project's checkpoint
layout; on any machine, ``--set unsup3d.checkpoint=FILE`` (or ``latentface.checkpoint=FILE``)
then evaluates it without training and without the cache. Nothing is trained here.

    python scripts/export_checkpoint.py --method latentface:rdm-both --out latentface.pt \\
        [--config FILE.toml] [--preset quick] [--set SECTION.KEY=VALUE ...] [--seed 0] [--data-root DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.checkpoints import file_sha256
from harness.cli import merge_overrides
from harness.config import PRESETS, load_config_file, parse_overrides
from harness.errors import BenchError
from harness.io import torch_save
from harness.registry import METHODS
from harness.session import Settings, session_for
from methods.latentface.checkpoint import save_latentface


def export(args: argparse.Namespace) -> Path:
    settings = Settings(
        preset=args.preset,
        overrides=merge_overrides(load_config_file(args.config) if args.config else {}, parse_overrides(args.overrides)),
        data_root=args.data_root,
        cache_dir=args.cache_dir,
        device=args.device,  # part of the model's identity: a CUDA run trains in bf16 with TF32
    )
    session = session_for(settings)
    name, _, variant = args.method.partition(":")
    if name not in ("unsup3d", "latentface"):
        raise BenchError(f"--method {name}: only unsup3d and latentface models are exported")
    method = session.method(name, variant or METHODS.get(name).variants[0], args.seed)
    if method.cfg.checkpoint:
        raise BenchError(f"{name}.checkpoint is set: that model is a file already ({method.cfg.checkpoint})")
    missing = [a for a in method.artifacts() if not a.is_built(Path(args.cache_dir))]
    if missing:
        raise BenchError(
            f"{args.method} seed {args.seed} is not trained in {args.cache_dir} with these settings "
            f"(missing {', '.join(a.kind for a in missing)}); run run_bench.py with the same --preset/--config/--set first"
        )
    method.load()
    out = Path(args.out)
    if name == "latentface" and method.stage2 is not None:
        save_latentface(out, method.stage1, method.stage2)
    else:  # stage 1 alone: the flat state dict the stage-1 artifact holds
        torch_save(out, (method.model if name == "unsup3d" else method.stage1).state_dict())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, help="unsup3d[:variant] or latentface[:variant]")
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="quick", choices=PRESETS)
    parser.add_argument("--config", metavar="FILE.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", "data"))
    parser.add_argument("--cache-dir", default=os.environ.get("BENCH_CACHE_DIR", ".cache"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="the device the model was trained with, as given to run_bench.py (a CUDA-trained model is exported on a GPU node)")
    args = parser.parse_args(argv)
    try:
        out = export(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.method.partition(":")[0]
    print(f"wrote {out} (sha256 {file_sha256(out)[:16]}...); evaluate it anywhere with --set {name}.checkpoint={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
