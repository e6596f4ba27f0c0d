"""A small ray caster for the synthetic heads (batched torch, CPU).

Each head is painted onto a grid over its own (x, y) plane (``paint.py``: front and back height
fields, colour, gloss). Every pixel's perspective ray is then transformed into the rotated head's
frame and marched through the volume between the two height fields, refined by bisection, and
shaded with Phong lighting: wrapped diffuse (soft skin), specular highlights and ambient light.
Neck and shoulders are analytic quadrics in the world frame, so the head turns on a fixed body.
Pixels on an outline (head, body, background) are anti-aliased with four extra rays.

Rays are handled as one flat list per batch (each ray knows its image), and the batch's grids
are laid side by side in one *atlas*, so a single ``grid_sample`` call serves every ray.

This is on purpose *not* a mesh rasteriser like the one the 3D methods use: their depth-and-albedo
model must approximate this image formation rather than match it by construction.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from harness.datasets.synthetic.paint import GRID_H, GRID_W, X_HI, X_LO, Y_HI, Y_LO, paint_heads

#: Vertical extent of the image plane at the head before zoom, and the head point at its centre.
FRAME_HEIGHT = 2.1
FRAME_CENTRE_Y = -0.12
DENSE_STEPS, DENSE_DEPTH = 12, 0.7  # march steps within DENSE_DEPTH of the bounding ellipsoid...
COARSE_STEPS = 6  # ... and beyond it
PHASES = ((0, 6), (6, 9), (9, DENSE_STEPS + COARSE_STEPS))  # step ranges, each taken by the rays still searching
BISECTIONS = 4
SKIN_WRAP = 0.3  # wrapped diffuse: light bleeds past the terminator as in skin
SUBPIXELS = ((-1 / 3, 1 / 6), (1 / 3, -1 / 6))  # extra rays on outlines (pixel units), averaged with the centre
BACKGROUND, HEAD, BODY = 0, 1, 2


def render(scene: dict[str, np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render a batch of scenes.

    Args:
        scene: factor arrays with one row per image (see ``world.compose``).
        size: output side in pixels.

    Returns:
        uint8 images (B, 3, size, size); float32 depth (B, size, size): the camera-space
        distance along the optical axis at each pixel centre, 0 where the background shows; and
        the head mask (B, size, size), True where the pixel centre sees the head (face, hair,
        ears), False on the neck, body and background.
    """
    p = {name: torch.as_tensor(np.asarray(value), dtype=torch.float32) for name, value in scene.items()}
    n = p["pose"].shape[0]
    march_maps, shade_maps = paint_heads(p)
    heads = Heads(p, march_maps, shade_maps)
    background = _background(p, size).permute(0, 2, 3, 1).reshape(-1, 3)  # (B*P, 3)

    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-centres, centres, indexing="ij")
    image = torch.arange(n).repeat_interleave(size * size)
    u, v = u.flatten().repeat(n), v.flatten().repeat(n)
    colour, depth, kind = heads.trace(image, u, v, background)

    # Anti-alias the outlines: pixels whose 3x3 neighbourhood sees more than one kind of surface.
    kinds = kind.view(n, 1, size, size).float()
    edge = (F.max_pool2d(kinds, 3, 1, 1) != -F.max_pool2d(-kinds, 3, 1, 1)).flatten().nonzero()[:, 0]
    if len(edge):
        pixel = 2.0 / size  # one pixel in image coordinates
        image, u, v, background, centre_colour = _rows(edge, image, u, v, background, colour)
        samples = [centre_colour] + [heads.trace(image, u + dx * pixel, v + dy * pixel, background)[0] for dx, dy in SUBPIXELS]
        colour = colour.index_copy(0, edge, torch.stack(samples).mean(0))

    srgb = colour.view(n, size, size, 3).permute(0, 3, 1, 2).clamp(0.0, 1.0).pow(1 / 2.2)
    return srgb.mul(255).round().to(torch.uint8), depth.view(n, size, size), (kind == HEAD).view(n, size, size)


def rotation(pose: torch.Tensor) -> torch.Tensor:
    """Head-to-world rotations (B, 3, 3) from yaw, pitch, roll in degrees.

    Positive yaw turns the face towards the image's right, positive pitch tilts it up, positive
    roll tilts it counter-clockwise as seen in the image.
    """
    yaw, pitch, roll = torch.deg2rad(pose).unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    tilt = mat([[one, zero, zero], [zero, pitch.cos(), pitch.sin()], [zero, -pitch.sin(), pitch.cos()]])
    turn = mat([[yaw.cos(), zero, yaw.sin()], [zero, one, zero], [-yaw.sin(), zero, yaw.cos()]])
    spin = mat([[roll.cos(), -roll.sin(), zero], [roll.sin(), roll.cos(), zero], [zero, zero, one]])
    return spin @ turn @ tilt


class Heads:
    """A batch of painted heads in front of a pinhole camera, ready to be ray traced.

    The camera sits on the +z axis looking at -z, at the distance where ``FRAME_HEIGHT`` head
    units fill the image (divided by the zoom); the head centre is shifted so that the point
    ``FRAME_CENTRE_Y`` sits mid-image.
    """

    p: dict[str, torch.Tensor]
    march_atlas: torch.Tensor  # (1, 2, H, B*W): front and back heights, image b in columns [bW, (b+1)W)
    shade_atlas: torch.Tensor  # (1, 11, H, B*W)
    bound: torch.Tensor  # (B, 3) semi-axes of a head-centred ellipsoid containing each head
    tan_half: torch.Tensor  # (B,) tangent of half the field of view
    origin: torch.Tensor  # (B, 3) camera positions
    centre: torch.Tensor  # (B, 3) head centres in the world
    rot: torch.Tensor  # (B, 3, 3) head-to-world rotations
    camera_in_head: torch.Tensor  # (B, 3) the camera position in the head frame

    def __init__(self, p: dict[str, torch.Tensor], march_maps: torch.Tensor, shade_maps: torch.Tensor) -> None:
        self.p = p
        self.march_atlas = _atlas(march_maps)
        self.shade_atlas = _atlas(shade_maps)
        self.bound = _bounding_axes(march_maps)
        self.tan_half = torch.tan(p["fov"] / 2)
        distance = FRAME_HEIGHT / p["zoom"] / (2 * self.tan_half)
        self.origin = F.pad(distance[:, None], (2, 0))
        shift = p["shift"]
        self.centre = torch.stack([shift[:, 0], shift[:, 1] - FRAME_CENTRE_Y, torch.zeros_like(shift[:, 0])], dim=-1)
        self.rot = rotation(p["pose"])
        self.camera_in_head = _to_head(self.rot, self.origin - self.centre)

    def trace(self, image: torch.Tensor, u: torch.Tensor, v: torch.Tensor, background: torch.Tensor):
        """Colour (R, 3), depth (R,) and surface kind (R,) along rays through image points.

        Args:
            image: (R,) which image of the batch each ray belongs to.
            u, v: (R,) image-plane coordinates in [-1, 1], v pointing up.
            background: (R, 3) colour where a ray hits nothing.
        """
        p = dict(zip(_PER_RAY, _rows(image, *(self.p[name] for name in _PER_RAY))))
        t, origin, centre, rot, bound, o_head = _rows(
            image, self.tan_half, self.origin, self.centre, self.rot, self.bound, self.camera_in_head
        )
        dirs = F.normalize(torch.stack([u * t, v * t, -torch.ones_like(u)], dim=-1), dim=-1)

        # The head, marched in its own frame: p_head = R^T (p_world - centre).
        d_head = _to_head(rot, dirs)
        t_head, front = _march(self.march_atlas, image, o_head, d_head, bound)

        # Neck (an elliptic cylinder) and shoulders (an ellipsoid), in the world frame.
        neck_axes = torch.stack([0.42 * p["head_width"] / 0.72, torch.ones_like(u), torch.full_like(u, 0.38)], dim=-1)
        neck_rel = origin - centre - torch.tensor([0.0, 0.0, -0.1])
        flat = torch.tensor([1.0, 0.0, 1.0])  # a vertical cylinder is an ellipsoid without the y term
        t_neck, _ = _ellipsoid_span(neck_rel * flat, dirs * flat, neck_axes)
        t_neck = torch.where((t_neck > 0) & (neck_rel[:, 1] + t_neck * dirs[:, 1] < -0.35), t_neck, math.inf)
        torso_rel = origin - centre - torch.tensor([0.0, -2.35, -0.25])
        torso_axes = torch.tensor([1.5, 0.95, 0.6])
        t_torso, _ = _ellipsoid_span(torso_rel, dirs, torso_axes)
        on_neck = t_neck <= t_torso
        t_body = torch.minimum(t_neck, t_torso)
        body_point = torch.where(on_neck[:, None], neck_rel, torso_rel) + t_body.clamp(max=1e3)[:, None] * dirs
        gradient = torch.where(on_neck[:, None], body_point * flat / neck_axes**2, body_point / torso_axes**2)
        body_normal = F.normalize(gradient, dim=-1)
        body_y = (origin - centre)[:, 1] + t_body.clamp(max=1e3) * dirs[:, 1]
        body_albedo = torch.where((body_y > p["collar"])[:, None], 0.85 * p["skin"], p["clothes"])

        on_head = t_head <= t_body
        distance = torch.minimum(t_head, t_body)
        hit = torch.isfinite(distance)
        normal, albedo, gloss = body_normal, body_albedo, torch.full_like(u, 0.3)
        idx = (on_head & hit).nonzero()[:, 0]
        if len(idx):
            head_image, head_o, head_d, head_t, head_front, head_rot = _rows(idx, image, o_head, d_head, t_head, front, rot)
            n_head, head_albedo, head_gloss = self._shade_head(head_image, head_o + head_t[:, None] * head_d, head_front)
            normal = normal.index_copy(0, idx, _to_world(head_rot, n_head))
            albedo, gloss = albedo.index_copy(0, idx, head_albedo), gloss.index_copy(0, idx, head_gloss)
        colour = torch.where(hit[:, None], _phong(p, normal, albedo, gloss, -dirs), background)
        depth = torch.where(hit, distance * -dirs[:, 2], 0.0)
        kind = torch.where(hit, torch.where(on_head, HEAD, BODY), BACKGROUND)
        return colour, depth, kind

    def _shade_head(self, image: torch.Tensor, point: torch.Tensor, front: torch.Tensor):
        """Head-frame normal (R, 3), albedo (R, 3) and gloss (R,) at surface points of the heads."""
        shade = _lookup(self.shade_atlas, image, point[:, :1], point[:, 1:2])[:, :, 0].T  # (R, 11)
        slope = torch.where(front[:, None], shade[:, 0:2], -shade[:, 2:4])
        facing = torch.where(front, 1.0, -1.0)[:, None]
        normal = F.normalize(torch.cat([-slope, facing], dim=-1), dim=-1)
        albedo = torch.where(front[:, None], shade[:, 4:7], shade[:, 8:11])
        gloss = torch.where(front, shade[:, 7], 0.4)
        return normal, albedo, gloss


def _to_head(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R^T v for rotations (R, 3, 3) and vectors (R, 3) (elementwise: faster than bmm for 3x3)."""
    return (rot * v[:, :, None]).sum(1)


def _to_world(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R v for rotations (R, 3, 3) and vectors (R, 3)."""
    return (rot * v[:, None, :]).sum(2)


def _rows(index: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows ``index`` of each tensor (``index_select``, much faster than ``x[index]``)."""
    return tuple(torch.index_select(t, 0, index) for t in tensors)


def _atlas(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) grids side by side as one (1, C, H, B*W) image."""
    b, c, h, w = maps.shape
    return maps.permute(1, 2, 0, 3).reshape(1, c, h, b * w)


def _lookup(atlas: torch.Tensor, image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup in the atlas at head-frame points x, y (R, K) of images (R,) -> (C, R, K).

    Points are clamped to their own image's grid, so no lookup reads a neighbour's.
    """
    tiles = atlas.shape[-1] // GRID_W
    column = ((x - X_LO) / (X_HI - X_LO) * (GRID_W - 1)).clamp(0, GRID_W - 1) + (image * GRID_W)[:, None]
    gx = column * (2 / (tiles * GRID_W - 1)) - 1
    gy = (y - Y_LO) / (Y_HI - Y_LO) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None]
    return F.grid_sample(atlas, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _march(atlas: torch.Tensor, image: torch.Tensor, origin: torch.Tensor, dirs: torch.Tensor, bound: torch.Tensor):
    """First hit of each ray with the volume between the back and front height fields.

    Steps are dense just behind where a ray enters the head's bounding ellipsoid (where the face
    usually is) and sparse further in. Most rays meet the face within the first steps, so steps
    are taken in phases, each only by the rays still searching. The step before the first inside
    sample and the first inside sample bracket the surface; bisection refines it.

    Args:
        atlas: (1, 2, H, B*W) front and back heights.
        image: (R,) image of each ray; origin, dirs: (R, 3) rays in the head frame.
        bound: (R, 3) semi-axes of the ellipsoid that contains the ray's head.

    Returns:
        distance along each ray (R,), ``inf`` on a miss, and whether the front surface was hit.
    """
    distance = torch.full(image.shape, math.inf)
    front = torch.zeros(image.shape, dtype=torch.bool)
    t_near, t_far = _ellipsoid_span(origin, dirs, bound)
    active = torch.isfinite(t_near).nonzero()[:, 0]
    image, origin, dirs, t_near, t_far = _rows(active, image, origin, dirs, t_near, t_far)
    t_near, span = t_near[:, None], (t_far - t_near)[:, None]
    dense = span.clamp(max=DENSE_DEPTH)
    # Step k of each ray: near + dense * f_dense[k] + (span - dense) * f_coarse[k], (A, K).
    t = torch.addcmul(torch.addcmul(t_near, dense, _DENSE_FRACTIONS), span - dense, _COARSE_FRACTIONS)

    first = torch.full(active.shape, -1)  # index of each ray's first step inside the head
    for begin, end in PHASES:
        todo = (first < 0).nonzero()[:, 0]
        inside = _inside(atlas, *_rows(todo, image, origin, dirs), t.index_select(0, todo)[:, begin:end])
        step = torch.where(inside.any(-1), begin + inside.to(torch.uint8).argmax(-1), -1)
        first = first.index_copy(0, todo, step)

    hit = (first >= 0).nonzero()[:, 0]
    image, origin, dirs, t_near, t, first = _rows(hit, image, origin, dirs, t_near, t, first[:, None])
    hi = t.gather(1, first)
    lo = torch.where(first > 0, t.gather(1, (first - 1).clamp_min(0)), t_near)
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        now_inside = _inside(atlas, image, origin, dirs, mid)
        hi = torch.where(now_inside, mid, hi)
        lo = torch.where(now_inside, lo, mid)
    point = origin + hi * dirs
    heights = _lookup(atlas, image, point[:, :1], point[:, 1:2])[:, :, 0]
    on_front = (heights[0] - point[:, 2]).abs() <= (point[:, 2] - heights[1]).abs()
    rays = active.index_select(0, hit)
    return distance.index_copy(0, rays, hi[:, 0]), front.index_copy(0, rays, on_front)


#: Scene factors that tracing needs per ray.
_PER_RAY = ("head_width", "skin", "clothes", "collar", "light_dir", "light_colour", "ambient", "diffuse", "specular", "shininess")
_DENSE_FRACTIONS = torch.cat([(torch.arange(DENSE_STEPS) + 0.5) / DENSE_STEPS, torch.ones(COARSE_STEPS)])
_COARSE_FRACTIONS = torch.cat([torch.zeros(DENSE_STEPS), torch.arange(1, COARSE_STEPS + 1) / COARSE_STEPS])


def _inside(atlas: torch.Tensor, image: torch.Tensor, origin: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Whether the points at distances t (R, K) along rays (R, 3) lie inside their heads."""
    x = torch.addcmul(origin[:, :1], t, dirs[:, :1])
    y = torch.addcmul(origin[:, 1:2], t, dirs[:, 1:2])
    z = torch.addcmul(origin[:, 2:], t, dirs[:, 2:])
    heights = _lookup(atlas, image, x, y)
    return (heights[0] > z) & (heights[1] < z)


def _bounding_axes(maps: torch.Tensor) -> torch.Tensor:
    """Semi-axes (B, 3) of a head-centred ellipsoid that contains each head.

    Its proportions are fixed in x and y and taken from the deepest point in z; it is then scaled
    to contain every front and back surface point of the grid (a volume between two height
    fields is inside a centred ellipsoid when both of its surfaces are).
    """
    front, back = maps[:, 0], maps[:, 1]
    solid = front > back
    x = torch.linspace(X_LO, X_HI, GRID_W).view(1, 1, -1)
    y = torch.linspace(Y_LO, Y_HI, GRID_H).view(1, -1, 1)
    depth = torch.maximum(front, -back).masked_fill(~solid, 0).amax(dim=(1, 2))
    axes = torch.stack([torch.full_like(depth, 0.8), torch.full_like(depth, 1.1), depth], dim=-1)
    flat = (x / 0.8) ** 2 + (y / 1.1) ** 2
    reach = flat + (torch.maximum(front, -back) / depth.view(-1, 1, 1)) ** 2
    scale = reach.masked_fill(~solid, 0).amax(dim=(1, 2)).sqrt()
    return axes * (1.01 * scale[:, None])


def _ellipsoid_span(origin: torch.Tensor, dirs: torch.Tensor, axes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (R,) of rays (R, 3) through origin-centred ellipsoids (inf: miss)."""
    o, d = origin / axes, dirs / axes
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    miss = disc <= 0
    return torch.where(miss, math.inf, (-b - root) / a), torch.where(miss, math.inf, (-b + root) / a)


def _phong(p, normal, albedo, gloss, view) -> torch.Tensor:
    """Ambient + wrapped diffuse + Phong specular of (R, 3) surface points, in linear light."""
    light = F.normalize(p["light_dir"], dim=-1)
    n_dot_l = (normal * light).sum(-1, keepdim=True)
    diffuse = ((n_dot_l + SKIN_WRAP) / (1 + SKIN_WRAP)).clamp_min(0)
    reflect = 2 * n_dot_l * normal - light
    highlight = (reflect * view).sum(-1, keepdim=True).clamp_min(0) ** p["shininess"][:, None]
    specular = (p["specular"] * gloss)[:, None] * highlight * (n_dot_l > 0)
    lit = albedo * (p["ambient"][:, None] + p["diffuse"][:, None] * diffuse * p["light_colour"])
    return lit + specular * p["light_colour"]


def _background(p: dict[str, torch.Tensor], side: int) -> torch.Tensor:
    """A two-colour gradient at a random angle plus low-frequency colour noise, (B, 3, S, S)."""
    n = p["background"].shape[0]
    coords = torch.linspace(-1, 1, side)
    v, u = torch.meshgrid(-coords, coords, indexing="ij")
    angle = p["background_angle"].view(n, 1, 1)
    ramp = ((u * angle.cos() + v * angle.sin()) * 0.5 + 0.5).clamp(0, 1)[:, None]
    first, second = p["background"][:, 0].view(n, 3, 1, 1), p["background"][:, 1].view(n, 3, 1, 1)
    noise = F.interpolate(p["background_noise"].permute(0, 3, 1, 2), size=(side, side), mode="bilinear", align_corners=True)
    return (first + (second - first) * ramp) * (1 + noise)
