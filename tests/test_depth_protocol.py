"""The depth protocol: known answers of its metrics, the camera conversion, and a smoke run."""
from __future__ import annotations

import math

import pytest
import torch

from harness.datasets.base import ImageSet
from protocols.depth import erode, fit_relief_scale, mad, normals, rescale_relief, score, side, true_depth


def bumpy(batch: int = 3, size: int = 16) -> torch.Tensor:
    """Smooth positive depth maps with relief (a dome plus a tilt)."""
    r = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(r, r, indexing="ij")
    tilt = torch.arange(batch).float()[:, None, None] * 0.02
    return 1.0 - 0.08 * (1 - x**2 - y**2).clamp(min=0) + tilt * x


def test_side_is_zero_for_a_scaled_copy_and_positive_otherwise():
    depth = bumpy()
    mask = torch.ones_like(depth, dtype=torch.bool)
    assert side(depth * 3.7, depth, mask).abs().max() < 1e-6
    assert (side(depth.flip(-1) + 0.05, depth, mask) > 1e-3).all()
    # hand-computed: ln-ratios {0, ln 2} over two pixels -> sd ln(2) / 2
    pred, target = torch.tensor([[[1.0, 2.0]]]), torch.ones(1, 1, 2)
    assert side(pred, target, torch.ones(1, 1, 2, dtype=torch.bool)).item() == pytest.approx(math.log(2) / 2, rel=1e-5)


def test_side_of_an_image_with_nothing_to_score_is_undefined():
    depth = bumpy(batch=1)
    assert side(depth, depth, torch.zeros_like(depth, dtype=torch.bool)).isnan().all()


def test_mad_is_zero_for_identical_normals_and_90_for_perpendicular():
    n, valid = normals(bumpy(), tan_half=0.1)
    assert mad(n, n, valid).abs().max() < 1e-3
    up = torch.zeros_like(n)
    up[..., 1] = 1.0
    flat = torch.zeros_like(n)
    flat[..., 2] = 1.0
    assert mad(up, flat, valid) == pytest.approx(torch.full((3,), 90.0), abs=1e-4)


def test_normals_of_a_plane_face_the_camera_and_borders_are_undefined():
    n, valid = normals(torch.full((1, 8, 8), 2.0), tan_half=0.2)
    assert torch.allclose(n[0, 1:-1, 1:-1], torch.tensor([0.0, 0.0, -1.0]).expand(6, 6, 3), atol=1e-6)
    assert not valid[0, 0].any() and not valid[0, :, -1].any() and valid[0, 1:-1, 1:-1].all()
    hole = torch.ones(1, 5, 5, dtype=torch.bool)
    hole[0, 2, 2] = False
    assert erode(hole).sum() == 9 - 1 - 4  # the 3x3 inside, less the hole and its four neighbours


def test_ground_truth_in_the_methods_camera_scores_a_perfect_method_zero():
    """A reconstruction that is the true shape seen by the method's camera scores 0, whatever the
    true camera's field of view; the raw true depth (another camera) does not."""
    depth = 8.0 * bumpy(batch=2, size=32)
    head = torch.zeros_like(depth, dtype=torch.bool)
    head[:, 4:28, 4:28] = True
    fov = torch.tensor([math.radians(15.0), math.radians(30.0)])
    images = ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                      extras={"depth": depth * head, "head": head, "fov": fov})
    tan_m = math.tan(math.radians(5))
    target, mask = true_depth(images, 16, tan_m)
    assert target.shape == (2, 16, 16) and mask[:, 2:14, 2:14].all() and not mask[:, 0].any()
    median = target.flatten(1).nanmedian(1).values
    assert torch.allclose(median, torch.ones(2), atol=1e-6)
    # relief shrinks by tan(5 deg) / tan(fov / 2): more for the wider camera
    relief = (target.flatten(1).nan_to_num(1).max(1).values - target.flatten(1).nan_to_num(1).min(1).values)
    assert relief[1] < relief[0]
    perfect = score(target.clone(), target, tan_m)
    assert perfect["side"].max() < 1e-6 and perfect["mad"].max() < 1e-3 and (perfect["coverage"] == 1).all()
    flat = score(torch.ones_like(target), target, tan_m)
    assert (flat["side"] > 1e-3).all() and (flat["mad"] > 1).all()


def test_ground_truth_resolution_must_divide():
    images = ImageSet(torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
                      extras={"depth": torch.ones(1, 32, 32), "head": torch.ones(1, 32, 32, dtype=torch.bool), "fov": torch.tensor([0.3])})
    with pytest.raises(Exception, match="cannot be scored"):
        true_depth(images, 24, 0.1)


def test_relief_scale_is_recovered_from_training_maps():
    target = bumpy(batch=4, size=24)
    exaggerated = rescale_relief(target, 2.0)  # a reconstruction with twice the true relief
    assert fit_relief_scale(exaggerated, target) == pytest.approx(0.5, rel=0.07)  # the grid is 12 % apart
    mask = torch.ones_like(target, dtype=torch.bool)
    assert side(rescale_relief(exaggerated, 0.5), target, mask).max() < 1e-4
    assert torch.allclose(rescale_relief(target, 1.0), target)
