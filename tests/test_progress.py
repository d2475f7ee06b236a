"""The whole-run estimate and the overall progress line."""

from __future__ import annotations

import logging

import pytest

from scanlearn.config import load_preset, with_values
from scanlearn.engine.progress import OverallProgress, begin_stage, clock, epoch_callbacks, tracking
from scanlearn.run_estimate import HEAD_IMAGE_EPOCH_S, MINE_START_S, PER_HEAD_IMAGE_EPOCH_S, StepCosts, stage_seconds


def test_clock_formats_minutes_and_hours():
    assert clock(0) == "0:00" and clock(61.4) == "1:01" and clock(3725) == "1:02:05"


def test_stage_seconds_count_image_passes_by_hand():
    config = with_values(load_preset("photos"), {"pretext.epochs": 2, "pretext.batch_size": 100, "scan.epochs": 3,
                                                 "selflabel.epochs": 4})
    costs = StepCosts(embed=0.01, train={"pretext": 0.1, "scan": 0.2, "selflabel": 0.3})
    seconds = stage_seconds(config, 250, costs)
    assert seconds["pretext"] == pytest.approx(2 * 200 * 2 * 0.1 + 2 * 250 * 0.01)
    assert seconds["mine"] == pytest.approx(MINE_START_S + 2 * 250 * 0.01)
    described = StepCosts(embed=0.01, train=costs.train, describe=0.002)  # descriptors of the train and test splits
    assert stage_seconds(config, 250, described)["mine"] == pytest.approx(MINE_START_S + 2 * 250 * 0.01 + 2 * 250 * 0.002)
    assert seconds["scan"] == pytest.approx(3 * 250 * 2 * 0.2 + 2 * 250 * 0.01)
    assert seconds["selflabel"] == pytest.approx(4 * 250 * (0.01 + 0.3) + 2 * 250 * 0.01)
    config = with_values(config, {"scan.freeze_backbone": True, "selflabel.freeze_backbone": True,
                                  "selflabel.cached_views": 4, "scan.num_heads": 50})
    frozen = stage_seconds(config, 250, costs)
    assert frozen["scan"] == pytest.approx(250 * 0.01 + 3 * 250 * (HEAD_IMAGE_EPOCH_S + 50 * PER_HEAD_IMAGE_EPOCH_S))
    assert frozen["selflabel"] == pytest.approx(4 * 250 * 0.01 + 4 * 250 * (HEAD_IMAGE_EPOCH_S + PER_HEAD_IMAGE_EPOCH_S))
    # the runs the constants come from: 50 heads, 30 epochs on 6,129 images took 126 s; 100 epochs on 600, 50 s
    heads = stage_seconds(with_values(config, {"scan.epochs": 30}), 6129, StepCosts(0.0, costs.train))["scan"]
    assert 100 < heads < 160
    assert 35 < stage_seconds(with_values(config, {"scan.epochs": 100}), 600, StepCosts(0.0, costs.train))["scan"] < 65
    small = stage_seconds(config, 60, costs)  # fewer images than a batch: one batch of 60 per epoch, not none
    assert small["pretext"] == pytest.approx(2 * 60 * 2 * 0.1 + 2 * 60 * 0.01)
    imported = stage_seconds(with_values(config, {"model.pretext_checkpoint": "weights.pt"}), 250, costs)
    assert imported["pretext"] == pytest.approx(2 * 250 * 0.01)  # weights read from a file: scoring only


def test_overall_line_counts_stages_and_rescales_by_the_pace_seen(caplog: pytest.LogCaptureFixture):
    progress = OverallProgress({"pretext": 100.0, "mine": 10.0, "scan": 50.0, "selflabel": 40.0})
    assert progress.summary().startswith("about 3:20 in all (pretext 1:40, mine 0:10")
    progress.stage, progress.stage_started = "pretext", 1000.0
    assert progress.remaining(0.0) == pytest.approx(200.0)
    assert progress.remaining(0.25, now=1030.0) == pytest.approx(90.0 + 100.0)
    progress.spent = {"pretext": 200.0}
    progress.stage = "mine"
    assert progress.pace() == pytest.approx(2.0) and progress.remaining(0.0) == pytest.approx(200.0)
    with caplog.at_level(logging.INFO, logger="scanlearn"):
        progress.show(0.0)
    assert "stage 2/4 mine (0%)" in caplog.text and "remaining about 3:20" in caplog.text


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
    assert progress.record() == {
        "pretext": {"estimated_s": 20.0, "actual_s": 30.0, "actual_over_estimate": 1.5},
        "mine": {"estimated_s": 10.0, "actual_s": 5.0, "actual_over_estimate": 0.5},
    }
