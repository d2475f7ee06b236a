"""``--time-budget``: the schedule chosen for a budget, the refusal of a budget too small, the deadline kept
while training (on a fake clock), and a resumed run keeping its schedule."""

from __future__ import annotations

import json
from dataclasses import replace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import scanlearn.budget as budget
import scanlearn.pipeline as pipeline
from fakes import error_lines, logged_messages, write_fashion_mnist
from scanlearn.budget import allocate, choose, parse_duration, RESERVE, SPLIT, StageCost
from scanlearn.cli import main
from scanlearn.config import load_preset, with_values
from scanlearn.engine.progress import begin_stage, Deadline, epoch_callbacks, OverallProgress, tracking
from scanlearn.engine.run import Run
from scanlearn.errors import BudgetError, ConfigError
from scanlearn.run_estimate import FitCosts, StepCosts, stage_seconds
from scanlearn.runs.artefacts import write_json
from scanlearn.runs.rundir import claim_run_dir
from scanlearn.schedule import FROZEN_SCAN_EPOCHS, FROZEN_SCAN_OPTIM

# Seconds per image of the fashion-mnist preset on 2 AVX2 cores, from BENCHMARKS.md's `make demo` there: a pretext
# epoch of 156 s (2 views of 59,904 images), mining 65 s (2 embedding passes of 60,000), a whole-network SCAN epoch
# of about 348 s (2 views).
AVX2 = StepCosts(embed=65 / 120_000, train={"pretext": 156 / 119_808, "scan": 348 / 120_000, "selflabel": 2.5e-3})
N = 60_000


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h", 3600), ("90s", 90), ("1h30m", 5400), ("2.5m", 150)])
def test_durations_are_read_in_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["20", "20x", "", "m", "0m", "-5m"])
def test_a_malformed_duration_names_the_format(text):
    with pytest.raises(ConfigError, match="20m, 1h, 90s|longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize("minutes", [20, 40, 60])
def test_the_plan_fits_the_budget_and_leaves_less_than_one_pretext_epoch(minutes):
    config, budget_s = load_preset("fashion-mnist"), minutes * 60
    plan = choose(config, N, AVX2, budget_s)
    chosen = with_values(config, plan.values())
    total = sum(stage_seconds(chosen, N, AVX2).values())
    longer = with_values(chosen, {"pretext.epochs": chosen.pretext.epochs + 1})
    assert total <= budget_s * (1 - RESERVE) < sum(stage_seconds(longer, N, AVX2).values())
    assert plan.frozen and chosen.scan.freeze_backbone and 3 <= chosen.pretext.epochs < config.pretext.epochs
    assert plan.full == pytest.approx(sum(stage_seconds(config, N, AVX2).values()))


def test_frozen_heads_train_with_the_frozen_recipe_for_the_epochs_the_plan_gives_them():
    config = load_preset("fashion-mnist")
    costs = replace(AVX2, fits={"scan": FitCosts(start=1.0, step=0.0046, epoch=0.05)})  # measured in the stage, 2 AVX2 cores
    plan = choose(config, N, costs, 20 * 60)
    chosen = with_values(config, plan.values())
    assert plan.frozen and chosen.scan.optim == FROZEN_SCAN_OPTIM and chosen.scan.normalize_features
    assert chosen.scan.epochs == plan.epochs["scan"] <= FROZEN_SCAN_EPOCHS
    assert chosen.scan.num_heads == config.scan.num_heads and chosen.selflabel.optim == config.selflabel.optim
    assert f"SCAN {plan.epochs['scan']} of {FROZEN_SCAN_EPOCHS} epochs" in plan.describe(config)
    assert plan.ceilings == {"pretext": 22, "scan": FROZEN_SCAN_EPOCHS, "selflabel": 1}  # what a faster stage may grow to


@pytest.mark.parametrize("preset, mined", [("fashion-mnist", True), ("cifar10", False)])
def test_frozen_heads_read_the_mined_space_only_where_it_was_mined_on_the_backbone(preset, mined):
    config = load_preset(preset)
    plan = choose(config, N, AVX2, 20 * 60)
    chosen = with_values(config, plan.values())
    assert plan.frozen and chosen.scan.head_features == ("mined" if mined else "backbone")  # cifar10 mines projections
    assert plan.describe(config).endswith("on the mined features" if mined else "on frozen backbone features")


def test_the_whole_network_trains_only_when_the_full_pretext_also_fits():
    config = load_preset("fashion-mnist")
    full = sum(stage_seconds(config, N, AVX2).values())
    plan = choose(config, N, AVX2, full / (1 - RESERVE) + 1)
    assert not plan.frozen and plan.epochs == {"pretext": 22, "scan": 5, "selflabel": 1}
    cut = choose(config, N, AVX2, (full - 60) / (1 - RESERVE))  # whole-network SCAN would cut the pretext; frozen heads keep all of it
    assert cut.frozen and cut.epochs["pretext"] == 22


def test_time_is_shared_by_the_recorded_split_and_a_capped_stage_hands_its_rest_on():
    config = with_values(load_preset("fashion-mnist"), {"pretext.epochs": 10_000, "scan.epochs": 10_000,
                                                        "selflabel.epochs": 10_000})
    costs = {stage: StageCost(fixed=0.0, per_epoch=1.0) for stage in ("pretext", "mine", "scan", "selflabel")}
    weight = sum(SPLIT.values())
    free = 1000 - 5  # after the minimums: 3 + 1 + 1 epochs of 1 s
    expected = {"pretext": 3, "scan": 1, "selflabel": 1}
    assert allocate(config, costs, 1000) == {s: expected[s] + int(free * SPLIT[s] / weight) for s in expected}
    capped = with_values(config, {"scan.epochs": 50})
    rest = free - 49
    shares = SPLIT["pretext"] + SPLIT["selflabel"]
    assert allocate(capped, costs, 1000) == {"pretext": 3 + int(rest * SPLIT["pretext"] / shares), "scan": 50,
                                             "selflabel": 1 + int(rest * SPLIT["selflabel"] / shares)}
    assert allocate(config, costs, 4.5) is None


def test_a_budget_below_the_minimum_is_refused_in_one_line_before_training(tmp_path, monkeypatch, capsys):
    root = write_fashion_mnist(tmp_path / "fmnist", 64, 32)
    monkeypatch.setattr(budget, "measure", lambda made: StepCosts(0.01, {s: 0.05 for s in SPLIT}, test_images=32))
    run = tmp_path / "run"
    code = main(["run", "--preset", "fashion-mnist", "--data-root", str(root), "--run-dir", str(run),
                 "--set", "pretext.batch_size=16", "--set", "mine.k=5", "--set", "mine.val_k=3",
                 "--time-budget", "5s"])
    errors = error_lines(capsys.readouterr().err)
    # the smallest run: 3 pretext epochs of 2 x 64 images at 0.05 s (19.2 s) and the stages' embedding passes of the
    # 64 train and 32 test images (no descriptors in this preset: no block map; no search measured); frozen SCAN's
    # heads read the mined rows, which mining embedded (nothing to embed), frozen self-labelling's one epoch one strong
    # view of the 64 train images, not the four it caches for longer runs: 20.16 + 0.96 + 0.64 = 21.76 s, which the
    # plan may spend once RESERVE is set aside: 21.76 / 0.95 = 22.91 s
    assert RESERVE == 0.05
    assert code == 2 and len(errors) == 1 and "needs at least 0:23" in errors[0] and "--time-budget" in errors[0]
    assert not any((run / stage).exists() for stage in ("pretext", "mine", "scan", "selflabel"))


class FakeClock:
    """A clock that only the training steps move."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class Ticking(L.LightningModule):
    """A linear model whose every training step takes ``step_seconds`` of the fake clock."""

    def __init__(self, clock: FakeClock, step_seconds: float) -> None:
        super().__init__()
        self.layer, self.clock, self.step_seconds = torch.nn.Linear(2, 1), clock, step_seconds

    def training_step(self, batch, index):
        self.clock.seconds += self.step_seconds
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("slowdown", [1.0, 1.5, 2.0])
def test_a_slow_stage_gives_up_epochs_and_the_run_keeps_its_budget(slowdown):
    # planned: a pretext of 10 epochs of 4 steps of 1 s plus 2 s, then 18 s of later stages; budget 63 s
    clock = FakeClock()
    estimate = {"pretext": 42.0, "mine": 5.0, "scan": 8.0, "selflabel": 5.0}
    progress = OverallProgress(estimate, started=0.0, allowance=63.0, budget=63.0, tails={"pretext": 2.0},
                               per_epoch={"pretext": 4.0}, now=clock)
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    with tracking(progress):
        begin_stage("pretext")
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=10, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=epoch_callbacks())
        trainer.fit(Ticking(clock, slowdown), loader)
    epoch_seconds = 4.0 * slowdown
    epochs = round(clock.seconds / epoch_seconds)
    rest = (2.0 + 18.0) * slowdown  # the rest of the run at the same pace
    assert clock.seconds + rest <= 63.0 * 1.1
    if slowdown == 1.0:
        assert epochs == 10
    else:  # stopped early, and only because one more epoch would have overrun
        assert epochs < 10 and clock.seconds + epoch_seconds + rest > 63.0


def test_a_resumed_run_keeps_the_schedule_it_started_with(tmp_path, monkeypatch):
    from test_runstate import array_config, varied

    config = with_values(array_config(tmp_path, varied(40, 40), 3), {"pretext.batch_size": 8})
    run = claim_run_dir(tmp_path / "run")
    seen: list[dict] = []

    def stage(name, fail=False):
        def runner(made):
            config = made.config
            seen.append({"stage": name, "pretext": config.pretext.epochs, "scan": config.scan.epochs,
                         "frozen": config.scan.freeze_backbone})
            if fail:
                raise RuntimeError("interrupted")
            write_json(made.directory / name / "done.json", {"stage": name})
            return {}
        return runner

    monkeypatch.setattr(pipeline, "evaluate_finished", lambda made, stage: {})
    for name in ("pretext", "mine"):
        monkeypatch.setitem(pipeline.STAGE_RUNNERS, name, stage(name))
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "scan", stage("scan", fail=True))
    monkeypatch.setattr(budget, "measure", lambda made: StepCosts(0.001, {s: 0.01 for s in SPLIT}))
    with pytest.raises(RuntimeError, match="interrupted"):
        pipeline.run_pipeline(Run(config, run), time_budget=60.0)
    recorded = json.loads((run / "budget.json").read_text())
    first = seen[0]
    assert first["pretext"] == recorded["epochs"]["pretext"] < config.pretext.epochs

    # the machine now measures ten times slower and the budget differs: a new plan would cut more
    monkeypatch.setattr(budget, "measure", lambda made: StepCosts(0.01, {s: 0.1 for s in SPLIT}))
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "scan", stage("scan"))
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "selflabel", stage("selflabel"))
    seen.clear()
    with logged_messages() as lines:
        pipeline.run_pipeline(Run(config, run), time_budget=120.0)
    assert [s["stage"] for s in seen] == ["scan", "selflabel"]
    assert all(s["pretext"] == first["pretext"] and s["frozen"] == first["frozen"] for s in seen)
    assert any("keeping the schedule this run started with" in line for line in lines)
    assert any("budget 1:00, time left" in line for line in lines)


def test_work_made_without_a_budget_is_not_rescheduled(tmp_path):
    run = claim_run_dir(tmp_path / "run")
    write_json(run / "pretext" / "done.json", {"stage": "pretext"})
    with pytest.raises(BudgetError, match="without a time budget"):
        budget.plan_for_run(Run(load_preset("fashion-mnist"), run), 600.0, lead=True)


def test_a_real_stage_stopped_by_the_deadline_still_finishes(tmp_path):
    from test_runstate import array_config, varied

    from scanlearn.runs.artefacts import is_complete

    config = with_values(array_config(tmp_path, varied(40, 40), 3),
                         {"model.width": 4, "pretext.epochs": 3, "pretext.batch_size": 8, "data.image_size": 16})
    run = claim_run_dir(tmp_path / "run")
    spent = OverallProgress({"pretext": 1.0}, allowance=0.0, budget=1.0)  # the budget is already spent
    with tracking(spent), logged_messages() as lines:
        begin_stage("pretext")
        pipeline.run_stage(Run(config, run), "pretext")
    assert "pretext: stopping after epoch 1 of 3 to keep the time budget (0:00 left)" in lines
    assert is_complete(run, "pretext") and (run / "pretext" / "model.pt").is_file()


def test_a_real_stage_running_faster_than_planned_trains_more_epochs(tmp_path):
    from test_runstate import array_config, varied

    config = with_values(array_config(tmp_path, varied(40, 40), 3),
                         {"model.width": 4, "pretext.epochs": 2, "pretext.batch_size": 8, "data.image_size": 16})
    run = claim_run_dir(tmp_path / "run")
    ample = OverallProgress({"pretext": 1.0}, allowance=3600.0, budget=3600.0, per_epoch={"pretext": 1800.0},
                            ceilings={"pretext": 4}, reserve=60.0)
    epochs = []
    with tracking(ample), logged_messages() as lines:
        begin_stage("pretext")
        with pytest.MonkeyPatch.context() as patch:
            original = Deadline.on_train_epoch_end
            patch.setattr(Deadline, "on_train_epoch_end",
                          lambda self, trainer, module: (epochs.append(trainer.current_epoch),
                                                         original(self, trainer, module)))
            pipeline.run_stage(Run(config, run), "pretext")
    assert epochs == [0, 1, 2, 3] and ample.given_up == {"pretext": -2}
    assert any("running faster than measured, 4 epochs fit the time budget where 2 were planned" in line for line in lines)
