"""Where and on what code a benchmark figure was measured: the record every results file carries."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from scanlearn.engine.execution import cpu_identity


def commit() -> str:
    """The checked-out commit of this repository (with ``+dirty`` when files differ from it)."""
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def measured() -> dict:
    """When, on what code and where a figure was measured: commit, date, CPU model and ISA flags, cores, torch."""
    return {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **cpu_identity(),
            "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__}
