"""Distillation losses: pure functions of logits, in fp32 and log space, in one registry.

Glossary: n rows (samples, or unmasked tokens flattened), c classes (vocabulary).
`z_s`, `z_t`: student and teacher logits (n, c). Teacher logits carry no gradient.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def hinton_kd(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. 2015: T^2 * mean_i KL(p_i || q_i), p = softmax(z_t/T), q = softmax(z_s/T).

    The T^2 factor keeps the gradient's size independent of T (the soft term's gradient scales as 1/T^2).
    """
    log_q = F.log_softmax(z_s.float() / temperature, dim=-1)
    log_p = F.log_softmax(z_t.float().detach() / temperature, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q) = KL(p || q)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "hinton": hinton_kd,
}
