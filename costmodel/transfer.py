"""A cost model for a new target from a tenth of its measurements: the old target's ranker carried over by
continual distillation (TCL, arXiv 2604.12891; issue #25).

The old ranker is the teacher. The new target's ranker starts from its weights (same architecture, no head per
platform) and trains on the programs a sampler chose to measure (costmodel.sampler) with LambdaRank, plus listwise
KD toward the teacher's scores on the task's candidates, measured or not (up to `programs_per_task` unmeasured ones
per task in a batch: the teacher's opinion costs no measurement). Variants, every one on the same tasks and steps:
- rdu_kd: RDU sample, teacher's weights, KD;      random_kd: a random sample, teacher's weights, KD;
- rdu: RDU sample, teacher's weights, no KD (plain fine-tuning: what forgets);
- scratch: a random sample, fresh weights (a user with no old ranker cannot run RDU);
- full: every program, fresh weights (the ceiling);  teacher: the old ranker as it is (zero-shot).
Forgetting is read on the old target's own held-out networks, before (the teacher) and after.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from costmodel.dataset import ProgramDataset
from costmodel.evaluate import evaluate, mamba_scorer
from costmodel.mamba import MambaRanker, load_ranker, model_inputs, save_ranker
from costmodel.rank import listwise_kd, rank_loss
from costmodel.sampler import embed_and_uncertainty, how_many, random_pick, rdu_pick
from costmodel.splits import split_by_network, tasks_of
from costmodel.train import TaskData, TrainConfig, learning_rate, load_tasks, optimizer_step
from kdcompile.files import file_sha256, write_json
from kdcompile.progress import progress

VARIANTS = {  # name: (sample, start from the teacher's weights, KD toward the teacher)
    "rdu_kd": ("rdu", True, True), "random_kd": ("random", True, True), "rdu": ("rdu", True, False),
    "scratch": ("random", False, False), "full": ("all", False, False)}


@dataclass
class TransferConfig:
    share: float = 0.1  # of each task's programs measured
    steps: int = 300
    lr: float = 1e-3  # fine-tuning from the teacher
    scratch_lr: float = 2e-3  # fresh weights (TrainConfig's)
    kd_weight: float = 0.5  # loss = (1 - w) LambdaRank on measured programs + w listwise KD on all
    tasks_per_batch: int = 8
    programs_per_task: int = 32  # unmeasured candidates per task in a batch, beside its measured ones (for KD)
    min_programs: int = 5
    seed: int = 0


def choose(tasks: list[TaskData], teacher: MambaRanker, share: float, how: str, seed: int) -> dict[str, np.ndarray]:
    """{task_hash: indices of the programs to measure}: "rdu", "random" or "all"."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in tasks:
        n = len(t.seconds)
        k = how_many(n, share)
        if how == "all":
            out[t.task_hash] = np.arange(n)
        elif how == "random":
            out[t.task_hash] = np.array(sorted(random_pick(n, k, rng)))
        else:
            emb, unc = embed_and_uncertainty(teacher, t.tokens, t.stores, seed=seed)
            out[t.task_hash] = np.array(sorted(rdu_pick(emb, unc, k)))
    return out


def fit(tasks: list[TaskData], measured: dict[str, np.ndarray], init: MambaRanker | None,
        teacher: MambaRanker | None, cfg: TransferConfig, fresh_config=None) -> MambaRanker:
    """Train a ranker on the measured programs (LambdaRank), from `init`'s weights (or fresh ones of
    `fresh_config`), with listwise KD toward `teacher` on all candidates when given."""
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(init) if init is not None else MambaRanker(fresh_config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    lr_cfg = TrainConfig(steps=cfg.steps, lr=cfg.lr if init is not None else cfg.scratch_lr, warmup_steps=20)
    rng = np.random.default_rng(cfg.seed)
    mcfg = model.cfg
    with progress() as bar:
        job = bar.add_task("transfer", total=cfg.steps, info="")
        for step in range(cfg.steps):
            model.train()
            picks = rng.choice(len(tasks), size=min(cfg.tasks_per_batch, len(tasks)), replace=False)
            seqs, stores, secs, tids, known = [], [], [], [], []
            for tid in picks:
                t = tasks[tid]
                chosen = set(measured[t.task_hash].tolist())
                # every measured program, then unmeasured candidates for the teacher to speak about (their seconds
                # are never read: NaN in their place would poison the loss if they were)
                rest = [i for i in rng.permutation(len(t.seconds)) if i not in chosen]
                idx = sorted(chosen) + (rest[: cfg.programs_per_task] if teacher else [])
                seqs += [t.tokens[i] for i in idx]
                stores += [t.stores[i] for i in idx] if t.stores is not None else []
                secs += [t.seconds[i] if i in chosen else float("nan") for i in idx]
                tids += [tid] * len(idx)
                known += [i in chosen for i in idx]
            inputs = model_inputs(mcfg, seqs, stores or None)
            scores = model(**inputs)
            tids_t, known_t = torch.tensor(tids), torch.tensor(known)
            loss = rank_loss(scores[known_t], torch.tensor(secs, dtype=torch.float32)[known_t], tids_t[known_t])
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(**inputs)
                loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * listwise_kd(scores, target, tids_t)
            optimizer_step(model, opt, loss, learning_rate(lr_cfg, step))
            bar.update(job, advance=1, info=f"loss {loss.item():.4f}")
    return model.eval()


def transfer(new: Path, old: Path, teacher_path: Path, work: Path, cfg: TransferConfig = TransferConfig(),
             variants: tuple[str, ...] = tuple(VARIANTS)) -> dict:
    """Train every variant on the new target's training networks and score it on its held-out networks, and the
    variants that started from the teacher on the old target's; weights stay in `work` (a variant is not retrained
    while its config, teacher and data are unchanged)."""
    teacher = load_ranker(teacher_path)
    ds = ProgramDataset(new)
    split = split_by_network(ds)
    tasks = load_tasks(ds, tasks_of(split["train"]), cfg.min_programs, with_stores=bool(teacher.cfg.store_features))
    work.mkdir(parents=True, exist_ok=True)
    # weights are reused only for the same config, teacher and data
    identity = json.dumps([asdict(cfg), file_sha256(teacher_path), [(t.task_hash, len(t.seconds)) for t in tasks]])
    tag = f"s{cfg.seed}_p{round(cfg.share * 100)}_n{cfg.steps}_{hashlib.sha1(identity.encode()).hexdigest()[:8]}"
    weights, sampled, chosen = {"teacher": teacher_path}, {}, {}
    for name in variants:
        how, warm, kd = VARIANTS[name]
        path = work / f"{name}_{tag}.pt"
        if how not in chosen:  # rdu_kd and rdu measure the same programs: the sampler runs once
            chosen[how] = choose(tasks, teacher, cfg.share, how, cfg.seed)
        measured = chosen[how]
        sampled[name] = int(sum(len(v) for v in measured.values()))
        if not path.exists():
            save_ranker(fit(tasks, measured, teacher if warm else None, teacher if kd else None, cfg, teacher.cfg), path)
        weights[name] = path
    new_scores = evaluate(new, {k: mamba_scorer(v, ds) for k, v in weights.items()}, split["test"])
    old_ds = ProgramDataset(old)
    kept = ("teacher",) + tuple(v for v in variants if VARIANTS[v][1])  # the ones that started from the teacher
    old_scores = evaluate(old, {k: mamba_scorer(weights[k], old_ds) for k in kept}, split_by_network(old_ds)["test"])
    result = {"config": asdict(cfg), "train_tasks": len(tasks), "train_programs": int(sum(len(t.seconds) for t in tasks)),
              "measured": sampled,
              "new_target": {k: {m: v[m] for m in ("top1", "top5", "pairwise", "task_mean_top1")}
                             for k, v in new_scores.items()},
              "old_target": {k: {m: v[m] for m in ("top1", "top5", "pairwise", "task_mean_top1")}
                             for k, v in old_scores.items()}}
    write_json(work / f"transfer_{tag}.json", result)
    print(json.dumps(result["new_target"], indent=1))
    return result
