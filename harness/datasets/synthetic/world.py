"""The factors of the synthetic face world and how they are sampled.

Everything here is plain numpy and fully determined by a seed. A *scene* (one image) is a dict of
float arrays with one row per image; the renderer (``render.py``) turns it into pixels. The four
factor groups are sampled independently so that later work can measure disentanglement:

* identity: head and face shape, skin, eye, lip and hair colours, hair style (fixed per person);
* expression: one of seven classes, rendered through action-unit-like controls (``ACTION_UNITS``)
  whose strength is scaled by a random intensity and perturbed per image;
* pose: yaw (up to ``max_yaw``, mostly near-frontal), pitch and roll in degrees;
* environment: lighting (ambient, diffuse, direction, colour, specular), camera and background.
"""
from __future__ import annotations

import numpy as np

EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")

#: Expression controls, loosely after FACS action units; 0 = rest, 1 = full strength.
ACTION_UNITS: tuple[str, ...] = (
    "smile",  # mouth corners up (negative: down, as in sadness)
    "open",  # jaw drop
    "stretch",  # mouth wider (negative: rounder)
    "press",  # lips pressed thin
    "lip_raise",  # upper lip raised (disgust)
    "brow_inner",  # inner brow ends raised
    "brow_outer",  # outer brow ends raised
    "brow_lower",  # brows lowered (frown)
    "brow_squeeze",  # brows pulled together
    "eye_open",  # eyes wide (negative: narrowed)
    "cheek",  # cheeks raised, pushing the lower lids up (genuine smile)
    "wrinkle",  # nose wrinkled
    "teeth",  # teeth shown when the mouth opens
)

#: One row per expression, one column per action unit (prototypical full-intensity display).
PROTOTYPES = np.array(
    [
        # smile open stretch press lip_raise b_in b_out b_low b_sq eye cheek wrinkle teeth
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
        [1.0, 0.35, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.3, 1.0, 0.0, 0.9],  # happy
        [-0.9, 0.0, 0.0, 0.3, 0.0, 1.0, -0.3, 0.0, 0.3, -0.35, 0.0, 0.0, 0.0],  # sad
        [0.0, 1.0, -0.35, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.3],  # surprise
        [-0.25, 0.45, 0.9, 0.0, 0.0, 1.0, 0.3, 0.0, 0.6, 0.8, 0.0, 0.0, 0.7],  # fear
        [-0.4, 0.1, 0.0, 0.0, 1.0, 0.0, 0.0, 0.6, 0.3, -0.45, 0.3, 1.0, 0.4],  # disgust
        [-0.2, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, -0.15, 0.0, 0.0, 0.0],  # anger
    ],
    dtype=np.float64,
)

#: Identity shape factors sampled uniformly in [low, high] (head units: the head is ~2 tall).
SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "head_width": (0.64, 0.80),  # half width at the cheekbones
    "head_top": (1.0, 1.12),  # crown height above the head centre (with hair volume)
    "chin": (0.95, 1.10),  # chin depth below the head centre
    "jaw": (0.55, 0.90),  # jaw width relative to the cheekbones
    "face_depth": (0.78, 0.95),  # how far the face plane sits in front of the head centre
    "back_depth": (0.95, 1.10),
    "eye_y": (-0.05, 0.05),
    "eye_sep": (0.25, 0.33),  # half distance between the eye centres
    "eye_w": (0.09, 0.12),
    "eye_h": (0.032, 0.05),
    "brow_h": (0.10, 0.17),  # brow height above the eye centre
    "brow_th": (0.03, 0.055),
    "brow_len": (0.11, 0.16),
    "brow_arch": (0.0, 0.04),
    "brow_dark": (0.6, 1.0),
    "nose_len": (0.28, 0.40),
    "nose_w": (0.045, 0.075),
    "nose_out": (0.12, 0.22),  # nose protrusion
    "mouth_gap": (0.13, 0.20),  # nose tip to mouth
    "mouth_w": (0.22, 0.29),  # half width of the mouth (about the eye spacing, as in real faces)
    "lip_th": (0.03, 0.05),
    "cheek_full": (0.01, 0.06),
    "chin_out": (0.0, 0.06),
    "ear": (0.5, 1.0),
    "blush": (0.0, 1.0),
    "hairline": (0.30, 0.52),  # above the eyes
    "hair_side": (0.78, 0.92),  # where the side hair starts, relative to the head width
}

#: Identity factors scored by the ``factors`` protocol: the head and face geometry (every shape
#: range but the two that only change colour), and the four colours of a person, linear light.
SHAPE_FACTORS: tuple[str, ...] = tuple(k for k in SHAPE_RANGES if k not in ("brow_dark", "blush"))
TEXTURE_FACTORS: tuple[str, ...] = ("skin", "lips", "iris", "hair")

# Colour palettes in sRGB (converted to linear light before rendering).
SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.86, 0.66, 0.52], [0.70, 0.50, 0.36], [0.47, 0.31, 0.22], [0.30, 0.19, 0.13]])
HAIR_COLOURS = np.array(
    [[0.06, 0.05, 0.05], [0.20, 0.13, 0.08], [0.40, 0.27, 0.16], [0.78, 0.64, 0.40], [0.55, 0.25, 0.12], [0.62, 0.62, 0.62]]
)
HAIR_WEIGHTS = np.array([0.30, 0.28, 0.18, 0.10, 0.06, 0.08])
IRIS_COLOURS = np.array(
    [[0.35, 0.20, 0.10], [0.15, 0.10, 0.07], [0.30, 0.45, 0.65], [0.35, 0.45, 0.30], [0.50, 0.40, 0.20], [0.50, 0.55, 0.60]]
)
HAIR_NOISE_SHAPE = (6, 24)  # rows x columns of the per-person hair strand noise (wide = vertical strands)
BACKGROUND_NOISE_SHAPE = (4, 4)

# Random streams: one generator per (seed, stream), so that splits never share random numbers.
IDENTITY_STREAM = 1


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.power(np.clip(c, 0.0, 1.0), 2.2)


def identity_table(seed: int, n_identities: int) -> dict[str, np.ndarray]:
    """Identity factors of persons ``0..n_identities-1``.

    Row ``i`` depends only on ``seed`` and ``i`` (numpy fills arrays row by row), so a person
    looks the same whichever splits or sizes ask for them.
    """
    rng = np.random.default_rng([seed, IDENTITY_STREAM])
    n_shape = len(SHAPE_RANGES)
    u = rng.random((n_identities, n_shape + 12))
    hair_noise = np.random.default_rng([seed, IDENTITY_STREAM, 1]).random((n_identities, *HAIR_NOISE_SHAPE))
    table = {name: lo + (hi - lo) * u[:, k] for k, (name, (lo, hi)) in enumerate(SHAPE_RANGES.items())}
    extra = u[:, n_shape:]

    skin = _palette(SKIN_TONES, extra[:, 0])
    skin[:, 0] += 0.04 * (extra[:, 1] - 0.5)  # warmer / cooler undertone
    skin[:, 2] -= 0.04 * (extra[:, 1] - 0.5)
    hair_kind = np.searchsorted(np.cumsum(HAIR_WEIGHTS), extra[:, 2] * HAIR_WEIGHTS.sum())
    hair = HAIR_COLOURS[np.minimum(hair_kind, len(HAIR_COLOURS) - 1)] * (0.85 + 0.3 * extra[:, 3:4])
    iris = IRIS_COLOURS[(extra[:, 4] * len(IRIS_COLOURS)).astype(int) % len(IRIS_COLOURS)]
    lips = skin * (0.55 + 0.25 * extra[:, 5:6]) + np.array([0.22, 0.02, 0.04]) * (0.5 + extra[:, 5:6])
    table.update(
        skin=srgb_to_linear(skin),
        hair=srgb_to_linear(hair),
        iris=srgb_to_linear(iris),
        lips=srgb_to_linear(lips),
        bald=(extra[:, 6] < 0.07).astype(np.float64),
        long_hair=(extra[:, 7] < 0.35).astype(np.float64),
        bangs=(extra[:, 8] < 0.2).astype(np.float64),
        stubble=np.where(extra[:, 9] < 0.25, 0.3 + 0.7 * extra[:, 10], 0.0),
        hair_noise=hair_noise,
    )
    return table


def _palette(colours: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour ramp through ``colours`` at positions ``t`` in [0, 1]."""
    pos = t * (len(colours) - 1)
    k = np.minimum(pos.astype(int), len(colours) - 2)
    frac = (pos - k)[:, None]
    return colours[k] * (1 - frac) + colours[k + 1] * frac


def sample_expressions(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Action-unit strengths for expression ``labels``: random intensity and per-unit jitter.

    The intensity (0.5..1) and a per-unit factor (0.7..1.3) make weak displays of different
    classes overlap, and small noise on every unit makes even neutral faces vary.
    """
    n = len(labels)
    intensity = np.where(labels == 0, 0.0, rng.uniform(0.7, 1.0, n))
    units = PROTOTYPES[labels] * intensity[:, None] * rng.uniform(0.85, 1.15, (n, len(ACTION_UNITS)))
    units = units + 0.05 * rng.standard_normal((n, len(ACTION_UNITS)))
    return {"expression": labels.astype(np.float64), "intensity": intensity, "units": units}


#: Phases of an expression episode, per frame of a smooth clip (``expression_episodes``).
PHASES: tuple[str, ...] = ("neutral", "onset", "apex", "offset")
#: Relative lengths (low, high) of a smooth clip's parts: neutral lead, onset, apex, offset,
#: neutral tail; each clip draws them and scales their sum to the clip.
EPISODE_PARTS = ((0.0, 0.1), (0.25, 0.35), (0.15, 0.3), (0.25, 0.35), (0.0, 0.1))


def ease(x: np.ndarray) -> np.ndarray:
    """Smoothstep: 0 -> 1 over x in [0, 1] with zero slope at both ends (flat outside)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def expression_episodes(rng: np.random.Generator, labels: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Per-frame action units of clips that each show one expression episode.

    Clip ``i`` (``labels[i]`` in 1..6) starts neutral, rises to its apex (onset), holds it,
    falls back (offset) and may end neutral, as in posed expression sequences (CK+, MMI). The
    clip's display is ``sample_expressions``'s (intensity, per-unit factor, rest-face noise),
    drawn once per clip and scaled by the eased envelope, so units change smoothly. Each frame's
    ``expression`` is the clip's label while the envelope is at least half, else neutral; its
    ``intensity`` is the clip's scaled by the envelope; ``phase`` indexes ``PHASES``.
    """
    n = len(labels)
    display = sample_expressions(rng, labels)
    parts = np.stack([rng.uniform(lo, hi, n) for lo, hi in EPISODE_PARTS], axis=1)
    bounds = np.cumsum(parts, axis=1) / parts.sum(axis=1, keepdims=True)  # ends of the five parts in [0, 1]
    start, apex, fall, end = (bounds[:, k : k + 1] for k in range(4))
    t = np.linspace(0.0, 1.0, length)[None, :]
    envelope = np.where(t < apex, ease((t - start) / (apex - start)), 1.0 - ease((t - fall) / (end - fall)))
    phase = np.select([t < start, t < apex, t <= fall, t < end], [0, 1, 2, 3], 0)
    return {
        "expression": np.where(envelope >= 0.5, labels[:, None], 0).astype(np.float64).ravel(),
        "intensity": (display["intensity"][:, None] * envelope).ravel(),
        "units": (display["units"][:, None, :] * envelope[:, :, None]).reshape(n * length, -1),
        "phase": np.broadcast_to(phase, (n, length)).astype(np.float64).ravel(),
    }


def smooth_poses(rng: np.random.Generator, n: int, length: int, max_yaw: float) -> np.ndarray:
    """(n * length, 3) head poses of ``n`` clips: each eases from a ``sample_poses`` start to a
    nearby end (yaw, pitch, roll moved by N(0, 15 / 5 / 4) degrees), with a slow sway of a
    few degrees, clipped to the ranges of ``sample_poses``."""
    start = sample_poses(rng, n, max_yaw)
    end = start + rng.standard_normal((n, 3)) * np.array([15.0, 5.0, 4.0])
    t = np.linspace(0.0, 1.0, length)[None, :, None]
    sway = rng.uniform(0.0, 1.0, (n, 1, 3)) * np.array([3.0, 1.5, 1.0]) * np.sin(
        2 * np.pi * (rng.uniform(0.3, 0.8, (n, 1, 3)) * t + rng.uniform(0.0, 1.0, (n, 1, 3)))
    )
    poses = start[:, None] + (end - start)[:, None] * ease(t) + sway
    return np.clip(poses, [-max_yaw, -25.0, -15.0], [max_yaw, 25.0, 15.0]).reshape(n * length, 3)


def sample_poses(rng: np.random.Generator, n: int, max_yaw: float) -> np.ndarray:
    """(n, 3) yaw, pitch, roll in degrees.

    Yaw is ``max_yaw * s * |s|`` for uniform s in [-1, 1]: near-frontal faces are the most common
    (as in photo collections) and |yaw| >= max_yaw / 2 keeps 29% of the images. Pitch and roll
    are roughly normal.
    """
    s = rng.uniform(-1.0, 1.0, n)
    yaw = max_yaw * s * np.abs(s)
    pitch = np.clip(9.0 * rng.standard_normal(n), -25.0, 25.0)
    roll = np.clip(6.0 * rng.standard_normal(n), -15.0, 15.0)
    return np.stack([yaw, pitch, roll], axis=1)


def sample_environments(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Lighting, camera and background of ``n`` images."""
    azimuth = np.radians(rng.uniform(-75.0, 75.0, n))
    elevation = np.radians(rng.uniform(-15.0, 60.0, n))
    direction = np.stack(
        [np.sin(azimuth) * np.cos(elevation), np.sin(elevation), np.cos(azimuth) * np.cos(elevation)], axis=1
    )
    warmth = rng.uniform(-1.0, 1.0, n)[:, None]
    background = rng.random((n, 2, 3)) ** 1.3 * 0.9 + 0.05
    grey = background.mean(axis=2, keepdims=True)
    background = grey + (background - grey) * rng.uniform(0.2, 1.0, (n, 1, 1))  # mostly muted colours
    return {
        "ambient": rng.uniform(0.15, 0.45, n),
        "diffuse": rng.uniform(0.5, 1.0, n),
        "light_dir": direction,
        "light_colour": 1.0 + 0.1 * warmth * np.array([1.0, 0.0, -1.0]),
        "specular": rng.uniform(0.02, 0.2, n),
        "shininess": rng.uniform(6.0, 40.0, n),
        "fov": np.radians(rng.uniform(12.0, 35.0, n)),
        "zoom": rng.uniform(0.92, 1.08, n),
        "shift": rng.uniform(-0.07, 0.07, (n, 2)),
        "gaze": rng.uniform(-0.015, 0.015, (n, 2)),
        "background": srgb_to_linear(background),
        "background_angle": rng.uniform(0.0, 2 * np.pi, n),
        "background_noise": 0.25 * (rng.random((n, *BACKGROUND_NOISE_SHAPE, 3)) - 0.5),
        "clothes": srgb_to_linear(rng.random((n, 3)) * 0.8 + 0.1),
        "collar": rng.uniform(-1.55, -1.3, n),
    }


#: What varies between images: everything, or only the person and the head pose.
VARIATIONS = ("all", "pose")
#: Random stream of the one environment the ``pose`` variation shows every image in.
FIXED_ENVIRONMENT_STREAM = 2


def hold_fixed(expressions: dict[str, np.ndarray], env: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ``pose`` variation: every face neutral (no action unit moves) and every image under the
    same light, camera and background (one environment drawn from its own stream)."""
    n = len(expressions["expression"])
    neutral = {name: np.zeros_like(value) for name, value in expressions.items()}  # also a clip's phase
    one = sample_environments(np.random.default_rng(FIXED_ENVIRONMENT_STREAM), 1)
    return neutral, {name: np.repeat(value, n, axis=0) for name, value in one.items()}


def light_vector(env: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 8) lighting ground truth: ambient, diffuse, direction xyz, specular, shininess, warmth."""
    warmth = (env["light_colour"][:, 0] - 1.0) / 0.1
    return np.concatenate(
        [env["ambient"][:, None], env["diffuse"][:, None], env["light_dir"], env["specular"][:, None],
         env["shininess"][:, None], warmth[:, None]],
        axis=1,
    )


def identity_factors(scene: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: shape factors (n, len(SHAPE_FACTORS)) and colours (n, 3 * len(TEXTURE_FACTORS))."""
    shape = np.stack([scene[k] for k in SHAPE_FACTORS], axis=1)
    texture = np.concatenate([scene[k] for k in TEXTURE_FACTORS], axis=1)
    return shape, texture


def compose(identities: dict[str, np.ndarray], ids: np.ndarray, expressions: dict[str, np.ndarray],
            poses: np.ndarray, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One scene per image: the identity rows of ``ids`` joined with per-image factors."""
    scene = {name: values[ids] for name, values in identities.items()}
    scene.update(expressions)
    scene.update(env)
    scene["pose"] = poses
    scene["identity"] = ids.astype(np.float64)
    return scene


def take(scene: dict[str, np.ndarray], index: np.ndarray | slice) -> dict[str, np.ndarray]:
    """Rows ``index`` of every factor of a scene."""
    return {name: values[index] for name, values in scene.items()}
