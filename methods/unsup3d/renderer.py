"""Differentiable renderer for the depth-grid face of Unsup3D / LatentFace stage 1.

The face is a depth map on the pixel grid (LatentFace paper, Appendix D "Rendering Pipeline";
Wu et al., "Unsupervised Learning of Probably Symmetric Deformable 3D Objects", CVPR 2020).
An image is rendered "by warping", as the Unsup3D reference does:

1. lift the canonical depth grid to camera-space points with ``K^-1`` and connect neighbouring
   grid points into a triangle mesh (``2 * (S-1)^2`` triangles);
2. move the mesh by the pose and rasterize it into a depth map of the observed view
   (z-buffer, perspective-correct depth), clamped to ``[0.8, 1.2]``;
3. back-project every observed pixel with that depth, undo the pose, project into the canonical
   view and ``grid_sample`` the canonical image there;
4. the valid pixels are those whose rendered depth is below the clamp ceiling.

Camera: field of view 10 degrees, ``f = (S-1)/2 / tan(5 deg)``, principal point ``c = (S-1)/2``,
so pixel centres sit on integer coordinates ``0..S-1``. Pose: ``(rx, ry, rz, tx, ty, tz)`` in
radians and world units, ``R = Rz @ Ry @ Rx`` applied about the point ``(0, 0, 1)`` (the middle of
the canonical depth range), then translated by ``t``.

The reference rasterized with Neural Renderer on CUDA only. Here the default backend is a
rasterizer written in plain PyTorch (CPU and GPU); PyTorch3D can be used instead when installed.
Either backend only decides *which* triangle is visible at each pixel (no gradient, like any
z-buffer); the depth of that triangle at the pixel centre is then re-evaluated differentiably
from its vertices, so gradients reach the canonical depth and the pose (as in PyTorch3D).
"""
from __future__ import annotations

import importlib.util
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-7
"""Guards the normalisation of normals (Unsup3D's constant). Unsup3D divides by ``|n| + EPS``,
which shrinks the tiny raw normals of a 64-px grid (``|n| ~ 3e-5``) by 0.3%; dividing by
``max(|n|, EPS)`` instead keeps them exactly unit, so a plane facing the light gets
``ambient + diffuse``."""

BACKGROUND_DEPTH = 10.0
"""Depth of pixels no triangle covers (Unsup3D's far plane); the clamp turns it into 1.2."""

NEAR_DEPTH = 0.1
"""Triangles with a vertex closer to the camera than this are dropped (Unsup3D's near plane):
their projection is unbounded and they cannot be in the clamped depth range anyway."""

_INSIDE_TOLERANCE = 1e-4
"""Barycentric slack of the inside test. With the identity pose every pixel centre lies exactly
on a grid vertex or edge; without slack, float rounding could leave such a pixel uncovered by all
of the triangles that share it. The depth error it allows is ~1e-4 of a triangle's depth range."""

_BBOX_MARGIN = 1e-3
"""Pixels of slack on each triangle's bounding box, for the same reason as the tolerance above."""


def rotation_matrix(angles: Tensor) -> Tensor:
    """Rotation ``R = Rz @ Ry @ Rx`` from Euler angles, the Unsup3D convention.

    Args:
        angles: (B, 3) rotations ``(rx, ry, rz)`` about the x, y and z axes, in radians.

    Returns:
        (B, 3, 3) rotation matrices.
    """
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(angles[:, 0]), torch.zeros_like(angles[:, 0])

    def matrix(*entries: Tensor) -> Tensor:  # nine (B,) entries, row by row
        return torch.stack(entries, dim=1).reshape(-1, 3, 3)

    cx, cy, cz = cos.unbind(1)
    sx, sy, sz = sin.unbind(1)
    rot_x = matrix(one, zero, zero, zero, cx, -sx, zero, sx, cx)
    rot_y = matrix(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rot_z = matrix(cz, -sz, zero, sz, cz, zero, zero, zero, one)
    return rot_z @ rot_y @ rot_x


def grid_faces(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Triangles of the pixel-grid mesh, two per grid cell, as in Unsup3D.

    Vertex ``i * width + j`` is the grid point of row ``i`` and column ``j``. Each cell is split
    along the diagonal from its bottom-left to its top-right corner.

    Args:
        height: number of grid rows.
        width: number of grid columns.
        device: device of the result.

    Returns:
        (2 * (height-1) * (width-1), 3) vertex indices (int64).
    """
    index = torch.arange(height * width, device=device).reshape(height, width)
    top_left, top_right = index[:-1, :-1], index[:-1, 1:]
    bottom_left, bottom_right = index[1:, :-1], index[1:, 1:]
    upper = torch.stack([top_left, bottom_left, top_right], dim=-1).reshape(-1, 3)
    lower = torch.stack([top_right, bottom_left, bottom_right], dim=-1).reshape(-1, 3)
    return torch.cat([upper, lower], dim=0)


def _face_vertices(verts: Tensor, faces: Tensor) -> Tensor:
    """Vertices of every triangle of every mesh of the batch.

    Args:
        verts: (B, V, 3) vertices.
        faces: (F, 3) vertex indices shared by the batch.

    Returns:
        (B * F, 3, 3) triangles, triangle ``b * F + f`` being face f of mesh b.
    """
    return verts.index_select(1, faces.reshape(-1)).reshape(-1, 3, 3)


def _barycentric(tri: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Screen-space barycentric coordinates of points with respect to triangles.

    Coordinates are taken relative to the first vertex, so that they stay small and float32
    rounding stays far below ``_INSIDE_TOLERANCE``.

    Args:
        tri: (N, 3, >=2) triangles, vertex-major, screen coordinates ``(u, v, ...)``.
        px: (N, K) horizontal pixel coordinates of K points per triangle.
        py: (N, K) vertical pixel coordinates.

    Returns:
        (N, K, 3) weights of the three vertices (sum to 1).
    """
    origin = tri[:, 0, None, :2]
    edge1 = tri[:, 1, None, :2] - origin
    edge2 = tri[:, 2, None, :2] - origin
    point = torch.stack([px, py], dim=-1) - origin

    def cross(a: Tensor, b: Tensor) -> Tensor:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    area = cross(edge1, edge2)
    w1 = cross(point, edge2) / area
    w2 = cross(edge1, point) / area
    return torch.stack([1 - w1 - w2, w1, w2], dim=-1)


def _perspective_depth(tri: Tensor, weights: Tensor) -> Tensor:
    """Depth of a triangle's plane at a pixel from screen-space barycentrics.

    Depth is not linear in screen space but its inverse is, hence ``1 / sum(w_i / z_i)``:
    this is the exact intersection of the pixel's ray with the triangle's 3D plane.

    Args:
        tri: (N, 3, 3) screen-space triangles ``(u, v, z)``.
        weights: (N, K, 3) barycentrics from :func:`_barycentric`.

    Returns:
        (N, K) depths.
    """
    return 1.0 / (weights / tri[:, None, :, 2]).sum(-1)


@torch.no_grad()
def _rasterize_torch(verts: Tensor, faces: Tensor, image_size: int) -> Tensor:
    """Visible triangle per pixel by z-buffering, in plain vectorised PyTorch.

    Each triangle tests the pixel centres inside its (clipped) bounding box. Boxes of the grid
    mesh are tiny (about 2x2 pixels), so each triangle gets a small fixed window of candidate
    pixels instead of testing every pixel. Boxes differ in size (zoom, strong rotations, depth
    discontinuities stretch triangles), so triangles are grouped by the power of two that
    bounds their box width and height; each group uses a window as large as its largest box.
    Any triangle is therefore handled exactly, whatever its size, and padding wastes at most 4x
    the work of the boxes themselves. Usually one to four groups exist.

    Args:
        verts: (B, V, 3) screen-space vertices ``(u, v, z)``: pixel coordinates and depth.
        faces: (F, 3) vertex indices.
        image_size: S, the side of the square output.

    Returns:
        (B * S * S,) index ``b * F + f`` of the visible triangle at each pixel (row-major within
        each image), -1 where no triangle covers the pixel.
    """
    batch, num_faces = verts.shape[0], faces.shape[0]
    tri = _face_vertices(verts, faces)
    u, v, z = tri.unbind(-1)

    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    x0 = torch.ceil(u.amin(1) - _BBOX_MARGIN).clamp(min=0)
    x1 = torch.floor(u.amax(1) + _BBOX_MARGIN).clamp(max=image_size - 1)
    y0 = torch.ceil(v.amin(1) - _BBOX_MARGIN).clamp(min=0)
    y1 = torch.floor(v.amax(1) + _BBOX_MARGIN).clamp(max=image_size - 1)
    # NaN/inf coordinates (culled triangles) fail these comparisons and are dropped too.
    drawn = (z.amin(1) > NEAR_DEPTH) & (area.abs() > 1e-12) & (x1 >= x0) & (y1 >= y0)
    face_ids = drawn.nonzero().squeeze(1)
    if len(face_ids) == 0:
        return torch.full((batch * image_size**2,), -1, dtype=torch.long, device=verts.device)
    tri = tri.index_select(0, face_ids)
    x0, y0 = x0.index_select(0, face_ids), y0.index_select(0, face_ids)
    width = (x1.index_select(0, face_ids) - x0).long() + 1
    height = (y1.index_select(0, face_ids) - y0).long() + 1
    # Flat output index of each box's top-left pixel.
    corner_key = (face_ids // num_faces) * image_size**2 + y0.long() * image_size + x0.long()

    # Group by (ceil(log2(width)), ceil(log2(height))), encoded as one integer per triangle.
    num_classes = math.ceil(math.log2(image_size)) + 1
    width_class, height_class = torch.stack([width, height]).double().log2().ceil().long()
    group_of = width_class * num_classes + height_class
    groups = torch.bincount(group_of, minlength=num_classes**2).nonzero().squeeze(1).tolist()

    num_pixels = batch * image_size**2
    pixel_keys, depths, fragment_faces = [], [], []
    for group in groups:
        members = (group_of == group).nonzero().squeeze(1)
        win_w, win_h = int(width[members].max()), int(height[members].max())
        offset_y, offset_x = torch.meshgrid(
            torch.arange(win_h, device=verts.device),
            torch.arange(win_w, device=verts.device),
            indexing="ij",
        )
        offset_x, offset_y = offset_x.reshape(1, -1), offset_y.reshape(1, -1)
        group_tri = tri.index_select(0, members)
        px = x0.index_select(0, members)[:, None] + offset_x.to(tri.dtype)
        py = y0.index_select(0, members)[:, None] + offset_y.to(tri.dtype)
        weights = _barycentric(group_tri, px, py)
        hit = (
            (offset_x < width.index_select(0, members)[:, None])
            & (offset_y < height.index_select(0, members)[:, None])
            & (weights >= -_INSIDE_TOLERANCE).all(-1)
        )
        # Keep only the fragments (candidates inside their triangle): one nonzero, then cheap
        # index_selects; scattering all candidates would cost several times more.
        fragment = hit.reshape(-1).nonzero().squeeze(1)
        key = corner_key.index_select(0, members)[:, None] + offset_y * image_size + offset_x
        pixel_keys.append(key.reshape(-1).index_select(0, fragment))
        depth = _perspective_depth(group_tri, weights)
        depths.append(depth.reshape(-1).index_select(0, fragment))
        face = face_ids.index_select(0, members)[:, None].expand_as(hit)
        fragment_faces.append(face.reshape(-1).index_select(0, fragment))

    pixel_keys, depths = torch.cat(pixel_keys), torch.cat(depths)
    nearest = torch.full((num_pixels,), math.inf, dtype=depths.dtype, device=depths.device)
    nearest = nearest.scatter_reduce(0, pixel_keys, depths, "amin")
    # Among fragments at the nearest depth (shared edges and vertices) keep the lowest face index,
    # so that the result is deterministic.
    no_face = batch * num_faces
    is_nearest = depths == nearest.index_select(0, pixel_keys)
    face = torch.where(is_nearest, torch.cat(fragment_faces), no_face)
    pix_to_face = torch.full((num_pixels,), no_face, dtype=torch.long, device=verts.device)
    pix_to_face = pix_to_face.scatter_reduce(0, pixel_keys, face, "amin")
    return torch.where(pix_to_face == no_face, -1, pix_to_face)


@torch.no_grad()
def _rasterize_pytorch3d(verts: Tensor, faces: Tensor, image_size: int) -> Tensor:
    """Visible triangle per pixel with PyTorch3D's rasterizer; same contract as the torch one.

    PyTorch3D's NDC has +x to the left and +y up with pixel centres at ``1 - (2i+1)/S``; mapping
    our pixel coordinates there keeps row ``i`` / column ``j`` of both outputs aligned.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    u, v, z = verts.unbind(-1)
    ndc = torch.stack([1 - (2 * u + 1) / image_size, 1 - (2 * v + 1) / image_size, z], dim=-1)
    meshes = Meshes(verts=ndc, faces=faces.expand(verts.shape[0], -1, -1))
    pix_to_face, _, _, _ = rasterize_meshes(
        meshes, image_size=image_size, faces_per_pixel=1, perspective_correct=True
    )
    # Packed face indices are b * F + f because all meshes have the same faces.
    return pix_to_face.reshape(-1)


def pytorch3d_available() -> bool:
    """Whether the optional PyTorch3D backend can be imported."""
    return importlib.util.find_spec("pytorch3d") is not None


class Renderer:
    """Renders the depth-grid face of Unsup3D / LatentFace (paper Appendix D).

    Args:
        image_size: side S of the square depth maps and images (64 in the paper).
        fov: horizontal and vertical field of view in degrees (10 in the paper).
        min_depth: lower end of the canonical depth range (0.9).
        max_depth: upper end of the canonical depth range (1.1). Rotations are about the point
            ``(0, 0, (min_depth + max_depth) / 2)``, and rendered depth is clamped to the range
            widened by half its width on each side: ``[0.8, 1.2]``.
        backend: rasterizer: ``"torch"`` (plain PyTorch, default), ``"pytorch3d"`` (needs the
            package) or ``"auto"`` (PyTorch3D when importable and the input is on CUDA, else
            torch; chosen at each call).
    """

    def __init__(
        self,
        image_size: int = 64,
        fov: float = 10.0,
        min_depth: float = 0.9,
        max_depth: float = 1.1,
        backend: str = "torch",
    ) -> None:
        if backend not in ("torch", "pytorch3d", "auto"):
            raise ValueError(f"unknown renderer backend {backend!r}")
        if backend == "pytorch3d" and not pytorch3d_available():
            raise ImportError("backend='pytorch3d' needs the pytorch3d package")
        self.image_size = image_size
        self.backend = backend
        self.rotation_center = (min_depth + max_depth) / 2
        margin = (max_depth - min_depth) / 2
        self.depth_clamp = (min_depth - margin, max_depth + margin)
        focal = (image_size - 1) / 2 / math.tan(math.radians(fov / 2))
        center = (image_size - 1) / 2
        self.K = torch.tensor(
            [[focal, 0.0, center], [0.0, focal, center], [0.0, 0.0, 1.0]], dtype=torch.float64
        )
        self.K_inv = torch.linalg.inv(self.K)
        self.faces = grid_faces(image_size, image_size)

    # ----- camera geometry -------------------------------------------------------------------

    def lift(self, depth: Tensor) -> Tensor:
        """Back-projects a depth map to camera-space points: ``depth * K^-1 (u, v, 1)``.

        Args:
            depth: (B, H, W) depth along the optical axis (z), H = W = image_size.

        Returns:
            (B, H, W, 3) points ``(x, y, z)``; x grows with the column, y with the row.
        """
        size = self.image_size
        if depth.shape[-2:] != (size, size):
            raise ValueError(f"expected {size}x{size} depth maps, got {tuple(depth.shape)}")
        rows, cols = torch.meshgrid(
            torch.arange(size, dtype=depth.dtype, device=depth.device),
            torch.arange(size, dtype=depth.dtype, device=depth.device),
            indexing="ij",
        )
        pixels = torch.stack([cols, rows, torch.ones_like(rows)], dim=-1)
        rays = pixels @ self.K_inv.to(depth).T
        return rays * depth.unsqueeze(-1)

    def project(self, points: Tensor) -> Tensor:
        """Projects camera-space points to pixel coordinates, keeping their depth.

        Args:
            points: (..., 3) camera-space points with positive z.

        Returns:
            (..., 3) ``(u, v, z)``: column and row coordinates (pixel centres are integers) and
            the unchanged depth z.
        """
        image = points @ self.K.to(points).T
        return torch.cat([image[..., :2] / image[..., 2:], points[..., 2:]], dim=-1)

    def transform(self, points: Tensor, pose: Tensor, inverse: bool = False) -> Tensor:
        """Moves points from the canonical to the observed view (or back with ``inverse``).

        Forward: ``R (p - o) + o + t`` with ``o = (0, 0, rotation_center)``.

        Args:
            points: (B, ..., 3) camera-space points.
            pose: (B, 6) ``(rx, ry, rz, tx, ty, tz)``, radians and world units.
            inverse: apply the inverse transformation instead.

        Returns:
            Points of the same shape as ``points``.
        """
        batch = points.shape[0]
        flat = points.reshape(batch, -1, 3)
        rotation = rotation_matrix(pose[:, :3])
        translation = pose[:, None, 3:]
        origin = torch.zeros(3, dtype=points.dtype, device=points.device)
        origin[2] = self.rotation_center
        if inverse:
            moved = (flat - translation - origin) @ rotation + origin
        else:
            moved = (flat - origin) @ rotation.transpose(1, 2) + origin + translation
        return moved.reshape(points.shape)

    # ----- shading -----------------------------------------------------------------------------

    def normals(self, depth: Tensor) -> Tensor:
        """Unit surface normals of the depth grid, as in Unsup3D.

        Central differences of the lifted grid along rows and columns, crossed. Normals point away
        from the camera (+z for a fronto-parallel plane), the same side as the light direction
        ``normalize([l2, l3, 1])``. The one-pixel border has no central difference and gets
        ``(0, 0, 1)``.

        Args:
            depth: (B, H, W) canonical depth.

        Returns:
            (B, H, W, 3) unit normals.
        """
        points = self.lift(depth)
        along_cols = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
        along_rows = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
        inner = torch.linalg.cross(along_cols, along_rows, dim=-1)
        border = (0, 0, 1, 1, 1, 1)  # one row/column on each side, channels untouched
        normal = torch.cat(
            [F.pad(inner[..., :2], border), F.pad(inner[..., 2:], border, value=1.0)], dim=-1
        )
        return F.normalize(normal, dim=-1, eps=EPS)

    def shade(self, normals: Tensor, ambient: Tensor, diffuse: Tensor, direction: Tensor) -> Tensor:
        """Lambertian shading ``ambient + diffuse * max(0, n . L)`` (paper Appendix D).

        Args:
            normals: (B, H, W, 3) unit normals from :meth:`normals`.
            ambient: (B,) ambient intensity.
            diffuse: (B,) diffuse intensity.
            direction: (B, 3) unit light direction (the model normalises ``[l2, l3, 1]``).

        Returns:
            (B, 1, H, W) shading, to multiply the albedo with.
        """
        cosine = (normals * direction[:, None, None, :]).sum(-1).clamp(min=0)
        return (ambient[:, None, None] + diffuse[:, None, None] * cosine).unsqueeze(1)

    # ----- rendering by warping ----------------------------------------------------------------

    def render_depth(self, depth: Tensor, pose: Tensor) -> Tensor:
        """Rasterizes the posed canonical depth grid into the observed view's depth map.

        Args:
            depth: (B, H, W) canonical depth.
            pose: (B, 6) pose (see :meth:`transform`).

        Returns:
            (B, H, W) observed-view depth, clamped to ``[0.8, 1.2]``; pixels no triangle covers
            hold the upper bound. Differentiable w.r.t. ``depth`` and ``pose`` where unclamped.
        """
        batch, size = depth.shape[0], self.image_size
        verts = self.project(self.transform(self.lift(depth), pose)).reshape(batch, -1, 3)
        faces = self.faces.to(depth.device)
        rasterize = self._rasterizer(depth.device)
        pix_to_face = rasterize(verts.detach(), faces, size)

        # Re-evaluate the visible triangle's depth at each covered pixel centre with gradients.
        covered = (pix_to_face >= 0).nonzero().squeeze(1)
        tri = _face_vertices(verts, faces).index_select(0, pix_to_face.index_select(0, covered))
        pixel = covered % size**2
        px = (pixel % size).to(depth.dtype).unsqueeze(1)
        py = (pixel // size).to(depth.dtype).unsqueeze(1)
        visible = _perspective_depth(tri, _barycentric(tri, px, py)).squeeze(1)
        rendered = depth.new_full((batch * size**2,), BACKGROUND_DEPTH)
        rendered = rendered.index_put((covered,), visible)
        return rendered.reshape(batch, size, size).clamp(*self.depth_clamp)

    def warp(self, canon: Tensor, view_depth: Tensor, pose: Tensor) -> Tensor:
        """Samples the canonical image at the canonical position of every observed pixel.

        Each observed pixel is lifted with its rendered depth, moved back by the inverse pose and
        projected into the canonical view, where the image is bilinearly sampled (zeros outside;
        ``align_corners=True`` because pixel centres are at ``0..S-1``, as Unsup3D assumes).

        Args:
            canon: (B, C, H, W) canonical image (or any per-pixel canonical quantity).
            view_depth: (B, H, W) observed-view depth from :meth:`render_depth`.
            pose: (B, 6) pose.

        Returns:
            (B, C, H, W) image in the observed view; differentiable w.r.t. all inputs.
        """
        canonical_points = self.transform(self.lift(view_depth), pose, inverse=True)
        grid = self.project(canonical_points)[..., :2] / (self.image_size - 1) * 2 - 1
        return F.grid_sample(canon, grid, mode="bilinear", align_corners=True)

    def render(
        self, canon_depth: Tensor, canon_image: Tensor, pose: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Renders the canonical face in the observed view (steps 1-4 of the module docstring).

        Args:
            canon_depth: (B, H, W) canonical depth.
            canon_image: (B, C, H, W) canonical (shaded) image.
            pose: (B, 6) pose.

        Returns:
            ``(image, mask, view_depth)``: the (B, C, H, W) image, the (B, 1, H, W) float mask of
            pixels the face covers (detached; Unsup3D multiplies the two branches' masks and the
            image with it in the model), and the (B, H, W) observed-view depth.
        """
        view_depth = self.render_depth(canon_depth, pose)
        image = self.warp(canon_image, view_depth, pose)
        mask = (view_depth < self.depth_clamp[1]).to(view_depth.dtype).unsqueeze(1).detach()
        return image, mask, view_depth

    def _rasterizer(self, device: torch.device) -> Callable[[Tensor, Tensor, int], Tensor]:
        """The rasterizer function the configured backend selects for inputs on ``device``."""
        use_pytorch3d = self.backend == "pytorch3d" or (
            self.backend == "auto" and device.type == "cuda" and pytorch3d_available()
        )
        return _rasterize_pytorch3d if use_pytorch3d else _rasterize_torch
