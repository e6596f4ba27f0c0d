"""Benchmark of everything that costs time, in one run: prints a table and writes JSON.

Measures, on one device:

- ``synthetic``: the built-in face world's generation rate (every split of a preset, from an
  empty cache, in parallel processes as the benchmark generates them);
- ``train``: each trainable method's training step at each preset, in images/s after one
  warm-up step: the real training (``Artifact`` + ``harness.train.fit`` with the ``train``
  section's device switches) run for a few steps in a temporary cache;
- ``features``: feature extraction of every method at each preset (untrained floors, the
  short-trained models above), images/s;
- ``renderer``: the stage-1 renderer's forward and backward at batch 16 and 64 px, and the
  renderer's share of a stage-1 training step; beside it, with PyTorch3D importable, PyTorch3D's
  rasterizer on the same meshes and the ratio;
- ``protocols``: a protocol rerun on cached features (FER and verification, ``pixels`` on the
  synthetic splits), in seconds.

With ``--project`` it prints what a ``--preset paper`` sweep of the paper's Tables 1-4 costs in
device-hours on this device (``scripts/bench_sweep_cost.py``). Timings on a shared machine are noisy:
compare figures measured side by side in one run.

Examples:
    python scripts/bench.py                                  # everything, this CPU (minutes)
    python scripts/bench.py --smoke --out bench.json         # seconds: smoke preset only (CI)
    python scripts/bench.py --device cuda --project --out bench-gpu.json
    python scripts/bench.py --project --from bench-gpu.json  # reproject a saved bench
    python scripts/bench.py --parts train --presets paper --set train.precision=fp32
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import bench_sweep_cost  # noqa: E402  (scripts/ is this file's folder)
from harness.accel import Accel, TrainConfig  # noqa: E402
from harness.cli import split  # noqa: E402
from harness.config import PRESETS, Config, parse_overrides  # noqa: E402
from harness.datasets.base import ClipSet, ImageSet  # noqa: E402
from harness.datasets.synthetic.dataset import SyntheticConfig, SyntheticFaces  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.io import write_json  # noqa: E402
from harness.method import Method, MethodContext, to_input  # noqa: E402
from harness.provenance import device_name, git_state, library_versions  # noqa: E402
from harness.registry import METHODS, load_plugins  # noqa: E402
from harness.runner import run_cell  # noqa: E402
from harness.session import Cell, Settings  # noqa: E402
from methods.latentface.method import LatentFaceConfig  # noqa: E402
from methods.selfsup import SelfSupervisedConfig  # noqa: E402
from methods.unsup3d.method import Unsup3DConfig  # noqa: E402
from methods.unsup3d.model import FOV_DEGREES, MAX_DEPTH, MIN_DEPTH, POSE_SCALE  # noqa: E402
from methods.unsup3d.renderer import Renderer, pytorch3d_available  # noqa: E402

PARTS = ("synthetic", "train", "features", "renderer", "protocols")
#: bench name -> (method, variant) of every trained network; latentface's rate is per stage-2 network.
TRAINED = {
    "unsup3d": ("unsup3d", "default"),
    "simclr": ("simclr", "default"),
    "mae": ("mae", "default"),
    "latentface": ("latentface", "rdm-both"),
    "latentface-encoder": ("latentface", "encoder"),
}
#: methods whose feature extraction is timed (latentface: rdm-both, DDIM sampling included).
EXTRACTED = {"pixels": "default", "random-cnn": "default", "unsup3d": "default", "simclr": "default", "mae": "default", "latentface": "rdm-both"}
#: images per batch of SimCLR and MAE at the paper preset on the CPU, where the preset's 256
#: images of 224 px would need tens of GB (and a step minutes); GPUs time the preset's batches.
CPU_PAPER_BATCH = 8
RENDER_BATCH, RENDER_SIZE = 16, 64
#: the synthetic world the bench generates and reuses (the ``--smoke`` one with small FER
#: splits, 20 and 10 per class, so that it takes seconds); ``quick`` is the default run's.
DATA = {"smoke": {"fer_train_images": "140", "fer_test_images": "70"}, "quick": {}}


# --- timing helpers -----------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[Any], object], device: torch.device, repeats: int, setup: Callable[[], Any] = lambda: None) -> float:
    """Median wall time of ``fn(setup())`` in ms over ``repeats`` after one warm-up (``setup`` untimed)."""
    fn(setup())
    times = []
    for _ in range(repeats):
        state = setup()
        sync(device)
        tic = time.perf_counter()
        fn(state)
        sync(device)
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def tile(images: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` images, cycling through ``images`` (speed does not depend on which faces they are)."""
    reps = math.ceil(n / len(images))
    return images.repeat(reps, 1, 1, 1)[:n]


# --- synthetic data -----------------------------------------------------------------------------
def bench_synthetic(preset: str, cache: Path, every_split: bool = True) -> tuple[dict, SyntheticFaces]:
    """Generate the splits of the ``preset`` synthetic world (``DATA``) into an empty ``cache``:
    all of them, or only the pretraining images."""
    dataset = SyntheticFaces(SyntheticConfig.resolve(preset, DATA[preset], "synthetic"), None, cache)
    splits: dict[str, dict[str, float]] = {}
    loaders = [
        ("pretrain", lambda: dataset.pretrain().images),
        ("clips", lambda: dataset.clips().frames.images),
        ("fer_train", lambda: dataset.fer_split("train").images),
        ("fer_test", lambda: dataset.fer_split("test").images),
        ("verification", lambda: dataset.verification()[0].images),
    ]
    for name, load in loaders if every_split else loaders[:1]:
        tic = time.perf_counter()
        n = len(load())
        splits[name] = {"images": n, "seconds": time.perf_counter() - tic}
    images = sum(s["images"] for s in splits.values())
    seconds = sum(s["seconds"] for s in splits.values())
    return {"preset": preset, "images": images, "seconds": seconds, "images_per_s": images / seconds, "splits": splits}, dataset


# --- training steps -----------------------------------------------------------------------------
def short_config(cls: type[Method], preset: str, steps: int, batch_cap: int, user: dict[str, str]) -> Config:
    """The method's ``preset`` config (with the user's ``--set``), cut to one epoch of
    ``steps + 1`` batches (the first warms up); ``batch_cap`` > 0 caps SimCLR's and MAE's batches."""
    base = cls.Config.resolve(preset, user, cls.name)
    over: dict[str, Any] = {}
    if isinstance(base, (Unsup3DConfig, SelfSupervisedConfig)):
        b = base.batch_size
        if isinstance(base, SelfSupervisedConfig):
            b = min(b, batch_cap) if batch_cap else b
            over["warmup_epochs"] = 0
        over.update(epochs=1, batch_size=b, train_images=(steps + 1) * b)
    if isinstance(base, Unsup3DConfig) and preset == "paper" and "perceptual_fallback" not in user:
        over["perceptual_fallback"] = "random"  # the paper trains with a VGG16 term: time its cost
    if isinstance(base, LatentFaceConfig):
        over.update(stage2_epochs=1, holdout=0.0)
    return cls.Config.resolve(preset, {**user, **over}, cls.name)


def clips_for(images: torch.Tensor, rows: int, frames: int = 16) -> ClipSet:
    """Clips of ``frames`` frames holding at least ``rows`` frames (stage 2 trains on frame rows)."""
    n = math.ceil(rows / frames) * frames
    return ClipSet(frames=ImageSet(tile(images, n)), clips=list(torch.arange(n).view(-1, frames)))


def bench_training(
    preset: str, names: list[str], images: torch.Tensor, cache: Path, device: torch.device, train: TrainConfig, steps: int,
    batch_cap: int, overrides: dict[str, dict[str, str]],
) -> tuple[dict[str, dict], dict[str, Method]]:
    """Train the methods ``names`` (of ``TRAINED``) for ``steps + 1`` steps each and read their
    warm rates from the artifact summaries."""
    configs = {name: short_config(METHODS.get(TRAINED[name][0]), preset, steps, batch_cap, section(overrides, TRAINED[name][0])) for name in names}
    need = max(getattr(c, "train_images", 0) for c in configs.values())
    rows = max([(steps + 1) * c.stage2_batch_size for c in configs.values() if isinstance(c, LatentFaceConfig)], default=16)
    ctx = MethodContext.standalone(
        ImageSet(tile(images, need)), cache, clips=clips_for(images, rows), device=device, name=f"bench-{preset}", train=train
    )
    out, methods = {}, {}
    for name in names:
        method_name, variant = TRAINED[name]
        cfg = configs[name]
        method = METHODS.get(method_name)(cfg, variant, ctx)
        tic = time.perf_counter()
        method.prepare()
        wall = time.perf_counter() - tic
        done = json.loads((method.artifacts()[-1].path(cache) / "done.json").read_text())
        if isinstance(cfg, LatentFaceConfig):  # one network per latent kind; the rate is per network
            rate = statistics.mean(done[k]["warm_images_per_second"] for k in ("texture", "shape"))
            entry = {"batch": cfg.stage2_batch_size, "unit": "stage-2 frame rows per network"}
        else:
            rate = done["warm_images_per_second"]
            entry = {"batch": cfg.batch_size, "input_size": cfg.input_size}
            if isinstance(cfg, Unsup3DConfig):
                entry["perceptual"] = done["perceptual"]
        out[name] = {**entry, "images_per_s": rate, "ms_per_step": 1000 * entry["batch"] / rate, "timed_steps": steps, "wall_s": wall}
        methods[name] = method
    return out, methods


# --- features -----------------------------------------------------------------------------------
@torch.no_grad()
def extraction_rate(method: Method, images: torch.Tensor, batch: int, budget_s: float) -> float:
    """Images/s of ``encode`` (the ``fer`` view) over batches of ``images``, after one warm-up
    batch, for at least one batch and at most about ``budget_s`` seconds."""
    device = method.ctx.device

    def run(start: int) -> int:
        chunk = images[start : start + batch]
        method.encode(to_input(chunk, method.input_size, device), "fer", torch.arange(start, start + len(chunk)))
        return len(chunk)

    run(0)
    sync(device)
    tic, done, start = time.perf_counter(), 0, 0
    while done == 0 or (time.perf_counter() - tic < budget_s and start < len(images)):
        done += run(start)
        start += batch
        sync(device)
    return done / (time.perf_counter() - tic)


def bench_features(
    preset: str, names: list[str], trained: dict[str, Method], images: torch.Tensor, cache: Path, device: torch.device,
    train: TrainConfig, batch: int, budget_s: float, overrides: dict[str, dict[str, str]],
) -> dict[str, dict]:
    """Extraction rates of the methods ``names`` (of ``EXTRACTED``); learned ones come from ``trained``."""
    ctx = MethodContext.standalone(ImageSet(images), cache, device=device, name=f"bench-{preset}", train=train)
    out = {}
    for name in names:
        variant = EXTRACTED[name]
        method = trained.get(name)
        if method is None:  # a fixed method (floor): nothing to train; trained ones are prepared
            cls = METHODS.get(name)
            method = cls(cls.Config.resolve(preset, section(overrides, name), name), variant, ctx)
            method.prepare()
        out[name] = {"batch": batch, "input_size": method.input_size, "images_per_s": extraction_rate(method, images, batch, budget_s)}
    return out


# --- renderer -----------------------------------------------------------------------------------
def face_like_depth(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth bumps in [0.9, 1.1] with random centres and the 1.04 border columns of stage 1."""
    axis = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    centre = (torch.rand(batch, 2, 1, 1, generator=generator) - 0.5) * 0.4
    bump = torch.exp(-3 * ((cols - centre[:, 0]) ** 2 + (rows - centre[:, 1]) ** 2))
    depth = MAX_DEPTH - (MAX_DEPTH - MIN_DEPTH) * bump
    depth[:, :, :2] = depth[:, :, -2:] = 0.7 * MAX_DEPTH + 0.3 * MIN_DEPTH
    return depth


def time_renderer(backend: str, batch: int, size: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Median ms of the rasterizer (``render_depth``) forward and backward and of the full
    ``render`` (rasterize + warp) forward+backward, on face-like meshes in the training pose range."""
    generator = torch.Generator().manual_seed(0)
    renderer = Renderer(size, FOV_DEGREES, MIN_DEPTH, MAX_DEPTH, backend=backend)
    depth = face_like_depth(batch, size, generator).to(device)
    pose = ((torch.rand(batch, 6, generator=generator) * 2 - 1) * torch.tensor(POSE_SCALE)).to(device)
    image = (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device)

    def leaves() -> tuple[torch.Tensor, ...]:
        return tuple(x.clone().requires_grad_() for x in (depth, pose, image))

    def rasterize(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return renderer.render_depth(inputs[0], inputs[1])

    def render_backward(inputs: tuple[torch.Tensor, ...]) -> None:
        d, p, t = inputs
        rendered, mask, _ = renderer.render(d, t, p)
        (rendered * mask).sum().backward()

    return {
        "rasterize_forward_ms": median_ms(rasterize, device, repeats, leaves),
        "rasterize_backward_ms": median_ms(lambda d: d.sum().backward(), device, repeats, lambda: rasterize(leaves())),
        "render_forward_backward_ms": median_ms(render_backward, device, repeats, leaves),
    }


def bench_renderer(device: torch.device, repeats: int, stage1: dict[str, dict]) -> dict[str, Any]:
    """The renderer at batch 16 and 64 px, PyTorch3D beside it when importable, and its share of
    each timed stage-1 step (the step renders both flip branches: twice its batch)."""
    out: dict[str, Any] = {"batch": RENDER_BATCH, "size": RENDER_SIZE, "torch": time_renderer("torch", RENDER_BATCH, RENDER_SIZE, device, repeats)}
    if pytorch3d_available():
        out["pytorch3d"] = time_renderer("pytorch3d", RENDER_BATCH, RENDER_SIZE, device, repeats)
        out["pytorch3d_over_torch"] = {k: out["pytorch3d"][k] / out["torch"][k] for k in out["torch"]}
    else:
        out["pytorch3d"] = "not importable here: no side-by-side comparison (pip install pytorch3d, then rerun)"
    shares = {}
    for preset, entry in stage1.items():
        ms = time_renderer("torch", 2 * entry["batch"], entry["input_size"], device, repeats)["render_forward_backward_ms"]
        shares[preset] = {"render_forward_backward_ms": ms, "step_ms": entry["ms_per_step"], "share": ms / entry["ms_per_step"]}
    out["share_of_stage1_step"] = shares
    return out


# --- protocols ----------------------------------------------------------------------------------
def bench_protocols(preset: str, dataset: SyntheticFaces, cache: Path, results: Path, device: str) -> dict[str, dict]:
    """Seconds of a protocol rerun on cached features: a cell run twice, timing the second.
    ``items``: what the probe trains on (FER training images; verification pairs, all folds)."""
    settings = Settings(preset=preset, overrides={"synthetic": DATA[preset]}, cache_dir=str(cache), results_dir=str(results), device=device)
    items = {"fer": len(dataset.fer_split("train")), "verification": len(dataset.verification()[1])}
    out = {}
    for protocol in ("fer", "verification"):
        cell = Cell("pixels", "default", protocol, "synthetic", 0)
        run_cell(cell, settings)  # computes and caches the features
        tic = time.perf_counter()
        run_cell(cell, settings)
        seconds = time.perf_counter() - tic
        out[protocol] = {"method": "pixels", "dataset": f"synthetic ({preset})", "items": items[protocol], "seconds": seconds}
    return out


# --- the command --------------------------------------------------------------------------------
def section(overrides: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """``--set`` values of a method, with those of the sections it shares (latentface: unsup3d)."""
    return Settings(overrides=overrides).section(name, METHODS.get(name).Config.SHARED_SECTIONS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="seconds-long form: smoke preset, smoke data, few repeats (CI)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--presets", help="comma-separated presets whose training and features are timed (default: all; smoke with --smoke)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default: all of {', '.join(PARTS)})")
    p.add_argument("--methods", help=f"comma-separated methods to train and extract (default: all of {', '.join(dict.fromkeys([*TRAINED, *EXTRACTED]))})")
    p.add_argument("--steps", type=int, help="timed training steps per method, after one warm-up (default: 20 on CUDA; "
                   "on the CPU 2 with --smoke, else 3, and 1 for the paper preset)")
    p.add_argument("--paper-batch", type=int, help=f"cap SimCLR's and MAE's paper-preset batches (256 images of 224 px; default: {CPU_PAPER_BATCH} on the CPU, the preset's on CUDA)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field of the methods or the device switches, e.g. train.precision=fp32 (repeatable)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="also write the figures as JSON to this file")
    p.add_argument("--project", action="store_true", help="print what a --preset paper sweep of Tables 1-4 costs on this device")
    p.add_argument("--seeds", type=int, default=1, help="seeds per cell in the projection (default: 1)")
    p.add_argument("--from", dest="source", metavar="FILE", help="with --project: project from a saved bench JSON instead of measuring")
    return p


@dataclasses.dataclass
class Plan:
    """What one bench run measures, checked before anything runs."""

    device: torch.device
    overrides: dict[str, dict[str, str]]
    train: TrainConfig
    parts: list[str]
    presets: list[str]
    trained: list[str]
    extracted: list[str]
    smoke: bool
    steps: Optional[int]
    paper_batch: int

    def steps_for(self, preset: str) -> int:
        """Timed training steps: few on a CPU (a paper-size step takes seconds there)."""
        if self.steps:
            return self.steps
        if self.device.type == "cuda":
            return 20
        return 2 if self.smoke else 1 if preset == "paper" else 3

    @property
    def data_preset(self) -> str:
        return "smoke" if self.smoke else "quick"


def make_plan(args: argparse.Namespace) -> Plan:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is visible; use --device cpu or run on a GPU node")
    overrides = parse_overrides(args.overrides)
    for name in overrides:
        if name != "train" and name not in METHODS:
            raise BenchError(f"--set {name}.*: the bench takes the train section and method sections ({', '.join(METHODS.names())})")
    parts = split(args.parts)
    presets = split(args.presets) if args.presets else (["smoke"] if args.smoke else list(PRESETS))
    if set(parts) - set(PARTS) or set(presets) - set(PRESETS):
        raise BenchError(f"--parts takes {', '.join(PARTS)}; --presets takes {', '.join(PRESETS)}")
    every = list(dict.fromkeys([*TRAINED, *EXTRACTED]))
    methods = split(args.methods) if args.methods else every
    if set(methods) - set(every):
        raise BenchError(f"--methods takes {', '.join(every)}")
    if args.project and ("paper" not in presets or not {"train", "features", "protocols"} <= set(parts) or args.methods):
        raise BenchError("--project needs the paper preset's training and feature rates and the protocol reruns: "
                         "include paper in --presets (it is not in --smoke's) and train,features,protocols in --parts, and every method")
    return Plan(
        device=device,
        overrides=overrides,
        train=TrainConfig.resolve("quick", overrides.get("train", {}), "train"),
        parts=parts,
        presets=presets,
        trained=[m for m in TRAINED if m in methods],
        extracted=[m for m in EXTRACTED if m in methods],
        smoke=args.smoke,
        steps=args.steps,
        paper_batch=args.paper_batch or (CPU_PAPER_BATCH if device.type == "cpu" else 0),
    )


def say(text: str) -> None:
    print(text, flush=True)


def measure(plan: Plan) -> dict[str, Any]:
    """Run the planned parts in a temporary cache; the figures as JSON (printed as they come)."""
    device, parts = plan.device, set(plan.parts)
    accel = Accel.resolve(plan.train, device)
    accel.apply_backend_flags()
    say(f"bench on {device_name(device)}, torch {torch.__version__}, switches {accel.describe()}")
    result: dict[str, Any] = {
        "meta": {
            "device": device_name(device),
            "device_type": device.type,
            "threads": torch.get_num_threads(),
            "smoke": plan.smoke,
            "argv": sys.argv[1:],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git": git_state(),
            "libraries": library_versions(),
            "train_switches": accel.describe(),
            "steps": {preset: plan.steps_for(preset) for preset in plan.presets},
            "data_preset": plan.data_preset,
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cache, tic = Path(tmp) / "cache", time.perf_counter()
        synthetic, dataset = bench_synthetic(plan.data_preset, cache, every_split=bool({"synthetic", "protocols"} & parts))
        if "synthetic" in parts:
            result["synthetic"] = synthetic
            say(f"synthetic ({plan.data_preset}): {synthetic['images']} images in {synthetic['seconds']:.1f} s = {synthetic['images_per_s']:.0f} images/s")
        images = dataset.pretrain().images
        stage1: dict[str, dict] = {}
        for preset in plan.presets:
            trained: dict[str, Method] = {}
            # Features and the renderer's share need the trained models: the training runs for them too.
            if plan.trained and {"train", "features", "renderer"} & parts:
                cap = plan.paper_batch if preset == "paper" else 0
                rates, trained = bench_training(preset, plan.trained, images, cache, device, plan.train, plan.steps_for(preset), cap, plan.overrides)
                if "unsup3d" in rates:
                    stage1[preset] = rates["unsup3d"]
                if "train" in parts:
                    result.setdefault("train_step", {})[preset] = rates
                    for name, r in rates.items():
                        say(f"train {preset:6} {name:19} batch {r['batch']:4}  {r['images_per_s']:9.1f} img/s  {r['ms_per_step']:9.1f} ms/step")
            if "features" in parts:
                batch = CPU_PAPER_BATCH if preset == "paper" and device.type == "cpu" else 256
                budget = 1.0 if plan.smoke else 3.0 if device.type == "cuda" else 10.0  # seconds of extraction per method
                feats = bench_features(preset, plan.extracted, trained, images, cache, device, plan.train, batch, budget, plan.overrides)
                result.setdefault("features", {})[preset] = feats
                for name, r in feats.items():
                    say(f"features {preset:6} {name:17} {r['images_per_s']:9.1f} img/s ({r['input_size']} px)")
        if "renderer" in parts:
            result["renderer"] = bench_renderer(device, 3 if plan.smoke else 20, stage1)
            show_renderer(result["renderer"])
        if "protocols" in parts:
            result["protocol_rerun"] = reruns = bench_protocols(plan.data_preset, dataset, cache, Path(tmp) / "results", device.type)
            for name, r in reruns.items():
                say(f"protocol rerun on cached features: {name} {r['seconds']:.2f} s ({r['method']}, {r['dataset']})")
        result["meta"]["seconds"] = time.perf_counter() - tic
    return result


def show_renderer(rend: dict[str, Any]) -> None:
    t = rend["torch"]
    say(f"renderer batch {rend['batch']}, {rend['size']} px: rasterize {t['rasterize_forward_ms']:.1f} ms forward, "
        f"{t['rasterize_backward_ms']:.1f} ms backward; render forward+backward {t['render_forward_backward_ms']:.1f} ms")
    if isinstance(rend["pytorch3d"], dict):
        for k, ratio in rend["pytorch3d_over_torch"].items():
            say(f"  pytorch3d {k}: {rend['pytorch3d'][k]:.1f} ms = {ratio:.2f}x the torch backend's")
    else:
        say(f"  pytorch3d: {rend['pytorch3d']}")
    for preset, s in rend["share_of_stage1_step"].items():
        say(f"  renderer's share of a {preset} stage-1 step: {s['share']:.1%} ({s['render_forward_backward_ms']:.1f} of {s['step_ms']:.1f} ms)")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        load_plugins()
        if args.source:
            if not args.project:
                raise BenchError("--from reads a saved bench for --project; add --project")
            try:
                result = json.loads(Path(args.source).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise BenchError(f"--from {args.source}: cannot read a bench JSON ({exc})") from None
        else:
            result = measure(make_plan(args))
        if args.project:
            try:
                result["projection"] = bench_sweep_cost.project(result, args.seeds)
            except KeyError as exc:
                raise BenchError(f"--project needs the paper preset's train and features figures and the protocol reruns; missing {exc}. Run with --presets paper (not --smoke)") from None
            print("\n" + bench_sweep_cost.render(result["projection"]))
        if args.out:
            write_json(Path(args.out), result)
            print(f"wrote {args.out}")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
