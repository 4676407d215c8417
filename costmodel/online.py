"""The Mamba cost model's TVM-free half: score traces, learn online from measured ones, save and load.

`kdcompile.tvm_layer.cost_models.TraceRankerCostModel` is the thin MetaSchedule adapter around it. Scores depend only on each
program's own tokens (no normalisation by the current batch, unlike TVM's MLP model), so the same program gets
the same score whatever it is predicted with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from costmodel.mamba import MambaConfig, MambaRanker, load_ranker, pad_tokens, save_ranker
from costmodel.rank import rank_loss
from costmodel.tokenize import MAX_TOKENS, tokenize
from kdcompile.measured import is_measured

UPDATE_BATCH = 256  # programs per online LambdaRank step, sampled from all measured so far


class MambaScorer:
    def __init__(self, model: MambaRanker | None = None, lr: float = 1e-3, steps_per_update: int = 10,
                 max_tokens: int = MAX_TOKENS, seed: int = 0):
        torch.manual_seed(seed)
        self.model = model or MambaRanker(MambaConfig())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.steps_per_update, self.max_tokens = steps_per_update, max_tokens
        self.seen: list[tuple[int, tuple, float]] = []  # (task id, tokens, seconds) of measured programs
        self.tasks: dict[str, int] = {}

    def _batch(self, traces: list) -> tuple:
        return pad_tokens([tokenize(t) for t in traces], max_len=None)

    @torch.no_grad()
    def predict(self, traces: list) -> np.ndarray:
        """Scores (higher = predicted faster) for trace JSONs."""
        if not traces:
            return np.zeros(0)
        self.model.eval()
        kind, num, mask = self._batch(traces)
        return self.model(kind[:, : self.max_tokens], num[:, : self.max_tokens], mask[:, : self.max_tokens]).numpy()

    def update(self, task: str, traces: list, seconds: list[float | None]) -> None:
        """Remember measured programs (failures are skipped) and take a few LambdaRank steps on all of them."""
        tid = self.tasks.setdefault(task, len(self.tasks))
        for trace, s in zip(traces, seconds):
            if s is not None and np.isfinite(s) and is_measured([s]):
                self.seen.append((tid, tokenize(trace), float(s)))
        if len(self.seen) < 2:
            return
        self.model.train()
        rng = np.random.default_rng(len(self.seen))
        for _ in range(self.steps_per_update):
            idx = rng.choice(len(self.seen), size=min(UPDATE_BATCH, len(self.seen)), replace=False)
            kind, num, mask = pad_tokens([self.seen[i][1] for i in idx], max_len=None)
            L = self.max_tokens
            scores = self.model(kind[:, :L], num[:, :L], mask[:, :L])
            latency = torch.tensor([self.seen[i][2] for i in idx])
            task_ids = torch.tensor([self.seen[i][0] for i in idx])
            loss = rank_loss(scores, latency, task_ids)
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
