"""The run object: its splits loaded once, and its config handed to each module once before the first stage starts."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest

from scanlearn import pipeline
from scanlearn.config import Config, resolve, with_values
from scanlearn.engine.run import Run
from scanlearn.folder_backbone import BackboneChoice, FolderDefaults, preset_backbone
from scanlearn.runs.rundir import claim_run_dir
from shapes import write_shape_folder

TINY = ["pretext.epochs=1", "pretext.batch_size=6", "mine.k=3", "mine.val_k=3", "scan.epochs=1", "scan.batch_size=6",
        "scan.num_heads=1", "selflabel.epochs=1", "selflabel.batch_size=6", "data.image_size=16", "model.width=4",
        "runtime.progress=false", "num_clusters=3"]


# Work under these functions runs on configs of its own, made from the run's: the time budget's search over candidate
# schedules (each candidate a config), and the estimate's scratch fits of heads (a one-process config for a trainer
# of its own).
SEPARATE_CONFIGS = {("choose", "scanlearn.budget"), ("head_fits", "scanlearn.run_estimate")}


class FirstStage(Exception):
    """Raised when the pipeline begins its first stage: the count stops there."""


def carried(frame) -> Iterator[Config]:
    """The configs a call receives: as an argument, or held by one (a run, a feature cache)."""
    code = frame.f_code
    for name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]:
        value = frame.f_locals.get(name)
        held = getattr(value, "__dict__", {}).get("config") if not isinstance(value, type) else None
        if isinstance(value, Config) or isinstance(held, Config):
            yield value if isinstance(value, Config) else held


def not_counted(frame) -> bool:
    """Calls that hand the config to no one: the run's own methods (reading the object the config lives in), building
    a config (its constructor and ``validate``, which every config passes once where it is made), and the calls under
    ``SEPARATE_CONFIGS``."""
    names, module = frame.f_code.co_varnames, frame.f_globals.get("__name__")
    if names and names[0] == "self" and isinstance(frame.f_locals.get("self"), Run):
        return True
    if module == "scanlearn.config" and frame.f_code.co_name in ("__init__", "validate"):
        return True
    while frame is not None:
        if (frame.f_code.co_name, frame.f_globals.get("__name__")) in SEPARATE_CONFIGS:
            return True
        frame = frame.f_back
    return False


def calling_module(frame) -> str:
    """The nearest scanlearn module up the stack (past ``functools.cached_property``, ``dataclasses`` and the like)."""
    frame = frame.f_back
    while frame is not None and not frame.f_globals.get("__name__", "").startswith("scanlearn."):
        frame = frame.f_back
    return frame.f_globals["__name__"] if frame is not None else ""


def config_entries(start: Callable[[], object]) -> dict[str, int]:
    """Per module, the most times one version of the run's config entered it (a call from another scanlearn module
    to one of its functions receiving that config, or a run holding it), from ``start`` until the first stage."""
    counts: Counter[tuple[str, int]] = Counter()
    seen: list[Config] = []  # kept alive, so that no two versions share an id

    def profile(frame, event, arg) -> None:
        if event != "call":
            return
        if frame.f_code.co_name == "begin_stage":
            raise FirstStage
        module, caller = frame.f_globals.get("__name__", ""), calling_module(frame)
        if caller == module or not (module.startswith("scanlearn.") and caller.startswith("scanlearn.")):
            return
        if not_counted(frame):
            return
        for config in {id(c): c for c in carried(frame)}.values():
            seen.append(config)
            counts[module.removeprefix("scanlearn."), id(config)] += 1

    sys.setprofile(profile)
    try:
        start()
    except FirstStage:
        pass
    finally:
        sys.setprofile(None)
    most: Counter[str] = Counter()
    for (module, _), count in counts.items():
        most[module] = max(most[module], count)
    return dict(most)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """18 small shape images."""
    return write_shape_folder(tmp_path / "photos", per_class=6, nested=False)


def folder_run(folder: Path, directory: Path) -> Run:
    """A tiny run of the photos preset on ``folder``."""
    return Run(resolve("photos", None, [*TINY, "data.dataset=folder", f"data.root={folder}"]), claim_run_dir(directory))


@pytest.mark.timeout(120)
def test_before_the_first_stage_a_folder_runs_config_enters_each_module_once(folder, tmp_path):
    """At 661fcab, counted the same way: engine/splits.py 9 times, config.py 3, run_estimate.py 2 (docs/architecture.md)."""
    defaults = FolderDefaults(BackboneChoice("photos", preset_backbone("photos"), "scratch", None, "from scratch"))
    entries = config_entries(lambda: pipeline.run_pipeline(folder_run(folder, tmp_path / "run"), defaults=defaults))
    assert {"engine.splits", "config", "runstate", "stages.prepare", "schedule", "run_estimate"} <= set(entries)
    assert entries == {module: 1 for module in entries}


@pytest.mark.timeout(120)
def test_before_the_first_stage_a_budgeted_runs_config_enters_each_module_once(folder, tmp_path):
    """At 661fcab, counted the same way: engine/splits.py 6 times, config.py 3."""
    entries = config_entries(lambda: pipeline.run_pipeline(folder_run(folder, tmp_path / "run"), time_budget=600.0))
    assert {"engine.splits", "config", "budget", "run_estimate"} <= set(entries)
    assert entries == {module: 1 for module in entries}


def test_the_count_sees_a_config_handed_twice():
    """The counter itself: a module given the same config twice counts 2 (else the tests above could not fail)."""
    config = resolve("photos", None, [])

    def twice() -> None:
        pipeline.known_clusters(Run(config, Path("unused")))
        pipeline.known_clusters(Run(config, Path("unused")))
        pipeline.begin_stage("pretext")

    assert config_entries(twice)["engine.splits"] == 2


def test_a_derived_run_shares_loaded_splits_while_its_data_is_the_same(folder, tmp_path):
    run = folder_run(folder, tmp_path / "run")
    train = run.split("train")
    assert run.split("train") is train and run.split("test").images is train.images  # one decode for both splits
    assert run.with_config(with_values(run.config, {"scan.epochs": 2})).split("train") is train
    other = run.with_config(with_values(run.config, {"data.image_size": 8}))
    assert other.split("train").image_size == 8 and other.spec.image_size == 8 != run.spec.image_size
    assert run.with_config(run.config) is run
