"""Neighbour mining on points whose neighbours are known."""

import numpy as np
import pytest
import torch

from scanlearn import mining
from scanlearn.engine.execution import cpu_has_native_bf16
from scanlearn.mining import drop_self, far_from, mine_neighbors, neighbor_precision


def test_neighbors_on_a_circle_are_the_adjacent_points():
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points = np.stack([np.cos(angles), np.sin(angles)], 1) * 3.0
    neighbors = mine_neighbors(points, 2)
    for i, row in enumerate(neighbors):
        assert set(row) == {(i - 1) % 12, (i + 1) % 12}


def test_neighbors_exclude_self_and_use_cosine_not_euclid():
    points = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 1.0], [0.1, 5.0]])
    neighbors = mine_neighbors(points, 1)
    assert neighbors[:, 0].tolist() == [1, 0, 3, 2]


def test_drop_self_when_self_not_returned():
    idx = np.array([[0, 1, 2], [2, 0, 3]])
    assert drop_self(idx).tolist() == [[1, 2], [2, 0]]


def test_neighbor_precision_fraction_of_same_label():
    neighbors = np.array([[1, 2], [0, 2], [0, 1]])
    targets = np.array([0, 0, 1])
    assert neighbor_precision(neighbors, targets) == pytest.approx(2 / 6)


def test_too_many_neighbors_rejected():
    with pytest.raises(ValueError, match="neighbours"):
        mine_neighbors(np.eye(3), 3)


# ----------------------------------------------------------------------------- exact search via bf16
bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bf16 matmul")


def faiss_neighbors(points: np.ndarray, k: int) -> np.ndarray:
    """The reference: faiss IndexFlatIP top-(k+1), self dropped."""
    _, idx = mining.knn_search(points, points, k + 1)
    return drop_self(idx)


def float64_similarity(points: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cosine similarity of points[rows[i]] to points[cols[i, j]] in float64, from the same unit rows faiss sees."""
    unit = mining.l2_normalize(points).astype(np.float64)
    return np.einsum("id,ijd->ij", unit[rows], unit[cols])


def assert_same_neighbour_sets(points: np.ndarray, got: np.ndarray, ref: np.ndarray, tie: float = 1e-6) -> int:
    """Every row's set equals the reference's, except swaps between neighbours whose similarities tie within ``tie``.

    Returns the number of rows that differ (by ties only).
    """
    differ = np.nonzero((np.sort(got, axis=1) != np.sort(ref, axis=1)).any(axis=1))[0]
    for row in differ:
        ours, theirs = np.setdiff1d(got[row], ref[row]), np.setdiff1d(ref[row], got[row])
        sims = float64_similarity(points, np.array([row, row]), np.stack([ours, theirs]))
        assert np.ptp(sims) <= tie, f"row {row}: {ours} ({sims[0]}) vs faiss {theirs} ({sims[1]})"
    return len(differ)


def near_duplicates(seed: int = 0) -> np.ndarray:
    """4000 random points, then 400 near-copies of one direction: their similarities (0.990 +- 0.002) differ far
    more than fp32 noise but less than the bf16 rounding bound, so no margin certifies the copies."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=32)
    centre /= np.linalg.norm(centre)
    copies = centre + 0.1 * rng.normal(size=(400, 32)) / np.sqrt(32)
    return np.concatenate([rng.normal(size=(4000, 32)), copies]).astype(np.float32)


@bf16
def test_bf16_path_equals_faiss_flat_on_random_data():
    points = np.random.default_rng(0).normal(size=(5000, 32)).astype(np.float32)
    got, counts = mining.bf16_exact_neighbors(points, 10)
    assert got.shape == (5000, 10) and got.dtype == np.int64
    assert not (got == np.arange(5000)[:, None]).any()
    assert (np.sort(got, axis=1) == np.sort(faiss_neighbors(points, 10), axis=1)).all()
    assert counts["fallback_rows"] < 50  # the bf16 path did the work
    sims = float64_similarity(points, np.arange(5000), got)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first, like faiss


@bf16
def test_bf16_path_falls_back_to_faiss_where_bf16_cannot_separate():
    points = near_duplicates()
    got, counts = mining.bf16_exact_neighbors(points, 10)
    assert counts["fallback_rows"] >= 390  # (nearly) every near-copy
    assert counts["fallback_rows"] < 1000  # the random points stay on the bf16 path
    assert not (got == np.arange(len(points))[:, None]).any()
    assert assert_same_neighbour_sets(points, got, faiss_neighbors(points, 10)) <= 5
    assert (got[4000:] >= 4000).all()  # near-copies find each other


@bf16
def test_certificate_is_what_makes_the_bf16_path_exact(monkeypatch):
    """Without the rounding slack the near-copies are 'certified' from bf16 candidates and come out wrong."""
    points = near_duplicates()
    monkeypatch.setattr(mining, "rounding_slack", lambda unit, hi: torch.zeros(len(unit), dtype=torch.float64))
    monkeypatch.setattr(mining, "rounding_ceiling", lambda keys: keys.view(torch.bfloat16).double())
    got, counts = mining.bf16_exact_neighbors(points, 10)
    assert counts["fallback_rows"] < 100
    wrong = (np.sort(got, axis=1) != np.sort(faiss_neighbors(points, 10), axis=1)).any(axis=1)
    assert wrong[4000:].sum() > 100


@bf16
def test_mine_neighbors_takes_bf16_path_from_the_row_threshold(monkeypatch):
    points = near_duplicates(seed=1)
    assert mining.search_neighbors(points, 5).method == "faiss-flat"
    monkeypatch.setattr(mining, "BF16_MIN_ROWS", 1000)
    got = mining.search_neighbors(points, 5)
    assert got.method == "bf16" and got.counts["fallback_rows"] >= 390
    assert assert_same_neighbour_sets(points, got.neighbors, faiss_neighbors(points, 5)) <= 5
    assert mining.search_neighbors(points, 5, index="ivf").method == "faiss-ivf"


@bf16
def test_bf16_path_on_tiny_inputs_still_exact(monkeypatch):
    """Fewer rows than candidates: the m-th key is the lowest (self), nothing certifies, faiss answers."""
    monkeypatch.setattr(mining, "BF16_MIN_ROWS", 1)
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    mined = mining.search_neighbors(np.stack([np.cos(angles), np.sin(angles)], 1), 2)
    assert mined.counts["fallback_rows"] == 12
    for i, row in enumerate(mined.neighbors):
        assert set(row) == {(i - 1) % 12, (i + 1) % 12}


@bf16
def test_bf16_scores_stay_within_the_rounding_bound():
    """Measured: exact similarity <= rounding_ceiling(bf16 key) + slack for every pair (what the certificate uses)."""
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(size=(1500, 64)), rng.normal(size=(1, 64)) + 0.05 * rng.normal(size=(500, 64))])
    unit = mining.l2_normalize(points)
    rows = mining.rounded_rows(unit, group=10, direct=64)
    keys = mining.score_keys(rows, 0, 300, torch.empty(300, rows.rounded.shape[0], dtype=torch.bfloat16))
    keys = keys[:, : len(unit)]
    exact = torch.from_numpy(unit[:300].astype(np.float64) @ unit.astype(np.float64).T)
    ceiling = mining.rounding_ceiling(keys.reshape(-1)).view(keys.shape)
    usable = keys >= 0
    excess = (exact - ceiling - rows.slack[:300, None])[usable]
    assert usable.sum() > 100_000 and excess.max() <= 0
    assert rows.slack.max() < 0.01  # and the bound is tight enough to certify anything


def test_rounding_ceiling_is_the_midpoint_to_the_next_bf16():
    keys = torch.tensor([0.5, 0.3, 0.0, -0.25], dtype=torch.bfloat16).view(torch.int16)
    ceiling = mining.rounding_ceiling(keys)
    assert ceiling[0] == 0.5 + 2.0**-9
    assert ceiling[1] == float(torch.tensor(0.3, dtype=torch.bfloat16)) + 2.0**-10
    assert 0 < ceiling[2] < 1e-38 and ceiling[3] == np.inf


def test_top_keys_through_group_maxima_equals_plain_topk():
    keys = torch.randint(-2000, 2000, (50, 5000), dtype=torch.int16)
    levels = mining.group_maxima(keys, group=10, direct=64, most=40)
    assert [level.shape[1] for level in levels] == [5000, 500, 50]
    for rows in (None, torch.tensor([3, 7, 49])):
        vals, cols = mining.top_keys(levels, rows, 40, group=10)
        chosen = keys if rows is None else keys[rows]
        assert (vals.sort(dim=1).values == chosen.topk(40, dim=1).values.sort(dim=1).values).all()
        assert (chosen.gather(1, cols) == vals).all()


def test_padded_width_divides_down_to_direct_width():
    assert mining.padded_width(70000, 10, 1024) == 70000
    assert mining.padded_width(70001, 10, 1024) == 70100
    assert mining.padded_width(900, 10, 1024) == 900


# ----------------------------------------------------------------------------- whitening
def correlated_points(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian points with very unequal variances along rotated axes, off the origin."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, d)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * scales) @ rotation + 5.0


def eigen_whitened_unit_rows(fit: np.ndarray, rows: np.ndarray, components: int | None = None) -> np.ndarray:
    """Independent reference: centre on ``fit``'s mean, project on its leading covariance eigenvectors, divide by
    sqrt(eigenvalue), normalise."""
    values, vectors = np.linalg.eigh(np.cov(fit.T))  # ascending: the leading components come last
    keep = slice(-(components or len(values)), None)
    z = (rows - fit.mean(0)) @ vectors[:, keep] / np.sqrt(values[keep])
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_whitening_equals_eigendecomposition_whitening_up_to_axis_signs():
    x = correlated_points(500, 6)
    whitened = mining.fit_whitening(x, [6])(x)
    reference = eigen_whitened_unit_rows(x, x)
    # per-axis sign flips leave every inner product unchanged, so the cosine neighbours are the same
    np.testing.assert_allclose(whitened @ whitened.T, reference @ reference.T, atol=1e-4)


def test_whitening_lets_a_low_variance_axis_that_separates_groups_decide_the_neighbours():
    # three axes of spread 30 carry no structure; the fourth (spread 1) separates two groups
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 500)
    signal = groups * 2.0 - 1.0 + rng.normal(scale=0.1, size=1000)
    x = np.concatenate([rng.normal(scale=30.0, size=(1000, 3)), signal[:, None]], 1) + 3.0
    raw = neighbor_precision(mine_neighbors(x, 5), groups)
    whitened = neighbor_precision(mine_neighbors(mining.fit_whitening(x, [4])(x), 5), groups)
    assert raw < 0.6 and whitened > 0.99


def test_whitening_fits_each_block_on_its_own_and_keeps_each_unit_norm():
    a, b = correlated_points(400, 3, seed=1), correlated_points(400, 5, seed=2) * 100.0
    whitened = mining.fit_whitening(np.concatenate([a, b], 1), [3, 5])(np.concatenate([a, b], 1))
    np.testing.assert_allclose(np.linalg.norm(whitened[:, :3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whitened[:, 3:], axis=1), 1.0, rtol=1e-5)
    alone = mining.fit_whitening(a, [3])(a)
    np.testing.assert_allclose(whitened[:, :3] @ whitened[:, :3].T, alone @ alone.T, atol=1e-4)


def test_whitening_applies_the_fitted_statistics_to_new_rows():
    train, test = correlated_points(600, 4, seed=3), correlated_points(7, 4, seed=4)
    whitening = mining.fit_whitening(train, [4])
    expected = eigen_whitened_unit_rows(train, test)
    np.testing.assert_allclose(whitening(test) @ whitening(test).T, expected @ expected.T, atol=1e-4)


def test_whitening_drops_constant_directions_instead_of_dividing_by_zero():
    x = np.concatenate([correlated_points(300, 3), np.full((300, 1), 2.0)], 1)
    whitening = mining.fit_whitening(x, [4])
    assert whitening.projections[0].shape == (4, 3)
    assert np.isfinite(whitening(x)).all()


def test_whitening_keeps_only_the_leading_components_few_rows_can_estimate():
    x = correlated_points(30, 6)
    whitening = mining.fit_whitening(x, [6])
    assert whitening.projections[0].shape == (6, 3)  # one component per 10 rows
    expected = eigen_whitened_unit_rows(x, x, components=3)
    np.testing.assert_allclose(whitening(x) @ whitening(x).T, expected @ expected.T, atol=1e-4)


def test_whitening_rejects_constant_blocks_and_mismatched_widths():
    from scanlearn.errors import DataError

    with pytest.raises(DataError, match="constant"):
        mining.fit_whitening(np.ones((100, 2)), [2])
    with pytest.raises(ValueError, match="do not add up"):
        mining.fit_whitening(correlated_points(100, 4), [3])


def test_far_from_flags_rows_beyond_the_training_rows_own_nearest_neighbour_distances():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    train = np.concatenate([c + 0.1 * rng.normal(size=(100, 16)) for c in centres])
    alike = centres[rng.integers(0, 4, 500)] + 0.1 * rng.normal(size=(500, 16))
    unlike = rng.normal(size=(50, 16))  # random directions, far from the four groups
    far = far_from(train, np.concatenate([alike, unlike]))
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    cut = np.quantile(cosines.max(1), 0.01)
    new = np.concatenate([alike, unlike])
    closest = (new / np.linalg.norm(new, axis=1, keepdims=True) @ unit.T).max(1)
    np.testing.assert_array_equal(far, closest < cut)
    assert far[500:].all() and far[:500].mean() < 0.05
