"""Clustering heads: batched linear maps, the uniform-prior correction of their biases, normalised input."""

import math

import pytest
import torch

from scanlearn.models import ClusterHeads, uniform_prior_log_weights
from scanlearn.models.heads import BlockWhitening


def reweighted(probs: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    q = probs * log_weights.exp()
    return q / q.sum(1, keepdim=True)


def test_uniform_prior_weights_of_identical_rows_are_half_their_log_odds():
    a = 0.8
    probs = torch.tensor([[a, 1 - a]] * 5)
    log_w = uniform_prior_log_weights(probs)
    half_log_odds = 0.5 * math.log(a / (1 - a))
    torch.testing.assert_close(log_w, torch.tensor([-half_log_odds, half_log_odds]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reweighted(probs, log_w), torch.full((5, 2), 0.5), rtol=1e-5, atol=1e-6)


def test_uniform_prior_weights_are_zero_when_the_mean_prediction_is_already_uniform():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    torch.testing.assert_close(uniform_prior_log_weights(probs), torch.zeros(2), rtol=0, atol=1e-7)


def test_uniform_prior_weights_equalise_a_skewed_mean_prediction():
    torch.manual_seed(0)
    probs = (torch.randn(2000, 10) * 3 + torch.linspace(0, 3, 10)).softmax(1)
    assert probs.mean(0).max() > 0.15 and probs.mean(0).min() < 0.05
    log_w = uniform_prior_log_weights(probs)
    torch.testing.assert_close(reweighted(probs, log_w).mean(0), torch.full((10,), 0.1), rtol=0, atol=1e-4)
    assert abs(float(log_w.mean())) < 1e-6


def test_shifted_biases_multiply_every_heads_probabilities_by_the_weights():
    torch.manual_seed(0)
    heads, features = ClusterHeads(6, 4, num_heads=2), torch.randn(8, 6)
    log_w = torch.tensor([0.5, -0.2, 0.0, 1.0])
    before = heads(features).softmax(-1)
    heads.shift_biases(log_w)
    after = heads(features).softmax(-1)
    for h in range(2):
        torch.testing.assert_close(after[h], reweighted(before[h], log_w))


@pytest.mark.parametrize("normalize", [False, True])
def test_heads_see_normalised_features_only_when_asked(normalize):
    heads = ClusterHeads(4, 3, 2, normalize_input=normalize)
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0]])
    scaled = heads(10 * x)
    assert torch.allclose(scaled, heads(x), atol=1e-6) == normalize
    assert torch.allclose(heads(x), heads(x / 5), atol=1e-6) == normalize  # |x| = 5: same as the unit vector


def test_every_head_is_its_own_linear_map():
    torch.manual_seed(0)
    heads, features = ClusterHeads(5, 3, num_heads=4), torch.randn(7, 5)
    logits = heads(features)
    assert logits.shape == (4, 7, 3)
    for h in range(4):
        torch.testing.assert_close(logits[h], features @ heads.weight[h].T + heads.bias[h])


def test_heads_start_as_torch_linear_layers_would():
    torch.manual_seed(3)
    expected = [torch.nn.Linear(6, 4) for _ in range(3)]
    torch.manual_seed(3)
    heads = ClusterHeads(6, 4, num_heads=3)
    for h, linear in enumerate(expected):
        assert torch.equal(heads.weight[h], linear.weight) and torch.equal(heads.bias[h], linear.bias)


def test_models_saved_with_one_entry_per_head_still_load():
    torch.manual_seed(0)
    old = {f"heads.{h}.{name}": torch.randn(3, 6) if name == "weight" else torch.randn(3)
           for h in range(2) for name in ("weight", "bias")}
    heads = ClusterHeads(6, 3, num_heads=2)
    heads.load_state_dict(dict(old))
    for h in range(2):
        assert torch.equal(heads.weight[h], old[f"heads.{h}.weight"]) and torch.equal(heads.bias[h], old[f"heads.{h}.bias"])


def test_block_whitening_centres_projects_and_normalises_each_block_by_hand():
    whitening = BlockWhitening.of_blocks([[1.0, 0.0], [0.0]], [[[2.0, 0.0], [0.0, 1.0]], [[3.0]]])
    mapped = whitening(torch.tensor([[4.0, 4.0, -2.0]]))
    # block 1: (3, 4) @ diag(2, 1) = (6, 4), unit length (6, 4) / sqrt(52); block 2: -2 * 3 = -6, unit length -1
    torch.testing.assert_close(mapped, torch.tensor([[6 / math.sqrt(52), 4 / math.sqrt(52), -1.0]]))


def test_heads_with_an_input_map_read_raw_features_and_say_their_raw_width():
    whitening = BlockWhitening.of_blocks([torch.zeros(3)], [torch.eye(3)[:, :2]])
    heads = ClusterHeads(3, 4, 2, normalize_input=True, input_map=whitening)
    x = torch.tensor([[3.0, 4.0, 100.0]])
    plain = ClusterHeads(2, 4, 2, normalize_input=True)
    plain.load_state_dict({"weight": heads.weight, "bias": heads.bias})
    assert heads.in_dim == 3 and heads.weight.shape == (2, 4, 2)
    torch.testing.assert_close(heads(x), plain(torch.tensor([[0.6, 0.8]])))
    with pytest.raises(ValueError, match="reads 3 features"):
        ClusterHeads(5, 4, 1, input_map=whitening)
