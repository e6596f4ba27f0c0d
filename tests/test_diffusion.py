"""The RDM maths (schedule, noising, loss weights, DDIM samplers) and the denoiser architecture."""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from methods.latentface.denoiser import Denoiser, IdentityEncoder
from methods.latentface.diffusion import Schedule, ddim_sample, ddim_timesteps, denoising_loss, start_noise

SCHEDULE = Schedule.linear()


def paper_abar(tau: int) -> float:
    """abar_tau = prod_{k=1..tau} (1 - beta_k), betas linear from 1e-4 (k=1) to 0.02 (k=1000)."""
    return math.prod(1.0 - (1e-4 + (0.02 - 1e-4) * (k - 1) / 999) for k in range(1, tau + 1))


def test_forward_noising_matches_closed_form() -> None:
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    eps = torch.tensor([[0.3, 0.1], [-1.0, 2.0]], dtype=torch.float64)
    taus = [1, 600]  # the paper's 1-based steps; the code indexes t = tau - 1
    z = SCHEDULE.add_noise(x0, eps, torch.tensor([tau - 1 for tau in taus]))
    for row, tau in enumerate(taus):
        abar = paper_abar(tau)
        assert torch.allclose(z[row], math.sqrt(abar) * x0[row] + math.sqrt(1 - abar) * eps[row], atol=1e-12)


def test_loss_weights_at_given_steps() -> None:
    t = torch.tensor([0, 999])  # tau = 1 and tau = T
    snr = [paper_abar(1) / (1 - paper_abar(1)), paper_abar(1000) / (1 - paper_abar(1000))]
    assert snr[0] == pytest.approx(9999.0)  # abar_1 = 1 - 1e-4
    assert SCHEDULE.loss_weight(t, "snr").tolist() == pytest.approx(snr, rel=1e-6)
    assert SCHEDULE.loss_weight(t, "min-snr").tolist() == pytest.approx([5.0, snr[1]], rel=1e-6)
    assert SCHEDULE.loss_weight(t, "none").tolist() == [1.0, 1.0]


def test_training_steps_cover_one_to_T() -> None:
    t = SCHEDULE.sample_steps(20_000, torch.Generator().manual_seed(0))
    assert int(t.min()) == 0 and int(t.max()) == 999


def test_denoising_loss_is_zero_for_a_perfect_predictor() -> None:
    x0 = torch.randn(8, 4)
    loss = denoising_loss(lambda z_t, t: x0, x0, SCHEDULE, "snr", torch.Generator().manual_seed(0))
    assert float(loss) == 0.0


def test_ddim_timesteps_are_the_papers() -> None:
    assert ddim_timesteps(1000, 5) == [800, 600, 400, 200, 0]


def test_ddim_with_perfect_predictor_stays_on_the_forward_path_and_returns_x0() -> None:
    x0 = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    z_T = torch.tensor([[0.3, 1.5, -0.7]], dtype=torch.float64)
    seen: dict[int, torch.Tensor] = {}

    def perfect(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen[int(t[0])] = z
        return x0

    out = ddim_sample(perfect, z_T, SCHEDULE, sample_steps=5, sampler="ddim")
    assert torch.allclose(out, x0, atol=1e-12)
    # eta = 0 with the true x0 keeps the noise estimate constant: z_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps.
    abar = SCHEDULE.alphas_cumprod
    eps = (z_T - abar[800].sqrt() * x0) / (1 - abar[800]).sqrt()
    for t, z in seen.items():
        assert torch.allclose(z, abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps, atol=1e-12)


def test_ddim_matches_diffusers_scheduler() -> None:
    """The correct sampler equals diffusers' DDIMScheduler(prediction_type="sample", no clipping)."""
    z_T = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))

    def predict(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z) * 3 + t[:, None] / 1000

    scheduler = DDIMScheduler(prediction_type="sample", clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(5)
    assert scheduler.timesteps.tolist() == [800, 600, 400, 200, 0]
    z = z_T
    for t in scheduler.timesteps:
        z = scheduler.step(predict(z, t.repeat(z.shape[0])), int(t), z, eta=0.0).prev_sample
    assert torch.allclose(ddim_sample(predict, z_T, SCHEDULE, 5, "ddim"), z, atol=1e-5)


def test_legacy_sampler_matches_hand_worked_two_steps() -> None:
    """diffusers 0.14 with prediction_type="sample": x0 stands in for the noise, x0 is clipped.

    Two steps, T=1000: timesteps [500, 0]; the step from 500 lands on abar_1 = 1 - 1e-4, the last
    step on abar = 1. Predictor x0_hat = z / 2.
    """
    z_T = torch.tensor([[0.4, -3.0, 4.0]], dtype=torch.float64)
    # step t=500: x0_hat = [0.2, -1.5, 2.0], clipped [0.2, -1.0, 1.0];
    # z = sqrt(0.9999) * clipped + sqrt(1e-4) * x0_hat (the raw prediction as the noise)
    a = math.sqrt(0.9999)
    z1 = [a * 0.2 + 0.01 * 0.2, a * -1.0 + 0.01 * -1.5, a * 1.0 + 0.01 * 2.0]
    # step t=0: x0_hat = z1 / 2 (all inside [-1, 1]); z = sqrt(1) * x0_hat + 0 * ...
    expected = torch.tensor([[v / 2 for v in z1]], dtype=torch.float64)
    assert expected[0].tolist() == pytest.approx([0.100995, -0.507475, 0.509975], abs=1e-6)

    out = ddim_sample(lambda z, t: z / 2, z_T, SCHEDULE, sample_steps=2, sampler="legacy")
    assert torch.allclose(out, expected, atol=1e-12)
    assert not torch.allclose(ddim_sample(lambda z, t: z / 2, z_T, SCHEDULE, 2, "ddim"), expected, atol=1e-3)


def test_start_noise_is_seeded_per_sample() -> None:
    a = start_noise(0, [0, 1, 2, 3], 8, "texture")
    assert torch.equal(a, start_noise(0, torch.arange(4), 8, "texture"))
    assert torch.equal(a[2:], start_noise(0, [2, 3], 8, "texture"))  # independent of the batch split
    assert not torch.equal(a, start_noise(1, [0, 1, 2, 3], 8, "texture"))
    assert not torch.equal(a, start_noise(0, [0, 1, 2, 3], 8, "shape"))
    assert not torch.equal(a[0], a[1])


@pytest.mark.numerics
def test_samples_are_reproducible_and_independent_of_batch_split() -> None:
    torch.manual_seed(0)
    denoiser = Denoiser(latent_dim=16, width=32).eval()
    z_exp = torch.rand(6, 16)

    def features(seed: int, rows: slice) -> torch.Tensor:
        index = torch.arange(6)[rows]
        noise = start_noise(seed, index, 16, "texture")
        return ddim_sample(lambda z, t: denoiser(z, t, z_exp[rows]), noise, SCHEDULE)

    full = features(0, slice(None))
    assert torch.equal(full, features(0, slice(None)))
    # Another batch size may take other matmul kernels: measured 2e-7 apart (samples ~0.2) under
    # AVX-512, AVX2 and unvectorised kernels at 1 and 2 threads; noise seeded by batch position
    # instead of by sample, or another seed, moves them by ~5e-2.
    assert torch.allclose(full[:2], features(0, slice(0, 2)), atol=1e-5)
    assert torch.allclose(full[2:], features(0, slice(2, None)), atol=1e-5)
    assert not torch.allclose(full, features(1, slice(None)), atol=1e-3)


def test_denoiser_is_the_released_architecture() -> None:
    denoiser = Denoiser(latent_dim=256, width=128)
    unet = denoiser.unet
    assert (unet.conv_in.in_channels, unet.conv_in.out_channels) == (512, 128)
    emb = unet.time_embedding
    assert (emb.linear_1.in_features, emb.linear_1.out_features, emb.linear_2.out_features) == (128, 512, 512)
    assert isinstance(emb.act, torch.nn.SiLU)
    assert [len(b.resnets) for b in unet.down_blocks] == [2]
    assert len(unet.mid_block.resnets) == 2 and len(unet.mid_block.attentions) == 1
    assert [len(b.resnets) for b in unet.up_blocks] == [3]
    assert unet.down_blocks[0].downsamplers is None and unet.up_blocks[0].upsamplers is None
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    assert (unet.conv_out.in_channels, unet.conv_out.out_channels) == (128, 256)
    assert sum(p.numel() for p in denoiser.parameters()) == 4_351_616

    out = denoiser(torch.randn(3, 256), torch.tensor([0, 500, 999]), torch.rand(3, 256))
    assert out.shape == (3, 256)


def test_untrained_identity_encoder_predicts_the_frame() -> None:
    z_exp = torch.rand(5, 16)
    assert torch.equal(IdentityEncoder(latent_dim=16, width=32, blocks=2)(z_exp), z_exp)
