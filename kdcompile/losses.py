"""Distillation losses: pure functions of logits, computed in fp32 and log space, in one registry.

Glossary: n rows (samples, or tokens flattened from (b, l)), c classes (vocabulary).
`z_s`, `z_t` (n, c): student and teacher logits; the teacher side never carries gradient.
`mask` (n,) bool, optional: rows that count (padding excluded). Every loss is a mean over counted rows, so a
sequence loss is per token, not per batch; an all-masked batch gives 0, not NaN.
p = softmax(z_t / T) is the teacher, q = softmax(z_s / T) the student. References: ../shared/research/kd.md.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _log_probs(z: Tensor, temperature: float = 1.0) -> Tensor:
    # -inf logits (banned tokens) stay -inf in log space; the products below use xlogy-style guards.
    return F.log_softmax(z.float() / temperature, dim=-1)


def _masked_mean(per_row: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return per_row.mean()
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


BANNED_LOG_PROB = math.log(1e-10)  # what a -inf (banned) entry of the reference side counts as inside a KL


def _kl_rows(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row. 0 log 0 = 0 where a has no mass. Where a has mass and b bans the entry (-inf logits,
    e.g. a masked vocabulary), b counts as BANNED_LOG_PROB: the loss stays finite and still penalises a's mass
    there. (Leaving such entries out, as DistiLLM's code does, hides the student's mass on tokens the teacher
    bans from reverse KL; issue #23.) Both sides are sanitised *before* the arithmetic, so no inf reaches the
    backward pass (torch.where alone would still give NaN gradients).
    """
    has_mass = torch.isfinite(log_a)
    la = torch.where(has_mass, log_a, 0.0)
    lb = torch.where(torch.isfinite(log_b), log_b, BANNED_LOG_PROB)
    return torch.where(has_mass, la.exp() * (la - lb), 0.0).sum(-1)


def top_k_support(z_s: Tensor, z_t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Both logits gathered at the teacher's top-k entries per row, (n, k) each: every loss applied to them
    compares the two distributions restricted to that set and renormalised over it (OPSD's --top_k_loss, "tail
    guard" of "Distillation Traps and Guards"). The teacher's tail noise leaves the loss; the student's mass outside
    the set is neither rewarded nor penalised."""
    idx = z_t.detach().topk(min(k, z_t.shape[-1]), dim=-1).indices
    return z_s.gather(-1, idx), z_t.gather(-1, idx)


def forward_kl(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """KL(p || q): mean-seeking; equals soft cross-entropy up to the teacher's entropy."""
    return _masked_mean(_kl_rows(_log_probs(z_t.detach(), temperature), _log_probs(z_s, temperature)), mask)


def reverse_kl(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """KL(q || p): mode-seeking."""
    return _masked_mean(_kl_rows(_log_probs(z_s, temperature), _log_probs(z_t.detach(), temperature)), mask)


def hinton_kd(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, temperature: float = 4.0) -> Tensor:
    """Hinton et al. 2015: T^2 * KL(p_T || q_T) at temperature T. The T^2 keeps the gradient's size independent of T
    (the soft term's gradient scales as 1/T^2)."""
    return forward_kl(z_s, z_t, mask, temperature) * temperature**2


def _log_mix(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(w a + (1 - w) b), computed as a logsumexp so that nothing underflows."""
    return torch.logsumexp(torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)]), dim=0)


def skew_kl(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, alpha: float = 0.1,
            temperature: float = 1.0) -> Tensor:
    """DistiLLM skew KL: KL(p || alpha p + (1 - alpha) q). Bounded where q has no mass; alpha=0 is forward KL."""
    log_p, log_q = _log_probs(z_t.detach(), temperature), _log_probs(z_s, temperature)
    mix = log_q if alpha == 0 else _log_mix(log_p, log_q, alpha)
    return _masked_mean(_kl_rows(log_p, mix), mask)


def skew_reverse_kl(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, alpha: float = 0.1,
                    temperature: float = 1.0) -> Tensor:
    """DistiLLM skew reverse KL: KL(q || (1 - alpha) p + alpha q); alpha=0 is reverse KL."""
    log_p, log_q = _log_probs(z_t.detach(), temperature), _log_probs(z_s, temperature)
    mix = log_p if alpha == 0 else _log_mix(log_q, log_p, alpha)
    return _masked_mean(_kl_rows(log_q, mix), mask)


def generalized_jsd(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, beta: float = 0.5,
                    temperature: float = 1.0) -> Tensor:
    """GKD: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q. As TRL does, beta=0 is forward
    KL and beta=1 reverse KL (mathematically the JSD vanishes at both ends; the limits hold up to scale)."""
    if beta == 0:
        return forward_kl(z_s, z_t, mask, temperature)
    if beta == 1:
        return reverse_kl(z_s, z_t, mask, temperature)
    log_p, log_q = _log_probs(z_t.detach(), temperature), _log_probs(z_s, temperature)
    log_m = _log_mix(log_p, log_q, beta)
    return _masked_mean(beta * _kl_rows(log_p, log_m) + (1 - beta) * _kl_rows(log_q, log_m), mask)


def total_variation(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """0.5 * sum |p - q|, in [0, 1]."""
    p, q = _log_probs(z_t.detach(), temperature).exp(), _log_probs(z_s, temperature).exp()
    return _masked_mean(0.5 * (p - q).abs().sum(-1), mask)


def dkd(z_s: Tensor, z_t: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
        temperature: float = 4.0) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD, both times T^2.

    TCKD = KL(b_T || b_S) over the binary (target, non-target) split; NCKD = KL over the non-target classes only
    (the target logit is masked out before the softmax). `target` (n,) are the labels.
    """
    T = temperature
    gt = F.one_hot(target, z_s.shape[-1]).bool()
    log_q, log_p = _log_probs(z_s, T), _log_probs(z_t.detach(), T)

    def binary(log_probs: Tensor) -> Tensor:  # (n, 2): log p(target), log p(not target)
        log_gt = log_probs.masked_fill(~gt, -math.inf).logsumexp(-1)
        log_rest = log_probs.masked_fill(gt, -math.inf).logsumexp(-1)
        return torch.stack([log_gt, log_rest], dim=-1)

    tckd = _kl_rows(binary(log_p), binary(log_q)).mean()
    nt_p = _log_probs(z_t.detach().float().masked_fill(gt, -math.inf), T)
    nt_q = _log_probs(z_s.float().masked_fill(gt, -math.inf), T)
    nckd = _kl_rows(nt_p, nt_q).mean()
    return (alpha * tckd + beta * nckd) * T**2


def hpd(z_s: Tensor, z_t: Tensor, y: Tensor, y_hat: Tensor, mask: Tensor | None = None) -> Tensor:
    """Hybrid policy distillation (arXiv 2604.20244), per token, with the data token `y` (n,) and one token `y_hat`
    (n,) sampled from the student at the same prefix:
        k = q(y) (log p(y) - log q(y)),   k^ likewise at y^
        w = k + p(y) 1[k > 0] (1 + 1[k^ < 0]),   v = k^ 1[k^ < 0]
        loss = mean over counted tokens of -sg(w) log q(y) - sg(v) log q(y^) 1[y^ != y]
    The first term is a one-sample forward-KL gradient where the teacher outranks the student, plus the reverse-KL
    policy gradient; the second pushes down sampled tokens the student overrates."""
    log_q, log_p = _log_probs(z_s), _log_probs(z_t.detach())
    s, tau = log_q.gather(-1, y[:, None])[:, 0], log_p.gather(-1, y[:, None])[:, 0]
    s_hat, tau_hat = log_q.gather(-1, y_hat[:, None])[:, 0], log_p.gather(-1, y_hat[:, None])[:, 0]
    with torch.no_grad():
        k = s.exp() * (tau - s)
        k_hat = s_hat.exp() * (tau_hat - s_hat)
        w = k + tau.exp() * (k > 0) * (1 + (k_hat < 0).float())
        v = k_hat * (k_hat < 0)
    per_token = -w * s - v * s_hat * (y_hat != y)
    return _masked_mean(per_token, mask)


# name -> loss(z_s, z_t, mask=..., **knobs). DKD (needs labels) and HPD (needs tokens) have their own signatures.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "hinton": hinton_kd,
    "fkl": forward_kl,
    "rkl": reverse_kl,
    "skl": skew_kl,
    "srkl": skew_reverse_kl,
    "gjsd": generalized_jsd,
    "tvd": total_variation,
}


def _token_entropy_and_jsd(z_s: Tensor, z_t: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: the student's entropy H(q) and the symmetric JSD(q, p) (beta = 0.5), both in nats."""
    log_q, log_p = _log_probs(z_s.detach()), _log_probs(z_t.detach())
    entropy = -torch.where(torch.isfinite(log_q), log_q.exp() * log_q, 0.0).sum(-1)
    log_m = _log_mix(log_p, log_q, 0.5)
    jsd = 0.5 * _kl_rows(log_p, log_m) + 0.5 * _kl_rows(log_q, log_m)
    return entropy, jsd


def tip_select(z_s: Tensor, z_t: Tensor, mask: Tensor | None = None, ratio: float = 0.5,
               mode: str = "soft_or", alpha: float = 1.0, gamma: float = 0.0,
               generator: torch.Generator | None = None) -> Tensor:
    """TIP token selection (arXiv 2604.14084): which tokens to train on, as a bool mask (n,).

    Tokens are scored on two axes, the student's entropy and the teacher-student divergence (JSD):
    - "soft_or": min-max normalise both over the counted tokens of the batch, score = h + d - h d (a
      probabilistic OR), keep the top `ratio`. Both high-entropy tokens and "overconfident and wrong" ones (low
      entropy, high divergence) score high. This combination is our reading of the paper's description, not a
      formula checked against it.
    - "sampler" (the released code's form): weight = max(H / ln V, 1e-8)^alpha * max(JSD / ln 2, 1e-8)^gamma,
      sample the kept tokens without replacement in proportion to it; the released default gamma=0 weighs by
      entropy alone.
    Works on any device: every mask is made on the logits' device.
    At least one token is kept when any counts.
    """
    counted = torch.ones(len(z_s), dtype=torch.bool, device=z_s.device) if mask is None else mask.bool()
    n_keep = max(1, int(ratio * int(counted.sum()))) if counted.any() else 0
    entropy, jsd = _token_entropy_and_jsd(z_s, z_t)
    if mode == "soft_or":
        def minmax(x: Tensor) -> Tensor:
            lo, hi = x[counted].min(), x[counted].max()
            return (x - lo) / (hi - lo).clamp_min(1e-12)

        h, d = minmax(entropy), minmax(jsd)
        score = (h + d - h * d).masked_fill(~counted, -1.0)
        keep_idx = torch.topk(score, n_keep).indices
    elif mode == "sampler":
        weight = (entropy / math.log(z_s.shape[-1])).clamp_min(1e-8) ** alpha \
            * (jsd / math.log(2)).clamp_min(1e-8) ** gamma
        keep_idx = torch.multinomial(weight * counted, n_keep, replacement=False, generator=generator)
    else:
        raise ValueError(f"mode must be 'soft_or' or 'sampler', got {mode!r}")
    keep = torch.zeros(len(z_s), dtype=torch.bool, device=z_s.device)
    keep[keep_idx] = True
    return keep & counted
