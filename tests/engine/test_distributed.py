"""Data parallelism keeps the maths of the global batch: 2 gloo processes on CPU == 1 process.

The end-to-end check runs ``distributed_worker.py`` (Lightning DDP through the stage modules)
with 1 and with 2 processes and compares per-step losses and final parameters. The unit
checks split one batch into two "ranks" inside one process, with the hooks a real all-gather
or all-reduce would provide, and show that a per-rank computation gives a different answer.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scanlearn.engine import distributed
from scanlearn.errors import ConfigError
from scanlearn.losses import confidence_cross_entropy, entropy_of_distribution, nt_xent_loss, scan_loss
from scanlearn.mining import build_index, mine_neighbors, recall_against_exact
from scanlearn.engine.loaders import GlobalBatchSampler

WORKER = Path(__file__).with_name("distributed_worker.py")
TOLERANCE = 1e-5


def start_worker(tmp: Path, devices: int) -> tuple[subprocess.Popen, Path]:
    """Start the worker with ``devices`` CPU processes; returns the process and its output file."""
    out = tmp / f"world{devices}.pt"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name in (*distributed.RANK_VARIABLES, "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, str(WORKER), str(out), str(devices)], cwd=tmp, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, out


def finish_worker(process: subprocess.Popen, out: Path, retry_on_signal: bool = False) -> dict | None:
    """Wait for a worker (generously: the CPU may be shared) and load its results.

    With ``retry_on_signal`` a worker killed by a signal returns None instead of failing: gloo
    occasionally aborts a process ("terminate called without an active exception", SIGABRT) on a
    loaded 2-core machine, and the caller then runs that worker once more. Wrong results, Python
    errors and a second abort still fail the test.
    """
    try:
        _, errors = process.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("worker did not finish in 20 minutes (a hang in a collective?)")
    if process.returncode < 0 and retry_on_signal:
        return None
    if process.returncode != 0:
        pytest.fail(f"worker failed:\n{errors[-3000:]}")
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    """(one-process results, two-process results) of the same training, run side by side."""
    tmp = tmp_path_factory.mktemp("ddp")
    started = [start_worker(tmp, devices) for devices in (1, 2)]
    results = [finish_worker(process, out, retry_on_signal=True) for process, out in started]
    one, two = (result if result is not None else finish_worker(*start_worker(tmp, devices))
                for result, devices in zip(results, (1, 2)))
    return one, two


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute element difference between two state dicts."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("stage", ["pretext", "scan", "selflabel"])
def test_two_processes_train_exactly_like_one_process(runs, stage):
    one, two = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    losses_1, losses_2 = np.array(one[stage]["losses"]), np.array(two[stage]["losses"])
    assert len(losses_1) == len(losses_2) == 10
    np.testing.assert_allclose(losses_2, losses_1, rtol=0, atol=TOLERANCE, equal_nan=True)
    assert largest_difference(one[stage]["params"], two[stage]["params"]) < TOLERANCE
    assert largest_difference(two[stage]["before"], two[stage]["params"]) > 1e-3


def test_selflabel_counts_confident_samples_over_all_ranks(runs):
    one, two = runs
    assert 0 < two["selflabel"]["confident"] == one["selflabel"]["confident"] < 80


def test_selflabel_without_confident_samples_skips_every_update_on_every_rank(runs):
    _, two = runs
    assert two["unconfident"]["confident"] == 0
    assert largest_difference(two["unconfident"]["before"], two["unconfident"]["params"]) == 0.0


def test_sharded_embedding_gathers_all_rows_in_order(runs):
    one, two = runs
    np.testing.assert_allclose(two["features"], one["features"], atol=1e-6)
    assert two["features"].shape == (40, 16)


def fake_gather(blocks_per_call: list[tuple[torch.Tensor, ...]], rank: int):
    """What an all-gather with gradient gives ``rank``: for each call (view 1, then view 2) every rank's block."""
    calls = iter(blocks_per_call)

    def gather(local: torch.Tensor) -> torch.Tensor:
        blocks = next(calls)
        return torch.cat([local if r == rank else F.normalize(b.float(), dim=1) for r, b in enumerate(blocks)])

    return gather


def test_nt_xent_rank_shares_average_to_the_global_batch_loss_and_gradient():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    full = nt_xent_loss(z1, z2)
    grad_full = torch.autograd.grad(full, (z1, z2))
    halves1, halves2 = z1.split(4), z2.split(4)
    shares = [
        nt_xent_loss(halves1[rank], halves2[rank], gather=fake_gather([halves1, halves2], rank), rank=rank)
        for rank in range(2)
    ]
    ddp = torch.stack(shares).mean()
    grad_ddp = torch.autograd.grad(ddp, (z1, z2))
    assert abs(float((ddp - full).detach())) < 1e-6
    for a, b in zip(grad_full, grad_ddp):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    per_rank = torch.stack([nt_xent_loss(a, b) for a, b in zip(halves1, halves2)]).mean()
    assert abs(float((per_rank - full).detach())) > 0.1, "per-rank negatives would give the same loss: the DDP test would not see them"


def test_scan_entropy_uses_the_global_mean_and_per_rank_entropy_differs():
    torch.manual_seed(0)
    anchors, partners = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3, requires_grad=True)
    full = scan_loss(anchors, partners, 5.0)
    grad_full = torch.autograd.grad(full.total, (anchors, partners))
    means = [a.softmax(1).mean(0) for a in anchors.split(4)]
    shares = []
    for rank, (a, p) in enumerate(zip(anchors.split(4), partners.split(4))):
        def batch_mean(local: torch.Tensor, r: int = rank) -> torch.Tensor:
            return torch.stack([local if s == r else means[s] for s in range(2)]).mean(0)
        shares.append(scan_loss(a, p, 5.0, batch_mean=batch_mean))
    ddp = torch.stack([s.total for s in shares]).mean()
    grad_ddp = torch.autograd.grad(ddp, (anchors, partners))
    assert abs(float((ddp - full.total).detach())) < 1e-6
    assert all(abs(float((s.entropy - full.entropy).detach())) < 1e-6 for s in shares)
    for a, b in zip(grad_full, grad_ddp):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    per_rank = [entropy_of_distribution(m) for m in means]
    assert all(abs(float((h - full.entropy).detach())) > 1e-3 for h in per_rank), "per-rank entropy would go unnoticed"


def test_selflabel_class_weights_count_confident_samples_of_all_ranks():
    torch.manual_seed(0)
    weak = torch.randn(12, 3) * 4
    strong = torch.randn(12, 3, requires_grad=True)
    full = confidence_cross_entropy(weak, strong, threshold=0.6)
    grad_full, = torch.autograd.grad(full.loss, strong)
    counts = [torch.bincount(w.softmax(1).max(1).indices[w.softmax(1).max(1).values > 0.6], minlength=3).float()
              for w in weak.split(6)]
    shares = [
        confidence_cross_entropy(w, s, threshold=0.6, count_reduce=lambda c, r=rank: c + counts[1 - r])
        for rank, (w, s) in enumerate(zip(weak.split(6), strong.split(6)))
    ]
    ddp = sum(s.loss for s in shares)
    grad_ddp, = torch.autograd.grad(ddp, strong)
    assert all(s.num_confident == full.num_confident for s in shares)
    assert abs(float((ddp - full.loss).detach())) < 1e-6
    torch.testing.assert_close(grad_full, grad_ddp, atol=1e-6, rtol=0)
    per_rank = sum(confidence_cross_entropy(w, s, threshold=0.6).loss for w, s in zip(weak.split(6), strong.split(6))) / 2
    assert abs(float((per_rank - full.loss).detach())) > 1e-3


def test_selflabel_rank_without_confident_sample_still_agrees_on_the_branch():
    weak = torch.zeros(4, 3)
    strong = torch.randn(4, 3, requires_grad=True)
    share = confidence_cross_entropy(weak, strong, threshold=0.9, count_reduce=lambda c: c + torch.tensor([5.0, 0, 0]))
    assert share.num_confident == 5
    assert float(share.loss.detach()) == 0.0 and share.loss.requires_grad


def fake_world(monkeypatch, world: int, rank: int) -> None:
    """Make the sampler believe it runs as ``rank`` of ``world`` processes."""
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "rank", lambda: rank)


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_slices_of_each_batch_make_up_the_one_process_batch(monkeypatch, drop_last):
    single = GlobalBatchSampler(22, 8, shuffle=True, seed=3, drop_last=drop_last)
    single.set_epoch(2)
    expected = list(single)
    parts = []
    for rank in range(2):
        fake_world(monkeypatch, 2, rank)
        sampler = GlobalBatchSampler(22, 8, shuffle=True, seed=3, drop_last=drop_last)
        sampler.set_epoch(2)
        parts.append(list(sampler))
        assert len(sampler) == len(parts[-1])
    assert [len(b) for b in parts[0]] == ([4, 4] if drop_last else [4, 4, 3])
    for batch, first, second in zip(expected, *parts):
        assert first + second == batch
    assert len(expected) == len(parts[0])


def test_global_batch_must_split_evenly_over_ranks(monkeypatch):
    fake_world(monkeypatch, 3, 0)
    with pytest.raises(ConfigError, match="divisible by the 3 processes"):
        list(GlobalBatchSampler(20, 8, shuffle=False))


def test_unsharded_loader_gives_every_rank_all_batches(monkeypatch):
    fake_world(monkeypatch, 2, 1)
    assert list(GlobalBatchSampler(5, 2, shuffle=False, shard=False)) == [[0, 1], [2, 3], [4]]


def test_shard_bounds_cover_every_row_once():
    bounds = distributed.shard_bounds(10, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def clustered(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """Gaussian-mixture points around random unit centres."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return (means[rng.integers(0, centres, n)] + rng.normal(scale=0.6 / math.sqrt(dim), size=(n, dim))).astype(np.float32)


def test_ivf_index_recall_against_exact_search():
    points = clustered(4000, 32, 40)
    approx = mine_neighbors(points, 10, index="ivf")
    assert not (approx == np.arange(len(points))[:, None]).any()
    assert recall_against_exact(points, approx, queries=300) >= 0.95
    exact = mine_neighbors(points, 10)
    assert recall_against_exact(points, exact, queries=300) == 1.0


def test_unknown_index_is_a_config_error():
    with pytest.raises(ConfigError, match="flat, ivf"):
        build_index(np.eye(4, dtype=np.float32), kind="hnsw")


def test_one_process_runtime_launches_nothing():
    from scanlearn.config import RuntimeConfig

    runtime = RuntimeConfig(accelerator="cpu", devices="1")
    assert not distributed.wants_processes(runtime)
    assert distributed.wants_processes(RuntimeConfig(accelerator="cpu", devices="2"))
    assert distributed.wants_processes(RuntimeConfig(accelerator="cpu", devices="1", num_nodes=2))
    distributed.launch(runtime)
    assert distributed.world_size() == 1 and distributed.rank() == 0
