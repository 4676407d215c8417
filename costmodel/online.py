"""The Mamba cost model's TVM-free half: score traces, learn online from measured ones, save and load.

`kdcompile.tvm_layer.cost_models.TraceRankerCostModel` is the thin MetaSchedule adapter around it. Scores depend only on each
program's own tokens (no normalisation by the current batch, unlike TVM's MLP model), so the same program gets
the same score whatever it is predicted with.

Inside the tuner, the evolutionary search scores the same candidates again and again (a population survives from
one generation to the next), so programs come named by a key (the adapter's: workload and printed trace) with a
function that featurises the ones asked for. Each key is featurised once (tokens and store rows cached), and its
score is cached until the next online round changes the weights. `score` is the uncached reference. Online
learning runs when `update_every` new programs have been measured since the last round (MetaSchedule calls
`update` after every measured batch), `steps_per_update` LambdaRank steps on a sample of all measured so far.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from costmodel.mamba import MambaConfig, MambaRanker, load_ranker, model_inputs, save_ranker
from costmodel.rank import rank_loss
from costmodel.tokenize import MAX_TOKENS, tokenize
from kdcompile.measured import is_measured

# An online round is `steps_per_update` LambdaRank steps of UPDATE_BATCH programs sampled from all measured so far.
# A step of 256 programs took 2.8 s in a one-off timing here (the scan keeps every state for its backward pass), so
# the first version's 10 x 256 rounds were costly; 5 x 128 took 13 s in all over a 500-trial MobileNet-V2 run
# (bench/results/costmodel/tuning_cpu-rocketlake-2c_clamped.json). The first version's update time was not measured apart.
UPDATE_BATCH = 128
CACHE_LIMIT = 50_000  # cached programs (tokens and store rows: ~10 KB each); the cache restarts when full
SCORE_BATCH = 128  # programs per forward pass when scoring, sorted by length so that little is padding

# featurise(indices) -> (trace JSONs, per-store rows or None) of the programs at those indices
Featurise = Callable[[list[int]], tuple[list, list[np.ndarray] | None]]


class MambaScorer:
    def __init__(self, model: MambaRanker | None = None, lr: float = 1e-3, steps_per_update: int = 5,
                 update_every: int = 64, max_tokens: int = MAX_TOKENS, seed: int = 0):
        torch.manual_seed(seed)
        self.model = model or MambaRanker(MambaConfig())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.steps_per_update, self.update_every, self.max_tokens = steps_per_update, update_every, max_tokens
        self.seen: list[tuple[int, tuple, np.ndarray | None, float]] = []  # (task id, tokens, stores, seconds)
        self.tasks: dict[str, int] = {}
        self.pending = 0  # programs measured since the last round of updates
        self.rounds = 0  # rounds of online updates taken
        self._features: dict[str, tuple] = {}  # key -> (tokens, store rows or None)
        self._scores: dict[str, float] = {}  # key -> score under the current weights
        self.featurised = 0  # programs featurised (cache misses), for the tuner's accounting
        self.seconds = {"featurise": 0.0, "score": 0.0, "update": 0.0}  # where the cost model's time goes

    @property
    def wants_stores(self) -> bool:
        """Whether predict and update need each program's per-store feature rows."""
        return bool(self.model.cfg.store_features)

    def clear_cache(self) -> None:
        self._features.clear()
        self._scores.clear()

    def features(self, keys: list[str], featurise: Featurise) -> list[tuple]:
        """(tokens, store rows) per key; only the keys not cached are featurised, in one call."""
        first = _first_index(keys, skip=self._features)
        got = {k: self._features[k] for k in keys if k not in first}
        if first:
            if len(self._features) + len(first) > CACHE_LIMIT:
                self._features.clear()
            start = time.perf_counter()
            traces, stores = featurise(list(first.values()))
            for i, k in enumerate(first):
                got[k] = self._features[k] = (tokenize(traces[i]), None if stores is None else stores[i])
            self.featurised += len(first)
            self.seconds["featurise"] += time.perf_counter() - start
        return [got[k] for k in keys]

    @torch.no_grad()
    def score(self, tokens: list[tuple], stores: list[np.ndarray] | None = None) -> np.ndarray:
        """Scores (higher = predicted faster) of tokenised programs (and their per-store rows, for a model that
        reads them), uncached: the reference `predict` is checked against. Batched by length; a program's score
        does not depend on its batch (tests/test_costmodel_online.py)."""
        out = np.zeros(len(tokens), dtype=np.float32)
        if not tokens:
            return out
        self.model.eval()
        length = [min(len(t[0]), self.max_tokens) + (0 if stores is None else len(stores[i]))
                  for i, t in enumerate(tokens)]
        order = np.argsort(length, kind="stable")
        for start in range(0, len(order), SCORE_BATCH):
            idx = order[start:start + SCORE_BATCH]
            inputs = model_inputs(self.model.cfg, [tokens[i] for i in idx],
                                  None if stores is None else [stores[i] for i in idx], self.max_tokens)
            out[idx] = self.model(**inputs).numpy()
        return out

    def predict(self, keys: list[str], featurise: Featurise) -> np.ndarray:
        """Scores for the programs named by `keys` (one key, one program); programs scored since the last online
        round are not scored again."""
        first = _first_index(keys, skip=self._scores)
        got = {k: self._scores[k] for k in keys if k not in first}
        if first:
            missing = list(first)
            feats = self.features(missing, lambda idx: featurise([first[missing[i]] for i in idx]))
            start = time.perf_counter()
            scores = self.score([f[0] for f in feats], [f[1] for f in feats] if self.wants_stores else None)
            self.seconds["score"] += time.perf_counter() - start
            new = dict(zip(missing, scores.tolist()))
            if len(self._scores) + len(new) > CACHE_LIMIT:
                self._scores.clear()
            self._scores.update(new)
            got.update(new)
        return np.array([got[k] for k in keys], dtype=np.float32)

    def update(self, task: str, keys: list[str], featurise: Featurise, seconds: list[float | None]) -> None:
        """Remember measured programs (failures are skipped); when `update_every` have come in since the last
        round, take `steps_per_update` LambdaRank steps on a sample of all of them (and forget cached scores)."""
        tid = self.tasks.setdefault(task, len(self.tasks))
        ok = [i for i, s in enumerate(seconds) if s is not None and np.isfinite(s) and is_measured([s])]
        feats = self.features([keys[i] for i in ok], lambda idx: featurise([ok[i] for i in idx]))
        for i, (tokens, stores) in zip(ok, feats):
            self.seen.append((tid, tokens, stores, float(seconds[i])))
        self.pending += len(ok)
        if self.pending < self.update_every or len(self.seen) < 2:
            return
        self.pending = 0
        self.rounds += 1
        self._scores.clear()  # the weights change
        start = time.perf_counter()
        self.model.train()
        rng = np.random.default_rng(len(self.seen))
        for _ in range(self.steps_per_update):
            idx = rng.choice(len(self.seen), size=min(UPDATE_BATCH, len(self.seen)), replace=False)
            picked = [self.seen[i] for i in idx]
            inputs = model_inputs(self.model.cfg, [p[1] for p in picked],
                                  [p[2] for p in picked] if self.wants_stores else None, self.max_tokens)
            scores = self.model(**inputs)
            loss = rank_loss(scores, torch.tensor([p[3] for p in picked]), torch.tensor([p[0] for p in picked]))
            if loss.requires_grad:
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
        self.model.eval()
        self.seconds["update"] += time.perf_counter() - start

    def save(self, path: str | Path) -> None:
        save_ranker(self.model, path)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "MambaScorer":
        return cls(load_ranker(path), **kwargs)


def _first_index(keys: list[str], skip: dict) -> dict[str, int]:
    """Each key not in `skip`, with the index of its first occurrence, in order."""
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in skip:
            first.setdefault(k, i)
    return first
