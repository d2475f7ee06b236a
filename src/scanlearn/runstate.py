"""Run-directory bookkeeping that keeps resumes honest: config + data fingerprint, environment, seeds.

``run.json`` stores the result-relevant config keys and a fingerprint of the data the run was
made with. Work already in the run directory is only reused when both still match; otherwise
``RunMismatchError`` names the differing keys. ``environment.json`` records where the run ran.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from .config import Config, save_plain_config, to_dict
from .data.images import ImageSet
from .engine.run import Run
from .errors import DataError, RunMismatchError, ScanlearnWarning
from .data.fingerprint import fingerprint
from .runs.artefacts import has_work, read_json, STAGES, write_json
from .version import __version__

RUN_FILE = "run.json"
ENVIRONMENT_FILE = "environment.json"
# Keys that change where or how verbosely a run works, never what it computes.
NEUTRAL_KEYS = frozenset({
    "name", "data.root", "data.files", "data.download", "data.num_workers",
    "runtime.progress", "runtime.log_every_n_steps", "runtime.checkpoint_every_n_steps", "runtime.dist_timeout_minutes",
})
BASE_SECTIONS = ("data", "model", "runtime")
STAGE_SECTIONS = {
    "pretext": (*BASE_SECTIONS, "pretext"),
    "mine": (*BASE_SECTIONS, "pretext", "mine"),
    "scan": (*BASE_SECTIONS, "pretext", "mine", "scan", "num_clusters"),
    "selflabel": (*BASE_SECTIONS, "pretext", "mine", "scan", "num_clusters", "selflabel"),
}


# ----------------------------------------------------------------------------- seeds
def seed_all(config: Config) -> None:
    """Seed Python, NumPy, torch and dataloader workers; turn on deterministic algorithms if asked."""
    L.seed_everything(config.runtime.seed, workers=True, verbose=False)
    if config.runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# ----------------------------------------------------------------------------- config keys
def result_keys(plain: dict[str, Any]) -> dict[str, Any]:
    """Flat ``section.key -> value`` of every key of a plain config (``config.to_dict``) that can change results."""
    flat = flatten(plain)
    return {k: v for k, v in flat.items() if k not in NEUTRAL_KEYS}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested dicts as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# ----------------------------------------------------------------------------- run checks
def compare(stored: dict[str, Any], current: dict[str, Any], sections: set[str]) -> list[str]:
    """``key: old -> new`` for each key of ``sections`` whose value differs."""
    keys = sorted(k for k in set(stored) | set(current) if k.split(".")[0] in sections)
    shown = lambda d, k: repr(d[k]) if k in d else "unset"  # noqa: E731
    return [f"{k}: {shown(stored, k)} -> {shown(current, k)}" for k in keys if shown(stored, k) != shown(current, k)]


def check_run(run_dir: Path, plain: dict[str, Any], data: dict[str, Any]) -> None:
    """Refuse to reuse work in ``run_dir`` made with other result-relevant settings (``plain``: the config as a plain
    dict) or other data; then record ours."""
    stored = read_json(run_dir / RUN_FILE)
    worked = [s for s in STAGES if has_work(run_dir, s)]
    current = {"config": result_keys(plain), "data": data}
    if stored and worked:
        sections = {section for stage in worked for section in STAGE_SECTIONS[stage]}
        fix = "run the original command, pass --restart to start over, or use a new --run-dir"
        changed = compare(stored.get("config", {}), current["config"], sections)
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise RunMismatchError(f"{run_dir} holds {'/'.join(worked)} work made with a different config ({shown}); {fix}")
        changed = compare(flatten(stored.get("data", {})), flatten(data), {"train", "test"})
        if changed and comparable(stored.get("data", {}), data):
            raise RunMismatchError(f"{run_dir} holds {'/'.join(worked)} work made with different data ({'; '.join(changed[:4])}); {fix}")
    write_json(run_dir / RUN_FILE, current)


def comparable(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether two data fingerprints were made the same way (a run of an older version is re-recorded)."""
    return all(stored.get(split, {}).get("scheme") == current[split].get("scheme") for split in current)


def check_sizes(run: Run, train: ImageSet, test: ImageSet) -> None:
    """Fail fast when the data is too small for the requested clusters or neighbours."""
    clusters = run.clusters
    if len(train) < clusters:
        raise DataError(
            f"only {len(train)} training images for {clusters} clusters; use fewer clusters "
            f"(--clusters K) or more images"
        )
    for split, images, key in (("train", train, "k"), ("test", test, "val_k")):
        k = getattr(run.config.mine, key)
        if k >= len(images):
            raise DataError(
                f"{k} neighbours requested but the {split} split has only {len(images)} images; "
                f"lower --set mine.{key} below {len(images)} or use more images"
            )


def warn_if_degenerate(clusters: int, train: ImageSet) -> None:
    """Warn when the (in-memory) training images cannot fill the clusters: all identical, or too few distinct ones."""
    pixels = getattr(train, "images", None)
    if not isinstance(pixels, torch.Tensor):
        return
    distinct = distinct_images(pixels, clusters)
    if distinct == 1:
        warnings.warn(f"all {len(train)} training images are identical, so the {clusters} clusters cannot mean "
                      "anything; check the data", ScanlearnWarning, stacklevel=2)
    elif distinct < clusters:
        warnings.warn(f"the {len(train)} training images hold only {distinct} distinct images for {clusters} clusters; "
                      "check the data or use fewer clusters (--clusters K)", ScanlearnWarning, stacklevel=2)


def distinct_images(pixels: torch.Tensor, enough: int) -> int:
    """How many different images ``pixels`` holds, counting no further than ``enough``."""
    seen: set[bytes] = set()
    for image in pixels:
        seen.add(hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest())
        if len(seen) >= enough:
            break
    return len(seen)


def environment(config: Config) -> dict[str, Any]:
    """Versions, device and threads this process runs with."""
    cuda = torch.cuda.is_available()
    return {
        "scanlearn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "numpy": np.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seed": config.runtime.seed,
        "deterministic": config.runtime.deterministic,
    }


def record_environment(config: Config, path: Path) -> None:
    """Append this process's environment to ``path`` (``environment.json``) when it differs from the last entry."""
    sessions = read_json(path).get("sessions", [])
    current = environment(config)
    if not sessions or {k: v for k, v in sessions[-1].items() if k != "started"} != current:
        sessions.append({**current, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_json(path, {"sessions": sessions})


def prepare_run(run: Run) -> None:
    """Checks before any stage works in the run's directory: data sizes and variety, config/data match; then its
    config and environment are recorded."""
    train, test = run.split("train"), run.split("test")
    check_sizes(run, train, test)
    warn_if_degenerate(run.clusters, train)
    run.directory.mkdir(parents=True, exist_ok=True)
    plain = to_dict(run.config)
    check_run(run.directory, plain, {"train": fingerprint(train), "test": fingerprint(test)})
    save_plain_config(plain, run.directory / "config.yaml")
    record_environment(run.config, run.directory / ENVIRONMENT_FILE)
