"""Registered datasets; importing this package registers them all."""
from harness.datasets import folder, lfw  # noqa: F401
from harness.datasets import synthetic  # noqa: F401
from harness.datasets import affectnet, bin, celeba, lfw_clips, rafdb, sllfw, voxceleb  # noqa: F401
