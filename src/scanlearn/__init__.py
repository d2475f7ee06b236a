"""scanlearn: group images into semantic classes without labels (SCAN, ECCV 2020, and beyond)."""

from typing import Any

from .arguments import build_parser
from .version import __version__

__all__ = ["SCAN", "__version__", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``scanlearn`` command: parse first (``--help`` and errors in the flags answer at once), then import
    the command line's machinery (torch, Lightning) and run the command."""
    args = build_parser().parse_args(argv)
    from .cli import run_parsed

    return run_parsed(args)


def __getattr__(name: str) -> Any:
    """Import the estimator on first use, so ``import scanlearn`` stays light."""
    if name == "SCAN":
        from .api import SCAN

        return SCAN
    raise AttributeError(f"module 'scanlearn' has no attribute {name!r}")
