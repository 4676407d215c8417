"""Ranking losses for cost models: programs are only compared within their own task.

Glossary: n programs of one task; `scores` (n,) model outputs (higher = predicted faster); `latency` (n,) true
seconds. Relevance is normalised throughput, best latency / latency, in (0, 1] (what TVM's XGBModel regresses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def throughput(latency: Tensor) -> Tensor:
    """best / latency in (0, 1]: 1 for the task's fastest program."""
    return latency.min() / latency


def lambdarank(scores: Tensor, latency: Tensor, sigma: float = 1.0) -> Tensor:
    """LambdaRank (Burges 2010) within one task: a logistic loss on every pair the truth orders, weighted by how
    much swapping the pair would change the NDCG of the model's ranking (relevance = throughput)."""
    rel = throughput(latency)
    n = len(scores)
    order = torch.argsort(scores.detach(), descending=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    discount = 1.0 / torch.log2(rank.float() + 2.0)  # (n,)
    gain = 2.0 ** rel - 1.0
    ideal = (torch.sort(gain, descending=True).values / torch.log2(torch.arange(n).float() + 2.0)).sum()
    # |delta NDCG| of swapping i and j: |g_i - g_j| |d_i - d_j| / IDCG
    delta = (gain[:, None] - gain[None, :]).abs() * (discount[:, None] - discount[None, :]).abs() / ideal
    better = rel[:, None] > rel[None, :]  # i truly faster than j
    pair_loss = F.softplus(-sigma * (scores[:, None] - scores[None, :]))  # log(1 + exp(-sigma (s_i - s_j)))
    return (delta * pair_loss * better).sum() / better.sum().clamp_min(1)


def rank_loss(scores: Tensor, latency: Tensor, task: Tensor, regression_weight: float = 0.0) -> Tensor:
    """Mean LambdaRank over the tasks present in a batch (`task` (b,) ids), optionally plus a squared error between
    sigmoid(score) and normalised throughput."""
    losses = []
    for t in torch.unique(task):
        sel = task == t
        if sel.sum() < 2:
            continue
        loss = lambdarank(scores[sel], latency[sel])
        if regression_weight:
            loss = loss + regression_weight * F.mse_loss(torch.sigmoid(scores[sel]), throughput(latency[sel]))
        losses.append(loss)
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0


def listwise_kd(scores: Tensor, teacher_scores: Tensor, task: Tensor, temperature: float = 1.0) -> Tensor:
    """Distillation between rankers: within each task the programs' scores are logits of one distribution
    ("which program is fastest"), and the student matches the teacher's with Hinton's loss (ListNet-style)."""
    from kdcompile.losses import hinton_kd

    losses = [hinton_kd(scores[task == t][None], teacher_scores[task == t][None], temperature=temperature)
              for t in torch.unique(task) if (task == t).sum() >= 2]
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0
