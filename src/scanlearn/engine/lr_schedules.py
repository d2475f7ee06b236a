"""Learning-rate schedules: linear warm-up, then constant or cosine decay, over a horizon a time budget may shorten.

When a budgeted stage cannot afford the epochs it planned, its schedule is made to end where the stage will end
(``LRHorizon.end_at``), so that the cosine still decays to its floor instead of stopping part-way; if later epochs
run faster, the end moves back out (how far is the caller's decision: the deadline's, bounded by the config's epochs).
"""

from __future__ import annotations

import math

import torch

from ..config import OptimConfig


def lr_factor(progress: float, step: int, warmup_steps: int, schedule: str, floor: float) -> float:
    """Multiplier of the base lr at ``step``, ``progress`` (0-1) of the way through the decay: linear warm-up, then
    ``constant`` or ``cosine`` decay to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LRHorizon:
    """The lr multiplier per scheduler step over ``total`` steps. A callable object of plain numbers, so that
    ``LambdaLR`` saves its attributes with the checkpoint (a shortened horizon survives a resume) and they load
    without running code."""

    def __init__(self, total: int, warmup: int, optim: OptimConfig) -> None:
        self.total, self.warmup = total, warmup
        self.schedule, self.floor = optim.schedule, optim.final_lr_ratio
        self.cut_step, self.cut_progress = 0, 0.0  # where a shortened horizon starts, and how far the decay was

    def progress(self, step: int) -> float:
        """How far through the decay ``step`` is: linear from the warm-up's end, or from the cut to the new end."""
        start, done = (self.cut_step, self.cut_progress) if self.cut_step else (self.warmup, 0.0)
        return done + (1.0 - done) * (step - start) / max(1, self.total - start)

    def __call__(self, step: int) -> float:
        return lr_factor(self.progress(step), step, self.warmup, self.schedule, self.floor)

    def end_at(self, step: int, total: int) -> None:
        """From ``step`` on, decay over what is left so as to end at ``total`` steps (earlier or later than now)."""
        total = max(step + 1, total)
        if step < self.warmup or total == self.total:
            return
        self.cut_progress, self.cut_step, self.total = self.progress(step), step, total


def lr_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig, epochs: int, total_steps: int
                ) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of ``optim`` over ``epochs`` epochs of ``total_steps`` steps in all; it is
    stepped every step, or every epoch with ``optim.interval=epoch``."""
    epochs = max(1, epochs)
    if optim.interval == "epoch":
        total, warmup = epochs, int(optim.warmup_epochs)
    else:
        total, warmup = total_steps, int(optim.warmup_epochs * max(1, total_steps // epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRHorizon(total, warmup, optim))


def end_schedule_at(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs_done: int, epochs: int,
                    max_epochs: int) -> None:
    """Make ``scheduler`` (an ``lr_schedule`` now ending after ``max_epochs`` epochs, ``epochs_done`` of them done)
    end after ``epochs`` instead: the decay left is spread over the epochs left."""
    for horizon in getattr(scheduler, "lr_lambdas", []):
        if isinstance(horizon, LRHorizon):
            per_epoch = horizon.total / max_epochs
            horizon.end_at(round(epochs_done * per_epoch), round(epochs * per_epoch))
