"""scanlearn: group images into semantic classes without labels (SCAN, ECCV 2020, and beyond)."""

__version__ = "0.1.0"
