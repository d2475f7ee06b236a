"""Chain the stages: pretext -> mine -> scan -> selflabel, evaluating as it goes."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .budget import BudgetPlan, plan_for_run
from .config import save_config, with_values
from .engine.progress import begin_stage, clock, OverallProgress, tracking
from .engine.run import Run
from .engine.splits import find_split, num_clusters
from .errors import ClusterCollapseWarning, DataError
from .folder_backbone import apply_folder_defaults, FolderDefaults
from .run_estimate import run_seconds
from .runs.artefacts import has_work, is_complete, load_npy, read_json, record_run_metrics, stage_dir, write_json
from .runs.rundir import claim_run_dir, KEPT_ON_RESTART, remove_written, WRITTEN_ENTRIES
from .runstate import prepare_run, seed_all
from .clustering.choice import final_stage, score_stage, warn_if_worse
from .engine import distributed
from .stages.evaluate import evaluate_pretext, evaluate_stage
from .stages.mine import run_mine
from .stages.prepare import prepare_images
from .stages.pretext import check_pretext_inputs, run_pretext
from .stages.scan import run_scan
from .stages.selflabel import run_selflabel

LOG = logging.getLogger(__name__)
STAGE_RUNNERS: dict[str, Callable[[Run], dict]] = {
    "pretext": run_pretext,
    "mine": run_mine,
    "scan": run_scan,
    "selflabel": run_selflabel,
}
EVALUATED = ("scan", "selflabel")
EVALUATED_FILE = "evaluated.json"
TIMING_FILE = "timing.json"  # each stage's estimated and actual seconds, for the estimate's accuracy (BENCHMARKS.md)
# ``--clusters auto``: the count the checks before estimate-k (the folder's listing, the pretext stage) run with;
# the run's record and its SCAN stages use the chosen one. Only SCAN and self-labelling depend on the count.
PROVISIONAL_CLUSTERS = 2


def run_stage(run: Run, stage: str, check: bool = True, restart: bool = False) -> dict:
    """Run one stage (and, for scan/selflabel, evaluate it on the test split).

    Under DDP every rank runs the stage; rank 0 alone evaluates, writes and logs. ``check``
    lists the images and verifies data sizes and that work in the run directory matches this config
    and data (``run_pipeline`` does both once for all stages); ``restart`` first discards this
    stage's and later stages' work.
    """
    started = time.perf_counter()
    with distributed.rank_zero_first():
        if distributed.is_rank_zero():
            claim_before_work(run, restart)
            if restart:
                clear_stages(run.directory, stage)
        if check:
            run = prepare_images(run)
            prepare_run(run)
        resuming = has_work(run.directory, stage)
    seed_all(run.config)
    LOG.info(f"{stage}: {'resuming' if resuming else 'starting'} in {run.directory / stage}")
    metrics = STAGE_RUNNERS[stage](run)
    distributed.barrier()
    if not distributed.is_rank_zero():
        return metrics
    metrics = {**metrics, **evaluate_finished(run, stage)}
    LOG.info(f"{stage}: done in {time.perf_counter() - started:.0f} s  {summarize(metrics)}")
    return metrics


def run_pipeline(
    run: Run, restart: bool = False, defaults: FolderDefaults | None = None,
    choose_clusters: Callable[[Run], int] | None = None, time_budget: float | None = None,
) -> Run:
    """Run every stage not yet complete in the run's directory; returns the run as it was made (its config saved as
    ``config.yaml``: the folder's file list, its schedule and the chosen number of clusters filled in).

    ``defaults`` (a folder run without a preset) records the backbone choice and, from scratch,
    fits the schedule to the folder's size; ``choose_clusters`` sets ``num_clusters`` first
    (``--clusters auto``). Before training, the whole run's duration is estimated and logged;
    ``time_budget`` (seconds) fits the schedule to it (``budget.py``), a resumed run keeping its recorded plan.
    """
    started = time.perf_counter()
    lead = distributed.is_rank_zero()
    if choose_clusters is not None and known_clusters(run) is None:
        run = run.with_config(with_values(run.config, {"num_clusters": PROVISIONAL_CLUSTERS}))
    with distributed.rank_zero_first():
        if lead:
            claim_before_work(run, restart)
            if restart:
                clear_run_dir(run.directory)
        run = prepare_images(run)
        if defaults is not None:
            run = apply_folder_defaults(run, defaults, record=lead)
        plan = plan_for_run(run, time_budget, lead)
        if plan is not None:
            run = run.with_config(with_values(run.config, plan.values()))
        if choose_clusters is None:
            prepare_run(run)
        elif lead:
            save_config(run.config, run.directory / "config.yaml")
    if choose_clusters is not None:
        run = run.with_config(with_values(run.config, {"num_clusters": choose_clusters(run)}))
        with distributed.rank_zero_first():
            prepare_run(run)  # sizes checked for the chosen count, which the run's record keeps
    run_dir = run.directory
    todo = [s for s in STAGE_RUNNERS if not distributed.broadcast_object(is_complete(run_dir, s))]
    if "pretext" in todo:
        check_pretext_inputs(run.config)
    progress = overall_progress(run, todo, plan, started) if lead and todo else OverallProgress({})
    if todo and lead:
        LOG.info(f"estimate: {progress.summary()}, from a short measured step of each stage")
        if defaults is not None and not defaults.choice.pretrained:
            LOG.info(f"training from scratch, about {clock(progress.total())}: {defaults.choice.reason}")
    with tracking(progress):
        for stage in STAGE_RUNNERS:
            if stage not in todo:
                LOG.info(f"{stage}: already complete in {stage_dir(run_dir, stage)}, skipped")
                if lead and not (run_dir / stage / EVALUATED_FILE).is_file():
                    evaluate_finished(run, stage)
                continue
            begin_stage(stage)
            run_stage(run, stage, check=False)
    if lead and todo:
        progress.end()
        write_json(run_dir / TIMING_FILE, progress.record())
    return run


def overall_progress(run: Run, todo: list[str], plan: BudgetPlan | None, started: float) -> OverallProgress:
    """The run's progress line: from the budget's plan (measured once, before training) when there is one, else from
    a fresh estimate measured on the run's own images."""
    if plan is None:
        seconds = run_seconds(run)
        return OverallProgress({stage: seconds[stage] for stage in todo})
    return OverallProgress({stage: plan.seconds[stage] for stage in todo}, started=started,
                           allowance=plan.allowance(todo), budget=plan.budget, tails=plan.tails,
                           per_epoch=plan.per_epoch, ceilings=plan.ceilings, reserve=plan.reserve)


def evaluate_finished(run: Run, stage: str) -> dict:
    """Score a finished stage into ``metrics.json``, then mark it evaluated.

    Kept apart from training so that a crash between a stage's completion and its scoring is
    repaired on the next run instead of leaving its scores out of ``metrics.json``.
    """
    metrics: dict = {}
    if stage == "pretext":
        clusters = known_clusters(run)
        if clusters is None:
            return metrics  # --clusters auto: scored once the number of clusters is chosen
        metrics = evaluate_pretext(run, clusters)
    elif stage == "mine":
        metrics = read_json(run.directory / stage / "metrics.json")
        if metrics:
            record_run_metrics(run.directory, stage, metrics)
    elif stage in EVALUATED:
        metrics = evaluate_stage(run, stage)
        score_stage(run, stage)
    write_json(run.directory / stage / EVALUATED_FILE, {"stage": stage})
    return metrics


def known_clusters(run: Run) -> int | None:
    """The number of clusters when the config or the dataset fixes it, else None (still to be chosen)."""
    try:
        return num_clusters(run.config.num_clusters, run.spec)
    except DataError:
        return None


def claim_before_work(run: Run, restart: bool) -> None:
    """Adopt the run directory (refusing a folder of other files); before a restart, first check that the data is
    there."""
    if restart:
        for split in ("train", "test"):
            find_split(run.config.data, run.spec, split)
    claim_run_dir(run.directory)


def clear_stages(run_dir: Path, first: str) -> None:
    """Delete the work of stage ``first`` and of every later stage (their results would be stale)."""
    names = list(STAGE_RUNNERS)
    remove_written(run_dir, names[names.index(first):])


def clear_run_dir(run_dir: Path) -> None:
    """Delete what scanlearn wrote in the run directory except its feature cache and input array."""
    remove_written(run_dir, WRITTEN_ENTRIES - KEPT_ON_RESTART)


def warn_if_clusters_empty(run_dir: str | Path) -> None:
    """ClusterCollapseWarning when the run's final model leaves clusters empty on the test split."""
    stage = final_stage(run_dir)
    probs = load_npy(Path(run_dir) / stage / "probs_test.npy")
    sizes = np.bincount(probs.argmax(1), minlength=probs.shape[1])
    empty = int((sizes == 0).sum())
    if empty:
        warnings.warn(
            f"the finished run leaves {empty} of {len(sizes)} clusters empty ({stage}, {len(probs)} test images); "
            "the data may hold fewer groups — try fewer clusters (--clusters K)", ClusterCollapseWarning, stacklevel=2,
        )


def warn_if_worse_than_features(run_dir: str | Path) -> str | None:
    """One-line warning when the final stage scores below k-means on its own features (or below SCAN) without labels."""
    return warn_if_worse(run_dir, final_stage(run_dir))


def summarize(metrics: dict) -> str:
    """``acc=0.812 nmi=0.700 ...`` for the scalar scores in ``metrics``."""
    keys = ("knn_acc", "acc", "nmi", "ari", "ami")
    shown = [f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float)]
    shown += [f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("precision")]
    if isinstance(metrics.get("skipped"), str):
        shown.insert(0, metrics["skipped"])
    return " ".join(shown)


def metrics_table(metrics: dict) -> str:
    """Plain-text table of ACC (Hungarian and many-to-one)/NMI/ARI/AMI per evaluated stage."""
    rows = [f"{'stage':<10} {'ACC':>7} {'ACC m:1':>7} {'NMI':>7} {'ARI':>7} {'AMI':>7}"]
    for stage in ("pretext", "scan", "selflabel"):
        m = metrics.get(stage)
        if m and "acc" in m:
            label = "k-means" if stage == "pretext" else stage
            many = m.get("acc_many_to_one", float("nan"))
            rows.append(f"{label:<10} {m['acc']:>7.4f} {many:>7.4f} {m['nmi']:>7.4f} {m['ari']:>7.4f} {m['ami']:>7.4f}")
    return "\n".join(rows)
