"""Learning-rate schedules and the horizon a time budget shortens."""

from __future__ import annotations

import io
import math

import pytest
import torch

from scanlearn.config import OptimConfig
from scanlearn.engine.lr_schedules import end_schedule_at, lr_schedule


def schedule(epochs: int = 4, steps: int = 40, **optim) -> torch.optim.lr_scheduler.LambdaLR:
    parameter = torch.nn.Parameter(torch.zeros(1))
    return lr_schedule(torch.optim.SGD([parameter], lr=1.0), OptimConfig(**optim), epochs, steps)


def test_cosine_with_warm_up_by_hand():
    horizon = schedule(schedule="cosine", final_lr_ratio=0.1, warmup_epochs=1.0).lr_lambdas[0]
    # 10 warm-up steps of 40, then the cosine over the 30 left, down to 0.1
    assert horizon(0) == pytest.approx(0.1) and horizon(9) == pytest.approx(1.0)
    assert horizon(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert horizon(40) == pytest.approx(0.1)


def test_a_shortened_horizon_continues_from_where_it_was_and_ends_at_the_floor():
    scheduler = schedule(schedule="cosine", final_lr_ratio=0.0)
    horizon = scheduler.lr_lambdas[0]
    before = horizon(20)
    end_schedule_at(scheduler, 2, 3, 4)  # after 2 of 4 epochs, 3 will run: the second half of the cosine over 10 steps
    assert horizon(20) == pytest.approx(before) and horizon(25) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert horizon(30) == pytest.approx(0.0)
    end_schedule_at(scheduler, 2, 4, 3)  # epochs ran faster after all: back to the planned end, from the same point
    assert horizon(30) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi))) and horizon(40) == pytest.approx(0.0)
    end_schedule_at(scheduler, 2, 8, 4)  # faster still: past the planned end, the rest of the decay over 60 steps
    assert horizon(20) == pytest.approx(before) and horizon.total == 80
    assert horizon(50) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi))) and horizon(80) == pytest.approx(0.0)


def test_a_constant_schedule_stays_constant_when_shortened():
    scheduler = schedule(schedule="constant")
    end_schedule_at(scheduler, 1, 2, 4)
    assert [scheduler.lr_lambdas[0](step) for step in (5, 15, 25)] == [1.0, 1.0, 1.0]


def test_the_shortened_horizon_is_saved_and_loads_without_running_code():
    scheduler = schedule(schedule="cosine", final_lr_ratio=0.0)
    end_schedule_at(scheduler, 2, 3, 4)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    resumed = schedule(schedule="cosine", final_lr_ratio=0.0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.lr_lambdas[0](30) == pytest.approx(0.0) and resumed.lr_lambdas[0](25) == pytest.approx(
        scheduler.lr_lambdas[0](25))
