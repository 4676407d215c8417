"""Loss properties: zero on identical inputs, the limits, the T^2 scaling, masking, finite gradients."""

import math

import pytest
import torch

from kdcompile.losses import LOSSES, dkd, forward_kl, generalized_jsd, hinton_kd, hpd, reverse_kl, skew_kl, tip_select, \
    skew_reverse_kl, total_variation

torch.manual_seed(0)
Z_S, Z_T = torch.randn(12, 7), torch.randn(12, 7)


def _kl(p, q):
    return (p * (p.log() - q.log())).sum(-1).mean()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_on_identical_and_positive_otherwise(name):
    assert LOSSES[name](Z_S, Z_S.clone()).abs().item() < 1e-5
    assert LOSSES[name](Z_S, Z_T).item() > 1e-4


def test_forward_and_reverse_kl_match_the_definition():
    p, q = Z_T.softmax(-1), Z_S.softmax(-1)
    assert torch.allclose(forward_kl(Z_S, Z_T), _kl(p, q), atol=1e-6)
    assert torch.allclose(reverse_kl(Z_S, Z_T), _kl(q, p), atol=1e-6)


def test_hinton_t_squared_scaling():
    T = 3.0
    p, q = torch.softmax(Z_T / T, -1), torch.softmax(Z_S / T, -1)
    assert torch.allclose(hinton_kd(Z_S, Z_T, temperature=T), T**2 * _kl(p, q), atol=1e-5)


def test_jsd_beta_limits_and_symmetry():
    # the general formula, not the special-cased ends: JSD_beta / beta -> KL(teacher || student) as beta -> 0,
    # and JSD_beta / (1 - beta) -> KL(student || teacher) as beta -> 1
    for b in (1e-3, 1e-4):
        assert torch.allclose(generalized_jsd(Z_S, Z_T, beta=b) / b, forward_kl(Z_S, Z_T), rtol=20 * b)
        assert torch.allclose(generalized_jsd(Z_S, Z_T, beta=1 - b) / b, reverse_kl(Z_S, Z_T), rtol=20 * b)
    # at the ends themselves TRL's convention: forward and reverse KL (the JSD itself vanishes there)
    assert torch.equal(generalized_jsd(Z_S, Z_T, beta=0.0), forward_kl(Z_S, Z_T))
    assert torch.equal(generalized_jsd(Z_S, Z_T, beta=1.0), reverse_kl(Z_S, Z_T))
    # Near the ends JSD(beta) / beta -> ... vanishes, and at 0.5 it is symmetric in p and q and at most ln 2.
    assert torch.allclose(generalized_jsd(Z_S, Z_T, beta=0.5), generalized_jsd(Z_T, Z_S, beta=0.5), atol=1e-6)
    assert generalized_jsd(Z_S, Z_T * 50, beta=0.5).item() <= math.log(2) + 1e-6
    assert generalized_jsd(Z_S, Z_T, beta=1e-4).item() < 1e-3


def test_skew_kl_limits_and_bound():
    assert torch.allclose(skew_kl(Z_S, Z_T, alpha=0.0), forward_kl(Z_S, Z_T), atol=1e-6)
    assert torch.allclose(skew_reverse_kl(Z_S, Z_T, alpha=0.0), reverse_kl(Z_S, Z_T), atol=1e-6)
    # Skewing bounds the loss by log(1/alpha) even where the student puts no mass.
    far = skew_kl(Z_S * 100, -Z_S * 100, alpha=0.1)
    assert far.item() <= math.log(10) + 1e-4 and torch.isfinite(far)


def test_total_variation_bounds():
    assert 0 < total_variation(Z_S, Z_T).item() <= 1
    assert total_variation(Z_S * 100, -Z_S * 100).item() == pytest.approx(1.0, abs=1e-3)


def test_masked_rows_change_nothing():
    mask = torch.tensor([True] * 6 + [False] * 6)
    garbage = Z_T.clone()
    garbage[6:] = torch.randn(6, 7) * 100
    for name, loss in LOSSES.items():
        assert torch.allclose(loss(Z_S, Z_T, mask=mask), loss(Z_S[:6], Z_T[:6]), atol=1e-6), name
        assert torch.allclose(loss(Z_S, Z_T, mask=mask), loss(Z_S, garbage, mask=mask), atol=1e-6), name
    assert forward_kl(Z_S, Z_T, mask=torch.zeros(12, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_gradients_at_small_temperature_and_with_minus_inf_logits(name):
    z_s = torch.randn(4, 5, requires_grad=True)
    z_t = torch.randn(4, 5)
    z_t[:, 0] = -math.inf  # a token the teacher bans
    loss = LOSSES[name](z_s, z_t, temperature=0.05)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()


def test_dkd_is_zero_on_identical_and_decouples():
    y = torch.randint(0, 7, (12,))
    assert dkd(Z_S, Z_S.clone(), y).abs().item() < 1e-5
    assert dkd(Z_S, Z_T, y, alpha=0.0, beta=0.0).item() == 0.0
    tckd_only = dkd(Z_S, Z_T, y, alpha=1.0, beta=0.0)
    nckd_only = dkd(Z_S, Z_T, y, alpha=0.0, beta=1.0)
    assert torch.allclose(dkd(Z_S, Z_T, y, alpha=1.0, beta=1.0), tckd_only + nckd_only, atol=1e-5)


def test_hpd_matches_its_equation_on_one_token():
    z_s, z_t = torch.log(torch.tensor([[0.5, 0.3, 0.2]])), torch.log(torch.tensor([[0.7, 0.1, 0.2]]))
    z_s.requires_grad_(True)
    y, y_hat = torch.tensor([0]), torch.tensor([1])
    k = 0.5 * (math.log(0.7) - math.log(0.5))  # > 0: teacher outranks student at y
    k_hat = 0.3 * (math.log(0.1) - math.log(0.3))  # < 0: student overrates y^
    w, v = k + 0.7 * (1 + 1), k_hat
    expected = -w * math.log(0.5) - v * math.log(0.3)
    loss = hpd(z_s, z_t, y, y_hat)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()  # the weights are stop-gradient: the gradient is that of -w log q(y) - v log q(y^)
    q = torch.tensor([0.5, 0.3, 0.2])
    grad = -w * (torch.tensor([1.0, 0, 0]) - q) - v * (torch.tensor([0, 1.0, 0]) - q)
    assert torch.allclose(z_s.grad[0], grad, atol=1e-5)
    # y^ == y: k^ = k > 0, so w = k + p(y) and the second term vanishes.
    assert hpd(z_s, z_t, y, y).item() == pytest.approx(-(k + 0.7) * math.log(0.5), rel=1e-5)


def test_tip_soft_or_keeps_uncertain_and_overconfident_wrong_tokens():
    right = torch.tensor([10.0, 0, 0, 0, 0])
    wrong = torch.tensor([0, 0, 0, 0, 10.0])
    uniform = torch.zeros(5)
    # token:        0 agrees, 1 agrees, 2 uncertain student, 3 student sure of the wrong token
    z_s = torch.stack([right, right, uniform, right])
    z_t = torch.stack([right, right, right, wrong])
    assert tip_select(z_s, z_t, ratio=0.5).tolist() == [False, False, True, True]
    mask = torch.tensor([True, True, False, True])
    assert tip_select(z_s, z_t, mask=mask, ratio=0.34).tolist() == [False, False, False, True]


def test_tip_sampler_keeps_the_requested_share_of_counted_tokens():
    z_s, z_t = torch.randn(100, 11), torch.randn(100, 11)
    mask = torch.arange(100) < 80
    keep = tip_select(z_s, z_t, mask=mask, ratio=0.25, mode="sampler", generator=torch.Generator().manual_seed(0))
    assert keep.sum() == 20 and not keep[80:].any()


def test_reverse_kl_sees_student_mass_on_tokens_the_teacher_bans():
    """Moving student mass onto a banned token raises reverse KL (it used to leave the sum unchanged)."""
    z_t = torch.tensor([[-math.inf, 1.0, 0.0]])
    low, high = torch.tensor([[-5.0, 1.0, 0.0]]), torch.tensor([[3.0, 1.0, 0.0]])
    assert reverse_kl(high, z_t) > reverse_kl(low, z_t) + 1.0
    q = torch.softmax(high, -1)[0]
    p = torch.softmax(z_t, -1)[0]
    expected = q[0] * (q[0].log() - math.log(1e-10)) + sum(q[i] * (q[i] / p[i]).log() for i in (1, 2))
    assert reverse_kl(high, z_t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert forward_kl(high, z_t).item() == pytest.approx(  # the teacher puts no mass there: nothing to count
        sum(p[i] * (p[i] / q[i]).log() for i in (1, 2)).item(), rel=1e-5)


def test_top_k_support_renormalises_both_over_the_teachers_top_k():
    from kdcompile.losses import top_k_support

    z_s, z_t = torch.randn(6, 10), torch.randn(6, 10)
    s_k, t_k = top_k_support(z_s, z_t, 3)
    assert s_k.shape == t_k.shape == (6, 3)
    top = z_t.topk(3, -1).indices
    assert torch.equal(t_k, z_t.gather(-1, top)) and torch.equal(s_k, z_s.gather(-1, top))
    assert torch.allclose(torch.softmax(s_k, -1).sum(-1), torch.ones(6))  # each a distribution over the kept set
    # the student's logits outside the set do not matter; inside it, only their differences do
    outside = torch.where(torch.zeros_like(z_s).scatter_(-1, top, 1.0).bool(), z_s, z_s + 50 * torch.randn(6, 10))
    assert torch.allclose(reverse_kl(*top_k_support(outside, z_t, 3)), reverse_kl(s_k, t_k))
    assert reverse_kl(*top_k_support(z_t.clone(), z_t, 3)).abs() < 1e-6
    assert top_k_support(z_s, z_t, 50)[0].shape == (6, 10)  # k beyond the vocabulary keeps everything
