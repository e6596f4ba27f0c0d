"""The registered method ``latentface``: stage 1 (Unsup3D) + stage 2 (identity disentangling).

Stage 2 (paper Sec. 2.3-2.4) learns, from clips of one person, to map a frame's stage-1 latent
Z_exp to the clip's identity latent Z_id (the mean latent over the clip's frames), separately
for the texture and the shape latent. The expression part of a frame is then
Delta_exp = Z_exp - Z_id_hat. The variants are the rows of the paper's Table 4:

- ``rdm-both`` (default), ``rdm-texture``, ``rdm-shape``: the Representation Diffusion Model
  (a denoiser sampled with DDIM) on both latents, or on one;
- ``encoder``: a network regressing Z_id from Z_exp in one pass (paper Sec. 4.2);
- ``none``: stage 1 alone, the same model and features as the ``unsup3d`` method.

Features per image, texture part first, then shape (paper Sec. 3.4-3.5, released code):

- ``fer``:          [Z_t - Z_id_t, Z_t, Z_s - Z_id_s, Z_s]
- ``verification``: [Z_id_t, Z_t, Z_id_s, Z_s]

A latent that a variant does not disentangle contributes only its Z, so ``rdm-texture`` gives
[Z_t - Z_id_t, Z_t, Z_s] for ``fer`` and ``none`` gives [Z_t, Z_s]. ``info()`` records the layout.

Every variant reuses the one stage-1 model that ``unsup3d`` trains for the same data, preset and
seed; each stage-2 variant adds one artifact on top of it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.accel import Accel
from harness.artifacts import Artifact
from harness.datasets.base import ClipSet, split_clips
from harness.config import at_least, between, choice, dotted, positive
from harness.errors import BenchError
from harness.io import atomic_path, cached, torch_load, torch_save
from harness.registry import register_ablation, register_method
from harness.train import fit
from harness.method import Method, MethodContext, model_seed, part_slices, to_input
from methods.latentface.checkpoint import load_stage2_weights
from methods.latentface.denoiser import Denoiser, IdentityEncoder
from methods.latentface.diffusion import SAMPLERS, WEIGHTINGS, Schedule, ddim_sample, denoising_loss, start_noise
from methods.unsup3d.method import (
    ENVIRONMENT,
    Unsup3DConfig,
    load_stage1,
    predicted_depth,
    stage1_artifact,
    stage1_checkpoint,
    stage1_config,
    stage1_origin,
)
from methods.unsup3d.model import FIGURE_TILE, FOV_DEGREES, Unsup3D, canonical_depth

#: bump when a code change alters the trained stage-2 networks for the same config
STAGE2_VERSION = 1
#: the two stage-1 latents, in feature order.
KINDS = ("texture", "shape")
#: variant -> (stage-2 model, latents it disentangles); Table 4's rows.
VARIANTS: dict[str, tuple[Optional[str], tuple[str, ...]]] = {
    "rdm-both": ("rdm", KINDS),
    "rdm-texture": ("rdm", ("texture",)),
    "rdm-shape": ("rdm", ("shape",)),
    "encoder": ("encoder", KINDS),
    "none": (None, ()),
}
#: feature views: the paper's features of each protocol, and every part (``Method.parts``).
VIEWS = ("fer", "verification", "parts")
#: held-out clips (and frames of each) shown in the identity figure.
FIGURE_CLIPS, FIGURE_FRAMES = 3, 8
#: stage-2 fields that change sampling only, not the trained weights (kept out of the artifact key).
_SAMPLING_FIELDS = ("sampler", "sample_steps", "noise")
#: where the RDM's start noise comes from (``noise``): per (seed, sample) or fresh at every call.
NOISE = ("seeded", "per-call")


@dataclasses.dataclass(frozen=True)
class LatentFaceConfig(Unsup3DConfig):
    """Stage-1 settings (inherited from ``unsup3d``, same presets) plus stage 2's.

    ``--set unsup3d.<field>`` sets stage 1 for both methods, so they keep sharing one stage-1
    model; ``latentface.<field>`` overrides it for LatentFace alone. ``checkpoint`` (a stage-1
    field) loads the whole model from a file instead: a LatentFace release (both stages) or this
    project's export (``scripts/export_checkpoint.py``); a stage-1-only file serves ``none``.

    Attributes:
        stage2_width: channels of the denoiser UNet (paper: 128) and hidden size of the
            encoder ablation's MLP.
        stage2_epochs: passes over the training frames (paper: 30).
        stage2_batch_size: frames per step (paper: 16 clips of 16 frames = 256).
        stage2_lr, stage2_weight_decay: Adam with a cosine schedule (paper: 1e-4, silent on weight
            decay; the ``paper`` preset follows the released ``model_diffusion.py``: 5e-4).
        stage2_lr_period, stage2_min_lr: the cosine schedule's T_max in epochs (0: the whole run,
            decaying to ``stage2_min_lr``) and eta_min; the released code: 100 and 1e-5.
        diffusion_steps: T of the noise schedule (paper: 1000, linear betas 1e-4..0.02).
        loss_weighting: ``snr`` (paper Eq. 12), ``min-snr`` (SNR clipped at 5) or ``none``.
        sampler: ``ddim`` (correct) or ``legacy`` (the released code's diffusers 0.14 behaviour).
        sample_steps: DDIM steps S (paper: 5, timesteps 800, 600, 400, 200, 0).
        noise: the RDM's start noise: ``seeded`` (default) draws it per (seed, sample index), so
            features are reproducible and independent of batching; ``per-call`` draws it afresh
            at every forward pass, as the released evaluation does (``torch.randn`` per batch,
            again for the mirrored image), from a generator seeded by the cell.
        holdout: fraction of the clips (of the identities, where the data knows them) kept out
            of stage-2 training, for the identity-distance diagnostic and the figure.
    """

    stage2_width: int = 64
    stage2_epochs: int = 30
    stage2_batch_size: int = 64
    # quick trains ~1k steps: at the paper's lr and full SNR weights the RDM ignores its condition
    # (held-out identity-distance ratio ~4.1 vs ~2.0 with these; chosen on held-out training
    # clips, never on a test split). The paper preset keeps lr 1e-4 and SNR weighting.
    stage2_lr: float = 1e-3
    stage2_weight_decay: float = 0.0
    diffusion_steps: int = 1000
    loss_weighting: str = "min-snr"
    sampler: str = "ddim"
    sample_steps: int = 5
    holdout: float = 0.1
    stage2_lr_period: int = 0
    stage2_min_lr: float = 0.0
    noise: str = "seeded"

    SHARED_SECTIONS = ("unsup3d",)
    SECTION = "latentface"
    LATE_FIELDS = Unsup3DConfig.LATE_FIELDS + ("stage2_lr_period", "stage2_min_lr", "noise")
    PRESETS = {
        "smoke": {**Unsup3DConfig.PRESETS["smoke"], "stage2_width": 32, "stage2_epochs": 1, "stage2_batch_size": 16},
        "paper": {
            **Unsup3DConfig.PRESETS["paper"],
            "stage2_width": 128,
            "stage2_batch_size": 256,
            "stage2_lr": 1e-4,
            "stage2_weight_decay": 5e-4,
            "stage2_lr_period": 100,
            "stage2_min_lr": 1e-5,
            "loss_weighting": "snr",
        },
    }

    RULES = {
        "stage2_width": at_least(8),
        "stage2_epochs": at_least(1),
        "stage2_batch_size": at_least(1),
        "stage2_lr": positive,
        "stage2_weight_decay": at_least(0),
        "diffusion_steps": at_least(1),
        "loss_weighting": choice(*WEIGHTINGS),
        "sampler": choice(*SAMPLERS),
        "sample_steps": at_least(1),
        "holdout": between(0, 1, high_open=True),
        "noise": choice(*NOISE),
        "stage2_lr_period": at_least(0),  # 0: one cosine period over the whole run
        "stage2_min_lr": at_least(0),
    }

    def check(self, section: str) -> None:
        super().check(section)
        p = dotted(section)
        if self.stage2_width % 8:
            raise BenchError(f"{p}stage2_width={self.stage2_width}: use a positive multiple of 8")
        if self.sample_steps > self.diffusion_steps:
            raise BenchError(
                f"{p}sample_steps={self.sample_steps}: at most {p}diffusion_steps ({self.diffusion_steps}); "
                f"set {p}sample_steps lower or {p}diffusion_steps higher"
            )

    def stage2_dict(self) -> dict[str, Any]:
        """The stage-2 fields (what the stage-2 artifact key needs besides stage 1's hash)."""
        stage1 = {f.name for f in dataclasses.fields(Unsup3DConfig)}
        return {k: v for k, v in self.to_dict().items() if k not in stage1}


# --- data: frozen stage-1 latents of the clips ---------------------------------------------------
@torch.no_grad()
def frame_latents(stage1: Unsup3D, clips: ClipSet, input_size: int, device: torch.device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Stage-1 latents of every frame: ``texture`` and ``shape``, each (N, D) float32 on the CPU."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
    images = clips.frames.images
    for start in range(0, len(images), batch_size):
        latents = stage1.encode_latents(to_input(images[start : start + batch_size], input_size, device))
        for k in KINDS:
            out[k].append(latents[k].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def identity_targets(latents: torch.Tensor, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z_exp, Z_id) per frame of ``clips``: the frame's latent and its clip's mean (paper Sec. 2.3)."""
    z_exp = torch.cat([latents[c] for c in clips])
    z_id = torch.cat([latents[c].mean(0, keepdim=True).expand(len(c), -1) for c in clips])
    return z_exp, z_id


# --- the stage-2 networks of one variant ---------------------------------------------------------
class IdentityModel(nn.Module):
    """The trained stage-2 networks of a variant: one per disentangled latent kind.

    Args:
        model: ``rdm`` (a ``Denoiser`` per kind) or ``encoder`` (an ``IdentityEncoder`` per kind).
        kinds: the latents it disentangles.
        latent_dim: D.
        cfg: the method config (width, schedule, sampler).
        seeds: initialisation seed of each kind's network (global RNG untouched); 0 when the
            weights are loaded from a file afterwards.
    """

    def __init__(
        self, model: str, kinds: tuple[str, ...], latent_dim: int, cfg: LatentFaceConfig, seeds: Optional[dict[str, int]] = None
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.schedule = Schedule.linear(cfg.diffusion_steps)
        net = Denoiser if model == "rdm" else IdentityEncoder
        self.nets = nn.ModuleDict()
        for kind in kinds:
            # One seed per kind, so a kind's network starts (and trains) the same in every
            # variant that uses it: rdm-both's texture denoiser is rdm-texture's.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((seeds or {}).get(kind, 0))
                self.nets[kind] = net(latent_dim, cfg.stage2_width)

    def loss(self, kind: str, z_exp: torch.Tensor, z_id: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training loss of one kind's network on a batch of (Z_exp, Z_id) rows."""
        net = self.nets[kind]
        if self.model == "encoder":
            return F.mse_loss(net(z_exp), z_id)
        return denoising_loss(lambda z_t, t: net(z_t, t, z_exp), z_id, self.schedule, self.cfg.loss_weighting, generator)

    @torch.no_grad()
    def predict(
        self, kind: str, z_exp: torch.Tensor, seed: int, index: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Z_id_hat (B, D) for frame latents (B, D); the RDM's start noise is seeded by (seed,
        index), or drawn afresh from ``generator`` when given (``noise=per-call``)."""
        net = self.nets[kind]
        if self.model == "encoder":
            return net(z_exp)
        if generator is not None:
            noise = torch.randn(z_exp.shape, generator=generator).to(z_exp)
        else:
            noise = start_noise(seed, index, z_exp.shape[1], salt=kind).to(z_exp)
        return ddim_sample(lambda z_t, t: net(z_t, t, z_exp), noise, self.schedule, self.cfg.sample_steps, self.cfg.sampler)


def train_kind(
    stage2: IdentityModel,
    kind: str,
    z_exp: torch.Tensor,
    z_id: torch.Tensor,
    seed: int,
    workdir: Path,
    device: torch.device,
    accel: Optional[Accel] = None,
) -> dict[str, Any]:
    """Train one kind's network with the shared loop (Adam + cosine schedule, paper Sec. 3.1).

    With bf16 training the network runs under autocast; the noise schedule (float64 on the
    CPU), the noising and the weighted loss stay float32 (``Accel.networks``).
    """
    cfg = stage2.cfg
    accel = accel or Accel()
    net = stage2.nets[kind].to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.stage2_lr, weight_decay=cfg.stage2_weight_decay)
    period = cfg.stage2_lr_period or cfg.stage2_epochs  # stepped once per epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period, eta_min=cfg.stage2_min_lr)
    # Steps and noise of the diffusion loss; checkpointed with the weights, so a resumed run
    # draws exactly what an uninterrupted one would.
    generator = torch.Generator().manual_seed(seed)
    dim = z_exp.shape[1]

    def step(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": stage2.loss(kind, rows[:, :dim], rows[:, dim:], generator)}

    tic = time.perf_counter()
    with accel.networks(net):
        result = fit(
            model=net,
            optimizer=optimizer,
            step=step,
            data=torch.cat([z_exp, z_id], dim=1),
            epochs=cfg.stage2_epochs,
            batch_size=min(cfg.stage2_batch_size, len(z_exp)),
            seed=seed,
            workdir=workdir,
            device=device,
            scheduler=scheduler,
            desc=f"latentface stage 2 {stage2.model} {kind}",
            setting_hint=" (--set latentface.stage2_lr=...)",
            generators={"diffusion": generator},
            accel=accel,
        )
    return {**result.summary(), "train_seconds": time.perf_counter() - tic}


# --- diagnostics ---------------------------------------------------------------------------------
def identity_distance(
    stage2: IdentityModel,
    latents: dict[str, torch.Tensor],
    train: list[torch.Tensor],
    heldout: list[torch.Tensor],
    seed: int,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """How close the predicted identity is to the clip mean, on held-out clips (paper Fig. 7, as a number).

    Per disentangled kind: the mean L2 distance of Z_id_hat to the clip's mean latent, the same
    for the frame latent Z_exp itself, and their ``ratio`` (< 1: the prediction removed part of
    the within-clip variation; 1: no better than the frame). ``train_mean_ratio`` is the ratio
    of a prediction that ignores the frame (the mean training latent), for scale. The RDM draws
    a sample of p(Z_id | Z_exp), not its mean: where the expression offset is unpredictable,
    even a perfect sampler lands about sqrt(2) times as far from Z_id as the frame.
    """
    index = torch.cat(heldout)
    out: dict[str, dict[str, float]] = {}
    for kind in stage2.nets:
        z_exp, z_id = identity_targets(latents[kind], heldout)
        pred = stage2.predict(kind, z_exp.to(device), seed, index).cpu()
        train_mean = latents[kind][torch.cat(train)].mean(0)
        d_frame = float((z_exp - z_id).norm(dim=1).mean())
        d_pred = float((pred - z_id).norm(dim=1).mean())
        d_mean = float((train_mean - z_id).norm(dim=1).mean())
        out[kind] = {
            "pred_to_clip_mean": d_pred,
            "frame_to_clip_mean": d_frame,
            "ratio": d_pred / max(d_frame, 1e-12),
            "train_mean_ratio": d_mean / max(d_frame, 1e-12),
        }
    return out


@torch.no_grad()
def render_frontal(stage1: Unsup3D, texture: torch.Tensor, shape: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Decode latents with the stage-1 decoders and render the face frontally: (B, 3, H, W) in [0, 1]."""
    tex = stage1.texture_net.decode(texture)
    depth = canonical_depth(stage1.depth_net.decode(shape)[:, 0])
    canonical = (tex / 2 + 0.5) * stage1.shade(depth, light) * 2 - 1
    image, mask, _ = stage1.renderer.render(depth, canonical, texture.new_zeros(texture.shape[0], 6))
    return (image * mask / 2 + 0.5).clamp(0, 1)


def save_identity_figure(
    stage1: Unsup3D, stage2: IdentityModel, clips: ClipSet, heldout: list[torch.Tensor], input_size: int, seed: int, path: Path
) -> None:
    """PNG, three rows per held-out clip (paper Figs. 3 and 7): the frames, their decoded frame
    latents Z_exp, and the decoded predicted identity (latents a variant does not disentangle
    keep the frame's), all rendered frontally under each frame's own light."""
    device = next(stage1.parameters()).device
    rows = []
    for clip in heldout[:FIGURE_CLIPS]:
        index = clip[:FIGURE_FRAMES]
        x = to_input(clips.frames.images[index], input_size, device)
        latents = stage1.encode_latents(x)
        ident = {k: stage2.predict(k, latents[k], seed, index) if k in stage2.nets else latents[k] for k in KINDS}
        rows += [
            (x / 2 + 0.5).clamp(0, 1),
            render_frontal(stage1, latents["texture"], latents["shape"], latents["light"]),
            render_frontal(stage1, ident["texture"], ident["shape"], latents["light"]),
        ]
    if rows:
        tiles = torch.cat(rows)
        tiles = F.interpolate(tiles, scale_factor=max(1, FIGURE_TILE // tiles.shape[-1]), mode="nearest")  # as stage 1's figure
        with atomic_path(path) as tmp:
            from torchvision.utils import save_image  # imported late: registering the method stays quick
            save_image(tiles.cpu(), tmp, nrow=FIGURE_FRAMES, padding=2, pad_value=1.0, format="png")


# --- the stage-2 artifact ------------------------------------------------------------------------
def stage2_artifact(cfg: LatentFaceConfig, ctx: MethodContext, model: str, kinds: tuple[str, ...]) -> Artifact:
    """The trained stage-2 networks of one variant, on top of the shared stage-1 model."""
    stage1 = stage1_artifact(cfg, ctx)
    settings = {k: v for k, v in cfg.stage2_dict().items() if k not in _SAMPLING_FIELDS}
    key = {
        "stage1": stage1.hash, "config": settings, "clips": ctx.clips_fingerprint, "seed": ctx.seed, "model": model, "kinds": list(kinds),
        **ctx.accel.key(),
    }

    def build(folder: Path) -> dict[str, Any]:
        s = stage1_config(cfg)
        stage1_model = load_stage1(cfg, ctx)
        clips = ctx.load_clips()
        # The latents depend on stage 1 and the clips only: computed once for all variants.
        latents = cached(
            ctx.cache_dir,
            "latentface-latents",
            {"stage1": stage1.hash, "clips": ctx.clips_fingerprint},
            lambda: frame_latents(stage1_model, clips, s.input_size, ctx.device),
        )
        train, heldout = split_clips(clips, cfg.holdout, model_seed(ctx, "stage2-holdout"))
        if not train:
            raise BenchError("latentface: no training clips left after the hold-out; lower latentface.holdout")
        seeds = {kind: model_seed(ctx, "stage2", model, kind) for kind in kinds}
        stage2 = IdentityModel(model, kinds, s.latent_dim, cfg, seeds)
        summary: dict[str, Any] = {"train_clips": len(train), "heldout_clips": len(heldout)}
        for kind in kinds:
            z_exp, z_id = identity_targets(latents[kind], train)
            summary[kind] = train_kind(stage2, kind, z_exp, z_id, seeds[kind], folder / kind, ctx.device, ctx.accel)
        torch_save(folder / "model.pt", stage2.state_dict())
        stage2.to(ctx.device).eval()
        if heldout:
            summary["identity_distance"] = identity_distance(stage2, latents, train, heldout, ctx.seed, ctx.device)
            save_identity_figure(stage1_model, stage2, clips, heldout, s.input_size, ctx.seed, folder / "identity.png")
        return summary

    return Artifact(kind="stage2", key=key, build=build, version=STAGE2_VERSION)


# --- the registered method -----------------------------------------------------------------------
@register_method("latentface")
class LatentFace(Method):
    """LatentFace: stage-1 latents with the identity disentangled by stage 2 (paper Sec. 2)."""

    Config = LatentFaceConfig
    variants = tuple(VARIANTS)
    predicts_depth = True
    depth_fov = FOV_DEGREES
    batches = {"batch_size": ("pretrain", "train_images")}  # stage 1; stage 2 caps its batch at the frames

    def __init__(self, cfg: LatentFaceConfig, variant: str, ctx: MethodContext) -> None:
        super().__init__(cfg, variant, ctx)
        self.model, self.kinds = VARIANTS[variant]
        self.stage1: Optional[Unsup3D] = None
        self.stage2: Optional[IdentityModel] = None
        self.noise: Optional[torch.Generator] = None  # the start-noise stream of noise=per-call
        if cfg.checkpoint and self.model is not None:  # fail now, as one line, if the file lacks stage 2
            stage1_checkpoint(cfg).require_stage2(self.model, self.kinds)

    def artifacts(self) -> list[Artifact]:
        if self.cfg.checkpoint:  # loaded from a file: nothing to train
            return []
        stage1 = stage1_artifact(self.cfg, self.ctx)
        if self.model is None:
            return [stage1]
        return [stage1, stage2_artifact(self.cfg, self.ctx, self.model, self.kinds)]

    def weights_file(self) -> Optional[dict]:
        return stage1_checkpoint(self.cfg).record() if self.cfg.checkpoint else None

    def load(self) -> None:
        self.stage1 = load_stage1(self.cfg, self.ctx)
        if self.model is not None:
            stage2 = IdentityModel(self.model, self.kinds, stage1_config(self.cfg).latent_dim, self.cfg)
            if self.cfg.checkpoint:
                load_stage2_weights(stage2, self.model, stage1_checkpoint(self.cfg))
            else:
                folder = stage2_artifact(self.cfg, self.ctx, self.model, self.kinds).ensure(self.ctx.cache_dir)
                stage2.load_state_dict(torch_load(folder / "model.pt"))
            self.stage2 = stage2.requires_grad_(False).to(self.ctx.device).eval()
        if self.cfg.noise == "per-call":
            self.noise = torch.Generator().manual_seed(model_seed(self.ctx, "per-call noise"))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, view: str, index: torch.Tensor) -> torch.Tensor:
        if view not in VIEWS:
            raise BenchError(f"latentface has features for {', '.join(VIEWS)}, not {view!r}")
        latents = self.stage1.encode_latents(x)
        z_id = {kind: self.stage2.predict(kind, latents[kind], self.ctx.seed, index, self.noise) for kind in self.kinds}
        value = {
            "Z": lambda k: latents[k],
            "Z_id": lambda k: z_id[k],
            "Z - Z_id": lambda k: latents[k] - z_id[k],
            "env": lambda k: latents[k],
        }
        return torch.cat([value[block](kind) for kind, block in self.feature_blocks(view)], dim=1)

    def feature_view(self, view: str) -> str:
        return view

    def feature_blocks(self, view: str) -> list[tuple[str, str]]:
        """(latent kind, block) in feature order: ``Z``, ``Z_id`` or ``Z - Z_id`` (D wide each),
        and for the ``parts`` view the environment codes (``env``: light, pose)."""
        blocks = []
        for kind in KINDS:
            if kind in self.kinds:
                blocks.append((kind, "Z - Z_id" if view == "fer" else "Z_id"))
                if view == "parts":
                    blocks.append((kind, "Z - Z_id"))
                    continue
            blocks.append((kind, "Z"))
        if view == "parts":
            blocks += [(name, "env") for name in ENVIRONMENT]
        return blocks

    def feature_layout(self, view: str) -> list[str]:
        """Readable names of the feature blocks, e.g. ``["Z_t - Z_id_t", "Z_t", "Z_s"]``."""
        names = {"Z": "Z_{k}", "Z_id": "Z_id_{k}", "Z - Z_id": "Z_{k} - Z_id_{k}"}
        return [kind if block == "env" else names[block].format(k=kind[0]) for kind, block in self.feature_blocks(view)]

    def parts(self) -> dict[str, slice]:
        """``Z_id_t``, ``dZ_t`` (= Z_t - Z_id_t), ``Z_id_s``, ``dZ_s``, ``light``, ``pose``; a latent
        the variant does not disentangle is one part, ``Z_t`` or ``Z_s``."""
        dim = stage1_config(self.cfg).latent_dim
        short = {"Z": "Z_{k}", "Z_id": "Z_id_{k}", "Z - Z_id": "dZ_{k}"}
        return part_slices(
            {kind if block == "env" else short[block].format(k=kind[0]): ENVIRONMENT[kind] if block == "env" else dim
             for kind, block in self.feature_blocks("parts")}
        )

    @torch.no_grad()
    def depth(self, x: torch.Tensor) -> torch.Tensor:
        return predicted_depth(self.stage1, x)

    def info(self) -> dict:
        info: dict[str, Any] = {
            "stage2": self.model or "none",
            "features": {view: self.feature_layout(view) for view in VIEWS},
            **stage1_origin(self.cfg, self),
        }
        if self.model == "rdm":
            info.update(sampler=self.cfg.sampler, sample_steps=self.cfg.sample_steps, noise=self.cfg.noise)
            if not self.cfg.checkpoint:
                info["loss_weighting"] = self.cfg.loss_weighting
        return info


register_ablation(
    "rdm",
    [("latentface", "none"), ("latentface", "encoder"), ("latentface", "rdm-texture"), ("latentface", "rdm-shape"), ("latentface", "rdm-both")],
    title="Table 4: ablation of latent-space disentangling (stage 2)",
    table="table4_rdm_ablation",
    # the paper's Table 4: FER (accuracy, F1) on RAF-DB / AffectNet, verification (accuracy, spread)
    paper={
        ("latentface", "none"): {"rafdb": (69.42, 55.50), "affectnet": (41.07, 39.26), "lfw": (71.37, 1.99), "sllfw": (58.70, 1.62)},
        ("latentface", "encoder"): {"rafdb": (73.04, 61.37), "affectnet": (41.94, 40.70), "lfw": (69.00, 2.56), "sllfw": (57.18, 1.27)},
        ("latentface", "rdm-texture"): {"rafdb": (73.98, 63.89), "affectnet": (42.80, 41.82), "lfw": (72.27, 2.69), "sllfw": (59.37, 1.83)},
        ("latentface", "rdm-shape"): {"rafdb": (74.57, 64.13), "affectnet": (43.47, 42.54), "lfw": (71.55, 2.31), "sllfw": (58.50, 1.36)},
        ("latentface", "rdm-both"): {"rafdb": (75.26, 64.91), "affectnet": (44.42, 43.60), "lfw": (72.05, 2.57), "sllfw": (59.72, 1.33)},
    },
)
