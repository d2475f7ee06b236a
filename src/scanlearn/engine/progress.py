"""One overall progress line of a whole run (stage i/4, elapsed, remaining), logged above Lightning's
per-epoch bars.

``run_estimate`` gives the expected seconds of each stage. Once a stage has finished an epoch, its
own rest is extrapolated from its epochs so far; later stages are rescaled by how fast the
finished stages went compared with their estimates (shared cores, epoch overheads the measured
step does not see).

Under a time budget (``budget.py``) the line also shows the budget and the time left, and
``Deadline`` ends a stage's training at an epoch boundary when another epoch would leave too little
time for the rest of the run at the pace seen: a slow stage gives up epochs, not the deadline.
"""

from __future__ import annotations

import contextvars
import logging
import math
import sys
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from . import distributed
from .lr_schedules import end_schedule_at

STAGES = ("pretext", "mine", "scan", "selflabel")
LOG = logging.getLogger("scanlearn")


@contextmanager
def messages_to_stderr() -> Iterator[None]:
    """While it lasts, show scanlearn's messages (INFO and above, from rank 0 only) on stderr as
    ``scanlearn: ...`` lines; the logger's handlers and level are restored after."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scanlearn: %(message)s"))
    handler.addFilter(lambda record: distributed.is_rank_zero())
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)


def on_stderr(make: Callable[[], Tqdm]) -> Tqdm:
    """A tqdm bar built while ``sys.stdout`` points at stderr: tqdm keeps the stream it was built with."""
    with redirect_stdout(sys.stderr):
        return make()


class StderrProgressBar(TQDMProgressBar):
    """Lightning's epoch bars on stderr (Lightning writes them to stdout), so stdout carries results only."""

    def init_sanity_tqdm(self) -> Tqdm:
        return on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Tqdm:
        return on_stderr(super().init_train_tqdm)

    def init_predict_tqdm(self) -> Tqdm:
        return on_stderr(super().init_predict_tqdm)

    def init_validation_tqdm(self) -> Tqdm:
        return on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Tqdm:
        return on_stderr(super().init_test_tqdm)


def clock(seconds: float) -> str:
    """``'1:05:09'`` / ``'12:04'`` for a duration in seconds."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class OverallProgress:
    """Estimated seconds per stage; logs one line per stage start and per epoch.

    Under a time budget, ``allowance`` is the seconds the run may take from ``started``; ``tails`` and
    ``per_epoch`` are each stage's planned seconds outside its epochs and per epoch; ``now`` is the clock.
    ``given_up`` counts the epochs each stage gave up to keep the budget (negative: gained, up to ``ceilings``
    without touching the plan's unspent ``reserve``), so that it is paced on the work it did;
    ``rescaled`` is each stage's estimate at its start, times the pace seen until then.
    """

    estimate: dict[str, float]
    started: float = field(default_factory=time.perf_counter)
    stage: str = ""
    stage_started: float = 0.0
    epochs_started: float | None = None
    spent: dict[str, float] = field(default_factory=dict)
    allowance: float | None = None
    budget: float = 0.0
    tails: dict[str, float] = field(default_factory=dict)
    per_epoch: dict[str, float] = field(default_factory=dict)
    given_up: dict[str, int] = field(default_factory=dict)
    ceilings: dict[str, int] = field(default_factory=dict)
    reserve: float = 0.0
    rescaled: dict[str, float] = field(default_factory=dict)
    now: Callable[[], float] = time.perf_counter

    def total(self) -> float:
        return sum(self.estimate.values())

    def summary(self) -> str:
        """``about 12:30 in all (pretext 9:10, mine 0:20, ...)``."""
        parts = ", ".join(f"{s} {clock(self.estimate[s])}" for s in STAGES if s in self.estimate)
        return f"about {clock(self.total())} in all ({parts})"

    def begin(self, stage: str) -> None:
        """A stage starts: remember when, and log the overall line once there is an estimate to show."""
        if self.stage:
            self.spent[self.stage] = self.now() - self.stage_started
        self.stage, self.stage_started, self.epochs_started = stage, self.now(), None
        if stage in self.estimate:
            self.rescaled[stage] = self.estimate[stage] * self.pace()
        if self.estimate:
            self.show(0.0)

    def end(self) -> None:
        """The last stage has finished: its time counts as spent."""
        if self.stage:
            self.spent[self.stage] = self.now() - self.stage_started
            self.stage = ""

    def record(self) -> dict[str, dict[str, float]]:
        """Per stage that ran (``timing.json``): the estimate made before the run, the one at the stage's start
        (rescaled by the pace seen until then) and the one of the work it did (less the epochs it gave up to keep the
        budget), the actual seconds, and actual over each estimate."""
        return {stage: {"estimated_s": round(self.estimate.get(stage, 0.0), 1), "actual_s": round(spent, 1),
                        "actual_over_estimate": ratio(spent, self.estimate.get(stage, 0.0)),
                        "estimated_at_start_s": round(self.rescaled.get(stage, 0.0), 1),
                        "actual_over_estimate_at_start": ratio(spent, self.rescaled.get(stage, 0.0)),
                        "estimated_work_done_s": round(self.worked(stage), 1),
                        "actual_over_work_done": ratio(spent, self.worked(stage))}
                for stage, spent in self.spent.items()}

    def worked(self, stage: str) -> float:
        """The estimated seconds of the work ``stage`` did: its estimate less the epochs it gave up to keep the
        budget."""
        return self.estimate.get(stage, 0.0) - self.given_up.get(stage, 0) * self.per_epoch.get(stage, 0.0)

    def pace(self) -> float:
        """Actual over estimated time of the finished stages' work (1 before any finished)."""
        planned = sum(self.worked(s) for s in self.spent)
        return sum(self.spent.values()) / planned if planned > 1.0 else 1.0

    def remaining(self, fraction: float, now: float | None = None) -> float:
        """Seconds left: the rest of the current stage (extrapolated from its own epochs once one is done, timed from
        the start of its first epoch so that the work before it, such as embedding cached views, is not counted
        again) and every later stage at the pace seen so far."""
        later = STAGES[STAGES.index(self.stage) + 1:] if self.stage in STAGES else ()
        if fraction > 0:
            first = self.stage_started if self.epochs_started is None else self.epochs_started
            spent = (self.now() if now is None else now) - first
            current = spent * (1.0 - fraction) / fraction
        else:
            current = self.estimate.get(self.stage, 0.0) * self.pace()
        return current + sum(self.estimate.get(s, 0.0) for s in later) * self.pace()

    def line(self, fraction: float) -> str:
        index = STAGES.index(self.stage) + 1 if self.stage in STAGES else 0
        budget = (f", budget {clock(self.budget)}, time left {clock(self.time_left())}"
                  if self.allowance is not None else "")
        return (f"overall: stage {index}/{len(STAGES)} {self.stage} ({fraction:.0%}), elapsed "
                f"{clock(self.now() - self.started)}, remaining about {clock(self.remaining(fraction))}{budget}")

    def time_left(self) -> float:
        """Seconds left of the budget's allowance (negative once overrun)."""
        return self.started + (self.allowance or 0.0) - self.now()

    def epochs_affordable(self, epoch_seconds: float, epochs_done: int = 1, keep: float = 0.0) -> float:
        """How many more epochs of ``epoch_seconds`` fit before the rest of the stage and the later stages would
        overrun the allowance less ``keep`` seconds (unlimited without a budget). The rest is paced on all the work
        timed so far, the finished stages' and this stage's ``epochs_done`` epochs, never faster than estimated: one
        slow epoch of a stage whose epochs take a second does not multiply the rest of the run."""
        if self.allowance is None:
            return math.inf
        later = STAGES[STAGES.index(self.stage) + 1:] if self.stage in STAGES else ()
        planned = sum(self.worked(s) for s in self.spent) + self.per_epoch.get(self.stage, 0.0) * epochs_done
        spent = sum(self.spent.values()) + epoch_seconds * epochs_done
        pace = max(1.0, spent / planned) if planned > 0 else 1.0
        rest = (self.tails.get(self.stage, 0.0) + sum(self.estimate.get(s, 0.0) for s in later)) * pace
        return max(0, math.floor((self.time_left() - keep - rest) / max(epoch_seconds, 1e-9)))

    def show(self, fraction: float) -> None:
        LOG.info(self.line(fraction))


def ratio(actual: float, estimate: float) -> float | None:
    """``actual / estimate`` to three decimals (None without an estimate)."""
    return round(actual / estimate, 3) if estimate > 0 else None


_CURRENT: contextvars.ContextVar[OverallProgress | None] = contextvars.ContextVar("overall_progress", default=None)


class EpochProgress(L.Callback):
    """Logs the overall progress line at the start of every training epoch of a stage."""

    def __init__(self, progress: OverallProgress) -> None:
        self.progress = progress

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self.progress.epochs_started = self.progress.now()
        if trainer.is_global_zero and trainer.current_epoch > 0:
            self.progress.show(trainer.current_epoch / max(1, trainer.max_epochs))


class Deadline(L.Callback):
    """Under a time budget, fits a stage's epochs to the time left: after each epoch, at the mean length and pace of
    its epochs so far, the stage is set to the epochs that fit and its learning-rate schedule made to end there (a
    cosine still decays to its floor), or stopped when none fits. Past the planned epochs it grows only while the
    plan's reserve stays unspent, and never past its ceiling (the config's epochs): a plan measured in a slow spell
    does not leave the budget unused."""

    def __init__(self, progress: OverallProgress) -> None:
        self.progress = progress
        self.epoch_started = 0.0
        self.planned = 0
        self.epochs: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.planned, self.epochs = trainer.max_epochs, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started = self.progress.now()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(self.progress.now() - self.epoch_started)
        done, ends = trainer.current_epoch + 1, trainer.max_epochs
        fits = self.epochs_that_fit(done, sum(self.epochs) / len(self.epochs))
        fits = int(trainer.strategy.reduce(torch.tensor(float(fits)), reduce_op="min").item())
        if fits == ends or done >= ends:  # nothing to change, or the stage's schedule has already ended
            return
        stage, left = self.progress.stage, clock(max(0.0, self.progress.time_left()))
        self.progress.given_up[stage] = self.planned - max(done, fits)
        if fits <= done:
            trainer.should_stop = True
            LOG.info(f"{stage}: stopping after epoch {done} of {ends} to keep the time budget ({left} left)")
            return
        trainer.fit_loop.max_epochs = fits
        for config in trainer.lr_scheduler_configs:
            end_schedule_at(config.scheduler, done, fits, ends)
        fitted = (f"running faster than measured, {fits} epochs fit the time budget where {self.planned} were planned"
                  if fits > self.planned else f"{fits} of {self.planned} epochs fit the time budget")
        LOG.info(f"{stage}: {fitted} ({left} left); its learning-rate schedule now ends after epoch {fits}")

    def epochs_that_fit(self, done: int, epoch_seconds: float) -> int:
        """The stage's epochs for the time left: the planned ones or fewer, or more (up to its ceiling) when they
        fit with the plan's reserve still unspent."""
        fits = min(self.planned, done + self.progress.epochs_affordable(epoch_seconds, len(self.epochs)))
        ceiling = self.progress.ceilings.get(self.progress.stage, self.planned)
        if fits < self.planned or ceiling <= self.planned:
            return int(fits)
        grown = done + self.progress.epochs_affordable(epoch_seconds, len(self.epochs), keep=self.progress.reserve)
        return int(max(self.planned, min(ceiling, grown)))


@contextmanager
def tracking(progress: OverallProgress) -> Iterator[OverallProgress]:
    """Make ``progress`` the one every stage trainer built inside reports to."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)


def epoch_callbacks() -> list[L.Callback]:
    """The overall-progress and deadline callbacks for a stage's trainer, when a whole run is being tracked."""
    progress = _CURRENT.get()
    return [EpochProgress(progress), Deadline(progress)] if progress is not None else []


def begin_stage(stage: str) -> None:
    """Tell the tracked run (if any) that ``stage`` starts."""
    progress = _CURRENT.get()
    if progress is not None:
        progress.begin(stage)
