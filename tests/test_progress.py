"""The whole-run estimate and the overall progress line."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from dataclasses import replace

import numpy as np
import pytest
import torch

import scanlearn.run_estimate as run_estimate
from scanlearn.config import load_preset, OptimConfig, with_values
from scanlearn.data.images import TensorImageSet
from scanlearn.engine.features import CLEAN, FeatureCache
from scanlearn.engine.run import Run
from scanlearn.engine.lr_schedules import lr_schedule
from scanlearn.engine.progress import (Deadline, EpochProgress, OverallProgress, begin_stage, clock, epoch_callbacks,
                                      tracking)
from scanlearn.engine.execution import plan_execution
from scanlearn.models import build_backbone
from scanlearn.run_estimate import (BLOCK_MAP_POWER, BLOCK_MAP_SAMPLE, block_map_probe, FitCosts, StepCosts, fit_probe,
                                    head_fits, held_views, measure, pretext_step, sample_batch, SEARCH_SAMPLE,
                                    search_probe, search_seconds, stage_seconds)


def test_clock_formats_minutes_and_hours():
    assert clock(0) == "0:00" and clock(61.4) == "1:01" and clock(3725) == "1:02:05"


BLOCK_MAP = 5.5  # seconds of one fit of the descriptors' block map
COSTS = StepCosts(embed=0.01, train={"pretext": 0.1, "scan": 0.2, "selflabel": 0.3}, describe=0.002,
                  augment={"scan": 0.003, "selflabel": 0.004},
                  fits={"scan": FitCosts(start=0.5, step=0.1, epoch=0.05, score=1e-4),
                        "selflabel": FitCosts(start=0.5, step=0.007, epoch=0.008)}, block_map=BLOCK_MAP,
                  search=1e-6, test_images=50)
SEARCHED = 1e-6 * (250 ** 2 + 50 ** 2)  # exact search of the 250 train rows among themselves, the 50 test rows likewise


def test_stage_seconds_count_image_passes_by_hand():
    config = with_values(load_preset("photos"), {"pretext.epochs": 2, "pretext.batch_size": 100, "scan.epochs": 3,
                                                 "scan.batch_size": 100, "selflabel.epochs": 4,
                                                 "selflabel.batch_size": 100, "scan.freeze_backbone": False,
                                                 "selflabel.freeze_backbone": False, "scan.select_epoch": True})
    seconds = stage_seconds(config, 250, COSTS)
    assert seconds["pretext"] == pytest.approx(2 * 200 * 2 * 0.1 + (250 + 50) * 0.01)
    # train (250) and test (50) splits embedded and described; the descriptors' block map; each split's search
    assert seconds["mine"] == pytest.approx(300 * 0.01 + 300 * 0.002 + BLOCK_MAP + SEARCHED)
    no_descriptors = with_values(config, {"mine.descriptors": []})
    assert stage_seconds(no_descriptors, 250, replace(COSTS, describe=0.0))["mine"] == pytest.approx(
        300 * 0.01 + SEARCHED)
    # each epoch: 2 steps of 100 (the last partial batch dropped) at the fit's step, its overhead, 2 views of every
    # image through the network and the selection split scored through it; then evaluation and the k-means check
    scan_epoch = 2 * 0.1 + 0.05 + 250 * 2 * 0.2 + 250 * 0.01
    assert seconds["scan"] == pytest.approx(0.5 + 3 * scan_epoch + 300 * 0.01 + BLOCK_MAP)
    selflabel_epoch = 2 * 0.007 + 0.008 + 250 * (0.01 + 0.3)
    assert seconds["selflabel"] == pytest.approx(0.5 + 4 * selflabel_epoch + 300 * 0.01)
    small = stage_seconds(config, 60, COSTS)  # fewer images than a batch: one batch of 60 per epoch, not none
    assert small["pretext"] == pytest.approx(2 * 60 * 2 * 0.1 + (60 + 50) * 0.01)
    small_epoch = 0.1 + 0.05 + 60 * 2 * 0.2 + 60 * 0.01
    assert small["scan"] == pytest.approx(0.5 + 3 * small_epoch + (60 + 50) * 0.01 + BLOCK_MAP)
    imported = stage_seconds(with_values(config, {"model.pretext_checkpoint": "weights.pt"}), 250, COSTS)
    assert imported["pretext"] == pytest.approx(300 * 0.01)  # weights read from a file: scoring only


def test_the_block_map_is_timed_on_a_sample_and_scaled_to_the_images(monkeypatch):
    monkeypatch.setattr(run_estimate, "timed", lambda step, repeats=2: 0.1)
    assert block_map_probe([8, 4], 100) == pytest.approx(0.1)  # fewer images than the sample: timed as they are
    assert block_map_probe([8, 4], 4 * BLOCK_MAP_SAMPLE) == pytest.approx(0.1 * 4 ** BLOCK_MAP_POWER)


def test_the_search_is_timed_on_a_sample_by_the_runs_route_and_scaled_by_pairs(monkeypatch):
    monkeypatch.setattr(run_estimate, "timed", lambda step, repeats=2: step() or 0.5)
    routes = []
    monkeypatch.setattr(run_estimate, "search_neighbors", lambda rows, k, index: routes.append(("faiss", rows.shape, k)))
    monkeypatch.setattr(run_estimate, "bf16_exact_neighbors", lambda rows, k: routes.append(("bf16", rows.shape, k)))
    mine = load_preset("fashion-mnist").mine
    per_pair = search_probe(224, 60_000, mine)
    config = load_preset("fashion-mnist")
    costs = StepCosts(embed=0.0, train={}, search=per_pair)
    # 0.5 s on the 4,096-row sample, so 60,000 rows cost (60,000 / 4,096)^2 times as much
    assert search_seconds(config, 60_000, costs) == pytest.approx(0.5 * (60_000 / SEARCH_SAMPLE) ** 2)
    assert search_probe(224, 100, mine) == pytest.approx(0.5 / 100 ** 2)  # fewer rows than the sample: all of them
    assert routes == [("faiss", (SEARCH_SAMPLE, 224), 20), ("faiss", (100, 224), 20)]
    monkeypatch.setattr(run_estimate, "uses_bf16_search", lambda n, index: n >= 20_000)  # a CPU with native bf16
    search_probe(224, 60_000, mine)
    search_probe(224, 100, mine)
    assert routes[2:] == [("bf16", (SEARCH_SAMPLE, 224), 20), ("faiss", (100, 224), 20)]


def test_heads_on_cached_features_cost_their_measured_fit_and_the_views_to_embed():
    config = with_values(load_preset("photos"), {"scan.epochs": 100, "scan.batch_size": 128, "scan.num_heads": 50,
                                                 "scan.cached_views": 2, "selflabel.epochs": 10,
                                                 "selflabel.batch_size": 128, "selflabel.cached_views": 4,
                                                 "scan.freeze_backbone": True, "selflabel.freeze_backbone": True})
    seconds = stage_seconds(config, 1080, COSTS)
    # clean features and 2 augmented views embedded; 8 steps an epoch, each epoch scoring all 1,080 images
    embedded = 1080 * 0.01 + 2 * 1080 * (0.01 + 0.003)
    assert seconds["scan"] == pytest.approx(embedded + 0.5 + 100 * (8 * 0.1 + 0.05 + 1080 * 1e-4) + BLOCK_MAP)
    assert seconds["selflabel"] == pytest.approx(4 * 1080 * (0.01 + 0.004) + 0.5 + 10 * (8 * 0.007 + 0.008))
    once = stage_seconds(with_values(config, {"scan.select_epoch": False}), 1080, COSTS)["scan"]
    assert once == pytest.approx(embedded + 0.5 + 100 * (8 * 0.1 + 0.05) + 1080 * 1e-4 + BLOCK_MAP)
    # what the cache already holds is read, not embedded: here everything (a rerun on the same pretext weights)
    held = replace(COSTS, held={"clean": 1, "scan": 2, "selflabel": 4})
    seconds = stage_seconds(config, 1080, held)
    assert seconds["scan"] == pytest.approx(0.5 + 100 * (8 * 0.1 + 0.05 + 1080 * 1e-4) + BLOCK_MAP)
    assert seconds["selflabel"] == pytest.approx(0.5 + 10 * (8 * 0.007 + 0.008))
    pretrained = with_values(config, {"model.backbone": "torchvision:resnet50"})
    searched = 1e-6 * (1080 ** 2 + 50 ** 2)
    described = (1080 + 50) * 0.002
    assert stage_seconds(pretrained, 1080, COSTS)["mine"] == pytest.approx(1080 * 0.01 + described + BLOCK_MAP + searched)
    assert stage_seconds(pretrained, 1080, held)["mine"] == pytest.approx(described + BLOCK_MAP + searched)


def test_the_head_search_costs_its_epochs_of_steps_and_one_scoring_of_every_image():
    config = with_values(load_preset("photos"), {"scan.epochs": 100, "scan.batch_size": 128, "scan.num_heads": 5,
                                                 "scan.cached_views": 0, "scan.freeze_backbone": True,
                                                 "scan.select_epoch": False, "scan.head_search": 20,
                                                 "scan.head_search_epochs": 7})
    search = FitCosts(step=0.03, score=2e-5)
    costs = replace(COSTS, fits=COSTS.fits | {"search": search}, held={"clean": 1})
    without = stage_seconds(with_values(config, {"scan.head_search": 0}), 1080, costs)["scan"]
    # 8 steps of 128 an epoch (1,080 rows, the last partial batch dropped), 7 epochs, then 1,080 rows scored once
    assert stage_seconds(config, 1080, costs)["scan"] - without == pytest.approx(7 * 8 * 0.03 + 1080 * 2e-5)
    # through the whole network the search's heads read clean features, embedded unless the cache holds them
    unfrozen = with_values(config, {"scan.freeze_backbone": False, "selflabel.freeze_backbone": False})
    unheld = replace(costs, held={})
    plain = stage_seconds(with_values(unfrozen, {"scan.head_search": 0}), 1080, unheld)["scan"]
    assert stage_seconds(unfrozen, 1080, unheld)["scan"] - plain == pytest.approx(
        7 * 8 * 0.03 + 1080 * 2e-5 + 1080 * 0.01)


def test_the_head_search_probe_times_one_epoch_of_linear_heads(monkeypatch):
    config = with_values(load_preset("photos"), {"num_clusters": 3, "mine.k": 4, "scan.batch_size": 4,
                                                 "scan.num_heads": 2, "scan.head_search": 6})
    fits = []
    real = run_estimate.fit_linear_heads

    def counted(features, neighbors, clusters, num_heads, epochs, *args, **kwargs):
        fits.append((features.shape, num_heads, epochs))
        return real(features, neighbors, clusters, num_heads, epochs, *args, **kwargs)

    monkeypatch.setattr(run_estimate, "fit_linear_heads", counted)
    monkeypatch.setattr(run_estimate, "fit_probe", lambda *args, **kwargs: FitCosts(1.0, 2.0, 3.0, 4.0))
    search = head_fits(config, 8)["search"]
    assert fits == [((run_estimate.PROBE_STEPS * 4, 8), 6, 1)] * run_estimate.PROBE_EPOCHS
    assert search.step > 0 and search.score > 0 and search.start == search.epoch == 0.0
    assert "search" not in head_fits(with_values(config, {"scan.head_search": 0}), 8)


def test_the_fit_probe_times_a_real_fit_of_the_heads():
    config = with_values(load_preset("photos"), {"num_clusters": 3, "mine.k": 4, "mine.val_k": 2})
    scored = fit_probe(config, dim=8, heads=3, batch_size=4, scored=True)
    assert scored.start > 0 and scored.step > 0 and scored.score > 0
    plain = fit_probe(config, dim=8, heads=1, batch_size=4, scored=False)
    assert plain.step > 0 and plain.score == 0.0


def test_a_step_of_the_fit_probe_includes_fetching_its_batch(monkeypatch):
    config = with_values(load_preset("photos"), {"num_clusters": 3, "mine.k": 4, "mine.val_k": 2})
    quick = fit_probe(config, dim=8, heads=1, batch_size=4, scored=False)
    real = run_estimate.rows

    def slow_rows(features, idx):
        time.sleep(0.05)
        return real(features, idx)

    monkeypatch.setattr(run_estimate, "rows", slow_rows)
    slow = fit_probe(config, dim=8, heads=1, batch_size=4, scored=False)
    assert slow.step >= 0.05 > quick.step  # a batch of pairs fetches its rows once


def test_heads_on_the_mined_space_are_probed_through_a_map_of_its_blocks(monkeypatch):
    config = with_values(load_preset("fashion-mnist"), {"scan.head_features": "mined", "scan.freeze_backbone": True,
                                                        "selflabel.freeze_backbone": True})
    backbone = build_backbone("resnet18-cifar", width=4, in_channels=1)
    dim, input_map = run_estimate.heads_input(config, backbone)
    assert dim == sum(backbone.multiscale_widths(config.mine.grid)) == input_map.offset.numel()
    assert input_map.out_widths == backbone.multiscale_widths(config.mine.grid)
    pooled = with_values(config, {"scan.head_features": "backbone"})
    assert run_estimate.heads_input(pooled, backbone) == (backbone.out_dim, None)
    mined_pooled = with_values(config, {"mine.features": "backbone"})  # the mined space of the pooled features
    dim, input_map = run_estimate.heads_input(mined_pooled, backbone)
    assert dim == backbone.out_dim and input_map.out_widths == [backbone.out_dim]


def test_one_stalled_epoch_of_the_fit_probe_is_not_what_it_reports(monkeypatch):
    config = with_values(load_preset("photos"), {"num_clusters": 3, "mine.k": 4, "mine.val_k": 2})
    calls, real = [], run_estimate.frozen_head_probabilities

    def stalling(heads, features):
        calls.append(1)
        if len(calls) == 2:  # the scoring after the first timed epoch stalls for 0.3 s
            time.sleep(0.3)
        return real(heads, features)

    monkeypatch.setattr(run_estimate, "frozen_head_probabilities", stalling)
    scored = fit_probe(config, dim=8, heads=3, batch_size=4, scored=True)
    assert len(calls) == run_estimate.PROBE_EPOCHS >= 3
    assert 0 < scored.score * 8 < 0.1 and scored.epoch < 0.1  # 8 rows scored: the stall alone would read 0.3 s


def test_the_pretext_is_timed_as_a_whole_step_with_its_optimiser(monkeypatch, tmp_path):
    config = with_values(load_preset("photos"), {"num_clusters": 3, "model.width": 4, "data.image_size": 8})
    run = Run(config, tmp_path)
    run.loaded.splits[("train", config.data, run.spec)] = TensorImageSet(
        torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8), np.zeros(6, int))
    steps = []
    real = run_estimate.make_optimizer

    def counted(params, optim):
        optimizer = real(params, optim)
        optimizer.register_step_post_hook(lambda *args: steps.append(1))
        return optimizer

    monkeypatch.setattr(run_estimate, "make_optimizer", counted)
    batch = sample_batch(run.split("train"), 4)
    seconds = pretext_step(run, plan_execution(config.runtime), batch)
    assert seconds > 0 and len(steps) == 2  # timed twice (the first warms up), each with the optimiser's step


def test_measure_uses_the_fits_and_what_the_cache_holds(monkeypatch, tmp_path):
    config = with_values(load_preset("photos"), {"num_clusters": 3, "model.width": 4, "data.image_size": 8,
                                                 "mine.descriptors": [], "scan.cached_views": 1,
                                                 "selflabel.cached_views": 2, "scan.freeze_backbone": True})
    images = TensorImageSet(torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8), np.zeros(6, int))
    run = Run(config, tmp_path)
    run.loaded.splits[("train", config.data, run.spec)] = images  # the run's training split, without files
    run.loaded.splits[("test", config.data, run.spec)] = images.subset([0, 1, 2, 3])
    fits = {"scan": FitCosts(1.0, 2.0, 3.0, 4.0)}
    monkeypatch.setattr(run_estimate, "head_fits", lambda config, dim, input_map=None: fits)
    measured = measure(run)
    assert measured.held == {} and measured.fits == fits  # no pretext weights yet: nothing known cached
    assert measured.test_images == 4 and measured.search > 0
    (tmp_path / "pretext").mkdir()
    (tmp_path / "pretext" / "model.pt").write_bytes(b"weights")
    (tmp_path / "pretext" / "done.json").write_text("{}")
    cache = FeatureCache(run)
    cache.entry(images.subset([0, 1]), CLEAN, lambda: np.zeros((2, 2), np.float32))  # other images: not these
    cache.entry(images, cache.augmented_view(config.selflabel.augment, 1), lambda: np.zeros((6, 2), np.float32))
    assert measure(run).held == {"clean": 0, "scan": 0, "selflabel": 1}
    cache.entry(images, CLEAN, lambda: np.zeros((6, 2), np.float32))
    assert held_views(run) == {"clean": 1, "scan": 0, "selflabel": 1}


def test_overall_line_counts_stages_and_rescales_by_the_pace_seen(caplog: pytest.LogCaptureFixture):
    progress = OverallProgress({"pretext": 100.0, "mine": 10.0, "scan": 50.0, "selflabel": 40.0})
    assert progress.summary().startswith("about 3:20 in all (pretext 1:40, mine 0:10")
    progress.stage, progress.stage_started = "pretext", 1000.0
    assert progress.remaining(0.0) == pytest.approx(200.0)
    assert progress.remaining(0.25, now=1030.0) == pytest.approx(90.0 + 100.0)
    progress.epochs_started = 1020.0  # 20 s of embedding before the first epoch: not extrapolated with the epochs
    assert progress.remaining(0.25, now=1030.0) == pytest.approx(30.0 + 100.0)
    progress.spent = {"pretext": 200.0}
    progress.stage = "mine"
    assert progress.pace() == pytest.approx(2.0) and progress.remaining(0.0) == pytest.approx(200.0)
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        progress.show(0.0)
    assert "stage 2/4 mine (0%)" in caplog.text and "remaining about 3:20" in caplog.text


def test_the_first_epoch_of_a_stage_marks_where_its_extrapolation_starts():
    clock_at = [5.0]
    progress = OverallProgress({"scan": 10.0}, now=lambda: clock_at[0])
    progress.begin("scan")
    clock_at[0] = 12.0
    EpochProgress(progress).on_train_epoch_start(SimpleNamespace(current_epoch=0, is_global_zero=True), None)
    assert progress.stage_started == 5.0 and progress.epochs_started == 12.0
    assert progress.remaining(0.5, now=16.0) == pytest.approx(4.0)  # 4 s of epochs for half: 4 s more
    progress.begin("selflabel")  # a new stage forgets the old one's epochs
    assert progress.epochs_started is None


def test_stage_trainers_get_the_callbacks_only_inside_tracking(caplog: pytest.LogCaptureFixture):
    assert epoch_callbacks() == []
    progress = OverallProgress({"pretext": 10.0})
    with tracking(progress), caplog.at_level(logging.INFO, logger="scanlearn"):
        assert [type(c).__name__ for c in epoch_callbacks()] == ["EpochProgress", "Deadline"]
        begin_stage("pretext")
    assert progress.stage == "pretext" and "stage 1/4 pretext" in caplog.text
    assert epoch_callbacks() == []


def test_no_line_at_a_stage_start_without_an_estimate(caplog: pytest.LogCaptureFixture):
    progress = OverallProgress({})
    with tracking(progress), caplog.at_level(logging.INFO, logger="scanlearn"):
        begin_stage("pretext")
    assert progress.stage == "pretext" and "overall" not in caplog.text


def test_timing_record_has_each_stage_estimate_actual_and_ratio():
    clock = [0.0]
    progress = OverallProgress({"pretext": 20.0, "mine": 10.0}, started=0.0, now=lambda: clock[0])
    progress.begin("pretext")
    clock[0] = 30.0
    progress.begin("mine")
    clock[0] = 35.0
    progress.end()
    # mine's estimate at its start: 10 s at the pretext's pace, 30 / 20
    assert progress.record() == {
        "pretext": {"estimated_s": 20.0, "actual_s": 30.0, "actual_over_estimate": 1.5,
                    "estimated_at_start_s": 20.0, "actual_over_estimate_at_start": 1.5,
                    "estimated_work_done_s": 20.0, "actual_over_work_done": 1.5},
        "mine": {"estimated_s": 10.0, "actual_s": 5.0, "actual_over_estimate": 0.5,
                 "estimated_at_start_s": 15.0, "actual_over_estimate_at_start": 0.333,
                 "estimated_work_done_s": 10.0, "actual_over_work_done": 0.5},
    }


class FakeTrainer:
    """The parts of a Lightning trainer the deadline reads and sets; ``max_epochs`` follows the fit loop's."""

    def __init__(self, max_epochs: int, scheduler) -> None:
        self.current_epoch, self.should_stop = 0, False
        self.fit_loop = SimpleNamespace(max_epochs=max_epochs)
        self.lr_scheduler_configs = [SimpleNamespace(scheduler=scheduler)]
        self.strategy = SimpleNamespace(reduce=lambda value, reduce_op: value)

    @property
    def max_epochs(self) -> int:
        return self.fit_loop.max_epochs


def test_a_stage_that_cannot_afford_its_epochs_is_shortened_and_paced_on_the_epochs_it_ran(
        caplog: pytest.LogCaptureFixture):
    clock = [0.0]
    # pretext planned at 20 s outside its epochs and 4 epochs of 20 s (10 steps each); mine 10 s; 130 s allowed
    progress = OverallProgress({"pretext": 100.0, "mine": 10.0}, started=0.0, now=lambda: clock[0], allowance=130.0,
                               budget=130.0, tails={"pretext": 20.0, "mine": 10.0}, per_epoch={"pretext": 20.0})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, OptimConfig(schedule="cosine", final_lr_ratio=0.0), 4, 40)
    trainer, deadline = FakeTrainer(4, scheduler), Deadline(progress)
    progress.begin("pretext")
    deadline.on_train_start(trainer, None)
    for epoch, start in enumerate([20.0, 44.0, 68.0]):
        trainer.current_epoch, clock[0] = epoch, start
        deadline.on_train_epoch_start(trainer, None)
        clock[0] = start + 24.0
        with caplog.at_level(logging.INFO, logger="scanlearn"):
            deadline.on_train_epoch_end(trainer, None)
        if epoch == 0:
            # at 44 s, epochs of 24 s: the 20 s outside the epochs and mine, at that pace, take 36 s and leave 50 s
            # for 2 more epochs: 3 of 4 fit, and the cosine left (from a quarter of the way) ends at step 30:
            # 0.5 (1 + cos(pi / 4)), then 0.5 (1 + cos(pi (0.25 + 0.75 / 2))), then 0
            assert trainer.max_epochs == 3 and "3 of 4 epochs fit the time budget" in caplog.text
            assert [round(scheduler.lr_lambdas[0](step), 4) for step in (10, 20, 30)] == [0.8536, 0.3087, 0.0]
    assert not trainer.should_stop and trainer.max_epochs == 3 and progress.given_up == {"pretext": 1}
    clock[0] = 96.0
    progress.begin("mine")
    # 96 s for the work of 20 + 3 x 20 = 80 s planned: pace 1.2, not the 0.96 of 96 s against the whole 100
    assert progress.pace() == pytest.approx(1.2) and progress.rescaled["mine"] == pytest.approx(12.0)
    clock[0] = 108.0
    progress.end()
    pretext = progress.record()["pretext"]
    assert pretext["estimated_work_done_s"] == 80.0 and pretext["actual_over_work_done"] == 1.2


def test_a_shortened_stage_gets_its_epochs_back_when_later_ones_run_faster():
    clock = [0.0]
    progress = OverallProgress({"pretext": 100.0}, started=0.0, now=lambda: clock[0], allowance=150.0, budget=150.0,
                               tails={"pretext": 20.0}, per_epoch={"pretext": 20.0})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, OptimConfig(schedule="cosine", final_lr_ratio=0.0), 4, 40)
    trainer, deadline = FakeTrainer(4, scheduler), Deadline(progress)
    progress.begin("pretext")
    deadline.on_train_start(trainer, None)
    ends = []
    for epoch, (start, length) in enumerate([(20.0, 30.0), (50.0, 12.0), (62.0, 12.0)]):
        trainer.current_epoch, clock[0] = epoch, start
        deadline.on_train_epoch_start(trainer, None)
        clock[0] = start + length
        deadline.on_train_epoch_end(trainer, None)
        ends.append(trainer.max_epochs)
    # after a 30-s epoch (pace 1.5): 100 s left, less 30 s outside the epochs, buys 2 more: 3 of 4;
    # after a 12-s one, at their mean of 21 s (pace 1.05): 88 s left, less 21 s, buys 3 more: all 4 again
    assert ends == [3, 4, 4] and progress.given_up == {"pretext": 0} and scheduler.lr_lambdas[0].total == 40


@pytest.mark.parametrize("allowance, ceiling, grown", [(100.0, 10, 5), (1000.0, 6, 6), (1000.0, 4, 4)])
def test_a_stage_faster_than_planned_grows_up_to_its_ceiling_leaving_the_reserve(allowance, ceiling, grown,
                                                                                 caplog: pytest.LogCaptureFixture):
    clock = [0.0]
    # 4 epochs of 20 s planned, 20 s outside them; the epochs take 10 s; 10 s of reserve stay unspent.
    # allowance 100: after epoch 1 (at 30 s) 70 s are left, less the reserve and the 20 s outside: 4 more, 5 in all
    progress = OverallProgress({"pretext": 100.0}, started=0.0, now=lambda: clock[0], allowance=allowance,
                               budget=allowance, tails={"pretext": 20.0}, per_epoch={"pretext": 20.0},
                               ceilings={"pretext": ceiling}, reserve=10.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, OptimConfig(schedule="cosine", final_lr_ratio=0.0), 4, 40)
    trainer, deadline = FakeTrainer(4, scheduler), Deadline(progress)
    progress.begin("pretext")
    deadline.on_train_start(trainer, None)
    epoch = 0
    while epoch < trainer.max_epochs:
        trainer.current_epoch, clock[0] = epoch, 20.0 + 10.0 * epoch
        deadline.on_train_epoch_start(trainer, None)
        clock[0] += 10.0
        with caplog.at_level(logging.INFO, logger="scanlearn"):
            deadline.on_train_epoch_end(trainer, None)
        epoch += 1
    assert epoch == grown and not trainer.should_stop and progress.given_up.get("pretext", 0) == 4 - grown
    assert scheduler.lr_lambdas[0].total == 10 * grown and scheduler.lr_lambdas[0](10 * grown) == pytest.approx(0.0)
    assert ("running faster than measured" in caplog.text) == (grown > 4)


def test_one_slow_short_epoch_does_not_multiply_the_rest_of_the_run():
    clock = [0.0]
    # pretext and mine ran as estimated (110 s); SCAN's epochs were planned at 1 s, its first takes 10 s. Paced on
    # that epoch alone the 10 s after SCAN's epochs and self-labelling's 40 s would take 500 s and stop SCAN; paced on
    # all the work timed (120 s for 111 s planned) they take 54 s, and 2 more epochs of 10 s fit the 80 s left.
    progress = OverallProgress({"pretext": 100.0, "mine": 10.0, "scan": 20.0, "selflabel": 40.0}, started=0.0,
                               now=lambda: clock[0], allowance=200.0, budget=200.0, tails={"scan": 10.0},
                               per_epoch={"scan": 1.0})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    trainer = FakeTrainer(10, lr_schedule(optimizer, OptimConfig(schedule="constant"), 10, 100))
    deadline = Deadline(progress)
    for stage, start in (("pretext", 0.0), ("mine", 100.0), ("scan", 110.0)):
        clock[0] = start
        progress.begin(stage)
    deadline.on_train_start(trainer, None)
    deadline.on_train_epoch_start(trainer, None)
    clock[0] = 120.0
    deadline.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop and trainer.max_epochs == 3 and progress.given_up == {"scan": 7}


def test_a_stage_with_no_epoch_left_to_afford_stops(caplog: pytest.LogCaptureFixture):
    clock = [0.0]
    progress = OverallProgress({"pretext": 100.0}, started=0.0, now=lambda: clock[0], allowance=60.0, budget=60.0,
                               tails={"pretext": 20.0}, per_epoch={"pretext": 20.0})
    trainer, deadline = FakeTrainer(4, None), Deadline(progress)
    progress.begin("pretext")
    deadline.on_train_start(trainer, None)
    clock[0] = 20.0
    deadline.on_train_epoch_start(trainer, None)
    clock[0] = 44.0  # 16 s left; the 20 s outside the epochs, at a pace of 1.2, take 24: no further epoch fits
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        deadline.on_train_epoch_end(trainer, None)
    assert trainer.should_stop and progress.given_up == {"pretext": 3} and "stopping after epoch 1 of 4" in caplog.text
