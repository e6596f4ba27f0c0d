"""Stage-1 networks: parameter counts of the paper configuration and output shapes."""
from __future__ import annotations

import pytest
import torch

from methods.unsup3d.networks import ConfidenceNet, FeatureAutoencoder, NumericalEncoder


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    """Weights of a bias-free conv or transposed conv (the reference nets have no biases)."""
    return cin * cout * k * k


def gn(c: int) -> int:
    return 2 * c


# Paper widths (Appendix B; Unsup3D's networks.py), counted layer by layer.
NF, NUM, Z, CODE = 64, 32, 256, 128
ENCODER_TRUNK = conv(3, NF, 4) + gn(NF) + conv(NF, 2 * NF, 4) + gn(2 * NF) + conv(2 * NF, 4 * NF, 4) + gn(4 * NF) + conv(4 * NF, 8 * NF, 4)
DECODER = (
    conv(Z, 8 * NF, 4) + conv(8 * NF, 8 * NF, 3)
    + conv(8 * NF, 4 * NF, 4) + gn(4 * NF) + conv(4 * NF, 4 * NF, 3) + gn(4 * NF)
    + conv(4 * NF, 2 * NF, 4) + gn(2 * NF) + conv(2 * NF, 2 * NF, 3) + gn(2 * NF)
    + conv(2 * NF, NF, 4) + gn(NF) + conv(NF, NF, 3) + gn(NF)
    + conv(NF, NF, 3) + gn(NF) + conv(NF, NF, 5) + gn(NF)
)  # fmt: skip
NUMERICAL = conv(3, NUM, 4) + conv(NUM, 2 * NUM, 4) + conv(2 * NUM, 4 * NUM, 4) + conv(4 * NUM, 8 * NUM, 4) + conv(8 * NUM, 8 * NUM, 4)
CONFIDENCE = (
    ENCODER_TRUNK + conv(8 * NF, CODE, 4) + conv(CODE, 8 * NF, 4)
    + conv(8 * NF, 4 * NF, 4) + gn(4 * NF) + conv(4 * NF, 2 * NF, 4) + gn(2 * NF)
    + conv(2 * NF, NF, 4) + gn(NF) + conv(NF, NF, 4) + gn(NF) + conv(NF, 2, 5)
    + conv(2 * NF, 2, 3)
)  # fmt: skip


@pytest.mark.parametrize("out_channels", [3, 1])
def test_feature_autoencoder_paper_parameter_count(out_channels: int) -> None:
    expected = ENCODER_TRUNK + conv(8 * NF, Z, 4) + DECODER + conv(NF, out_channels, 5)
    assert n_params(FeatureAutoencoder(out_channels, nf=NF, latent_dim=Z)) == expected
    assert expected == {3: 12_982_848, 1: 12_979_648}[out_channels]


@pytest.mark.parametrize("out_dim, expected", [(6, 1_739_776), (4, 1_739_264)])
def test_numerical_encoder_paper_parameter_count(out_dim: int, expected: int) -> None:
    assert n_params(NumericalEncoder(out_dim, nf=NUM)) == NUMERICAL + conv(8 * NUM, out_dim, 1) == expected


def test_confidence_net_paper_parameter_count() -> None:
    assert n_params(ConfidenceNet(nf=NF, code_dim=CODE)) == CONFIDENCE == 7_678_208


@pytest.mark.parametrize("size", [64, 32, 16])
def test_output_shapes(size: int) -> None:
    x = torch.randn(2, 3, size, size)
    texture, z = FeatureAutoencoder(3, nf=8, latent_dim=16, image_size=size)(x)
    assert texture.shape == (2, 3, size, size) and z.shape == (2, 16)
    assert texture.abs().max() <= 1 and z.min() >= 0  # Tanh output; the latent follows a ReLU
    depth, _ = FeatureAutoencoder(1, nf=8, latent_dim=16, image_size=size, tanh=False)(x)
    assert depth.shape == (2, 1, size, size)
    assert NumericalEncoder(6, nf=4, image_size=size)(x).shape == (2, 6)
    photo, percep = ConfidenceNet(nf=8, code_dim=16, image_size=size)(x)
    assert photo.shape == (2, 2, size, size) and percep.shape == (2, 2, size // 4, size // 4)
    assert photo.min() > 0 and percep.min() > 0  # Softplus


def test_rejects_sizes_that_are_not_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        NumericalEncoder(4, image_size=48)
