"""Every test runs with empty, private model-download caches and the Hugging Face hub offline.

So no test picks up weights a developer happens to have cached, and nothing is ever downloaded:
a folder run without a preset then trains from scratch unless a test puts weights in the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_weight_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``HF_HUB_CACHE`` and ``TORCH_HOME`` point to folders of this test session (empty unless a test fills them)."""
    root = tmp_path_factory.mktemp("weight-caches")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(root / "huggingface"))
        patch.setenv("TORCH_HOME", str(root / "torch"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield root
