"""Registered methods, in the order tables list them; importing this package registers them."""
from methods import sanity  # noqa: F401
import methods.unsup3d.method  # noqa: F401
from methods import simclr, mae  # noqa: F401  (registration order = table order)
# the paper's six face-specific baselines, in the order of its Tables 1 and 2
import methods.fabnet.method  # noqa: F401  (FAb-Net and TCAE)
from methods import temporal  # noqa: F401
import methods.facecycle.method  # noqa: F401
from methods import sslfer  # noqa: F401
import methods.pcl.method  # noqa: F401
import methods.latentface.method  # noqa: F401
from methods import timm_encoder  # noqa: F401  (weights from a file: only run by name)
