"""Fit a run's schedule to the user's time: ``run --time-budget 20m`` (API ``time_budget=``).

Before training, ``run_estimate`` measures a short step of each stage on this machine; the plan spends
the budget less a ``RESERVE``. A stage's estimated seconds are linear in its epochs, a fixed part
(caching, embedding, scoring) plus a part per epoch. Each training stage first gets its minimum
(``MIN_EPOCHS``); the time left after the fixed parts and the minimums is shared in the proportions of
``SPLIT`` (measured), each stage taking the epochs its share buys up to the config's own, and handing
what it cannot use to the others. Two shapes are tried: the config as it is, and SCAN and
self-labelling on frozen backbone features (``frozen_values``); the one that buys the pretext more epochs
wins, the config as it is on a tie.
The plan is written to the run directory (``PLAN_FILE``) before training, so a resumed run keeps it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import Config, mined_on_backbone, with_values
from .engine.execution import best_device, describe_hardware
from .engine.progress import clock
from .engine.run import Run
from .errors import BudgetError, ConfigError
from .run_estimate import measure, stage_seconds, StepCosts
from .runs.artefacts import has_work, read_json, STAGES, write_json
from .schedule import frozen_scan_values

LOG = logging.getLogger(__name__)
PLAN_FILE = "budget.json"
# Share of the training time per stage, from the measured per-stage times of the fashion-mnist preset's `make demo`
# (BENCHMARKS.md): on AVX-512 BF16 (2026-11-28) pretext 1,247 s, SCAN 639 s, self-label 108 s (0.62 / 0.32 / 0.05 of
# the whole 2,015 s with mining's 21 s); on AVX2 (2026-11-27) 3,560 / 1,990 / 367 s of 5,982 s (0.60 / 0.33 / 0.06).
SPLIT = {"pretext": 0.62, "scan": 0.32, "selflabel": 0.05}
# The fewest epochs that still train each part: a pretext shorter than 3 epochs barely leaves its cosine schedule's
# first steps; one epoch of each head stage.
MIN_EPOCHS = {"pretext": 3, "scan": 1, "selflabel": 1}
# Heads on cached frozen features: on AVX2 this cost 1.1 ACC and 3.2 NMI points against the whole network and saved
# 32 of the demo's 102 minutes (BENCHMARKS.md, "A cheaper schedule for AVX2"); SCAN's heads train as the frozen
# recipe trains them (``schedule.frozen_scan_values``), up to its epochs.
FREEZE = frozen_scan_values() | {"selflabel.freeze_backbone": True}
# Where the neighbours were mined on the backbone alone, the frozen heads read that mined space (whitened multiscale
# rows) rather than the pooled features: on the train split of two runs' 3- and 4-epoch features, ACC +3.9 and +6.3,
# NMI +5.2 and +7.3 points, each at a lower SCAN loss (docs/tuning-log.md, "Heads on the mined space").
MINED_HEADS = {"scan.head_features": "mined"}
# Share of the budget the plan leaves unspent: the parts of a run outside the estimate (loading, evaluation, the
# report) and its errors on the short stages. A 20-minute demo planned at 19:24 took 19:59.5 (mining 84 s for 61 s
# estimated), 3% over its plan (docs/tuning-log.md, "Time budgets on Fashion-MNIST").
RESERVE = 0.05
DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


@dataclass(frozen=True)
class StageCost:
    """A stage's estimated seconds: ``fixed`` whatever its epochs, plus ``per_epoch`` for each epoch."""

    fixed: float
    per_epoch: float


@dataclass(frozen=True)
class BudgetPlan:
    """The schedule chosen for a budget: epochs per training stage, frozen heads or not, planned seconds."""

    budget: float
    epochs: dict[str, int]
    frozen: bool
    seconds: dict[str, float]
    tails: dict[str, float]
    per_epoch: dict[str, float]
    full: float
    hardware: str
    ceilings: dict[str, int] = field(default_factory=dict)  # the epochs a stage may grow to when it runs faster
    shape: dict[str, object] | None = None  # the frozen shape's keys (``frozen_values``); None in plans written before

    @property
    def reserve(self) -> float:
        """Seconds of the budget the plan keeps unspent, which a stage growing past its plan leaves alone too."""
        return self.budget * RESERVE

    def frozen_shape(self) -> dict[str, object]:
        """The keys of the frozen shape when the plan chose it (``FREEZE`` in plans that did not record theirs)."""
        if not self.frozen:
            return {}
        return self.shape if self.shape is not None else FREEZE

    def values(self) -> dict[str, object]:
        """The config keys this plan sets."""
        return self.frozen_shape() | {f"{stage}.epochs": epochs for stage, epochs in self.epochs.items()}

    def describe(self, config: Config) -> str:
        """``pretext 4 of 22 epochs, SCAN 5 of 5, ...; heads on frozen features``: what was chosen against ``config``."""
        names = {"pretext": "pretext", "scan": "SCAN", "selflabel": "self-labelling"}
        shaped = with_values(config, self.frozen_shape()) if self.frozen else config
        parts = [f"{names[s]} {e} of {getattr(shaped, s).epochs} epochs" for s, e in self.epochs.items()]
        space = "the mined features" if shaped.scan.head_features == "mined" else "frozen backbone features"
        frozen = f"; SCAN and self-labelling on {space}" if self.frozen else ""
        return ", ".join(parts) + frozen

    def allowance(self, todo: list[str]) -> float:
        """Seconds the stages in ``todo`` may use: the budget less what the finished stages were planned to take."""
        return self.budget - sum(seconds for stage, seconds in self.seconds.items() if stage not in todo)


def frozen_values(config: Config) -> dict[str, object]:
    """The keys of the frozen shape for ``config``: ``FREEZE``, and ``MINED_HEADS`` where the neighbours are mined on
    the backbone alone (``config.mined_on_backbone``)."""
    return FREEZE | (MINED_HEADS if mined_on_backbone(config) else {})


def parse_duration(text: str) -> float:
    """Seconds of ``'20m'``, ``'1h'``, ``'90s'`` or ``'1h30m'``; a ConfigError naming the format otherwise."""
    found = DURATION.match(text.strip().lower())
    if not text.strip() or not found:
        raise ConfigError(f"time budget {text!r} is not a duration; write it like 20m, 1h, 90s or 1h30m")
    seconds = sum(float(found[unit] or 0) * scale for unit, scale in (("h", 3600), ("m", 60), ("s", 1)))
    if seconds <= 0:
        raise ConfigError(f"time budget {text!r} must be longer than zero, e.g. 20m")
    return seconds


def as_seconds(value: str | float | None) -> float | None:
    """The API's ``time_budget``: a duration string or seconds (None: no budget)."""
    if value is None or isinstance(value, str):
        return None if value is None else parse_duration(value)
    if value <= 0:
        raise ConfigError(f"time_budget must be longer than zero, got {value!r}; pass seconds or a duration like '20m'")
    return float(value)


def with_epochs(config: Config, epochs: int) -> Config:
    """``config`` with every training stage set to ``epochs`` epochs."""
    return with_values(config, {f"{stage}.epochs": epochs for stage in SPLIT})


def stage_costs(config: Config, n: int, costs: StepCosts) -> dict[str, StageCost]:
    """Each stage's fixed seconds and seconds per epoch for ``n`` images (``stage_seconds`` is linear in epochs)."""
    full = stage_seconds(config, n, costs)
    one, two = stage_seconds(with_epochs(config, 1), n, costs), stage_seconds(with_epochs(config, 2), n, costs)
    result = {}
    for stage in STAGES:
        per_epoch = two[stage] - one[stage] if stage in SPLIT and getattr(config, stage).epochs > 0 else 0.0
        result[stage] = StageCost(one[stage] - per_epoch, per_epoch) if per_epoch > 0 else StageCost(full[stage], 0.0)
    return result


def minimum_seconds(config: Config, costs: dict[str, StageCost]) -> float:
    """Seconds of the smallest run this config's shape allows: fixed parts and each stage's minimum epochs."""
    return sum(c.fixed + minimum_epochs(config, s) * c.per_epoch for s, c in costs.items())


def minimum_epochs(config: Config, stage: str) -> int:
    """``MIN_EPOCHS`` of a training stage, never more than its config asks for."""
    return min(MIN_EPOCHS[stage], getattr(config, stage).epochs) if stage in SPLIT else 0


def allocate(config: Config, costs: dict[str, StageCost], budget: float) -> dict[str, int] | None:
    """Epochs per training stage within ``budget`` seconds (None when even the minimums do not fit).

    After the fixed parts and the minimums, the time is shared by ``SPLIT``; a stage whose share buys more than the
    config's epochs keeps the config's and the rest is shared again among the others.
    """
    if minimum_seconds(config, costs) > budget:
        return None
    free = budget - minimum_seconds(config, costs)
    epochs = {s: minimum_epochs(config, s) for s in SPLIT if costs[s].per_epoch > 0}
    active = set(epochs)
    while active:
        weight = sum(SPLIT[s] for s in active)
        room = {s: (getattr(config, s).epochs - epochs[s]) * costs[s].per_epoch for s in active}
        full = {s for s in active if free * SPLIT[s] / weight >= room[s]}
        if not full:
            for stage in active:
                epochs[stage] += int(free * SPLIT[stage] / weight // costs[stage].per_epoch)
            break
        for stage in full:
            epochs[stage] = getattr(config, stage).epochs
            free -= room[stage]
        active -= full
    return epochs


def choose(config: Config, n: int, costs: StepCosts, budget: float) -> BudgetPlan:
    """The plan for ``budget`` seconds, ``RESERVE`` of it kept unspent: the shape (as configured or frozen heads) that
    buys the most pretext epochs.

    Raises BudgetError naming the minimum budget when no shape fits.
    """
    usable = budget * (1 - RESERVE)
    shape = frozen_values(config)
    shapes = [(False, config)]
    if not (config.scan.freeze_backbone and config.selflabel.freeze_backbone):
        shapes.append((True, with_values(config, shape)))
    options, minimums = [], []
    for frozen, shaped in shapes:
        shape_costs = stage_costs(shaped, n, costs)
        minimums.append(minimum_seconds(shaped, shape_costs))
        epochs = allocate(shaped, shape_costs, usable)
        if epochs is not None:
            options.append((epochs.get("pretext", 0), not frozen, epochs, shape_costs))
    if not options:
        least = min(minimums) / (1 - RESERVE)
        raise BudgetError(f"a time budget of {clock(budget)} cannot buy a run on this machine ({len(STAGES)} stages, "
                          f"{n} images): it needs at least {clock(least)}; pass --time-budget "
                          f"{int(least // 60) + 1}m or more")
    _, as_configured, epochs, shape_costs = max(options, key=lambda option: option[:2])
    frozen = not as_configured
    shaped = with_values(config, shape) if frozen else config
    chosen = with_values(shaped, {f"{s}.epochs": e for s, e in epochs.items()})
    planned = stage_seconds(chosen, n, costs)
    return BudgetPlan(
        budget=budget, epochs=epochs, frozen=frozen, seconds=planned,
        tails={s: c.fixed for s, c in shape_costs.items()}, per_epoch={s: c.per_epoch for s, c in shape_costs.items()},
        full=sum(stage_seconds(config, n, costs).values()), hardware=describe_hardware(best_device(config.runtime)),
        ceilings={s: getattr(shaped, s).epochs for s in epochs}, shape=shape if frozen else {},
    )


def plan_for_run(run: Run, budget: float | None, lead: bool) -> BudgetPlan | None:
    """The run's plan: the one recorded in its directory (a resumed run keeps its schedule), else, with a ``budget``,
    a new one measured on its training images (rank 0 measures and records it; the other ranks read it after)."""
    config, run_dir = run.config, run.directory
    recorded = read_plan(run_dir)
    if recorded is not None:
        if lead:
            LOG.info(f"time budget {clock(recorded.budget)}: keeping the schedule this run started with "
                     f"({recorded.describe(config)})")
        return recorded
    if budget is None or not lead:
        return None
    if any(has_work(run_dir, stage) for stage in STAGES):
        raise BudgetError(f"{run_dir} holds work made without a time budget; finish it without --time-budget, "
                          "or pass --restart (or a new --run-dir) to start a budgeted run")
    plan = choose(config, len(run.split("train")), measure(run), budget)
    LOG.info(f"time budget {clock(budget)} on {plan.hardware}: {plan.describe(config)}; planned about "
             f"{clock(sum(plan.seconds.values()))}, the full schedule would take about {clock(plan.full)}")
    write_json(run_dir / PLAN_FILE, asdict(plan))
    return plan


def read_plan(run_dir: Path) -> BudgetPlan | None:
    """The plan recorded in ``run_dir``, if any."""
    stored = read_json(run_dir / PLAN_FILE)
    return BudgetPlan(**stored) if stored else None
