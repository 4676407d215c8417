"""Which programs of a task to measure on a new target: TCL's RDU sampler, as kdcompile reads it (issue #25).

TCL (arXiv 2604.12891) picks ~10% of each task's candidates by Representativeness, Diversity and Uncertainty; its
exact weighting is not public here, so this is ours, with equal weights:
- representativeness: how dense the program's neighbourhood is in the old ranker's embedding space (the mean
  distance to its `neighbours` nearest programs, turned into a score in [0, 1] within the task): a pick stands for
  many programs;
- diversity: the distance to the nearest program already picked, over the task's largest distance (1 before the
  first pick); a duplicate of a pick (embeddings equal) is picked only when nothing else is left;
- uncertainty: how much the old ranker's score of the program moves when a tenth of its tokens are removed at
  random before it reads them (the standard deviation over `passes` such passes: MC dropout on the input, since
  the ranker has no dropout layer), in [0, 1] within the task.
Picks are greedy: each step takes the program with the highest sum of the three, then updates diversity. Pure
numpy apart from `uncertainty`, which runs the ranker.
"""

from __future__ import annotations

import math

import numpy as np
import torch

WEIGHTS = {"representativeness": 1.0, "diversity": 1.0, "uncertainty": 1.0}
DUPLICATE = 1e-6  # relative distance under which two programs count as the same


def how_many(n: int, share: float, least: int = 2) -> int:
    """Programs to measure of a task with n: the share, rounded up, and at least `least` (a ranking loss needs a
    pair), never more than n."""
    return min(n, max(least, math.ceil(share * n)))


def unit(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant vector becomes zeros (it tells the programs apart by nothing)."""
    span = x.max() - x.min() if len(x) else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x, dtype=np.float64)


def distances(emb: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, n) between the rows of emb."""
    sq = (emb ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0))


def representativeness(dist: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """Density in [0, 1]: 1 for the program whose `neighbours` nearest others are closest on average."""
    n = len(dist)
    if n < 2:
        return np.ones(n)
    k = min(neighbours, n - 1)
    near = np.sort(dist, axis=1)[:, 1:k + 1].mean(1)  # column 0 is the program itself
    return 1.0 - unit(near)


def rdu_pick(emb: np.ndarray, uncert: np.ndarray, k: int, weights: dict = WEIGHTS) -> list[int]:
    """Indices of the k programs to measure, in the order picked (module docstring)."""
    n = len(emb)
    dist = distances(np.asarray(emb, dtype=np.float64))
    rep, unc = representativeness(dist), unit(np.asarray(uncert, dtype=np.float64))
    scale = dist.max() if dist.max() > 0 else 1.0
    nearest_pick = np.full(n, scale)  # distance to the nearest picked program
    picked: list[int] = []
    for _ in range(min(k, n)):
        div = nearest_pick / scale
        total = weights["representativeness"] * rep + weights["uncertainty"] * unc + weights["diversity"] * div
        total[nearest_pick <= DUPLICATE * scale] -= 10.0  # a copy of a pick tells nothing new: last resort
        total[picked] = -np.inf
        i = int(np.argmax(total))
        picked.append(i)
        nearest_pick = np.minimum(nearest_pick, dist[i])
    return picked


def random_pick(n: int, k: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.choice(n, size=min(k, n), replace=False)]


@torch.no_grad()
def embed_and_uncertainty(model, tokens: list[tuple], stores: list[np.ndarray] | None = None, passes: int = 8,
                          drop: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ranker's embeddings (n, d) of a task's programs and the spread of their scores (n,) over `passes`
    passes that each remove a random share `drop` of every program's tokens (trace tokens and store rows alike)
    before the ranker reads it. `tokens`, `stores`: as costmodel.mamba.model_inputs takes them."""
    from costmodel.mamba import model_inputs

    model.eval()
    emb = model.embed(**model_inputs(model.cfg, tokens, stores))
    rng = np.random.default_rng(seed)

    def thinned(a: np.ndarray) -> np.ndarray:
        keep = rng.random(len(a)) >= drop
        return a[keep] if keep.any() else a[:1]  # never the empty program

    scores = []
    for _ in range(passes):
        cut = []
        for kind, num in tokens:
            keep = rng.random(len(kind)) >= drop
            keep[0] |= not keep.any()
            cut.append((kind[keep], num[keep]))
        rows = [thinned(r) if len(r) else r for r in stores] if stores is not None else None
        scores.append(model(**model_inputs(model.cfg, cut, rows)))
    return emb.numpy(), torch.stack(scores).std(0).numpy()
