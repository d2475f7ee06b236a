"""Every test runs as on a clean machine: a private empty home and config folder (no remembered download answers),
no system datasets, no weight caches, hub offline.

So no test picks up data or weights a developer happens to have (Debian's Fashion-MNIST, ``~/.cache``), and nothing
is ever downloaded: a folder run without a preset then trains from scratch unless a test puts weights in the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def clean_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``HOME``, the config folder, the system data folder and the weight caches point to empty folders of this test
    session."""
    root = tmp_path_factory.mktemp("clean-machine")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(root / "home"))
        patch.setenv("XDG_CONFIG_HOME", str(root / "config"))
        patch.delenv("SCANLEARN_DATA", raising=False)
        patch.setenv("SCANLEARN_SYSTEM_DATA", str(root / "system-datasets"))
        patch.setenv("HF_HUB_CACHE", str(root / "huggingface"))
        patch.setenv("TORCH_HOME", str(root / "torch"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield root
