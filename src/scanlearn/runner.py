"""A whole run, the same for ``scanlearn run`` and ``SCAN.fit``: the number of clusters (``--clusters auto``), the
stages (``pipeline``), then the report and assignments, the run's warnings and its summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from .engine import distributed
from .engine.run import Run
from .estimate_k import auto_estimate, KEstimate
from .folder_backbone import FolderDefaults
from .inspection import run_summary, RunOutputs, write_run_outputs
from .pipeline import metrics_table, run_pipeline, warn_if_clusters_empty, warn_if_worse_than_features
from .runs.artefacts import read_json

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """What a whole run leaves: the run as made (its config filled in), the estimate ``--clusters auto`` chose by,
    and on rank 0 its report and assignments, the test split's scores table and the summary lines."""

    run: Run
    estimate: KEstimate | None = None
    outputs: RunOutputs | None = None
    scores: str = ""
    summary: tuple[str, ...] = ()


def run_whole(run: Run, auto_clusters: bool = False, restart: bool = False, defaults: FolderDefaults | None = None,
              time_budget: float | None = None) -> Finished:
    """Run every stage still to do (first choosing the number of clusters with ``auto_clusters``), then write the
    report and warn when the run leaves clusters empty or scores below k-means on its own features."""
    estimates: list[KEstimate] = []
    choose = partial(chosen_count, estimates) if auto_clusters else None
    run = run_pipeline(run, restart=restart, defaults=defaults, choose_clusters=choose, time_budget=time_budget)
    estimate = estimates[-1] if estimates else None
    if not distributed.is_rank_zero():
        return Finished(run, estimate)
    scores = metrics_table(read_json(run.directory / "metrics.json"))
    outputs = write_run_outputs(run)
    warn_if_clusters_empty(run.directory)
    warn_if_worse_than_features(run.directory)
    return Finished(run, estimate, outputs, scores, tuple(run_summary(run.directory, outputs)))


def chosen_count(estimates: list[KEstimate], run: Run) -> int:
    """``--clusters auto``: the number of clusters estimate-k suggests for ``run`` (its estimate kept in
    ``estimates``)."""
    estimate = auto_estimate(run)
    estimates.append(estimate)
    LOG.info(f"--clusters auto: using {estimate.best} clusters ({estimate.criterion})")
    return estimate.best
