"""The registered method ``facecycle``: both training cycles as artifacts, the authors' files, features.

Training (official ``train_expression.py``, then ``train_id.py``) is two artifacts: the
expression cycle (expression encoder, flow decoder, generator), then the identity cycle on top of
it with those frozen (identity encoder, normaliser). Each walks the clips of ``pretrain.clips``
(``ctx.load_video()``: for ``synthetic`` its smooth clips, one expression episode each; for
``voxceleb`` and ``lfw-clips`` their clips) once per epoch, one pair per clip as the official
loader does per video folder, through the shared loop. Pairs are two frames drawn at random
from a clip, whatever their spacing, as in the official loader. ``--set facecycle.checkpoint=PATH`` loads the authors' file instead (a cell that
never trains).

Features: ``fer``, ``knn`` and ``verification`` read the representation the paper counts, the
flattened last map of the expression encoder (128 x 7 x 7 = 6272 at the paper preset's 100 px,
the official RAF-DB evaluation's input and normalisation). ``parts`` (Table 5): ``exp`` (that
map), ``id`` (the identity encoder's same map), and the two 256-d codes ``exp_code``,
``id_code`` (computed at the training resolution, where they are defined).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from harness.artifacts import Artifact
from harness.config import Config, at_least, choice, dotted, existing_file, positive
from harness.errors import BenchError
from harness.io import torch_load, torch_save
from harness.method import Method, MethodContext, model_seed, part_slices
from harness.registry import register_method
from harness.train import fit
from methods.facecycle.checkpoint import EXPRESSION_STAGE, FaceCycleFile, load_nets, official_state, read_file
from methods.facecycle.cycles import FaceCycleNets, expression_losses, identity_losses, normalise, training_pair
from methods.facecycle.losses import VGG_FALLBACKS, GramPerceptual, VGGSource, resolve_vgg19, vgg19_layers
from methods.facecycle.networks import ENCODER_STRIDE, VGG_FRONT, feature_map_side, widths

#: bump when a code change alters a trained cycle for the same config
EXPRESSION_VERSION = 1
IDENTITY_VERSION = 1
#: the official schedules' shape (per epoch): the first epoch at a fraction of the rate, then the
#: rate, then a decay from ``*_decay_epoch`` (expression: 1e-5, 5e-5, 1e-5; identity: 5e-5,
#: 1e-4, 1e-5).
EXPRESSION_FIRST, EXPRESSION_DECAY = 0.2, 0.2
IDENTITY_FIRST, IDENTITY_DECAY = 0.5, 0.1
#: fields that only say how features are read (not in the artifact keys)
_FEATURE_FIELDS = ("input_size", "checkpoint", "vgg_weights", "vgg_fallback", "ckpt_every", "verification_features")
_IDENTITY_FIELDS = ("id_epochs", "id_lr", "id_decay_epoch")
VIEWS = ("fer", "verification", "parts")


@dataclasses.dataclass(frozen=True)
class FaceCycleConfig(Config):
    """FaceCycle settings; defaults are the ``quick`` preset (2-core CPU, seconds).

    Attributes:
        input_size: side of the images the features are read from (official RAF-DB: 100).
        train_size: training resolution, where the 256-d codes are defined (official: 64);
            a multiple of 16 (the encoder halves it four times, the generator twice).
        width: channel multiplier of all five networks (1: the official 64/128/256).
        generator_blocks: residual blocks of the generator (official: 8).
        batch_size: pairs per step (official: 16, i.e. 32 images).
        exp_epochs, exp_lr, exp_decay_epoch: the expression cycle: Adam betas (0.5, 0.999),
            epoch 0 at 0.2 x ``exp_lr``, then ``exp_lr``, then 0.2 x from ``exp_decay_epoch``.
        id_epochs, id_lr, id_decay_epoch: the identity cycle: Adam betas (0.5, 0.9), epoch 0
            at 0.5 x ``id_lr``, then ``id_lr``, then 0.1 x from ``id_decay_epoch``.
        perceptual_weight: weight of the VGG19 Gram term (official: 0.01; 0 skips VGG19).
        vgg_weights: path of ``vgg19-dcbb9e9d.pth``; empty: torchvision's hub cache.
        vgg_fallback: without that file: ``random`` (a fixed seeded VGG19 for the perceptual
            term and the generator's front) or ``off`` (perceptual term off, seeded front).
        verification_features: what ``verification`` reads: ``exp`` (the expression map, the
            representation the paper counts) or ``id`` (the identity encoder's map, which the
            identity cycle trains to carry the person; needs the final model).
        ckpt_every: also checkpoint every this many steps (0: once per epoch).
        checkpoint: the authors' file to load instead of training (``ExpCode_*.tar`` with three
            networks, or ``finalmodel.tar`` / ``idcode_*.tar`` with five; the paper preset's
            sizes); empty: train.
    """

    input_size: int = 32
    train_size: int = 32
    width: float = 0.125
    generator_blocks: int = 8
    batch_size: int = 16
    exp_epochs: int = 3
    exp_lr: float = 5e-4
    exp_decay_epoch: int = 20
    id_epochs: int = 2
    id_lr: float = 1e-3
    id_decay_epoch: int = 10
    perceptual_weight: float = 0.0
    vgg_weights: str = ""
    vgg_fallback: str = "random"
    verification_features: str = "exp"
    ckpt_every: int = 0
    checkpoint: str = ""

    PRESETS = {
        "smoke": {"input_size": 32, "train_size": 32, "width": 0.125, "generator_blocks": 1, "batch_size": 4, "exp_epochs": 1, "id_epochs": 1},
        "paper": {
            "input_size": 100,  # RAFDB/preprocess.py test_crop_t: Resize(100), CenterCrop(100)
            "train_size": 64,  # dataloader/preprocess.py: Resize(64), crops of 64
            "width": 1.0,  # models/models.py: 64/128/256 channels
            "generator_blocks": 8,  # generator: _make_layer(BasicBlockNormal, 256, 8)
            "batch_size": 16,  # train_expression.py / train_id.py DataLoader batch_size=16
            "exp_epochs": 20,  # train_expression.py runs 40; RAF_classify.py loads ExpCode_19.tar
            "exp_lr": 5e-5,  # train_expression.py adjust_learning_rate: 1e-5, 5e-5 (1-19), 1e-5 (20-39)
            "exp_decay_epoch": 20,
            "id_epochs": 20,  # train_id.py: range(0, 20)
            "id_lr": 1e-4,  # train_id.py adjust_learning_rate: 5e-5 (0), 1e-4 (1-9), 1e-5 (10-19)
            "id_decay_epoch": 10,
            "perceptual_weight": 0.01,  # both scripts: loss = 0.01 * perc_loss + ...
        },
    }
    SECTION: ClassVar[str] = "facecycle"

    RULES = {
        "input_size": at_least(ENCODER_STRIDE),
        "train_size": at_least(ENCODER_STRIDE),
        "width": positive,
        "generator_blocks": at_least(1),
        "batch_size": at_least(1),
        "exp_epochs": at_least(1),
        "exp_lr": positive,
        "exp_decay_epoch": at_least(1),
        "id_epochs": at_least(0),  # 0: the expression stage alone (no identity parts)
        "id_lr": positive,
        "id_decay_epoch": at_least(1),
        "perceptual_weight": at_least(0),
        "vgg_fallback": choice(*VGG_FALLBACKS),
        "verification_features": choice("exp", "id"),
        "ckpt_every": at_least(0),
        "vgg_weights": existing_file(f"give the path of vgg19-dcbb9e9d.pth or leave it empty"),
        "checkpoint": existing_file("give the path of a FaceCycle .tar file (or leave it empty to train)"),
    }

    def check(self, section: str) -> None:
        key = dotted(section)
        if self.train_size % ENCODER_STRIDE:
            raise BenchError(f"{key}train_size={self.train_size}: use a multiple of {ENCODER_STRIDE} (official: 64)")
        if (64 * self.width) % 4:
            raise BenchError(f"{key}width={self.width}: use a multiple of 1/16 (1 = the official networks)")
        if self.verification_features == "id" and self.id_epochs == 0 and not self.checkpoint:
            raise BenchError(f"{key}verification_features=id needs the identity cycle; set {key}id_epochs to 1 or more")
        official = {"width": 1.0, "train_size": 64, "generator_blocks": 8}
        differ = [f"{k}={getattr(self, k):g}" for k, v in official.items() if getattr(self, k) != v]
        if self.checkpoint and differ:
            raise BenchError(
                f"{key}checkpoint: the authors' networks are width 1, 64 px codes, 8 generator blocks, not {', '.join(differ)}; "
                "use --preset paper (or --set facecycle.width=1 --set facecycle.train_size=64 --set facecycle.generator_blocks=8)"
            )


def step_schedule(optimizer: torch.optim.Optimizer, first: float, decay_epoch: int, decay: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The official per-epoch rates: ``first`` x lr in epoch 0, lr, ``decay`` x lr from ``decay_epoch``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: first if e == 0 else (decay if e >= decay_epoch else 1.0))


# --- building the networks -----------------------------------------------------------------------
def build_nets(cfg: FaceCycleConfig, identity: bool, seed: int = 0, vgg: Optional[VGGSource] = None) -> FaceCycleNets:
    """The networks, initialised from ``seed`` (global RNG untouched); the VGG19 fronts from
    ``vgg`` (ImageNet at width 1, else seeded); ``vgg=None``: weights come from a file next."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = FaceCycleNets(cfg.width, cfg.train_size, identity, cfg.generator_blocks)
    if vgg is not None:
        layers = vgg19_layers(vgg, seed, cfg.width)
        for front in (nets.generator, *((nets.normalizer,) if identity else ())):
            for name, index in VGG_FRONT.items():
                getattr(front, name)[0].load_state_dict(layers[index].state_dict())
    return nets


def perceptual_term(cfg: FaceCycleConfig, vgg: VGGSource, seed: int) -> Optional[GramPerceptual]:
    """The Gram perceptual term on full-width VGG19, or None when it is weighted 0 or off."""
    if cfg.perceptual_weight == 0 or vgg.mode == "off":
        return None
    return GramPerceptual(vgg19_layers(vgg, seed, 1.0))


def train_cycle(
    cfg: FaceCycleConfig, ctx: MethodContext, nets: FaceCycleNets, stage: str, folder: Path, vgg: VGGSource
) -> dict[str, Any]:
    """Train one cycle (``expression`` or ``identity``) with the shared loop; returns its summary."""
    clips = ctx.load_video()  # synthetic: smooth clips, one expression episode each
    device = ctx.device
    expression = stage == "expression"
    nets.to(device)
    perceptual = perceptual_term(cfg, vgg, model_seed(ctx, "facecycle", "vgg"))
    if perceptual is not None:
        perceptual.to(device)
    trained = nets.expression_nets() if expression else nets.identity_nets()
    if not expression:
        for net in nets.expression_nets():
            net.requires_grad_(False)
    params = [p for net in trained for p in net.parameters() if p.requires_grad]
    if expression:  # train_expression.py: Adam(lr 1e-5, betas (0.5, 0.999)), rates set per epoch
        optimizer = torch.optim.Adam(params, lr=cfg.exp_lr, betas=(0.5, 0.999))
        scheduler = step_schedule(optimizer, EXPRESSION_FIRST, cfg.exp_decay_epoch, EXPRESSION_DECAY)
    else:  # train_id.py: Adam(betas (0.5, 0.9))
        optimizer = torch.optim.Adam(params, lr=cfg.id_lr, betas=(0.5, 0.9))
        scheduler = step_schedule(optimizer, IDENTITY_FIRST, cfg.id_decay_epoch, IDENTITY_DECAY)
    losses = expression_losses if expression else identity_losses
    generator = torch.Generator().manual_seed(model_seed(ctx, "facecycle", stage, "draws"))

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        full = training_pair(clips, batch.cpu(), expression, cfg.train_size, device, generator)
        return losses(nets, full, perceptual, generator, cfg.perceptual_weight)

    if len(clips.clips) < 2 and not expression:
        raise BenchError("facecycle: the identity cycle needs frames of two clips; pretrain.clips has one clip")
    with ctx.accel.networks(*trained):
        result = fit(
            model=torch.nn.ModuleList(trained),  # what trains is what the resume point holds
            optimizer=optimizer,
            step=step,
            data=torch.arange(len(clips.clips)),
            epochs=cfg.exp_epochs if expression else cfg.id_epochs,
            batch_size=cfg.batch_size,
            seed=model_seed(ctx, "facecycle", stage, "order"),
            workdir=folder,
            device=device,
            scheduler=scheduler,
            ckpt_every=cfg.ckpt_every,
            desc=f"facecycle {stage} cycle",
            setting_hint=f" (--set facecycle.{'exp' if expression else 'id'}_lr=...)",
            generators={"draws": generator},
            batch_setting="facecycle.batch_size (pairs of clips)",
            accel=ctx.accel,
        )
    torch_save(folder / "model.pt", official_state(nets))
    return {**result.summary(), "train_clips": len(clips.clips), "vgg19": vgg.mode, "vgg19_detail": vgg.describe()}


# --- the two cycles as artifacts -----------------------------------------------------------------
def vgg_source(cfg: FaceCycleConfig) -> VGGSource:
    """Which VGG19 training uses on this machine (warns once when it is not ImageNet's)."""
    return resolve_vgg19(cfg.vgg_weights, cfg.vgg_fallback)


def expression_artifact(cfg: FaceCycleConfig, ctx: MethodContext) -> Artifact:
    """The trained expression stage (``codegeneration``, ``exptoflow``, ``Swap_Generator``)."""
    vgg = vgg_source(cfg)
    config = {k: v for k, v in cfg.to_dict().items() if k not in _FEATURE_FIELDS + _IDENTITY_FIELDS}
    key = {"config": config, "vgg19": vgg.mode, "video": ctx.video_fingerprint, "seed": ctx.seed, **ctx.accel.key()}

    def build(folder: Path) -> dict[str, Any]:
        nets = build_nets(cfg, identity=False, seed=model_seed(ctx, "facecycle", "expression"), vgg=vgg)
        return train_cycle(cfg, ctx, nets, "expression", folder, vgg)

    return Artifact(kind="facecycle-expression", key=key, build=build, version=EXPRESSION_VERSION)


def identity_artifact(cfg: FaceCycleConfig, ctx: MethodContext) -> Artifact:
    """The trained final model: the expression stage (frozen) plus ``idcodegen`` and ``Swap_Norm``."""
    expression = expression_artifact(cfg, ctx)
    vgg = vgg_source(cfg)
    key = {"expression": expression.hash, "config": {k: getattr(cfg, k) for k in _IDENTITY_FIELDS}, "video": ctx.video_fingerprint,
           "seed": ctx.seed, **ctx.accel.key()}

    def build(folder: Path) -> dict[str, Any]:
        nets = build_nets(cfg, identity=True, seed=model_seed(ctx, "facecycle", "identity"), vgg=vgg)
        load_nets(nets, stored(expression.ensure(ctx.cache_dir) / "model.pt"), EXPRESSION_STAGE)
        return train_cycle(cfg, ctx, nets, "identity", folder, vgg)

    return Artifact(kind="facecycle-identity", key=key, build=build, version=IDENTITY_VERSION)


def stored(path: Path) -> FaceCycleFile:
    """A trained artifact's ``model.pt`` (written in the official layout)."""
    return FaceCycleFile(path, "artifact", torch_load(path))


# --- the registered method -----------------------------------------------------------------------
@register_method("facecycle")
class FaceCycle(Method):
    """FaceCycle: the expression encoder's last map for the paper's protocols; Table 5 parts
    ``exp``, ``id`` (the identity encoder's map) and the codes ``exp_code``, ``id_code``."""

    Config = FaceCycleConfig
    cfg: FaceCycleConfig

    def __init__(self, cfg: FaceCycleConfig, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        self.nets: Optional[FaceCycleNets] = None
        self.file = read_file(cfg.checkpoint, "facecycle.checkpoint") if cfg.checkpoint else None
        if self.file is not None and not self.file.has_identity and cfg.verification_features == "id":
            raise BenchError(f"{self.file.where}: facecycle.verification_features=id needs the identity encoder; this file holds the expression stage alone")

    @property
    def has_identity(self) -> bool:
        return self.file.has_identity if self.file is not None else self.cfg.id_epochs > 0

    def artifacts(self) -> list[Artifact]:
        if self.file is not None:
            return []
        if not self.has_identity:
            return [expression_artifact(self.cfg, self.ctx)]
        return [expression_artifact(self.cfg, self.ctx), identity_artifact(self.cfg, self.ctx)]

    def weights_file(self) -> Optional[dict]:
        return self.file.record() if self.file is not None else None

    def load(self) -> None:
        nets = build_nets(self.cfg, self.has_identity)
        if self.file is not None:
            load_nets(nets, self.file)
        else:
            folder = self.artifacts()[-1].ensure(self.ctx.cache_dir)
            load_nets(nets, stored(folder / "model.pt"))
        self.nets = nets.requires_grad_(False).to(self.ctx.device).eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        if view not in VIEWS:
            raise BenchError(f"facecycle has features for {', '.join(VIEWS)}, not {view!r}")
        x = normalise(x / 2 + 0.5)
        if not self.reads_identity(view):
            return self.nets.expression.features(x)
        if not self.has_identity:
            where = self.file.where if self.file is not None else "facecycle.id_epochs=0"
            raise BenchError(
                f"{where}: the expression stage alone (codegeneration, exptoflow, Swap_Generator) has no identity "
                f"encoder; the identity features ({view}) need the final model (finalmodel.tar, with idcodegen and Swap_Norm)"
            )
        if view == "verification":
            return self.nets.identity.features(x)
        small = x if x.shape[-1] == self.cfg.train_size else F.interpolate(
            x, size=(self.cfg.train_size,) * 2, mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.cfg.train_size
        )
        nets = self.nets
        parts = [nets.expression.features(x), nets.identity.features(x), nets.expression(small).flatten(1), nets.identity(small).flatten(1)]
        return torch.cat(parts, dim=1)

    def reads_identity(self, view: str) -> bool:
        """Whether ``view``'s features come (partly) from the identity encoder."""
        return view == "parts" or (view == "verification" and self.cfg.verification_features == "id")

    def feature_view(self, view: str) -> str:
        if self.reads_identity(view):
            return view
        return ""  # fer, knn and verification read the same map

    @property
    def feature_dim(self) -> int:
        """Width of the representation the paper counts (6272 at the paper preset)."""
        return widths(self.cfg.width)[1] * feature_map_side(self.cfg.input_size) ** 2

    def parts(self) -> dict[str, slice]:
        code = widths(self.cfg.width)[2]
        return part_slices({"exp": self.feature_dim, "id": self.feature_dim, "exp_code": code, "id_code": code})

    def info(self) -> dict:
        info: dict[str, Any] = {
            "features": f"expression encoder layer3_2 map, flattened ({self.feature_dim}-d at {self.cfg.input_size} px)",
            "parts": list(self.parts()) if self.has_identity else ["exp"],
        }
        if self.file is not None:
            info["weights"] = self.weights_file()
        else:
            vgg = vgg_source(self.cfg)
            info.update(vgg19=vgg.mode, vgg19_detail=vgg.describe())
        return info
