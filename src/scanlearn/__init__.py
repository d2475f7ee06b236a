"""scanlearn: group images into semantic classes without labels (SCAN, ECCV 2020, and beyond)."""

from typing import Any

from .version import __version__

__all__ = ["SCAN", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the estimator on first use, so ``import scanlearn`` stays light."""
    if name == "SCAN":
        from .api import SCAN

        return SCAN
    raise AttributeError(f"module 'scanlearn' has no attribute {name!r}")
