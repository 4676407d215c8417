"""Encoder distillation losses (kdcompile/encoder_kd.py), by their properties: zero exactly at the teacher, positive
away from it, blind to padding, and equal to the definitions written out by hand."""

import math

import torch

from kdcompile.encoder_kd import attention_kl, cosine_distance, hidden_mse, value_relation, value_relation_kl

torch.manual_seed(0)
B, H, L, D = 3, 2, 5, 8
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)


def _attention(scores: torch.Tensor) -> torch.Tensor:
    """Attention probabilities with padded keys masked, as BERT computes them."""
    return scores.masked_fill(~MASK[:, None, None, :], -1e9).softmax(-1)


def test_each_loss_is_zero_at_the_teacher_and_positive_away_from_it():
    e, h, v = torch.randn(B, D), torch.randn(B, L, D), torch.randn(B, L, D)
    a = _attention(torch.randn(B, H, L, L))
    assert cosine_distance(e, e).abs() < 1e-6 and hidden_mse(h, h, MASK) == 0
    assert attention_kl(a, a, MASK).abs() < 1e-6 and value_relation_kl(v, v, H, MASK).abs() < 1e-6
    assert cosine_distance(torch.randn(B, D), e) > 0 and hidden_mse(torch.randn(B, L, D), h, MASK) > 0
    assert attention_kl(_attention(torch.randn(B, H, L, L)), a, MASK) > 0
    assert value_relation_kl(torch.randn(B, L, D), v, H, MASK) > 0


def test_padding_never_counts():
    """Changing the student's states or values at padded positions changes no loss."""
    h_t, v_t = torch.randn(B, L, D), torch.randn(B, L, D)
    h_s, v_s = torch.randn(B, L, D), torch.randn(B, L, D)
    noise = torch.randn(B, L, D) * (~MASK).unsqueeze(-1)  # zero on real tokens
    assert torch.allclose(hidden_mse(h_s + noise, h_t, MASK), hidden_mse(h_s, h_t, MASK))
    assert torch.allclose(value_relation_kl(v_s + noise, v_t, H, MASK), value_relation_kl(v_s, v_t, H, MASK))
    a_t, a_s = _attention(torch.randn(B, H, L, L)), _attention(torch.randn(B, H, L, L))
    rows = ~MASK[:, None, :, None]  # rows of padded queries
    scrambled = torch.where(rows, _attention(torch.randn(B, H, L, L)), a_s)
    assert torch.allclose(attention_kl(scrambled, a_t, MASK), attention_kl(a_s, a_t, MASK))


def test_attention_kl_is_the_mean_kl_over_heads_and_real_queries():
    a_t, a_s = _attention(torch.randn(B, H, L, L)), _attention(torch.randn(B, H, L, L))
    terms = [sum(a_t[b, h, q, k] * math.log(a_t[b, h, q, k] / a_s[b, h, q, k])
                 for k in range(L) if MASK[b, k])
             for b in range(B) for h in range(H) for q in range(L) if MASK[b, q]]
    assert torch.allclose(attention_kl(a_s, a_t, MASK), torch.stack(terms).mean(), atol=1e-5)


def test_value_relation_is_a_distribution_over_real_keys_scaled_by_the_head_width():
    v = torch.randn(B, L, D)
    r = value_relation(v, H, MASK).exp()  # (b, h, l, l)
    assert torch.allclose(r.sum(-1), torch.ones(B, H, L), atol=1e-5)
    assert (r * ~MASK[:, None, None, :]).abs().max() < 1e-12  # no mass on padded keys
    va = v[0, :, :D // H]  # head 0 of the unpadded row
    expected = (va @ va.T / math.sqrt(D // H)).softmax(-1)
    assert torch.allclose(r[0, 0], expected, atol=1e-6)


def test_gradients_reach_the_student_only():
    v_s, v_t = torch.randn(B, L, D, requires_grad=True), torch.randn(B, L, D, requires_grad=True)
    value_relation_kl(v_s, v_t.detach(), H, MASK).backward()
    assert v_s.grad is not None and v_s.grad.abs().sum() > 0
    assert v_s.grad[~MASK].abs().max() == 0  # padded positions get no gradient
