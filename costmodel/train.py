"""Training the Mamba ranker on a dataset's training networks: LambdaRank within tasks, task-grouped batches.

Each step samples `tasks_per_batch` training tasks and up to `programs_per_task` measured programs of each, so
every batch holds comparable programs. The learning rate warms up over `warmup_steps`, then follows a cosine to
zero at `steps` (a constant rate left a noisy final iterate: 1,200 steps scored below 600 held-out,
../shared/research/costmodel_diagnosis.md). With validation tasks, the model is scored on them every
`validate_every` steps and the weights kept are the best on validation (task-mean top-1), never on held-out data.
Checkpoints every `checkpoint_every` steps (kdcompile.checkpoint); `resume` continues exactly, and refuses a
checkpoint of another config, task list or teacher.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from costmodel.dataset import ProgramDataset
from costmodel.features import featurize_task
from costmodel.mamba import MambaConfig, MambaRanker, load_ranker, model_inputs, save_ranker
from costmodel.metrics import pairwise_accuracy, task_mean_top1, top_k_score
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
    warmup_steps: int = 50
    schedule: str = "cosine"  # or "constant"
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
    validate_every: int = 100  # with validation tasks
    seed: int = 0


@dataclass
class TaskData:
    """One task's successfully measured programs: token sequences, mean seconds and, when loaded with them, each
    program's per-store feature rows (n_stores, 164)."""

    task_hash: str
    tokens: list[tuple[np.ndarray, np.ndarray]]
    seconds: np.ndarray
    stores: list[np.ndarray] | None = None


def load_tasks(ds: ProgramDataset, task_hashes: list[str], min_programs: int = 2,
               with_stores: bool = False) -> list[TaskData]:
    out = []
    for h in task_hashes:
        if not ds.task(h).exists():
            continue
        f = featurize_task(ds, h, with_store_features=with_stores)
        ok = np.flatnonzero(np.isfinite(f["latency_s"]))
        if len(ok) < min_programs:
            continue
        off = f["tok_offsets"]
        tokens = [(f["tok_kind"][off[i]:off[i + 1]], f["tok_num"][off[i]:off[i + 1]]) for i in ok]
        stores = [f["psf"][f["psf_offsets"][i]:f["psf_offsets"][i + 1]] for i in ok] if with_stores else None
        out.append(TaskData(h, tokens, f["latency_s"][ok], stores))
    return out


@torch.no_grad()
def score_task(model: MambaRanker, task: TaskData, max_tokens: int = MAX_TOKENS, batch: int = 512) -> np.ndarray:
    """Scores of every program of a task, in batches (a program's score does not depend on its batch)."""
    model.eval()
    out = []
    for i in range(0, len(task.tokens), batch):
        stores = task.stores[i:i + batch] if task.stores is not None else None
        out.append(model(**model_inputs(model.cfg, task.tokens[i:i + batch], stores, max_tokens)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def ranking_metrics(model: MambaRanker, tasks: list[TaskData], max_tokens: int = MAX_TOKENS) -> dict[str, float]:
    """Pooled top-1 (every task weighted once), task-mean top-1 and pairwise accuracy of `model` on `tasks`."""
    return scored_metrics([(score_task(model, t, max_tokens), t.seconds, 1.0) for t in tasks])


def scored_metrics(items: list[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, float]:
    """The same three figures for any scorer's (scores, seconds, weight) per task."""
    return {"top1": top_k_score(items, 1), "task_mean_top1": task_mean_top1(items),
            "pairwise": float(np.mean([pairwise_accuracy(p, s) for p, s, _ in items]))}


def learning_rate(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    """One AdamW step at learning rate `lr`, gradients clipped to norm 1 (every ranker trains so)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def train(data: str | Path, out: Path, cfg: TrainConfig = TrainConfig(), resume: bool | None = False,
          task_hashes: list[str] | None = None, teacher: Path | None = None,
          validation_hashes: list[str] | None = None) -> dict:
    """Train on the training networks of `data` (or the given tasks); saves MambaScorer-loadable weights to `out`.

    With `teacher` (weights of a larger ranker), the model is distilled: it also matches, within each task, the
    teacher's distribution over which program is fastest (costmodel.rank.listwise_kd). With `validation_hashes`,
    the weights saved are the best on those tasks (module docstring) and the curve is in the result."""
    ds = ProgramDataset(data)
    hashes = task_hashes if task_hashes is not None else tasks_of(split_by_network(ds)["train"])
    with_stores = bool(cfg.model.store_features)
    tasks = load_tasks(ds, hashes, cfg.min_programs, with_stores)
    val_tasks = load_tasks(ds, validation_hashes, cfg.min_programs, with_stores) if validation_hashes else []
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
                         "validation_sha1": hashlib.sha1(json.dumps([t.task_hash for t in val_tasks]).encode())
                         .hexdigest(), "teacher": str(teacher) if teacher else None}
    best = {"model": copy.deepcopy(model)}  # the best weights on validation so far, checkpointed with the rest
    if val_tasks:
        state["best"] = best["model"]
    checkpoint = Checkpoint(out.with_suffix(".state.pt"), identity)
    # --resume is explicit (True); benchmarks resume what matches (None); False starts afresh
    start = checkpoint.restore(state, resume=resume)
    losses = list(checkpoint.meta.get("losses", []))
    curve = list(checkpoint.meta.get("validation", []))
    with progress() as bar:
        job = bar.add_task("train cost model", total=cfg.steps, completed=start, info="")
        for step in range(start, cfg.steps):
            model.train()
            picks = rng.choice(len(tasks), size=min(cfg.tasks_per_batch, len(tasks)), replace=False)
            seqs, stores, secs, tids = [], [], [], []
            for tid in picks:
                t = tasks[tid]
                idx = rng.choice(len(t.seconds), size=min(cfg.programs_per_task, len(t.seconds)), replace=False)
                seqs += [t.tokens[i] for i in idx]
                stores += [t.stores[i] for i in idx] if with_stores else []
                secs += [t.seconds[i] for i in idx]
                tids += [tid] * len(idx)
            scores = model(**model_inputs(cfg.model, seqs, stores or None, cfg.max_tokens))
            tids = torch.tensor(tids)
            loss = rank_loss(scores, torch.tensor(secs, dtype=torch.float32), tids, cfg.regression_weight)
            if teacher_model is not None:
                with torch.no_grad():
                    teacher_scores = teacher_model(**model_inputs(teacher_model.cfg, seqs, stores or None,
                                                                  cfg.max_tokens))
                loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * listwise_kd(scores, teacher_scores, tids,
                                                                                 cfg.kd_temperature)
            optimizer_step(model, opt, loss, learning_rate(cfg, step))
            losses.append(loss.item())
            info = f"loss {np.mean(losses[-50:]):.4f}"
            if val_tasks and save_due(step + 1, cfg.validate_every, cfg.steps):
                scored = ranking_metrics(model, val_tasks, cfg.max_tokens) | {"step": step + 1}
                if not curve or scored["task_mean_top1"] > max(c["task_mean_top1"] for c in curve):
                    best["model"].load_state_dict(copy.deepcopy(model.state_dict()))
                curve.append(scored)
                info += f" · validation top-1 {scored['top1']:.3f}"
            bar.update(job, advance=1, info=info)
            if save_due(step + 1, cfg.checkpoint_every, cfg.steps):
                checkpoint.save(step + 1, state, meta={"losses": losses, "validation": curve})
    kept = best["model"] if val_tasks else model
    save_ranker(kept, out)
    console.print(f"cost model: {len(tasks)} tasks, {sum(len(t.seconds) for t in tasks)} programs, "
                  f"final loss {np.mean(losses[-50:]):.4f} -> {out}")
    result = {"tasks": len(tasks), "programs": int(sum(len(t.seconds) for t in tasks)),
              "final_loss": float(np.mean(losses[-50:])), "config": asdict(cfg)}
    if val_tasks:
        result["validation"] = curve
        result["kept_step"] = max(curve, key=lambda c: c["task_mean_top1"])["step"]
    return result
