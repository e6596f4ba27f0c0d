"""Paint each head onto a grid over its own (x, y) plane: height fields, colour and gloss.

Head frame: x to the head's left-to-right as seen from the front, y up, z out of the face, in
head units (the head is about 2 units tall, its centre at the origin). The head is the volume
``back(x, y) <= z <= front(x, y)``: an egg-shaped outline with ears, a flattened front (the face) and a
rounder back, plus a *relief* of Gaussian bumps and dents on the front (nose, brows, cheeks, lips,
eye sockets, hair) that expression controls move. Colours are layered like paint (skin, then
lips, eyes, brows, hair), and ambient occlusion darkens cavities of the relief.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from harness.datasets.synthetic.world import ACTION_UNITS

GRID_W, GRID_H = 72, 84
X_LO, X_HI = -1.0, 1.0
Y_LO, Y_HI = -1.40, 1.30
EDGE = 0.012  # softness of painted outlines, about a third of an output pixel at 64 px

_SCLERA = torch.tensor([0.70, 0.64, 0.60]).view(1, 3, 1, 1)
_DARK = torch.tensor([0.01, 0.008, 0.008]).view(1, 3, 1, 1)
_MOUTH = torch.tensor([0.06, 0.012, 0.012]).view(1, 3, 1, 1)
_TEETH = torch.tensor([0.72, 0.68, 0.58]).view(1, 3, 1, 1)
_BLUSH = torch.tensor([1.25, 0.85, 0.85]).view(1, 3, 1, 1)


@dataclasses.dataclass
class Canvas:
    """What is painted per grid cell: front relief (B,1,H,W), colour (B,3,H,W), gloss (B,1,H,W)."""

    relief: torch.Tensor
    albedo: torch.Tensor
    gloss: torch.Tensor

    def paint(self, colour: torch.Tensor, alpha: torch.Tensor) -> None:
        self.albedo = self.albedo + (colour - self.albedo) * alpha


class Head:
    """One batch of heads: factor columns as (B, 1, 1, 1) tensors and the painting grid."""

    def __init__(self, p: dict[str, torch.Tensor]) -> None:
        self.p = p
        self.n = p["pose"].shape[0]
        self.x = torch.linspace(X_LO, X_HI, GRID_W).view(1, 1, 1, GRID_W)
        self.y = torch.linspace(Y_LO, Y_HI, GRID_H).view(1, 1, GRID_H, 1)
        self.ax = self.x.abs()  # symmetric features are painted once for both sides
        self.unit = {name: p["units"][:, k].view(self.n, 1, 1, 1) for k, name in enumerate(ACTION_UNITS)}

    def __getattr__(self, name: str) -> torch.Tensor:
        value = self.__dict__["p"][name]
        return value.view(self.n, -1, 1, 1)

    def up(self, unit: str) -> torch.Tensor:
        """The positive part of an action unit."""
        return torch.relu(self.unit[unit])


def paint_heads(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Height fields and colours of a batch of heads on the painting grid.

    Args:
        p: scene factors as float tensors with one row per image.

    Returns:
        march maps (B, 2, H, W): front and back height; shade maps (B, 11, H, W): front height
        gradient (2), back height gradient (2), front albedo (3), front gloss (1), back albedo (3).
    """
    h = Head(p)
    r2, width, chin, ears = _outline(h)
    canvas = Canvas(
        relief=torch.zeros(h.n, 1, GRID_H, GRID_W),
        albedo=h.skin.expand(h.n, 3, GRID_H, GRID_W),
        gloss=torch.ones(h.n, 1, GRID_H, GRID_W),
    )
    _nose(h, canvas)
    _cheeks_and_chin(h, canvas, chin)
    _mouth(h, canvas)
    _eyes(h, canvas)
    _brows(h, canvas)
    _ears(h, canvas, ears)
    hair, hair_colour = _hair(h, canvas, width)

    # Ambient occlusion: cavities (eye sockets, mouth, creases) are darker than the blurred relief.
    blurred = F.avg_pool2d(F.avg_pool2d(canvas.relief, 5, 1, 2, count_include_pad=False), 5, 1, 2, count_include_pad=False)
    canvas.albedo = canvas.albedo * (1 - (3.0 * (blurred - canvas.relief)).clamp(0.0, 0.45))
    canvas.paint(hair_colour, hair)

    inside = (1 - r2).clamp_min(0.0)
    rim_fade = (inside / 0.15).clamp(max=1.0)  # the relief vanishes towards the silhouette
    # A flattened front (superellipse profile) and a round back meet at the outline r2 = 1;
    # outside it both continue as ramps, so "front < back" there and nothing is hit.
    front = torch.where(r2 < 1, h.face_depth * (1 - r2.clamp(max=1) ** 1.2).clamp_min(0) ** (1 / 2.4), 2 * (1 - r2))
    front = front + canvas.relief * rim_fade
    back = torch.where(r2 < 1, -h.back_depth * inside.sqrt(), 2 * (r2 - 1))
    # Ears are thin flaps: where they stick out of the egg, the volume is squashed to -0.12 < z < 0.04.
    flap = (ears / 0.3).clamp(max=1.0) * ((r2 + 0.35 * ears - 0.85) / 0.1).clamp(0.0, 1.0)
    front = front + flap * (front.clamp(max=0.04) - front)
    back = back + flap * (back.clamp(min=-0.12) - back)
    back_hair_from = torch.where(h.long_hair > 0, -1.0, h.eye_y - 0.3)
    back_hair = (1 - h.bald) * torch.sigmoid((h.y - back_hair_from) / 0.03)
    back_albedo = 0.9 * h.skin + (hair_colour - 0.9 * h.skin) * back_hair

    march_maps = torch.cat([front, back], dim=1)
    shade_maps = torch.cat(
        [_gradient(front), _gradient(back), canvas.albedo, canvas.gloss.clamp_min(0.05), back_albedo], dim=1
    )
    return march_maps, shade_maps


def _outline(h: Head) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised radius r2 of the outline (1 on the silhouette), its half width, the chin, and
    where the ears are (0..1): an egg narrowing towards the jaw, with ears sticking out sideways."""
    chin = h.chin + 0.6 * _jaw_drop(h)
    below = (-h.y / chin).clamp(0.0, 1.0)
    width = h.head_width * (1 - (1 - h.jaw) * below**2.2)  # narrower towards the jaw
    r2 = (h.x / width) ** 2 + (h.y / torch.where(h.y >= 0, h.head_top, chin)) ** 2
    ears = h.ear * _bump(h.ax, width + 0.02, 0.06) * _bump(h.y, _ear_y(h), 0.1)
    return r2 - 0.35 * ears, width, chin, ears


def _ear_y(h: Head) -> torch.Tensor:
    return h.eye_y - 0.13


def _ears(h: Head, c: Canvas, ears: torch.Tensor) -> None:
    """Ears are a little redder than the face, and darker inside."""
    c.paint(0.8 * h.skin * _BLUSH, 0.5 * ears)
    c.albedo = c.albedo * (1 - 0.5 * h.ear * _gauss(h.ax, h.y, h.head_width + 0.03, _ear_y(h), 0.025, 0.05))


def _jaw_drop(h: Head) -> torch.Tensor:
    return 0.3 * h.up("open")


def _eye_x(h: Head) -> torch.Tensor:
    return h.eye_sep * h.head_width / 0.72


def _nose(h: Head, c: Canvas) -> None:
    """Ridge, tip and wings (alae) of the nose, nostrils, and wrinkles across the bridge."""
    x, y, ey = h.x, h.y, h.eye_y
    tip_y = ey - h.nose_len
    c.relief = c.relief + 0.55 * h.nose_out * _gauss(x, y, 0.0, ey - 0.55 * h.nose_len, 0.65 * h.nose_w, 0.42 * h.nose_len)
    c.relief = c.relief + h.nose_out * _gauss(x, y, 0.0, tip_y + 0.035, 0.85 * h.nose_w, 0.055)
    c.relief = c.relief + 0.35 * h.nose_out * _gauss(h.ax, y, 1.25 * h.nose_w, tip_y + 0.03, 0.55 * h.nose_w, 0.045)
    c.paint(0.3 * c.albedo, 0.7 * _gauss(h.ax, y, 0.55 * h.nose_w, tip_y - 0.005, 0.022, 0.013))
    bridge = torch.sigmoid((y - tip_y - 0.12) / 0.02) * torch.sigmoid((ey - 0.03 - y) / 0.02) * _bump(x, 0.0, 0.07)
    lines = 0.5 + 0.5 * torch.cos(2 * math.pi * (y - ey) / 0.035)
    c.albedo = c.albedo * (1 - 0.45 * h.up("wrinkle") * bridge * lines)


def _cheeks_and_chin(h: Head, c: Canvas, chin: torch.Tensor) -> None:
    """Cheeks (raised and rounder in a genuine smile, with some blush), chin, the muzzle, eye sockets."""
    x, y, ey = h.x, h.y, h.eye_y
    cheek = _gauss(h.ax, y, 0.36 * h.head_width / 0.72, ey - 0.26 + 0.06 * h.up("cheek"), 0.13, 0.12)
    c.relief = c.relief + (h.cheek_full + 0.035 * h.up("cheek")) * cheek
    c.paint(c.albedo * _BLUSH, 0.35 * h.blush * cheek)
    c.relief = c.relief + h.chin_out * _gauss(x, y, 0.0, -chin + 0.16, 0.12, 0.08)
    mouth_y = ey - h.nose_len - h.mouth_gap
    c.relief = c.relief + 0.05 * _gauss(x, y, 0.0, mouth_y + 0.04, 0.24, 0.16)
    ex = _eye_x(h)
    c.relief = c.relief - 0.065 * _gauss(h.ax, y, ex, ey + 0.015, 0.12, 0.075)  # socket
    c.relief = c.relief + 0.035 * _gauss(h.ax, y, ex, ey, 0.075, 0.045)  # eyeball
    c.relief = c.relief + 0.03 * _gauss(x, y, 0.0, ey + 0.85 * h.brow_h, 0.32, 0.05)  # brow ridge


def _mouth(h: Head, c: Canvas) -> None:
    """Lips around a lip line that the smile curves; the jaw drop opens it, pressing thins the lips."""
    x, y, ax = h.x, h.y, h.ax
    smile, press, drop = h.unit["smile"], h.up("press"), _jaw_drop(h)
    mouth_y = h.eye_y - h.nose_len - h.mouth_gap
    half_width = (h.mouth_w * (1 + 0.35 * h.unit["stretch"] + 0.25 * torch.relu(smile))).clamp_min(0.08)
    xn = x / half_width
    span = torch.relu(1 - xn**2).sqrt()  # 1 in the middle of the mouth, 0 at the corners
    across = torch.sigmoid((half_width - ax) / EDGE)
    line_y = mouth_y + 0.2 * smile * xn**2 + 0.012 * h.unit["lip_raise"]
    upper_in = line_y + (0.2 * drop + 0.03 * h.up("lip_raise")) * span
    lower_in = line_y - drop * span
    lip = h.lip_th * (1 - 0.6 * press)
    cupid = 0.25 * lip * _bump(x, 0.0, 0.03)
    upper_out = upper_in + lip * (1 - 0.3 * torch.relu(smile)) * span**0.7 - cupid
    lower_out = lower_in - 1.3 * lip * (1 + 0.3 * torch.relu(-smile)) * span**0.7
    opening = torch.sigmoid((upper_in - y) / EDGE) * torch.sigmoid((y - lower_in) / EDGE) * across
    lips = torch.sigmoid((upper_out - y) / EDGE) * torch.sigmoid((y - lower_out) / EDGE) * across * (1 - opening)
    teeth = opening * torch.sigmoid((y - upper_in + 0.045) / EDGE) * h.unit["teeth"].clamp(0.0, 1.0)
    parting = 0.7 * torch.exp(-(((y - line_y) / 0.012) ** 2)) * across * (1 - opening)
    c.relief = c.relief + 0.025 * lips - 0.07 * opening

    # Nasolabial folds run from the nose wings to the mouth corners, deeper in a smile or sneer.
    tip_y = h.eye_y - h.nose_len
    corner = torch.cat([half_width + 0.035, mouth_y + 0.2 * smile - 0.02], dim=1)
    wing = torch.cat([1.5 * h.nose_w, tip_y + 0.01], dim=1)
    depth = 0.15 + 0.9 * torch.relu(smile) + 0.6 * h.up("wrinkle") + 0.4 * h.up("lip_raise")
    crease = depth * torch.exp(-((_segment_distance(ax, y, wing, corner) / 0.016) ** 2))
    c.relief = c.relief - 0.008 * crease
    c.albedo = c.albedo * (1 - 0.22 * crease.clamp(max=1.5))

    beard = torch.sigmoid((tip_y - 0.05 - y) / 0.03) * _gauss(x, y, 0.0, mouth_y - 0.1, 0.35, 0.3)
    c.paint(0.8 * h.hair, 0.5 * h.stubble * beard * (1 - lips - opening))
    c.paint(h.lips, lips)
    c.paint(0.4 * h.lips, parting)
    c.paint(_MOUTH, opening)
    c.paint(_TEETH, teeth)
    c.gloss = c.gloss + 0.5 * lips - 0.7 * opening


def _eyes(h: Head, c: Canvas) -> None:
    """Almond openings between lids that widen or narrow, iris and pupil (with gaze), lash line."""
    y, ax, ex = h.y, h.ax, _eye_x(h)
    eye_open, cheek = h.unit["eye_open"], h.up("cheek")
    lid = torch.relu(1 - ((ax - ex) / h.eye_w) ** 2)
    upper = (h.eye_h * (1 + 1.0 * torch.relu(eye_open) - 0.6 * torch.relu(-eye_open) - 0.3 * cheek)).clamp_min(0.004)
    lower = (0.7 * h.eye_h * (1 + 0.3 * torch.relu(eye_open) - 0.6 * cheek)).clamp_min(0.003)
    dy = y - h.eye_y
    across = torch.sigmoid((h.eye_w - (ax - ex).abs()) / EDGE)
    eye = torch.sigmoid((upper * lid - dy) / EDGE) * torch.sigmoid((dy + lower * lid) / EDGE) * across
    gaze = h.gaze
    iris_r = torch.sqrt((h.x - torch.sign(h.x) * ex - gaze[:, :1]) ** 2 + (dy - gaze[:, 1:]) ** 2)
    eyeball = _SCLERA + (h.iris - _SCLERA) * torch.sigmoid((0.042 - iris_r) / EDGE)
    eyeball = eyeball + (_DARK - eyeball) * torch.sigmoid((0.017 - iris_r) / EDGE)
    c.paint(eyeball, eye)
    lash_band = torch.sigmoid((dy - upper * lid) / EDGE) * torch.sigmoid((upper * lid + 0.018 - dy) / EDGE)
    c.paint(_DARK, 0.85 * lash_band * torch.sigmoid((1.08 * h.eye_w - (ax - ex).abs()) / EDGE))
    c.gloss = c.gloss + 2.0 * eye


def _brows(h: Head, c: Canvas) -> None:
    """Brows whose inner and outer ends move separately; frown lines and forehead wrinkles."""
    x, y, ax, ey = h.x, h.y, h.ax, h.eye_y
    along = (ax - _eye_x(h) - 0.01 + 0.025 * h.up("brow_squeeze")) / h.brow_len  # -1 inner .. 1 outer
    lower = h.up("brow_lower")
    inner_lift = 0.15 * h.unit["brow_inner"] - 0.1 * lower - 0.03 * h.up("brow_squeeze")
    outer_lift = 0.12 * h.unit["brow_outer"] - 0.04 * lower
    brow_y = ey + h.brow_h + h.brow_arch * (1 - along**2) + inner_lift * (1 - along) / 2 + outer_lift * (1 + along) / 2
    thickness = h.brow_th * (1.15 - 0.35 * (along + 1) / 2)  # tapering towards the temples
    brow = torch.sigmoid((thickness / 2 - (y - brow_y).abs()) / EDGE) * torch.sigmoid((1 - along.abs()) * h.brow_len / EDGE)
    c.paint(0.6 * h.hair, h.brow_dark * brow)
    frown = _gauss(ax, y, 0.035, ey + 0.08, 0.01, 0.05)
    c.albedo = c.albedo * (1 - 0.5 * lower * frown)
    raised = torch.relu(h.unit["brow_inner"] + h.unit["brow_outer"]) / 2
    forehead = torch.sigmoid((y - ey - h.brow_h - 0.07) / 0.02) * _gauss(x, y, 0.0, ey + 0.35, 0.3, 0.12)
    c.albedo = c.albedo * (1 - 0.3 * raised * forehead * (0.5 + 0.5 * torch.cos(2 * math.pi * (y - ey) / 0.05)))


def _hair(h: Head, c: Canvas, width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and colour of the hair: above an irregular hairline (low and flat for bangs), and
    down the sides (the temples for short hair, to the jaw for long hair); adds volume to the relief."""
    x, y, ey, a0 = h.x, h.y, h.eye_y, h.head_width
    strands = F.interpolate(h.p["hair_noise"][:, None], size=(GRID_H, GRID_W), mode="bilinear", align_corners=True)
    ragged = 0.03 * (strands - 0.5)
    hairline = torch.where(h.bangs > 0, ey + 0.24 + 0.05 * (x / a0) ** 2, ey + h.hairline + 0.13 * (x / a0) ** 2) + ragged
    side_bottom = torch.where(h.long_hair > 0, -0.95, ey + 0.02)  # short hair leaves the ears free
    top = torch.sigmoid((y - hairline) / 0.015)
    side = torch.sigmoid((h.ax - h.hair_side * width + ragged) / 0.015) * torch.sigmoid((y - side_bottom) / 0.02)
    hair = torch.maximum(top, side) * (1 - h.bald)
    c.relief = c.relief + (0.03 + 0.04 * (y - ey).clamp(0.0, 1.0)) * hair
    c.gloss = c.gloss * (1 - 0.6 * hair)
    return hair, h.hair * (0.6 + 0.8 * strands)


def _gauss(x: torch.Tensor, y: torch.Tensor, cx, cy, sx, sy) -> torch.Tensor:
    """An axis-aligned Gaussian bump, as the product of its x and y factors: these span one row
    or one column of the grid only, so the exponentials stay cheap."""
    return _bump(x, cx, sx) * _bump(y, cy, sy)


def _bump(v: torch.Tensor, centre, sigma) -> torch.Tensor:
    """A 1D Gaussian profile with peak 1."""
    return torch.exp(-0.5 * ((v - centre) / sigma) ** 2)


def _segment_distance(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from grid points to the segments a->b; a and b of shape (B, 2, 1, 1)."""
    ab = b - a
    px, py = x - a[:, :1], y - a[:, 1:]
    h = ((px * ab[:, :1] + py * ab[:, 1:]) / (ab**2).sum(1, keepdim=True)).clamp(0.0, 1.0)
    return torch.sqrt((px - h * ab[:, :1]) ** 2 + (py - h * ab[:, 1:]) ** 2)


def _gradient(height: torch.Tensor) -> torch.Tensor:
    """(d/dx, d/dy) of a height map by central differences."""
    dx = (X_HI - X_LO) / (GRID_W - 1)
    dy = (Y_HI - Y_LO) / (GRID_H - 1)
    padded = F.pad(height, (1, 1, 1, 1), mode="replicate")
    gx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / (2 * dx)
    gy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / (2 * dy)
    return torch.cat([gx, gy], dim=1)
