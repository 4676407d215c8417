"""TVM's MLPModel (TenSet-MLP) as a baseline: an MLP over per-store feature rows, summed per program.

As in `tvm.s_tir.meta_schedule.cost_model.mlp_model.SegmentSumMLP`: each BufferStore row goes through a 2-layer
encoder, the rows of a program are summed (scatter-add), two residual blocks and a linear head give its score;
LambdaRank within each task. One deliberate change: features are scaled by the column-wise max of the *training*
rows, fixed at training time. TVM scales by the max over whatever batch it is given, so its scores of one program
change with the other candidates predicted beside it.

Glossary: r store rows, p programs, f = 164 per-store features, h hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from costmodel.rank import rank_loss


@dataclass
class MLPConfig:
    in_dim: int = 164
    hidden: int = 256
    epochs: int = 50
    lr: float = 7e-4
    tasks_per_batch: int = 8
    programs_per_task: int = 64
    seed: int = 0


class SegmentSumMLP(nn.Module):
    def __init__(self, in_dim: int = 164, hidden: int = 256):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.residual = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(hidden, 1)
        self.register_buffer("scale", torch.ones(in_dim))  # column max of the training rows

    def forward(self, rows: torch.Tensor, program_of_row: torch.Tensor, n_programs: int) -> torch.Tensor:
        """rows (r, f), program_of_row (r,) int -> scores (p,), higher = predicted faster."""
        h = self.encoder(rows / self.scale)  # (r, h)
        x = h.new_zeros(n_programs, h.shape[1]).index_add_(0, program_of_row, h)  # (p, h): segment sum
        for block in self.residual:
            x = x + block(x)
        return self.head(x).squeeze(-1)


def train_mlp(tasks: list[tuple[list[np.ndarray], np.ndarray]], cfg: MLPConfig = MLPConfig()) -> SegmentSumMLP:
    """`tasks`: per task, each measured program's store rows and the programs' latencies (seconds)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SegmentSumMLP(cfg.in_dim, cfg.hidden)
    all_rows = np.concatenate([r for rows, _ in tasks for r in rows])
    model.scale.copy_(torch.from_numpy(np.maximum(np.abs(all_rows).max(0), 1e-6)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 5), gamma=0.8)
    for _ in range(cfg.epochs):
        order = rng.permutation(len(tasks))
        for start in range(0, len(order), cfg.tasks_per_batch):
            rows, prog, lat, tid, n = [], [], [], [], 0
            for t in order[start:start + cfg.tasks_per_batch]:
                task_rows, seconds = tasks[t]
                pick = rng.choice(len(seconds), size=min(cfg.programs_per_task, len(seconds)), replace=False)
                for i in pick:
                    rows.append(task_rows[i])
                    prog.append(np.full(len(task_rows[i]), n))
                    n += 1
                lat.append(seconds[pick])
                tid.append(np.full(len(pick), t))
            scores = model(torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(prog)), n)
            loss = rank_loss(scores, torch.from_numpy(np.concatenate(lat)).float(),
                             torch.from_numpy(np.concatenate(tid)))
            if loss.requires_grad:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict_mlp(model: SegmentSumMLP, rows: list[np.ndarray]) -> np.ndarray:
    """Scores of programs given each one's store rows."""
    prog = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return model(torch.from_numpy(np.concatenate(rows)), torch.from_numpy(prog), len(rows)).numpy()
