"""The Mamba cost model's TVM-free half: score traces, learn online from measured ones, save and load.

`kdcompile.tvm_layer.cost_models.TraceRankerCostModel` is the thin MetaSchedule adapter around it. Scores depend only on each
program's own tokens (no normalisation by the current batch, unlike TVM's MLP model), so the same program gets
the same score whatever it is predicted with.

Inside the tuner, the evolutionary search scores the same candidates again and again (a population survives from
one iteration to the next), so each trace is tokenised once: tokens are cached by the trace's JSON. Online
learning runs when `update_every` new programs have been measured since the last round (MetaSchedule calls
`update` after every measured batch), `steps_per_update` LambdaRank steps on a sample of all measured so far.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from costmodel.mamba import MambaConfig, MambaRanker, load_ranker, model_inputs, save_ranker
from costmodel.rank import rank_loss
from costmodel.tokenize import MAX_TOKENS, tokenize
from kdcompile.measured import is_measured

UPDATE_BATCH = 256  # programs per online LambdaRank step, sampled from all measured so far
CACHE_LIMIT = 200_000  # cached token sequences (a long tuning run scores about this many distinct programs)


class MambaScorer:
    def __init__(self, model: MambaRanker | None = None, lr: float = 1e-3, steps_per_update: int = 10,
                 update_every: int = 64, max_tokens: int = MAX_TOKENS, seed: int = 0):
        torch.manual_seed(seed)
        self.model = model or MambaRanker(MambaConfig())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.steps_per_update, self.update_every, self.max_tokens = steps_per_update, update_every, max_tokens
        self.seen: list[tuple[int, tuple, np.ndarray | None, float]] = []  # (task id, tokens, stores, seconds)
        self.tasks: dict[str, int] = {}
        self.pending = 0  # programs measured since the last round of updates
        self.rounds = 0  # rounds of online updates taken
        self._tokens: dict[str, tuple] = {}

    @property
    def wants_stores(self) -> bool:
        """Whether predict and update need each program's per-store feature rows."""
        return bool(self.model.cfg.store_features)

    def tokens(self, trace: list) -> tuple:
        """The trace's tokens, tokenised once (costmodel.tokenize)."""
        key = json.dumps(trace, separators=(",", ":"))
        got = self._tokens.get(key)
        if got is None:
            if len(self._tokens) >= CACHE_LIMIT:
                self._tokens.clear()
            got = self._tokens[key] = tokenize(trace)
        return got

    @torch.no_grad()
    def predict(self, traces: list, stores: list[np.ndarray] | None = None) -> np.ndarray:
        """Scores (higher = predicted faster) for trace JSONs (and their per-store rows, for a model that reads
        them)."""
        if not traces:
            return np.zeros(0)
        self.model.eval()
        inputs = model_inputs(self.model.cfg, [self.tokens(t) for t in traces], stores, self.max_tokens)
        return self.model(**inputs).numpy()

    def update(self, task: str, traces: list, seconds: list[float | None],
               stores: list[np.ndarray] | None = None) -> None:
        """Remember measured programs (failures are skipped); when `update_every` have come in since the last
        round, take `steps_per_update` LambdaRank steps on a sample of all of them."""
        tid = self.tasks.setdefault(task, len(self.tasks))
        for i, (trace, s) in enumerate(zip(traces, seconds)):
            if s is not None and np.isfinite(s) and is_measured([s]):
                self.seen.append((tid, self.tokens(trace), None if stores is None else stores[i], float(s)))
                self.pending += 1
        if self.pending < self.update_every or len(self.seen) < 2:
            return
        self.pending = 0
        self.rounds += 1
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

    def save(self, path: str | Path) -> None:
        save_ranker(self.model, path)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "MambaScorer":
        return cls(load_ranker(path), **kwargs)
