"""Registered evaluation protocols; importing this package registers them."""
from protocols import fer, verification  # noqa: F401
