"""Per-cluster self-label thresholds keep every cluster's most confident members."""

import numpy as np
import pytest
import torch

from scanlearn.losses import confidence_cross_entropy
from scanlearn.stages.selflabel import cluster_thresholds, prior_by_cluster_size


def test_thresholds_lowered_only_for_unconfident_clusters():
    probs = np.array([
        [0.995, 0.005], [0.999, 0.001], [0.992, 0.008], [0.991, 0.009],  # cluster 0: all above 0.99
        [0.30, 0.70], [0.20, 0.80], [0.10, 0.90], [0.40, 0.60],          # cluster 1: none above 0.99
    ])
    thresholds = cluster_thresholds(probs, threshold=0.99, min_fraction=0.5)
    assert thresholds[0].item() == np.float32(0.99)
    # half of cluster 1 (0.8 and 0.9) must pass: the threshold sits just under the median 0.75
    assert 0.70 < thresholds[1].item() < 0.80
    passing = (probs[4:, 1] > thresholds[1].item()).sum()
    assert passing == 2


def test_zero_fraction_is_the_paper_rule():
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert torch.equal(cluster_thresholds(probs, 0.99, 0.0), torch.tensor([0.99, 0.99]))


def test_loss_uses_the_threshold_of_the_predicted_class():
    weak = torch.log(torch.tensor([[0.95, 0.05], [0.2, 0.8]]))
    strong = torch.zeros(2, 2)
    per_class = confidence_cross_entropy(weak, strong, threshold=torch.tensor([0.99, 0.5]), balance=False)
    assert per_class.num_confident == 1
    assert confidence_cross_entropy(weak, strong, threshold=0.5, balance=False).num_confident == 2


def test_the_prior_goes_to_the_clusters_by_size():
    shares = prior_by_cluster_size(np.array([0.2, 0.5, 0.3]), np.array([10, 50, 30]))
    assert shares.tolist() == pytest.approx([0.2, 0.5, 0.3])
    shares = prior_by_cluster_size(np.array([0.6, 0.3, 0.1]), np.array([5, 5, 40]))
    assert shares.tolist() == pytest.approx([0.3, 0.1, 0.6])
