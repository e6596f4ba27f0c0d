"""The registered method ``unsup3d`` and the stage-1 artifact that LatentFace reuses.

Stage 1 (paper Sec. 2.2) is trained once per (training config, pretraining data, seed, ablation)
and shared: ``unsup3d`` reads its latents ``[Z_t, Z_s]`` as features, and every ``latentface``
variant trains stage 2 on top of the same model. Stage 2 calls ``stage1_artifact`` (a dependency
to list in its own ``artifacts()``) and ``load_stage1`` (the trained model, frozen, in eval
mode), then ``model.encode_latents(x)``.

Variants are the rows of the paper's Table 3: ``no-light`` and ``no-pose`` retrain stage 1
without that encoder; ``no-shape`` and ``no-texture`` drop a latent from the default model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from harness.accel import Accel
from harness.artifacts import Artifact
from harness.config import Config, at_least, choice, dotted, existing_file, optional, positive, power_of_two
from harness.errors import BenchError
from harness.io import torch_load, torch_save
from harness.registry import register_ablation, register_method
from harness.train import TrainResult, fit
from harness.method import Method, MethodContext, model_seed, part_slices, to_input
from methods.unsup3d.losses import (
    CONFIDENCE_FORMS,
    PERCEPTUAL_FALLBACKS,
    PerceptualLoss,
    PerceptualSource,
    resolve_perceptual,
    scale_invariant_depth_error,
    vgg16_relu3_3,
)
from methods.unsup3d.checkpoint import CheckpointFile, load_stage1_weights, read_checkpoint
from methods.unsup3d.model import FOV_DEGREES, Unsup3D, save_reconstruction_grid
from methods.unsup3d.networks import CHANNELS_PER_GROUP

#: bump when a code change alters the trained stage-1 model for the same config
STAGE1_VERSION = 1
#: images shown in the reconstruction figure and scored for depth accuracy after training.
FIGURE_IMAGES = 8
DEPTH_EVAL_IMAGES = 256
#: fields that do not change the trained weights (the resolved perceptual mode stands in for
#: the first two in the artifact key).
_NOT_IN_KEY = ("vgg_weights", "perceptual_fallback", "ckpt_every")


@dataclasses.dataclass(frozen=True)
class Unsup3DConfig(Config):
    """Stage-1 settings; defaults are the ``quick`` preset (CPU, minutes), see ``PRESETS``.

    Attributes:
        input_size: image side in pixels (paper: 64).
        width: network width multiplier (paper: 1 = 64 base channels, 32 for light and pose);
            a multiple of 1/16.
        latent_dim: size of Z_t and Z_s (paper: 256).
        epochs, batch_size: schedule (paper: 30 epochs, batch 16).
        lr, weight_decay: Adam (paper: 1e-4, silent on weight decay; the ``paper`` preset follows
            Unsup3D's released training, 5e-4; ``quick`` doubles the rate for its few hundred
            steps and has none).
        grad_clip: global gradient-norm clipping, None for off (a public re-implementation
            used 5 against training collapse).
        train_images: train on the first this many pretraining images, 0 for all.
        perceptual_form: ``gaussian`` (Unsup3D reference) or ``laplacian`` (paper Eq. 10).
        perceptual_fallback: without ImageNet VGG16 weights: ``off`` (no perceptual term) or
            ``random`` (a fixed randomly initialised VGG16).
        vgg_weights: path of ``vgg16-397923af.pth``; empty: torchvision's hub cache.
        flip_weight, perceptual_weight: lambda_flip and lambda_f of paper Eq. 11.
        renderer: rasterizer backend, ``torch``, ``pytorch3d`` or ``auto``.
        ckpt_every: also checkpoint every this many steps (0: once per epoch).
        checkpoint: a weight file to load instead of training (``methods/unsup3d/checkpoint.py``):
            an Unsup3D release (``checkpoint030.pth``), a LatentFace release (``diffusion_64.pth``)
            or this project's stage-1 ``model.pt``; empty: train. The file's sha256 identifies
            the model in caches and results; the size settings must match it (the releases are
            the ``paper`` preset's networks).
    """

    input_size: int = 32
    width: float = 0.25
    latent_dim: int = 64
    epochs: int = 3
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 5.0
    train_images: int = 0
    perceptual_form: str = "gaussian"
    perceptual_fallback: str = "off"
    vgg_weights: str = ""
    flip_weight: float = 0.5
    perceptual_weight: float = 1.0
    renderer: str = "torch"
    ckpt_every: int = 0
    checkpoint: str = ""

    PRESETS = {
        "smoke": {"width": 0.125, "latent_dim": 16, "epochs": 1, "batch_size": 8, "train_images": 32},
        "paper": {
            "input_size": 64, "width": 1.0, "latent_dim": 256, "epochs": 30, "batch_size": 16, "lr": 1e-4, "grad_clip": None,
            "weight_decay": 5e-4,
        },
    }
    LATE_FIELDS = ("checkpoint",)
    #: the ``--set`` section, for messages about this config's settings
    SECTION: ClassVar[str] = "unsup3d"

    RULES = {
        "input_size": power_of_two(16),  # the encoders halve it down to a 4x4 map
        "width": positive,
        "latent_dim": at_least(1),
        "epochs": at_least(1),
        "batch_size": at_least(1),
        "lr": positive,
        "weight_decay": at_least(0),
        "grad_clip": optional(positive),
        "train_images": at_least(0),
        "perceptual_form": choice(*CONFIDENCE_FORMS),
        "perceptual_fallback": choice(*PERCEPTUAL_FALLBACKS),
        "flip_weight": at_least(0),
        "perceptual_weight": at_least(0),
        "renderer": choice("torch", "pytorch3d", "auto", needs={"pytorch3d": "pytorch3d"}),
        "ckpt_every": at_least(0),
        "vgg_weights": existing_file("give the path of vgg16-397923af.pth or leave it empty"),
        "checkpoint": existing_file("give the path of a checkpoint (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        if (64 * self.width) % CHANNELS_PER_GROUP:
            raise BenchError(f"{dotted(section)}width={self.width}: use a positive multiple of 1/16 (1 = paper widths)")


# --- stage 1 as a shared artifact ----------------------------------------------------------------
def stage1_config(cfg: Config) -> Unsup3DConfig:
    """The stage-1 settings of any config that carries ``Unsup3DConfig``'s fields (e.g. a
    stage-2 config that subclasses it), so both methods key the same artifact."""
    return Unsup3DConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Unsup3DConfig)})


def perceptual_source(cfg: Config) -> PerceptualSource:
    """Which VGG16 the perceptual loss uses on this machine (warns once when it is not ImageNet's)."""
    return resolve_perceptual(cfg.vgg_weights, cfg.perceptual_fallback)


def stage1_origin(cfg: Config, method: Method) -> dict:
    """Where a stage-1 model comes from, for ``Method.info``: its weight file, or the perceptual
    loss it is trained with."""
    if cfg.checkpoint:
        return {"weights": method.weights_file()}
    source = perceptual_source(cfg)
    return {"perceptual_loss": source.mode, "perceptual_loss_detail": source.describe()}


def build_model(cfg: Config, seed: int, light: bool = True, pose: bool = True, perceptual: Optional[PerceptualSource] = None) -> Unsup3D:
    """A freshly initialised stage-1 model (weights drawn from ``seed``, global RNG untouched).

    Args:
        perceptual: build the perceptual loss from this source; None for a model that is only
            loaded and evaluated.
    """
    s = stage1_config(cfg)
    features = vgg16_relu3_3(perceptual, seed) if perceptual is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Unsup3D(
            image_size=s.input_size,
            width=s.width,
            latent_dim=s.latent_dim,
            light=light,
            pose=pose,
            perceptual=PerceptualLoss(features, s.perceptual_form) if features is not None else None,
            flip_weight=s.flip_weight,
            perceptual_weight=s.perceptual_weight,
            renderer_backend=s.renderer,
        )


def stage1_networks(model: Unsup3D) -> list[Optional[torch.nn.Module]]:
    """The networks of a stage-1 model (None where ablated): with bf16 training only these run
    in bfloat16 (and with ``train.compile`` only these are compiled); the depth map, renderer,
    shading and losses between them stay float32."""
    perceptual = model.perceptual.features if model.perceptual is not None else None
    return [model.texture_net, model.depth_net, model.light_net, model.pose_net, model.confidence_net, perceptual]


def train_stage1(
    model: Unsup3D, images: torch.Tensor, cfg: Config, seed: int, workdir: Path, device: torch.device, accel: Optional[Accel] = None
) -> TrainResult:
    """Train (or resume training) ``model`` on uint8 images (N, 3, S, S) with the shared loop.

    Each batch is resized to the model's input and half of it, drawn per step, is mirrored
    (random horizontal flip, as in the paper's training). ``accel``: the device switches.
    """
    s = stage1_config(cfg)
    accel = accel or Accel()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_input(batch, s.input_size, device)
        coin = torch.Generator().manual_seed(seed * 1_000_003 + int(model.train_steps))
        flip = (torch.rand(x.shape[0], generator=coin) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        model.train_steps += 1
        return model(x).losses

    with accel.networks(*stage1_networks(model)):
        return fit(
            model=model,
            optimizer=optimizer,
            step=step,
            data=images,
            epochs=s.epochs,
            batch_size=s.batch_size,
            seed=seed,
            workdir=workdir,
            device=device,
            grad_clip=s.grad_clip,
            ckpt_every=s.ckpt_every,
            desc="unsup3d stage 1",
            setting_hint=" (--set unsup3d.lr=... / unsup3d.grad_clip=5)",
            batch_setting="unsup3d.batch_size",
            accel=accel,
        )


def latent_name(kind: str) -> str:
    """``Z_t`` for the texture latent, ``Z_s`` for the shape latent (the paper's names)."""
    return f"Z_{kind[0]}"


def predicted_depth(model: Unsup3D, x: torch.Tensor) -> torch.Tensor:
    """The model's view depth (B, H, W), ``nan`` where it renders no face."""
    view = model.view_depth(x)
    return view.masked_fill(view >= model.renderer.depth_clamp[1], float("nan"))


@torch.no_grad()
def depth_error(model: Unsup3D, images: torch.Tensor, depth: torch.Tensor, device: torch.device, batch_size: int = 64) -> float:
    """Mean scale-invariant depth error (SIDE) of the predicted view depth against ground truth.

    Args:
        images: uint8 (N, 3, S, S).
        depth: ground-truth view depth (N, S', S'), 0 on the background, resized to the
            model's input size; pixels that both the truth and the reconstruction cover are scored.
    """
    size = model.renderer.image_size
    errors = []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start : start + batch_size], size, device)
        view = model.view_depth(x)
        target = depth[start : start + x.shape[0], None].float().to(device)
        # nearest: averaging would blend the face with the background's zero depth
        target = F.interpolate(target, size=(size, size), mode="nearest")[:, 0]
        mask = (view < model.renderer.depth_clamp[1]) & (target > 0)
        errors.append(scale_invariant_depth_error(view, target, mask))
    return float(torch.cat(errors).mean())


def stage1_artifact(cfg: Config, ctx: MethodContext, light: bool = True, pose: bool = True) -> Artifact:
    """The trained stage-1 model for this config, pretraining data and seed.

    The key holds only what changes the weights: never the method name or variant, except the
    ``light``/``pose`` ablations, so ``unsup3d`` and every ``latentface`` variant share one model.
    """
    s = stage1_config(cfg)
    source = perceptual_source(s)
    key = {
        "config": {k: v for k, v in s.to_dict().items() if k not in _NOT_IN_KEY},
        "perceptual": source.mode,
        "data": ctx.pretrain_fingerprint,
        "seed": ctx.seed,
        "light": light,
        "pose": pose,
        **ctx.accel.key(),
    }

    def build(folder: Path) -> dict[str, Any]:
        pretrain = ctx.load_pretrain()
        images = pretrain.images[: s.train_images] if s.train_images else pretrain.images
        seed = model_seed(ctx, "stage1")
        model = build_model(s, seed, light=light, pose=pose, perceptual=source)
        result = train_stage1(model, images, s, seed, folder, ctx.device, ctx.accel)
        torch_save(folder / "model.pt", model.state_dict())
        save_reconstruction_grid(model, to_input(images[:FIGURE_IMAGES], s.input_size, ctx.device), folder / "reconstructions.png")
        summary: dict[str, Any] = {**result.summary(), "perceptual": source.mode, "perceptual_detail": source.describe(), "train_images": len(images)}
        if "depth" in pretrain.extras:
            n = min(DEPTH_EVAL_IMAGES, len(images))
            summary["side"] = depth_error(model, images[:n], pretrain.extras["depth"][:n], ctx.device)
        return summary

    return Artifact(kind="stage1", key=key, build=build, version=STAGE1_VERSION)


def load_stage1(cfg: Config, ctx: MethodContext, light: bool = True, pose: bool = True) -> Unsup3D:
    """The stage-1 model, frozen, in eval mode on ``ctx.device``: from ``cfg.checkpoint`` when
    set, else the trained artifact (built first if needed)."""
    model = build_model(cfg, seed=0, light=light, pose=pose)  # weights come from a file
    if cfg.checkpoint:
        load_stage1_weights(model, stage1_checkpoint(cfg, light, pose))
    else:
        folder = stage1_artifact(cfg, ctx, light=light, pose=pose).ensure(ctx.cache_dir)
        model.load_state_dict(torch_load(folder / "model.pt"))
    model.requires_grad_(False)
    return model.to(ctx.device).eval()


def stage1_checkpoint(cfg: Config, light: bool = True, pose: bool = True) -> CheckpointFile:
    """``cfg.checkpoint`` read and checked against a stage-1 model with/without light and pose
    encoders (one-line errors for what cannot fit, before anything runs)."""
    ckpt = read_checkpoint(cfg.checkpoint, f"{cfg.SECTION}.checkpoint")
    if ckpt.layout != "project" and not (light and pose):
        missing = "light" if not light else "pose"
        raise BenchError(
            f"{ckpt.where}: the released model has a {missing} encoder; the no-{missing} ablation retrains stage 1 "
            "without it, so it cannot come from this file (use variant default, no-shape or no-texture)"
        )
    return ckpt


# --- the registered method -----------------------------------------------------------------------
#: the stage-1 latents in feature order, and the environment codes with their widths.
LATENT_KINDS = ("texture", "shape")
ENVIRONMENT = {"light": 4, "pose": 6}
#: variants that retrain stage 1 without an encoder, and variants that drop a latent.
_RETRAINED = {"no-light": {"light": False}, "no-pose": {"pose": False}}
_DROPPED = {"no-shape": "shape", "no-texture": "texture"}


@register_method("unsup3d")
class Unsup3DMethod(Method):
    """Unsup3D / LatentFace stage 1 alone.

    Features ``[Z_t, Z_s]`` for the paper's protocols; the ``parts`` view adds the light and pose
    codes: ``Z_t``, ``Z_s``, ``light``, ``pose`` (less what a Table 3 variant removes).
    """

    Config = Unsup3DConfig
    variants = ("default", "no-light", "no-pose", "no-shape", "no-texture")
    predicts_depth = True
    depth_fov = FOV_DEGREES
    batches = {"batch_size": ("pretrain", "train_images")}

    def __init__(self, cfg: Unsup3DConfig, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        self.ablation = _RETRAINED.get(variant, {})
        self.kinds = tuple(k for k in LATENT_KINDS if k != _DROPPED.get(variant))
        self.environment = tuple(e for e in ENVIRONMENT if self.ablation.get(e, True))
        self.model: Optional[Unsup3D] = None
        if cfg.checkpoint:  # fail now, as one line, if the file cannot serve this variant
            stage1_checkpoint(cfg, **self.ablation)

    def artifacts(self) -> list[Artifact]:
        if self.cfg.checkpoint:
            return []
        return [stage1_artifact(self.cfg, self.ctx, **self.ablation)]

    def weights_file(self) -> Optional[dict]:
        return stage1_checkpoint(self.cfg, **self.ablation).record() if self.cfg.checkpoint else None

    def load(self) -> None:
        self.model = load_stage1(self.cfg, self.ctx, **self.ablation)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode_latents(x)
        names = self.kinds + (self.environment if view == "parts" else ())
        return torch.cat([latents[n] for n in names], dim=1)

    def feature_view(self, view: str) -> str:
        return "parts" if view == "parts" else ""  # FER and verification both read [Z_t, Z_s]

    def parts(self) -> dict[str, slice]:
        widths = {latent_name(k): stage1_config(self.cfg).latent_dim for k in self.kinds}
        return part_slices({**widths, **{e: ENVIRONMENT[e] for e in self.environment}})

    @torch.no_grad()
    def depth(self, x: torch.Tensor) -> torch.Tensor:
        return predicted_depth(self.model, x)

    def info(self) -> dict:
        return {**stage1_origin(self.cfg, self), "features": list(self.kinds)}


register_ablation(
    "pixel",
    [("unsup3d", "no-light"), ("unsup3d", "no-pose"), ("unsup3d", "no-shape"), ("unsup3d", "no-texture"), ("unsup3d", "default")],
    title="Table 3: ablation of pixel-space disentangling (stage 1)",
    table="table3_pixel_ablation",
    # the paper's Table 3 (FER accuracy, F1); its "Full Representations" row is the LatentFace model
    paper={
        ("unsup3d", "no-light"): {"rafdb": (64.21, 50.67), "affectnet": (33.05, 30.43)},
        ("unsup3d", "no-pose"): {"rafdb": (67.07, 55.02), "affectnet": (37.42, 35.65)},
        ("unsup3d", "no-shape"): {"rafdb": (68.38, 58.22), "affectnet": (37.67, 36.37)},
        ("unsup3d", "no-texture"): {"rafdb": (72.58, 60.73), "affectnet": (41.22, 39.24)},
    },
)
