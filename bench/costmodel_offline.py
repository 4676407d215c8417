"""Cost models ranked offline on the held-out networks (never seen in training), and what a prediction costs.

    python -m bench.costmodel_offline                 # trains everything, writes bench/results/costmodel/
    python -m bench.costmodel_offline --steps 100 --seeds 0    # a quick look
    python -m bench.costmodel_offline --models mamba          # the large ranker and the baselines only

Trained on the dataset's training networks only (costmodel/splits.py), every model on the same programs (tasks
with at least TrainConfig.min_programs measured programs):
- mamba: the Mamba ranker, d=64 x 2 layers (costmodel/mamba.py), LambdaRank within tasks, with the recipe chosen
  on validation networks (bench.costmodel_select: representation, steps), warm-up then cosine learning rate;
- mamba_small_kd: d=32 x 1 layer, distilled from `mamba` (listwise KD + LambdaRank, costmodel/rank.py);
- mamba_small: the same small model trained without the teacher (so the distillation's effect is visible);
- xgb: TVM's XGBModel recipe (per-store features, pack-sum, throughput regression); mlp: TVM's MLPModel recipe;
- random.
Metrics (costmodel/metrics.py): top-1 / top-5 score pooled over held-out networks with task weights, pairwise
accuracy averaged over tasks; each the mean over training seeds (every model retrained per seed), per seed beside. Prediction cost: median seconds of `predict` on 512 scheduled candidates of a held-out
task, inside MetaSchedule's interfaces (XGBModel extracts per-store features there; the Mamba adapter tokenises
traces). Writes offline.json (the issue's keys at the top level of each model) and ships the first seed's Mamba
weights to costmodel/weights/ (mamba_cpu.pt, mamba_cpu_small.pt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from costmodel.dataset import ProgramDataset
from costmodel.evaluate import evaluate, mamba_scorer, mlp_scorer, random_scorer, xgb_scorer
from costmodel.mamba import MambaConfig
from costmodel.mlp import MLPConfig
from costmodel.splits import split_by_network, tasks_of
from costmodel.train import TrainConfig, load_tasks, train
from costmodel.xgb_pretrain import DEFAULT_DATA
from kdcompile.machine import machine_info

from bench.costmodel_select import CANDIDATES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "costmodel"
WEIGHTS = ROOT / "costmodel" / "weights"
SMALL = MambaConfig(d_model=32, n_layers=1, d_state=8)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def predict_cost(ds: ProgramDataset, test_hash: str, weights: dict[str, Path], n: int = 512) -> dict[str, float]:
    """Seconds per `predict` of n candidates (records of one held-out task, repeated to n if it has fewer)."""
    from costmodel.online import MambaScorer
    from costmodel.xgb_pretrain import pretrained_xgb_path
    from kdcompile.tvm_layer.cost_models import TraceRankerCostModel, load_xgb
    from kdcompile.tvm_layer.programs import time_predict

    f = ds.task(test_hash)
    header, traces = f.header(), [r["trace"] for r in f.records()]
    traces = (traces * (n // len(traces) + 1))[:n]
    models = {"xgb": load_xgb(pretrained_xgb_path(ds.root))}
    models |= {name: TraceRankerCostModel(MambaScorer.load(w)) for name, w in weights.items()}
    return time_predict(header["workload"], header["target"], traces, models)


def train_rankers(ds: ProgramDataset, work: Path, seed: int, recipe: TrainConfig,
                  models: list[str]) -> tuple[dict, dict]:
    """The Mamba rankers of one seed, resumed from their checkpoints when a run was stopped (a finished one is
    only re-saved). Returns their final losses and training seconds (accumulated over resumed runs)."""
    large = replace(recipe, checkpoint_every=100, seed=seed)
    small = replace(large, model=replace(SMALL, store_features=recipe.model.store_features))
    plan = {"mamba": (large, None), "mamba_small_kd": (replace(small, kd_weight=0.5), work / "mamba.pt"),
            "mamba_small": (small, None)}
    plan = {k: v for k, v in plan.items() if k in models}
    times_path = work / "train_seconds.json"
    secs = json.loads(times_path.read_text()) if times_path.exists() else {}
    losses = {}
    for name, (cfg, teacher) in plan.items():
        info, spent = timed(train, ds.root, work / f"{name}.pt", cfg, resume=None, teacher=teacher)
        losses[name] = info["final_loss"]
        secs[name] = secs.get(name, 0.0) + spent
        times_path.write_text(json.dumps(secs))
    return losses, secs


METRICS = ("top1", "top5", "pairwise", "task_mean_top1")


def evaluated_seed(ds: ProgramDataset, work: Path, seed: int, models: list[str], train_tasks, test_networks,
                   secs: dict) -> dict:
    """evaluate() of one seed's models and baselines, kept in work/eval.json so that a rerun (another sitting)
    does not train the baselines and score the held-out networks again. Keyed by the models and the weights'
    hashes: a retrained ranker is scored again."""
    from kdcompile.files import file_sha256, write_json

    key = {"models": sorted(models), "weights": {m: file_sha256(work / f"{m}.pt") for m in models},
           "train_programs": int(sum(len(t.seconds) for t in train_tasks))}
    cache = work / "eval.json"
    if cache.exists() and (done := json.loads(cache.read_text())).get("key") == key:
        secs.update(done["seconds"])
        return done["result"]
    scorers = {name: mamba_scorer(work / f"{name}.pt", ds) for name in models}
    scorers["xgb"], secs["xgb"] = timed(xgb_scorer, ds, train_tasks, seed=seed)
    scorers["mlp"], secs["mlp"] = timed(mlp_scorer, ds, train_tasks, MLPConfig(seed=seed))
    scorers["random"] = random_scorer(seed)
    result = evaluate(ds.root, scorers, test_networks)
    write_json(cache, {"key": key, "result": result, "seconds": {k: secs[k] for k in ("xgb", "mlp")}})
    return result


def mean_over_seeds(per_seed: list[dict]) -> dict:
    """{model: mean metrics, per-seed metrics, per-network means} from one evaluate() result per seed."""
    out = {}
    for name in per_seed[0]:
        runs = [r[name] for r in per_seed]
        nets = runs[0]["per_network"]
        out[name] = {**{m: float(np.mean([r[m] for r in runs])) for m in METRICS},
                     "per_seed": [{m: r[m] for m in METRICS} for r in runs],
                     "per_network": {net: {"top1": float(np.mean([r["per_network"][net]["top1"] for r in runs])),
                                           "top5": float(np.mean([r["per_network"][net]["top5"] for r in runs])),
                                           "tasks": nets[net]["tasks"]} for net in nets}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--recipe", default="stores_800", choices=list(CANDIDATES),
                    help="the candidate of bench.costmodel_select to train on the full training split")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    ap.add_argument("--models", nargs="+", default=["mamba", "mamba_small_kd", "mamba_small"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    recipe = CANDIDATES[args.recipe]
    recipe = replace(recipe, steps=args.steps or recipe.steps)
    ds = ProgramDataset(args.data)
    split = split_by_network(ds)
    train_tasks = load_tasks(ds, tasks_of(split["train"]), recipe.min_programs)  # what the rankers train on
    test_tasks = load_tasks(ds, tasks_of(split["test"]))

    per_seed, secs, losses = [], {}, {}
    for seed in args.seeds:
        work = args.out / "work" / args.recipe / f"seed{seed}"
        losses[seed], secs[seed] = train_rankers(ds, work, seed, recipe, args.models)
        per_seed.append(evaluated_seed(ds, work, seed, args.models, train_tasks, split["test"], secs[seed]))
    results = mean_over_seeds(per_seed)

    first = args.out / "work" / args.recipe / f"seed{args.seeds[0]}"  # the weights that ship
    biggest = max(test_tasks, key=lambda t: len(t.seconds)).task_hash
    predict = predict_cost(ds, biggest, {m: first / f"{m}.pt" for m in args.models if m != "mamba_small"})
    for name, r in results.items():
        r["train_seconds"] = round(float(np.mean([secs[s].get(name, 0.0) for s in args.seeds])), 1)
        r["params"] = sum(p.numel() for p in torch.load(first / f"{name}.pt")["state"].values()) \
            if name.startswith("mamba") else None
        r["predict_512_seconds"] = predict.get(name)
    report = {
        **results,
        "data": {"train_programs": int(sum(len(t.seconds) for t in train_tasks)),
                 "heldout_programs": int(sum(len(t.seconds) for t in test_tasks))},
        "setup": {
            "data": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
            "train_networks": sorted(split["train"]), "test_networks": sorted(split["test"]),
            "train_tasks": len(train_tasks), "train_programs": int(sum(len(t.seconds) for t in train_tasks)),
            "test_tasks": len(test_tasks), "test_programs": int(sum(len(t.seconds) for t in test_tasks)),
            "seeds": args.seeds, "recipe": args.recipe, "steps": recipe.steps,
            "mamba_large": recipe.model.__dict__, "mamba_small": SMALL.__dict__, "min_programs": recipe.min_programs,
            "final_loss": losses, "predict_task": biggest, "threads": 2, "date": time.strftime("%Y-%m-%d"),
            "machine": machine_info(2),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "offline.json").write_text(json.dumps(report, indent=1) + "\n")
    WEIGHTS.mkdir(exist_ok=True)
    for name, file in (("mamba", "mamba_cpu.pt"), ("mamba_small_kd", "mamba_cpu_small.pt")):
        if name in args.models:
            shutil.copy(first / f"{name}.pt", WEIGHTS / file)
    for name, r in results.items():
        spread = " ".join(f"{x['top1']:.3f}" for x in r["per_seed"])
        print(f"{name:15s} top1 {r['top1']:.3f} ({spread}) top5 {r['top5']:.3f} pairwise {r['pairwise']:.3f}"
              f"  predict512 {r['predict_512_seconds'] or float('nan'):.3f}s")


if __name__ == "__main__":
    main()
