"""Ranking metrics for cost models, as TenSet and TLP report them. Pure numpy; higher is better everywhere.

Glossary: for one task, `pred` (n,) are model scores (higher = predicted faster) and `lat` (n,) true latencies in
seconds of the same n programs (failed programs already removed).
"""

from __future__ import annotations

import numpy as np


def best_in_top_k(pred: np.ndarray, lat: np.ndarray, k: int) -> float:
    """The true latency of the fastest program among the model's k highest-scored ones."""
    top = np.argsort(-pred, kind="stable")[:k]
    return float(lat[top].min())


def top_k_score(tasks: list[tuple[np.ndarray, np.ndarray, float]], k: int) -> float:
    """TenSet/TLP top-k score of one network: sum_i w_i * best_i / sum_i w_i * best_in_top_k_i, over its tasks
    (pred, lat, weight). 1.0 means that for every task the model's top k contain the fastest program."""
    best = sum(w * float(lat.min()) for pred, lat, w in tasks)
    picked = sum(w * best_in_top_k(pred, lat, k) for pred, lat, w in tasks)
    return best / picked


def task_mean_top1(tasks: list[tuple[np.ndarray, np.ndarray, float]]) -> float:
    """The unweighted mean over tasks of best / latency of the model's pick: every task counts once, however
    heavy. Pooled top-1 (`top_k_score`) can be dominated by a few heavy tasks (three bert_base@b8 tasks held 69% of
    a model's pooled regret, ../shared/research/costmodel_diagnosis.md); this is reported beside it."""
    return float(np.mean([float(lat.min()) / best_in_top_k(pred, lat, 1) for pred, lat, _ in tasks]))


def pairwise_accuracy(pred: np.ndarray, lat: np.ndarray) -> float:
    """Fraction of program pairs with different latencies that the scores order correctly (ties in pred: half)."""
    i, j = np.triu_indices(len(lat), k=1)
    differ = lat[i] != lat[j]
    faster_i = lat[i] < lat[j]
    score_diff = pred[i] - pred[j]
    right = np.where(faster_i, score_diff > 0, score_diff < 0) + 0.5 * (score_diff == 0)
    return float(right[differ].mean()) if differ.any() else 1.0


def top_k_recall(pred: np.ndarray, lat: np.ndarray, k: int) -> float:
    """|model's top k  intersect  true top k| / k."""
    k = min(k, len(lat))
    return len(set(np.argsort(-pred, kind="stable")[:k]) & set(np.argsort(lat, kind="stable")[:k])) / k
