"""A Mamba ranker over tensor-program traces: tokens in, one score per program out (higher = predicted faster).

Plain PyTorch, no TVM. The block follows Mamba (Gu & Dao 2023) and mamba-minimal: in-projection to x and a gate z,
causal depthwise conv on x, input-dependent delta, B, C (the "selective" part), the selective scan, gating by
silu(z), out-projection, residual with RMSNorm. Scores pool the last layer over the program's tokens.

With `store_features` (164, MetaSchedule's PerStoreFeature width), each program's sequence is its trace tokens
followed by one token per buffer store of the scheduled program, carrying that store's feature row: the trace says
how the program was scheduled, the stores what the schedule produced (loop extents, vector widths, bytes touched,
arithmetic intensity), which is what XGBoost ranks from (TLP and TenSet's two lines, joined). The scan reads the
stores after the whole trace.

Glossary: b programs, l tokens (trace instructions, then stores), d model width, e inner width (expand * d),
n state size, k conv width, r rank of the delta projection, f numeric features per token, s store features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from costmodel.scan import selective_scan
from costmodel.tokenize import KINDS, MAX_TOKENS, NUM_FEATURES, STORE_KIND
from kdcompile.files import atomic_path


@dataclass
class MambaConfig:
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    vocab: int = len(KINDS)
    num_features: int = NUM_FEATURES
    store_features: int = 0  # 0: trace tokens only; 164: per-store feature rows join as tokens (module docstring)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        e, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * e, bias=False)
        self.conv = nn.Conv1d(e, e, cfg.d_conv, groups=e, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e)
        # S4D-real initialisation: A = -(1..n) per channel, stored as log for positivity.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32).repeat(e, 1)))  # (e, n)
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, cfg.d_model, bias=False)
        self.n, self.r = n, r

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, l, d)
        l = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (b, l, e) each
        xs = F.silu(self.conv(xs.transpose(1, 2))[..., :l].transpose(1, 2))  # causal: drop the right overhang
        dt, B, C = self.x_proj(xs).split([self.r, self.n, self.n], dim=-1)  # (b, l, r), (b, l, n), (b, l, n)
        delta = F.softplus(self.dt_proj(dt))  # (b, l, e)
        y = selective_scan(xs, delta, -torch.exp(self.A_log), B, C, self.D)  # (b, l, e)
        return self.out_proj(y * F.silu(z))


class MambaRanker(nn.Module):
    def __init__(self, cfg: MambaConfig = MambaConfig()):
        super().__init__()
        self.cfg = cfg
        self.kind = nn.Embedding(cfg.vocab, cfg.d_model)
        self.num = nn.Linear(cfg.num_features, cfg.d_model)
        self.store = nn.Linear(cfg.store_features, cfg.d_model) if cfg.store_features else None
        self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList(RMSNorm(cfg.d_model) for _ in range(cfg.n_layers))
        self.norm_f = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, kind: torch.Tensor, num: torch.Tensor, mask: torch.Tensor,
                store: torch.Tensor | None = None) -> torch.Tensor:
        """kind (b, l) int, num (b, l, f), mask (b, l) bool (False = padding), store (b, l, s) for a model with
        store features (zero on trace tokens) -> scores (b,).

        Padding sits at the end of each sequence, so the causal scan never mixes it into real tokens."""
        return self.head(self.embed(kind, num, mask, store)).squeeze(-1)

    def embed(self, kind: torch.Tensor, num: torch.Tensor, mask: torch.Tensor,
              store: torch.Tensor | None = None) -> torch.Tensor:
        """The program's representation the score is read from (b, d): what the transfer sampler clusters."""
        x = self.kind(kind) + self.num(num)  # (b, l, d)
        if self.store is not None:
            x = x + self.store(store)
        for block, norm in zip(self.blocks, self.norms):
            x = x + block(norm(x))
        x = self.norm_f(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (b, d): mean over the program's tokens

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def save_ranker(model: MambaRanker, path) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config": model.config_dict(), "state": model.state_dict()}, tmp)


def load_ranker(path) -> MambaRanker:
    """A ranker saved by `save_ranker` (or by training), in eval mode."""
    blob = torch.load(path, weights_only=True)
    model = MambaRanker(MambaConfig(**blob["config"]))  # weights saved before store features default to none
    model.load_state_dict(blob["state"])
    return model.eval()


def pad_tokens(seqs: list[tuple], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token sequences [(kind (l,), num (l, f))] to right-padded (kind (b, L), num (b, L, f), mask (b, L))."""
    L = max_len or max(len(k) for k, _ in seqs)
    b, f = len(seqs), seqs[0][1].shape[1]
    kind = torch.zeros(b, L, dtype=torch.long)
    num = torch.zeros(b, L, f)
    mask = torch.zeros(b, L, dtype=torch.bool)
    for i, (k, n) in enumerate(seqs):
        m = min(len(k), L)
        kind[i, :m] = torch.as_tensor(k[:m])
        num[i, :m] = torch.as_tensor(n[:m])
        mask[i, :m] = True
    return kind, num, mask


def model_inputs(cfg: MambaConfig, tokens: list[tuple], stores: list[np.ndarray] | None = None,
                 max_tokens: int = MAX_TOKENS) -> dict[str, torch.Tensor]:
    """The keyword inputs of MambaRanker.forward for a batch of programs: each trace cut to `max_tokens`, then,
    for a model with store features, its per-store rows (n_stores, s) appended as tokens of kind STORE_KIND."""
    cut = [(k[:max_tokens], n[:max_tokens]) for k, n in tokens]
    if not cfg.store_features:
        kind, num, mask = pad_tokens(cut)
        return {"kind": kind, "num": num, "mask": mask}
    if stores is None:
        raise ValueError("this ranker reads per-store features: pass each program's rows")
    joined = [(np.concatenate([k, np.full(len(r), STORE_KIND)]),
               np.concatenate([n, np.zeros((len(r), n.shape[1]), np.float32)])) for (k, n), r in zip(cut, stores)]
    kind, num, mask = pad_tokens(joined)
    store = torch.zeros(len(cut), kind.shape[1], cfg.store_features)
    for i, ((k, _), r) in enumerate(zip(cut, stores)):
        store[i, len(k):len(k) + len(r)] = torch.as_tensor(r)
    return {"kind": kind, "num": num, "mask": mask, "store": store}
