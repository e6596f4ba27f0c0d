"""Known-answer tests of the depth-grid renderer (methods/unsup3d/renderer.py).

Geometry is checked against closed forms (ray-plane intersection, pixel shifts) computed here in
float64 with the rotation written out independently, so that a wrong convention in the renderer
(axis order, rotation centre, row/column swap) cannot cancel out.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.unsup3d.renderer import (
    BACKGROUND_DEPTH,
    Renderer,
    _INSIDE_TOLERANCE,
    _rasterize_torch,
    grid_faces,
    pytorch3d_available,
)


def euler_rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rz @ Ry @ Rx written out with numpy (Unsup3D convention)."""
    cx, cy, cz = math.cos(rx), math.cos(ry), math.cos(rz)
    sx, sy, sz = math.sin(rx), math.sin(ry), math.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def analytic_plane_depth(size: int, plane_depth: float, pose: list[float]) -> np.ndarray:
    """Observed depth of the fronto-parallel canonical plane z = plane_depth after the pose.

    The posed plane passes through q' = R (q - o) + o + t with normal R e_z (o = (0, 0, 1)); the
    pixel ray is t * K^-1 (u, v, 1), whose z is t, so depth = (n . q') / (n . ray).
    """
    focal = (size - 1) / 2 / math.tan(math.radians(5))
    center = (size - 1) / 2
    rotation = euler_rotation(*pose[:3])
    origin = np.array([0.0, 0.0, 1.0])
    point = rotation @ (np.array([0.0, 0.0, plane_depth]) - origin) + origin + np.array(pose[3:])
    normal = rotation @ np.array([0.0, 0.0, 1.0])
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    rays = np.stack([(cols - center) / focal, (rows - center) / focal, np.ones((size, size))], -1)
    return (normal @ point) / (rays @ normal)


def smooth_depth(size: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An asymmetric, smooth face-like bump inside [0.9, 1.1]."""
    axis = torch.linspace(-1, 1, size, dtype=dtype)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    bump = torch.exp(-2 * ((cols - 0.2) ** 2 + rows**2))
    depth = 1.05 - 0.08 * bump + 0.02 * torch.sin(2 * cols + rows)
    return depth.expand(batch, size, size).clone()


def textured_image(size: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, size, size, generator=generator, dtype=dtype) * 2 - 1


def test_identity_pose_renders_canonical_depth_and_image() -> None:
    renderer = Renderer(image_size=64)
    depth = torch.ones(2, 64, 64)
    texture = textured_image(64, batch=2)
    image, mask, view_depth = renderer.render(depth, texture, torch.zeros(2, 6))
    torch.testing.assert_close(view_depth, depth)  # every pixel, border included
    torch.testing.assert_close(image, texture, atol=1e-4, rtol=0)
    assert bool((mask == 1).all())


@pytest.mark.parametrize(
    "pose",
    [
        [0.0, math.radians(20), 0.0, 0.0, 0.0, 0.0],  # yaw about (0, 0, 1)
        [math.radians(10), math.radians(-15), math.radians(30), 0.02, -0.03, 0.05],
    ],
    ids=["yaw20", "combined"],
)
def test_rotated_plane_matches_ray_plane_intersection(pose: list[float]) -> None:
    size = 32
    renderer = Renderer(image_size=size)
    plane, pose_tensor = torch.ones(1, size, size), torch.tensor([pose])
    _, mask, view_depth = renderer.render(plane, textured_image(size), pose_tensor)
    expected = torch.from_numpy(analytic_plane_depth(size, 1.0, pose)).float()
    covered = mask[0, 0].bool()
    covered[:, :2] = covered[:, -2:] = covered[:2] = covered[-2:] = False  # interior only
    assert covered.sum() > 0.5 * size**2
    torch.testing.assert_close(view_depth[0][covered], expected[covered], atol=1e-5, rtol=0)


def test_translation_shifts_image_by_the_projected_amount() -> None:
    size = 32
    renderer = Renderer(image_size=size)
    focal = renderer.K[0, 0].item()
    shift_x, shift_y = 5, 3  # pixels; at depth 1 a translation t moves the image by f * t
    pose = torch.tensor([[0.0, 0.0, 0.0, shift_x / focal, shift_y / focal, 0.0]])
    texture = textured_image(size)
    image, mask, view_depth = renderer.render(torch.ones(1, size, size), texture, pose)

    moved = image[..., shift_y:, shift_x:]
    torch.testing.assert_close(moved, texture[..., :-shift_y, :-shift_x], atol=1e-4, rtol=0)
    torch.testing.assert_close(view_depth[..., shift_y:, shift_x:], torch.ones_like(moved[:, 0]))
    assert bool((mask[..., :, :shift_x] == 0).all()) and bool((mask[..., :shift_y, :] == 0).all())


def brute_force_depth(renderer: Renderer, depth: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Every pixel against every triangle (dense), nearest perspective-correct depth, clamped.

    Inside means the renderer's edge rule: barycentric weights down to ``-_INSIDE_TOLERANCE``, so
    a pixel on a shared edge belongs to both triangles. A strict ``>= 0`` leaves a crack wherever
    a CPU's rounding puts such a pixel a hair outside both (the rule itself is tested below)."""
    size = renderer.image_size
    verts = renderer.project(renderer.transform(renderer.lift(depth), pose)).flatten(1, 2)
    tri = verts[:, grid_faces(size, size)]  # (B, F, 3, 3)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pixels = torch.stack([cols, rows], -1).reshape(1, 1, -1, 2).to(depth)
    a, b, c = (tri[:, :, i, None, :2] for i in range(3))

    def edge(p, q, r):  # twice the signed area of (p, q, r)
        (px, py), (qx, qy), (rx, ry) = p.unbind(-1), q.unbind(-1), r.unbind(-1)
        return (qx - px) * (ry - py) - (qy - py) * (rx - px)

    area = edge(a, b, c)
    weights = torch.stack([edge(b, c, pixels), edge(c, a, pixels), edge(a, b, pixels)], -1)
    weights = weights / area[..., None]
    inside = (weights >= -_INSIDE_TOLERANCE).all(-1) & (tri[..., 2].amin(-1, keepdim=True) > 0.1)
    z = 1 / (weights / tri[:, :, None, :, 2]).sum(-1)
    nearest = torch.where(inside, z, torch.full_like(z, BACKGROUND_DEPTH)).amin(1)
    return nearest.reshape(-1, size, size).clamp(*renderer.depth_clamp)


@pytest.mark.numerics
@pytest.mark.parametrize(
    "case",
    ["zoom", "strong_rotation"],
)
def test_large_triangles_match_brute_force(case: str) -> None:
    """Triangles far larger than the usual 2x2-pixel window are rasterized exactly."""
    size = 12
    renderer = Renderer(image_size=size)
    generator = torch.Generator().manual_seed(1)
    noise = (torch.rand(2, size, size, generator=generator, dtype=torch.float64) - 0.5) * 0.2
    if case == "zoom":  # plane at depth 4 moved to depth 1: 4x magnification, irregular triangles
        depth = 4 + noise
        pose = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -3.0], [0.1, 0.2, 0.3, 0.0, 0.0, -3.0]])
    else:  # noisy depth seen at 60 degrees: depth steps become long slivers
        depth = 1 + noise
        pose = torch.tensor([[0.0, math.radians(60), 0, 0, 0, 0], [math.radians(-50), 0, 0.5, 0, 0, 0]])
    pose = pose.double()

    verts = renderer.project(renderer.transform(renderer.lift(depth), pose)).flatten(1, 2)
    box = verts[:, grid_faces(size, size), :2]
    assert (box.amax(2) - box.amin(2)).max() > 4  # windows of more than 4x4 pixels are needed

    rendered = renderer.render_depth(depth, pose)
    expected = brute_force_depth(renderer, depth, pose)
    # Same rule, same nearest fragment: only float64 rounding of two formula orders remains, far
    # below 1e-9 (a pixel exactly at the slack's boundary, -1e-4, is not where rounding puts one).
    torch.testing.assert_close(rendered, expected, atol=1e-9, rtol=0)


@pytest.mark.numerics
def test_pixels_on_shared_edges_are_covered_whatever_the_rounding() -> None:
    """With the identity pose every pixel centre lies on a grid vertex or edge. Poses a rounding
    away from it (1e-12, both signs) put centres a hair outside one triangle or both, as another
    CPU's rounding does: the inside test's slack still covers every pixel, at the plane's depth."""
    size = 16
    renderer = Renderer(image_size=size)
    generator = torch.Generator().manual_seed(0)
    depth = torch.ones(8, size, size, dtype=torch.float64)
    pose = (torch.rand(8, 6, generator=generator, dtype=torch.float64) - 0.5) * 2e-12
    _, mask, view_depth = renderer.render(depth, textured_image(size, 8, torch.float64), pose)
    assert bool((mask == 1).all())
    torch.testing.assert_close(view_depth, depth, atol=1e-9, rtol=0)


def test_gradients_match_finite_differences() -> None:
    """Depth, texture, light and pose all receive the gradient a finite difference measures."""
    size = 12
    renderer = Renderer(image_size=size)
    dtype = torch.float64
    depth = smooth_depth(size, dtype=dtype).requires_grad_()
    albedo = textured_image(size, dtype=dtype).requires_grad_()
    pose = torch.tensor([[0.1, 0.15, 0.05, 0.01, -0.02, 0.0]], dtype=dtype, requires_grad=True)
    ambient = torch.tensor([0.6], dtype=dtype, requires_grad=True)
    diffuse = torch.tensor([0.4], dtype=dtype, requires_grad=True)
    direction = torch.tensor([[0.2, 0.1, 1.0]], dtype=dtype)
    direction = (direction / direction.norm()).requires_grad_()
    weights = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def loss(depth, albedo, pose, ambient, diffuse, direction):
        shading = renderer.shade(renderer.normals(depth), ambient, diffuse, direction)
        image, mask, view_depth = renderer.render(depth, albedo * shading, pose)
        return (image * mask * weights).sum() + view_depth.sum()

    inputs = (depth, albedo, pose, ambient, diffuse, direction)
    loss(*inputs).backward()
    assert all(bool(tensor.grad.abs().sum() > 0) for tensor in inputs)
    # Every pose entry exactly; all inputs along random directions (fast mode) to stay quick.
    assert torch.autograd.gradcheck(lambda p: loss(depth, albedo, p, *inputs[3:]), (pose,))
    assert torch.autograd.gradcheck(loss, inputs, fast_mode=True)


def test_flat_plane_facing_the_camera_is_lit_by_ambient_plus_diffuse() -> None:
    renderer = Renderer(image_size=16)
    normals = renderer.normals(torch.ones(2, 16, 16))
    facing = torch.tensor([0.0, 0.0, 1.0]).expand(2, 16, 16, 3)
    torch.testing.assert_close(normals, facing, atol=1e-6, rtol=0)
    ambient, diffuse = torch.tensor([0.3, 0.5]), torch.tensor([0.7, 0.2])
    shading = renderer.shade(normals, ambient, diffuse, torch.tensor([[0.0, 0.0, 1.0]] * 2))
    assert shading.shape == (2, 1, 16, 16)
    torch.testing.assert_close(shading, (ambient + diffuse).view(2, 1, 1, 1).expand(2, 1, 16, 16))


def test_flip_branch_renders_the_mirrored_face() -> None:
    """Unsup3D's flipped branch renders the mirrored depth and albedo; at the canonical view that
    is the mirror image of the unflipped render. An asymmetric face, so the branches differ."""
    size = 32
    renderer = Renderer(image_size=size)
    depth = smooth_depth(size) + torch.linspace(0, 0.2, size)  # deeper to the right
    texture = textured_image(size)
    pose = torch.zeros(1, 6)
    plain = renderer.render(depth, texture, pose)
    flipped = renderer.render(depth.flip(2), texture.flip(3), pose)
    assert not torch.allclose(flipped[0], plain[0], atol=1e-2)  # the branches see different faces
    for flipped_output, plain_output in zip(flipped, plain):  # image, mask, depth
        # the identity view samples texture at pixel centres: exact up to the 1e-4 inside slack
        torch.testing.assert_close(flipped_output, plain_output.flip(-1), atol=1e-4, rtol=0)


def test_mirrored_face_and_pose_render_the_mirrored_image() -> None:
    """Flipping depth, texture and the pose's handedness flips the render (row/column sanity)."""
    size = 32
    renderer = Renderer(image_size=size)
    depth, texture = smooth_depth(size), textured_image(size)
    pose = torch.tensor([[0.1, 0.3, 0.2, 0.03, -0.02, 0.01]])
    mirrored_pose = pose * torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    image, mask, view_depth = renderer.render(depth, texture, pose)
    image_m, mask_m, view_depth_m = renderer.render(depth.flip(2), texture.flip(3), mirrored_pose)
    # The grid's diagonals do not mirror, so curved surfaces differ at second order only.
    torch.testing.assert_close(view_depth_m, view_depth.flip(2), atol=5e-4, rtol=0)
    assert (mask_m.flip(3) == mask).float().mean() > 0.98  # silhouettes may differ by a pixel
    both = (mask * mask_m.flip(3)).bool().expand_as(image)
    assert both.float().mean() > 0.5
    # Those 1e-4 depth differences move samples by ~1% of a pixel of a noise texture in [-1, 1];
    # a wrong axis or sign convention gives errors of order 1.
    torch.testing.assert_close(image_m.flip(3)[both], image[both], atol=2e-2, rtol=0)


def test_mask_is_zero_where_nothing_is_rendered_and_detached() -> None:
    size = 16
    renderer = Renderer(image_size=size)
    depth = torch.ones(2, size, size, requires_grad=True)
    pose = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.0, 0.0], [0.0, math.radians(80), 0.0, 0.0, 0.0, 0.0]])
    pose.requires_grad_()
    image, mask, view_depth = renderer.render(depth, textured_image(size, batch=2), pose)
    assert not mask.requires_grad
    assert bool((mask[0] == 0).all())  # translated out of the field of view
    assert 0 < mask[1].mean() < 0.5  # nearly edge-on: a narrow band is left
    assert bool(((mask == 0) == (view_depth.unsqueeze(1) == 1.2)).all())


def test_backend_choice() -> None:
    with pytest.raises(ValueError):
        Renderer(backend="opengl")
    assert Renderer(backend="auto")._rasterizer(torch.device("cpu")) is _rasterize_torch
    if not pytorch3d_available():
        with pytest.raises(ImportError):
            Renderer(backend="pytorch3d")


def test_pytorch3d_backend_agrees_with_torch_backend() -> None:
    pytest.importorskip("pytorch3d")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    depth = smooth_depth(32, batch=2).to(device)
    pose = torch.tensor([[0.1, 0.3, 0.2, 0.03, -0.02, 0.0], [-0.2, -0.5, 0.1, 0.0, 0.05, 0.0]])
    pose = pose.to(device)
    ours = Renderer(image_size=32, backend="torch").render_depth(depth, pose)
    theirs = Renderer(image_size=32, backend="pytorch3d").render_depth(depth, pose)
    # Edge rules differ, so a few silhouette pixels may disagree; the surface must not.
    agree = (ours - theirs).abs() < 1e-4
    assert agree.float().mean() > 0.99
