"""Training the Mamba ranker on a dataset's training networks: LambdaRank within tasks, task-grouped batches.

Each step samples `tasks_per_batch` training tasks and up to `programs_per_task` measured programs of each, so
every batch holds comparable programs. Checkpoints every `checkpoint_every` steps (kdcompile.checkpoint); `resume`
continues exactly, and refuses a checkpoint of another config, task list or teacher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from costmodel.dataset import ProgramDataset
from costmodel.features import featurize_task
from costmodel.mamba import MambaConfig, MambaRanker, load_ranker, pad_tokens, save_ranker
from costmodel.rank import listwise_kd, rank_loss
from costmodel.splits import split_by_network, tasks_of
from costmodel.tokenize import MAX_TOKENS
from kdcompile.checkpoint import Checkpoint, save_due
from kdcompile.errors import KdError
from kdcompile.progress import console, progress


@dataclass
class TrainConfig:
    model: MambaConfig = field(default_factory=MambaConfig)
    steps: int = 2000
    tasks_per_batch: int = 8
    programs_per_task: int = 32
    lr: float = 2e-3
    max_tokens: int = MAX_TOKENS
    regression_weight: float = 0.0
    kd_weight: float = 0.5  # with a teacher: loss = (1 - w) LambdaRank + w listwise KD
    kd_temperature: float = 1.0
    # Tasks with fewer measured programs are left out. With 2-4 programs a task has 1-6 pairs, and LambdaRank
    # divides by the pair count, so 46 such tasks (reshapes, transposes) carried 61% of an average batch's loss
    # and the model flattened its scores; dropping them took held-out top-1 from 0.129 to 0.406 (one seed,
    # ../shared/research/costmodel_diagnosis.md).
    min_programs: int = 5
    checkpoint_every: int = 200
    seed: int = 0


@dataclass
class TaskData:
    """One task's successfully measured programs: token sequences and mean seconds."""

    task_hash: str
    tokens: list[tuple[np.ndarray, np.ndarray]]
    seconds: np.ndarray


def load_tasks(ds: ProgramDataset, task_hashes: list[str], min_programs: int = 2) -> list[TaskData]:
    out = []
    for h in task_hashes:
        if not ds.task(h).exists():
            continue
        f = featurize_task(ds, h, with_store_features=False)
        ok = np.flatnonzero(np.isfinite(f["latency_s"]))
        if len(ok) < min_programs:
            continue
        off = f["tok_offsets"]
        tokens = [(f["tok_kind"][off[i]:off[i + 1]], f["tok_num"][off[i]:off[i + 1]]) for i in ok]
        out.append(TaskData(h, tokens, f["latency_s"][ok]))
    return out


def train(data: str | Path, out: Path, cfg: TrainConfig = TrainConfig(), resume: bool = False,
          task_hashes: list[str] | None = None, teacher: Path | None = None) -> dict:
    """Train on the training networks of `data` (or the given tasks); saves MambaScorer-loadable weights to `out`.

    With `teacher` (weights of a larger ranker), the model is distilled: it also matches, within each task, the
    teacher's distribution over which program is fastest (costmodel.rank.listwise_kd)."""
    ds = ProgramDataset(data)
    hashes = task_hashes if task_hashes is not None else tasks_of(split_by_network(ds)["train"])
    tasks = load_tasks(ds, hashes, cfg.min_programs)
    if not tasks:
        raise KdError(f"{data} has no training task with {cfg.min_programs} or more measured programs.")
    torch.manual_seed(cfg.seed)
    model = MambaRanker(cfg.model)
    teacher_model = load_ranker(teacher) if teacher else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    state = {"model": model, "optimizer": opt, "generator": rng}
    # How often it saves does not change the result, so it is not part of what makes the run this run.
    config = {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}
    task_list = [t.task_hash for t in tasks]  # in order: the generator picks tasks by index
    identity = config | {"tasks_sha1": hashlib.sha1(json.dumps(task_list).encode()).hexdigest(),
                         "teacher": str(teacher) if teacher else None}
    checkpoint = Checkpoint(out.with_suffix(".state.pt"), identity)
    start = checkpoint.restore(state, resume=bool(resume))  # --resume is explicit; without it, start afresh
    losses = list(checkpoint.meta.get("losses", []))
    with progress() as bar:
        job = bar.add_task("train cost model", total=cfg.steps, completed=start, info="")
        for step in range(start, cfg.steps):
            model.train()
            picks = rng.choice(len(tasks), size=min(cfg.tasks_per_batch, len(tasks)), replace=False)
            seqs, secs, tids = [], [], []
            for tid in picks:
                t = tasks[tid]
                idx = rng.choice(len(t.seconds), size=min(cfg.programs_per_task, len(t.seconds)), replace=False)
                seqs += [t.tokens[i] for i in idx]
                secs += [t.seconds[i] for i in idx]
                tids += [tid] * len(idx)
            kind, num, mask = pad_tokens(seqs)
            L = cfg.max_tokens
            scores = model(kind[:, :L], num[:, :L], mask[:, :L])
            tids = torch.tensor(tids)
            loss = rank_loss(scores, torch.tensor(secs, dtype=torch.float32), tids, cfg.regression_weight)
            if teacher_model is not None:
                with torch.no_grad():
                    teacher_scores = teacher_model(kind[:, :L], num[:, :L], mask[:, :L])
                loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * listwise_kd(scores, teacher_scores, tids,
                                                                                 cfg.kd_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(job, advance=1, info=f"loss {np.mean(losses[-50:]):.4f}")
            if save_due(step + 1, cfg.checkpoint_every, cfg.steps):
                checkpoint.save(step + 1, state, meta={"losses": losses})
    save_ranker(model, out)
    console.print(f"cost model: {len(tasks)} tasks, {sum(len(t.seconds) for t in tasks)} programs, "
                  f"final loss {np.mean(losses[-50:]):.4f} -> {out}")
    return {"tasks": len(tasks), "programs": int(sum(len(t.seconds) for t in tasks)),
            "final_loss": float(np.mean(losses[-50:])), "config": asdict(cfg)}
