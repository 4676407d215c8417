"""Offline evaluation of cost models on held-out networks: TenSet/TLP top-k scores and pairwise accuracy.

Every model is a function from a task's measured programs to scores (higher = predicted faster):
- "mamba": the trained ranker on trace tokens;
- "xgb": TVM's XGBModel recipe, trained on the same training tasks: gradient-boosted trees on per-store features,
  a program's score the sum of its stores' predictions ("pack-sum"), regressing normalised throughput;
- "mlp": TVM's MLPModel recipe (TenSet-MLP), likewise: costmodel/mlp.py;
- "random": uniform random scores (the control).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from costmodel.dataset import ProgramDataset
from costmodel.features import featurize_task
from costmodel.mamba import load_ranker
from costmodel.metrics import pairwise_accuracy, task_mean_top1, top_k_score
from costmodel.mlp import MLPConfig, predict_mlp, train_mlp
from costmodel.splits import split_by_network, tasks_of
from costmodel.tokenize import MAX_TOKENS
from costmodel.train import TaskData, load_tasks, score_task

Scorer = Callable[[TaskData], np.ndarray]


def mamba_scorer(weights: Path, ds: ProgramDataset | None = None, max_tokens: int = MAX_TOKENS) -> Scorer:
    """The ranker at `weights`; one that reads per-store features gets them from `ds`'s feature cache."""
    model = load_ranker(weights)

    def score(task: TaskData) -> np.ndarray:
        if model.cfg.store_features and task.stores is None:
            task = dataclasses.replace(task, stores=_program_rows(ds, task))
        return score_task(model, task, max_tokens)

    return score


def random_scorer(seed: int = 0) -> Scorer:
    rng = np.random.default_rng(seed)
    return lambda task: rng.random(len(task.seconds))


def _program_rows(ds: ProgramDataset, task: TaskData) -> list[np.ndarray]:
    """Per-store feature rows of each of a task's measured programs."""
    f = featurize_task(ds, task.task_hash, with_store_features=True)
    ok = np.flatnonzero(np.isfinite(f["latency_s"]))
    off = f["psf_offsets"]
    return [f["psf"][off[i]:off[i + 1]] for i in ok]


def _store_rows(ds: ProgramDataset, task: TaskData) -> tuple[np.ndarray, np.ndarray]:
    """All store rows of a task's measured programs and, per row, the index of its program."""
    rows = _program_rows(ds, task)
    return np.concatenate(rows), np.repeat(np.arange(len(rows)), [len(r) for r in rows])


def packsum_objective(program_of_row: np.ndarray, labels: np.ndarray):
    """Squared error between each program's summed row predictions and its label (TVM XGBModel's pack-sum)."""
    def objective(preds: np.ndarray, dtrain) -> tuple[np.ndarray, np.ndarray]:
        sums = np.bincount(program_of_row, weights=preds, minlength=len(labels))
        grad = 2 * (sums - labels)[program_of_row]
        return grad, np.full_like(preds, 2.0)

    return objective


def xgb_scorer(ds: ProgramDataset, train_tasks: list[TaskData], rounds: int = 200, seed: int = 0) -> Scorer:
    import xgboost as xgb

    xs, programs, labels, offset = [], [], [], 0
    for t in train_tasks:
        rows, prog = _store_rows(ds, t)
        xs.append(rows)
        programs.append(prog + offset)
        labels.append(t.seconds.min() / t.seconds)  # normalised throughput, as XGBModel
        offset += len(t.seconds)
    program_of_row, y = np.concatenate(programs), np.concatenate(labels)
    booster = xgb.train({"max_depth": 10, "eta": 0.2, "min_child_weight": 0, "seed": seed, "nthread": 2},
                        xgb.DMatrix(np.concatenate(xs)), rounds, obj=packsum_objective(program_of_row, y))

    def score(task: TaskData) -> np.ndarray:
        rows, prog = _store_rows(ds, task)
        return np.bincount(prog, weights=booster.predict(xgb.DMatrix(rows)), minlength=len(task.seconds))

    return score


def mlp_scorer(ds: ProgramDataset, train_tasks: list[TaskData], cfg: MLPConfig = MLPConfig()) -> Scorer:
    model = train_mlp([(_program_rows(ds, t), t.seconds) for t in train_tasks], cfg)
    return lambda task: predict_mlp(model, _program_rows(ds, task))


def generation(network_key: str) -> str:
    """The lowering a network key was collected under: "bert_base@b1+prepack+fastmath" -> "prepack+fastmath"
    ("as exported" for the oldest keys, which name none). Programs are comparable only within one."""
    _, _, rest = network_key.partition("@")
    flags = rest.split("+")[1:]
    return "+".join(flags) or "as exported"


def evaluate(data: str | Path, scorers: dict[str, Scorer], networks: dict[str, dict] | None = None) -> dict:
    """{model: {"top1", "top5", "pairwise", "task_mean_top1", "per_network", "per_generation"}} over the held-out
    networks' tasks. Scores of a network pool its tasks weighted by how often they occur; the overall top-k pools
    all held-out networks; task_mean_top1 weighs every task once."""
    ds = ProgramDataset(data)
    networks = networks if networks is not None else split_by_network(ds)["test"]
    tasks = {t.task_hash: t for t in load_tasks(ds, tasks_of(networks))}
    results = {}
    for name, scorer in scorers.items():
        preds = {h: scorer(t) for h, t in tasks.items()}
        per_net, per_gen, pooled = {}, {}, []
        for net, weights in networks.items():
            items = [(preds[h], tasks[h].seconds, w) for h, w in weights.items() if h in tasks]
            if items:
                per_net[net] = {"top1": top_k_score(items, 1), "top5": top_k_score(items, 5), "tasks": len(items)}
                per_gen.setdefault(generation(net), []).extend(items)
                pooled += items
        pairwise = [pairwise_accuracy(preds[h], t.seconds) for h, t in tasks.items()]
        every_task = [(preds[h], t.seconds, 1.0) for h, t in tasks.items()]
        results[name] = {"top1": top_k_score(pooled, 1) if pooled else None,
                         "top5": top_k_score(pooled, 5) if pooled else None,
                         "pairwise": float(np.mean(pairwise)) if pairwise else None,
                         "task_mean_top1": task_mean_top1(every_task) if every_task else None,
                         "per_network": per_net,
                         "per_generation": {g: {"top1": top_k_score(v, 1), "top5": top_k_score(v, 5),
                                                "task_mean_top1": task_mean_top1(v), "tasks": len(v)}
                                            for g, v in per_gen.items()}}
    return results


def compare(data: str | Path, weights: Path | None = None, baselines: bool = True) -> dict:
    """`kdcompile costmodel eval`: the Mamba ranker at `weights` (if given) against random and, with `baselines`,
    TVM's XGBoost and MLP recipes trained on the same training split, on the held-out networks (`evaluate`)."""
    scorers = {"random": random_scorer()}
    if weights:
        scorers["mamba"] = mamba_scorer(weights, ProgramDataset(data))
    if baselines:
        ds = ProgramDataset(data)
        train_tasks = load_tasks(ds, tasks_of(split_by_network(ds)["train"]))
        scorers["xgb"] = xgb_scorer(ds, train_tasks)
        scorers["mlp"] = mlp_scorer(ds, train_tasks)
    return evaluate(data, scorers)
