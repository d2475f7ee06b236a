"""Losses against hand-derived values and naive reference loops."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scanlearn.losses import confidence_cross_entropy, divergence_from_prior, entropy_of_mean, nt_xent_loss, scan_loss


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Textbook double loop over the 2N embeddings."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[partner]) / t) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_double_loop(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(naive_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_orthogonal_pairs_exact_value():
    """Pairs identical, all else orthogonal: -log(e^{1/t} / (e^{1/t} + 2N-2))."""
    n, t = 3, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert nt_xent_loss(z, z, t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_symmetric_in_views():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    assert nt_xent_loss(z1, z2).item() == pytest.approx(nt_xent_loss(z2, z1).item(), rel=1e-6)


def test_scan_loss_two_by_two_on_paper():
    """2 samples, 2 classes; p and q chosen so every term is computed by hand."""
    p = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    q = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    consistency = -(math.log(0.8 * 0.6 + 0.2 * 0.4) + math.log(0.3 * 0.5 + 0.7 * 0.5)) / 2
    mean = [0.55, 0.45]
    entropy = -(0.55 * math.log(0.55) + 0.45 * math.log(0.45))
    out = scan_loss(p.log(), q.log(), entropy_weight=5.0)
    assert out.consistency.item() == pytest.approx(consistency, rel=1e-6)
    assert out.entropy.item() == pytest.approx(entropy, rel=1e-6)
    assert out.total.item() == pytest.approx(consistency - 5.0 * entropy, rel=1e-6)
    assert mean[0] + mean[1] == pytest.approx(1.0)


def test_scan_loss_of_stacked_heads_is_each_heads_loss():
    """(H, N, C) logits give one value per head, equal to the loss of that head alone."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    stacked = scan_loss(a, b, entropy_weight=2.0)
    assert stacked.total.shape == (3,)
    for h in range(3):
        alone = scan_loss(a[h], b[h], entropy_weight=2.0)
        for got, want in zip(stacked, alone):
            assert got[h].item() == pytest.approx(want.item(), rel=1e-6)


def test_scan_loss_gradients_reach_both_inputs():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    scan_loss(a, b).total.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_entropy_of_uniform_mean_is_log_c():
    probs = torch.eye(4)
    assert entropy_of_mean(probs).item() == pytest.approx(math.log(4), rel=1e-6)


def test_scan_loss_batch_mean_hook_changes_entropy():
    p = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    local = scan_loss(p, p).entropy.item()
    pooled = scan_loss(p, p, batch_mean=lambda m: (m + torch.tensor([0.0, 1.0])) / 2).entropy.item()
    assert pooled > local


def test_confidence_ce_only_confident_and_balanced():
    weak = torch.tensor([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [1.0, 1.0, 1.0]])
    strong = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    out = confidence_cross_entropy(weak, strong, threshold=0.99, balance=True)
    assert out.num_confident == 3
    ce = [-F.log_softmax(strong[i], 0)[c].item() for i, c in ((0, 0), (1, 0), (2, 1))]
    w = [3 / 2, 3 / 2, 3 / 1]
    expected = sum(wi * ci for wi, ci in zip(w, ce)) / sum(w)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    unbalanced = confidence_cross_entropy(weak, strong, threshold=0.99, balance=False)
    assert unbalanced.loss.item() == pytest.approx(np.mean(ce), rel=1e-6)


def test_confidence_ce_with_no_confident_sample_is_zero_not_error():
    weak = torch.zeros(5, 3)
    strong = torch.randn(5, 3, requires_grad=True)
    out = confidence_cross_entropy(weak, strong, threshold=0.99)
    assert out.num_confident == 0 and out.loss.item() == 0.0
    assert out.max_confidence == pytest.approx(1 / 3)
    out.loss.backward()


def test_scan_consistency_keeps_a_gradient_where_the_dot_product_is_below_1e8():
    """Anchor and neighbour sure of different classes: <p, q> = 2 e^-23 / (1 + e^-23)^2 ~ 2e-10.

    By hand: -log <p, q> = 23 - log 2 + 2 log(1 + e^-23); its gradient in the anchor logits,
    p - p*q / <p, q>, is (1/2, -1/2) up to O(e^-23). A clamp of <p, q> at 1e-8 gives 18.4 and no gradient.
    """
    anchor = torch.tensor([[11.5, -11.5]], requires_grad=True)
    neighbour = torch.tensor([[-11.5, 11.5]])
    out = scan_loss(anchor, neighbour, entropy_weight=0.0)
    assert out.consistency.item() == pytest.approx(23 - math.log(2) + 2 * math.log1p(math.exp(-23)), rel=1e-5)
    out.total.backward()
    torch.testing.assert_close(anchor.grad, torch.tensor([[0.5, -0.5]]), atol=1e-3, rtol=0)


def test_scan_consistency_is_capped_at_100_like_binary_cross_entropy():
    out = scan_loss(torch.tensor([[200.0, -200.0]]), torch.tensor([[-200.0, 200.0]]), entropy_weight=0.0)
    assert out.consistency.item() == pytest.approx(100.0)


def test_losses_keep_float64_inputs_in_float64():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert scan_loss(a, b).total.dtype == torch.float64
    assert nt_xent_loss(a, b).dtype == torch.float64
    weak = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]], dtype=torch.float64)
    assert confidence_cross_entropy(weak, a[:2], threshold=0.9).loss.dtype == torch.float64


# ----------------------------------------------------------------------------- prior instead of uniform entropy
def test_divergence_from_prior_by_hand_and_whatever_the_cluster_order():
    # sorted mean (0.6, 0.3, 0.1) against sorted prior (0.7, 0.2, 0.1):
    # 0.6 ln(0.6/0.7) + 0.3 ln(0.3/0.2) + 0.1 ln(0.1/0.1) = -0.0924904 + 0.1216395 + 0
    expected = 0.6 * math.log(6 / 7) + 0.3 * math.log(1.5)
    assert expected == pytest.approx(0.0291491, abs=1e-6)
    prior = torch.tensor([0.2, 0.7, 0.1], dtype=torch.float64)
    for mean in ([0.6, 0.3, 0.1], [0.1, 0.6, 0.3]):
        value = divergence_from_prior(torch.tensor(mean, dtype=torch.float64), prior)
        assert value.item() == pytest.approx(expected, abs=1e-9)


def test_scan_loss_with_a_prior_by_hand():
    # anchors = neighbours = p rows (0.8, 0.2), (0.4, 0.6): consistency mean(-ln 0.68, -ln 0.52);
    # batch mean (0.6, 0.4) against prior sorted (0.75, 0.25): KL = 0.6 ln(0.8) + 0.4 ln(1.6); weight 2
    p = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    consistency = (-math.log(0.68) - math.log(0.52)) / 2
    kl = 0.6 * math.log(0.6 / 0.75) + 0.4 * math.log(0.4 / 0.25)
    terms = scan_loss(p.log(), p.log(), 2.0, prior=torch.tensor([0.25, 0.75]))
    assert terms.consistency.item() == pytest.approx(consistency, abs=1e-9)
    assert terms.total.item() == pytest.approx(consistency + 2 * kl, abs=1e-7)
    assert terms.total.item() == pytest.approx(0.6280251, abs=1e-6)


def test_a_uniform_prior_is_the_paper_entropy_term_plus_a_constant():
    g = torch.Generator().manual_seed(3)
    anchors, partners = torch.randn(2, 3, 16, 7, generator=g, dtype=torch.float64)
    plain = scan_loss(anchors, partners, 5.0)
    uniform = scan_loss(anchors, partners, 5.0, prior=torch.full((7,), 1 / 7))
    assert torch.allclose(uniform.total - plain.total, torch.full((3,), 5.0 * math.log(7), dtype=torch.float64), atol=1e-6)
    grads = []
    for prior in (None, torch.full((7,), 1 / 7)):
        leaf = anchors.clone().requires_grad_()
        grads.append(torch.autograd.grad(scan_loss(leaf, partners, 5.0, prior=prior).total.sum(), leaf)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-9)


def test_self_label_balancing_follows_a_class_prior():
    # 3 confident samples of class 0, 1 of class 1. Prior (0.75, 0.25): weights 4*0.75/3 = 1 and 4*0.25/1 = 1,
    # so the loss is the plain mean of the four cross-entropies; equal balancing weights them 4/3 and 4.
    weak = torch.tensor([[9.0, 0.0], [9.0, 0.0], [9.0, 0.0], [0.0, 9.0]])
    strong = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.5, 0.0]])
    ce = F.cross_entropy(strong, torch.tensor([0, 0, 0, 1]), reduction="none")
    prior = confidence_cross_entropy(weak, strong, 0.99, class_prior=torch.tensor([0.75, 0.25]))
    assert prior.loss.item() == pytest.approx(ce.mean().item(), abs=1e-6)
    equal = confidence_cross_entropy(weak, strong, 0.99)
    assert equal.loss.item() == pytest.approx(((4 / 3) * ce[:3].sum() + 4 * ce[3]).item() / 8, abs=1e-6)
    uniform = confidence_cross_entropy(weak, strong, 0.99, class_prior=torch.tensor([0.5, 0.5]))
    assert uniform.loss.item() == pytest.approx(equal.loss.item(), abs=1e-7)
