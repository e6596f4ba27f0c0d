"""Registered methods, in the order tables list them; importing this package registers them."""
from methods import sanity  # noqa: F401
import methods.unsup3d.method  # noqa: F401
from methods import simclr, mae  # noqa: F401  (registration order = table order)
from methods import temporal, sslfer  # noqa: F401
import methods.latentface.method  # noqa: F401
import methods.facecycle.method  # noqa: F401  (the compared face-specific baselines)
from methods import timm_encoder  # noqa: F401  (weights from a file: only run by name)
