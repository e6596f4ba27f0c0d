"""The paper's published numbers (percent), shown beside ours where the dataset is the same.

Keys are (method, variant) of this harness; values map our dataset names to the paper's
(accuracy, F1) for expression recognition or (accuracy, standard error) for verification.
"""
from __future__ import annotations

FER = "fer"
VERIFICATION = "verification"

# Table 1 (FER accuracy / F1) and Table 2 (verification accuracy +- standard error).
MAIN: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("simclr", "default"): {
        "rafdb": (64.47, 47.48), "affectnet": (40.15, 38.86),
        "affectnet-pose30": (37.69, 36.57), "affectnet-pose45": (37.84, 37.41),
        "lfw": (63.38, 2.53), "sllfw": (54.40, 2.45),
    },
    ("mae", "default"): {
        "rafdb": (62.61, 48.93), "affectnet": (37.40, 33.99),
        "affectnet-pose30": (35.78, 33.05), "affectnet-pose45": (35.05, 32.06),
        "lfw": (62.60, 2.75), "sllfw": (53.05, 2.25),
    },
    ("unsup3d", "default"): {
        "rafdb": (69.42, 55.50), "affectnet": (41.07, 39.26),
        "affectnet-pose30": (38.89, 38.14), "affectnet-pose45": (36.70, 35.25),
        "lfw": (71.37, 1.99), "sllfw": (58.70, 1.62),
    },
    ("latentface", "rdm-both"): {
        "rafdb": (75.26, 64.91), "affectnet": (44.42, 43.60),
        "affectnet-pose30": (41.95, 41.69), "affectnet-pose45": (40.43, 39.45),
        "lfw": (72.05, 2.57), "sllfw": (59.72, 1.33),
    },
}

# Table 3: pixel-space ablation (FER only); "Full Representations" is the LatentFace model.
PIXEL: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("unsup3d", "no-light"): {"rafdb": (64.21, 50.67), "affectnet": (33.05, 30.43)},
    ("unsup3d", "no-pose"): {"rafdb": (67.07, 55.02), "affectnet": (37.42, 35.65)},
    ("unsup3d", "no-shape"): {"rafdb": (68.38, 58.22), "affectnet": (37.67, 36.37)},
    ("unsup3d", "no-texture"): {"rafdb": (72.58, 60.73), "affectnet": (41.22, 39.24)},
    ("latentface", "rdm-both"): {"rafdb": (75.26, 64.91), "affectnet": (44.42, 43.60)},
}

# Table 4: latent-space ablation.
RDM: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("latentface", "none"): {"rafdb": (69.42, 55.50), "affectnet": (41.07, 39.26), "lfw": (71.37, 1.99), "sllfw": (58.70, 1.62)},
    ("latentface", "encoder"): {"rafdb": (73.04, 61.37), "affectnet": (41.94, 40.70), "lfw": (69.00, 2.56), "sllfw": (57.18, 1.27)},
    ("latentface", "rdm-texture"): {"rafdb": (73.98, 63.89), "affectnet": (42.80, 41.82), "lfw": (72.27, 2.69), "sllfw": (59.37, 1.83)},
    ("latentface", "rdm-shape"): {"rafdb": (74.57, 64.13), "affectnet": (43.47, 42.54), "lfw": (71.55, 2.31), "sllfw": (58.50, 1.36)},
    ("latentface", "rdm-both"): {"rafdb": (75.26, 64.91), "affectnet": (44.42, 43.60), "lfw": (72.05, 2.57), "sllfw": (59.72, 1.33)},
}

ABLATION_NUMBERS = {"pixel": PIXEL, "rdm": RDM}
