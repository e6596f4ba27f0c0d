"""Registered evaluation protocols; importing this package registers them (registration order = table order)."""
from protocols import fer, knn, verification, factors, depth  # noqa: F401
