"""The built-in synthetic face world: procedural 3D heads, ray cast to images (``synthetic``)."""
from harness.datasets.synthetic.dataset import SyntheticConfig, SyntheticFaces, SyntheticPose30

__all__ = ["SyntheticConfig", "SyntheticFaces", "SyntheticPose30"]
