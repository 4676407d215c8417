"""Pure losses for distilling a transformer encoder (sentence embeddings), as MiniLM and sentence-transformers do.

- `cosine_distance`: 1 - cos between student and teacher sentence embeddings (sentence-transformers' distillation
  target is the teacher's embedding; the cosine is what the embeddings are used with).
- `hidden_mse`: hidden-state hints, MSE between token states of mapped layers (DistilBERT, TinyBERT), real tokens
  only.
- `attention_kl`: MiniLM's self-attention distribution transfer (Wang et al. 2020, eq. 6): KL(teacher || student)
  of each head's attention distribution in the last layer, averaged over heads and real query tokens.
- `value_relation_kl`: MiniLM's value relation (eq. 7-8): the same KL over softmax(V_a V_a^T / sqrt(d_k)) per head.

Every loss takes a `mask` (b, l) of real tokens (True) so padding never counts. Glossary: b batch, l length,
h heads, d width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MASKED = -1e9  # a finite "minus infinity": exp() gives 0 and differences of two masked entries stay finite


def cosine_distance(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(e_s, e_t) over the batch; e_* (b, d)."""
    return (1 - F.cosine_similarity(e_s, e_t, dim=-1)).mean()


def hidden_mse(h_s: torch.Tensor, h_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between token states h_* (b, l, d) over real tokens and features."""
    m = mask.unsqueeze(-1).to(h_s.dtype)  # (b, l, 1)
    return ((h_s - h_t) ** 2 * m).sum() / (m.sum() * h_s.shape[-1]).clamp(min=1)


def _row_kl(log_p_t: torch.Tensor, log_p_s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(t || s) of (b, h, l, l) rows, averaged over heads and real query tokens."""
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (b, h, l)
    q = mask[:, None, :].to(kl.dtype)  # (b, 1, l)
    return (kl * q).sum() / (q.sum() * kl.shape[1]).clamp(min=1)


def attention_kl(p_s: torch.Tensor, p_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's attention transfer from attention probabilities p_* (b, h, l, l) (rows sum to 1 over real keys)."""
    return _row_kl(p_t.clamp(min=1e-12).log(), p_s.clamp(min=1e-12).log(), mask)


def value_relation(v: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """Log of softmax(V_a V_a^T / sqrt(d_k)) per head a, (b, h, l, l), from values v (b, l, d) before the head
    split; padded keys get probability 0."""
    b, l, d = v.shape
    va = v.view(b, l, heads, d // heads).transpose(1, 2)  # (b, h, l, d_k)
    scores = va @ va.transpose(-1, -2) / math.sqrt(d // heads)  # (b, h, l, l)
    return scores.masked_fill(~mask[:, None, None, :], MASKED).log_softmax(-1)


def value_relation_kl(v_s: torch.Tensor, v_t: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's value-relation transfer; student and teacher need the same number of heads (MiniLM v1)."""
    return _row_kl(value_relation(v_t, heads, mask), value_relation(v_s, heads, mask), mask)
