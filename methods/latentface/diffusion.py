"""The Representation Diffusion Model's maths: schedule, forward noising, loss weights, DDIM.

Indexing convention: the paper counts diffusion steps tau = 1..T with
abar_tau = prod_{k=1..tau} alpha_k (Eq. 6). The code uses diffusers' 0-based step index
``t = tau - 1`` everywhere (tensors, the UNet's timestep input, the DDIM timesteps 800..0), so
``alphas_cumprod[t]`` is the paper's abar_{t+1}, and "tau ~ Uniform(1, T)" becomes
``t ~ Uniform{0, ..., T-1}``. This is also the convention of the released code, which fed
diffusers' timesteps to the UNet.

The denoiser predicts the clean latent x0 (paper Eq. 7), not the noise.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Sequence

import torch

#: Loss weightings of the denoising objective (paper Eq. 12 is ``snr``).
WEIGHTINGS = ("snr", "min-snr", "none")
#: DDIM samplers: ``ddim`` is correct, ``legacy`` reproduces the released code (diffusers 0.14).
SAMPLERS = ("ddim", "legacy")

#: A denoiser with its condition bound: (z_t (B,D), t (B,) int64) -> predicted x0 (B,D).
PredictX0 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A DDPM noise schedule (paper Eq. 6; Ho et al. 2020).

    Attributes:
        alphas_cumprod: abar for the 0-based steps ``t = 0..T-1`` (float64, CPU).
    """

    alphas_cumprod: torch.Tensor

    @classmethod
    def linear(cls, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """The linear beta schedule of DDPM and the paper (T=1000, 1e-4..0.02)."""
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))

    @property
    def steps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """abar_t as a (B,1) column in ``like``'s dtype and device, ready to broadcast over latents."""
        return self.alphas_cumprod[t.cpu()].to(like.device, like.dtype)[:, None]

    def sample_steps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training steps ``t`` uniform over 0..T-1 (the paper's tau ~ Uniform(1, T))."""
        return torch.randint(0, self.steps, (n,), generator=generator)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(z_t | z_0): sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (paper Eq. 6)."""
        abar = self.abar(t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def loss_weight(self, t: torch.Tensor, weighting: str, clip: float = 5.0) -> torch.Tensor:
        """Per-sample weight of the x0 regression loss (paper Eq. 12).

        ``snr`` is abar/(1-abar), the paper's choice; it is about 1e4 at t=0 and 4e-5 at t=T-1,
        so a few low-noise samples dominate a batch. ``min-snr`` clips it at ``clip``
        (Hang et al. 2023), ``none`` weighs every step alike.
        """
        abar = self.alphas_cumprod[t.cpu()]
        snr = abar / (1.0 - abar)
        if weighting == "snr":
            weight = snr
        elif weighting == "min-snr":
            weight = snr.clamp(max=clip)
        elif weighting == "none":
            weight = torch.ones_like(snr)
        else:
            raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        return weight.float()


def denoising_loss(
    predict: PredictX0,
    x0: torch.Tensor,
    schedule: Schedule,
    weighting: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """The weighted x0-prediction loss of one batch (paper Eq. 7 and 12).

    Args:
        predict: the denoiser with its condition (Z_exp) bound.
        x0: the clean targets Z_id, (B, D).
        schedule: the noise schedule.
        weighting: one of ``WEIGHTINGS``.
        generator: CPU generator for the steps and the noise (keeps training reproducible).
    """
    t = schedule.sample_steps(x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    z_t = schedule.add_noise(x0, noise, t)
    per_sample = (predict(z_t, t.to(x0.device)) - x0).pow(2).mean(dim=1)
    return (schedule.loss_weight(t, weighting).to(x0.device) * per_sample).mean()


def ddim_timesteps(train_steps: int, sample_steps: int) -> list[int]:
    """DDIM's "leading" spacing, diffusers' default: T=1000, S=5 -> [800, 600, 400, 200, 0]."""
    ratio = train_steps // sample_steps
    return [i * ratio for i in reversed(range(sample_steps))]


@torch.no_grad()
def ddim_sample(
    predict: PredictX0,
    noise: torch.Tensor,
    schedule: Schedule,
    sample_steps: int = 5,
    sampler: str = "ddim",
) -> torch.Tensor:
    """Deterministic DDIM sampling (eta = 0) from ``noise`` with an x0-predicting denoiser.

    Each step from t to the previous timestep s (abar_s = 1 after the last step) is

        eps_hat = (z_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
        z_s     = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat        (Song et al., Eq. 12)

    ``legacy`` reproduces the released code: diffusers 0.14's ``DDIMScheduler.step`` with
    ``prediction_type="sample"`` skipped the first line and used the raw x0_hat itself as
    eps_hat, and its default ``clip_sample=True`` clipped the x0_hat of the second line to
    [-1, 1] at every step, so the final sample too, although the latents are non-negative and
    unbounded.

    Args:
        predict: the denoiser with its condition bound.
        noise: the start z_T, (B, D).
        schedule: the training schedule.
        sample_steps: S (paper: 5).
        sampler: one of ``SAMPLERS``.

    Returns:
        The sampled clean latents, (B, D).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    timesteps = ddim_timesteps(schedule.steps, sample_steps)
    z = noise
    for i, t in enumerate(timesteps):
        steps = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        abar_t = float(schedule.alphas_cumprod[t])
        abar_s = float(schedule.alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        x0_hat = predict(z, steps)
        if sampler == "legacy":
            eps_hat = x0_hat  # the raw prediction; only the x0 term below is clipped
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        else:
            eps_hat = (z - abar_t**0.5 * x0_hat) / (1.0 - abar_t) ** 0.5
        z = abar_s**0.5 * x0_hat + (1.0 - abar_s) ** 0.5 * eps_hat
    return z


def start_noise(seed: int, index: Sequence[int] | torch.Tensor, dim: int, salt: str) -> torch.Tensor:
    """The start noise z_T of each sample, drawn from its own generator (CPU, float32).

    Sample ``i`` gets ``randn(dim)`` from a ``torch.Generator`` seeded by (seed, index[i], salt),
    so a sample's identity latent does not depend on which batch it was encoded in, and CPU and
    GPU runs agree. The three parts are hashed into one seed because torch's CPU generator keeps
    only the low 32 bits of a seed; two samples share noise with probability 2^-32 per pair,
    which is harmless (the noise does not depend on the image).

    Args:
        seed: the cell's seed.
        index: each sample's position in its split.
        dim: latent size D.
        salt: separates the streams of different denoisers (``"texture"``, ``"shape"``).
    """
    rows = []
    for i in torch.as_tensor(index).tolist():
        digest = hashlib.sha256(f"{seed}:{i}:{salt}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
        rows.append(torch.randn(dim, generator=generator))
    return torch.stack(rows) if rows else torch.empty(0, dim)
