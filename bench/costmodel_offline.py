"""Cost models ranked offline on the held-out networks (never seen in training), and what a prediction costs.

    python -m bench.costmodel_offline                 # trains everything, writes bench/results/costmodel/
    python -m bench.costmodel_offline --steps 100     # a quick look

Trained on the dataset's training networks only (costmodel/splits.py), with the same tasks for every model:
- mamba: the Mamba ranker, d=64 x 2 layers (costmodel/mamba.py), LambdaRank within tasks;
- mamba_small_kd: d=32 x 1 layer, distilled from `mamba` (listwise KD + LambdaRank, costmodel/rank.py);
- mamba_small: the same small model trained without the teacher (so the distillation's effect is visible);
- xgb: TVM's XGBModel recipe (per-store features, pack-sum, throughput regression); mlp: TVM's MLPModel recipe;
- random.
Metrics (costmodel/metrics.py): top-1 / top-5 score pooled over held-out networks with task weights, pairwise
accuracy averaged over tasks. Prediction cost: median seconds of `predict` on 512 scheduled candidates of a held-out
task, inside MetaSchedule's interfaces (XGBModel extracts per-store features there; the Mamba adapter tokenises
traces). Writes offline.json (the issue's keys at the top level of each model) and ships the Mamba weights to
costmodel/weights/ (mamba_cpu.pt, mamba_cpu_small.pt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from costmodel.dataset import Dataset
from costmodel.evaluate import evaluate, mamba_scorer, mlp_scorer, random_scorer, xgb_scorer
from costmodel.mamba import MambaConfig
from costmodel.splits import split_by_network, tasks_of
from costmodel.train import TrainConfig, load_tasks, train
from costmodel.xgb_pretrain import DEFAULT_DATA

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "costmodel"
WEIGHTS = ROOT / "costmodel" / "weights"
LARGE = MambaConfig(d_model=64, n_layers=2, d_state=16)
SMALL = MambaConfig(d_model=32, n_layers=1, d_state=8)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def predict_cost(ds: Dataset, test_hash: str, weights: dict[str, Path], n: int = 512) -> dict[str, float]:
    """Seconds per `predict` of n candidates (records of one held-out task, repeated to n if it has fewer)."""
    from costmodel.online import MambaScorer
    from costmodel.xgb_pretrain import pretrained_xgb_path
    from kdcompile.tvm_backend import MambaCostModel, load_xgb, time_predict

    f = ds.task(test_hash)
    header, traces = f.header(), [r["trace"] for r in f.records()]
    traces = (traces * (n // len(traces) + 1))[:n]
    models = {"xgb": load_xgb(pretrained_xgb_path(ds.root))}
    models |= {name: MambaCostModel(MambaScorer.load(w)) for name, w in weights.items()}
    return time_predict(header["workload"], header["args_info"], header["target"], traces, models)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    ds = Dataset(args.data)
    split = split_by_network(ds)
    train_tasks = load_tasks(ds, tasks_of(split["train"]))

    base = dict(steps=args.steps, tasks_per_batch=8, programs_per_task=32, checkpoint_every=100)
    info, secs = {}, {}
    # resume=True: a rerun continues from the checkpoints (a finished model is only re-saved)
    info["mamba"], secs["mamba"] = timed(train, ds.root, work / "mamba.pt", TrainConfig(model=LARGE, **base),
                                         resume=True)
    info["mamba_small_kd"], secs["mamba_small_kd"] = timed(
        train, ds.root, work / "mamba_small_kd.pt", TrainConfig(model=SMALL, kd_weight=0.5, **base),
        resume=True, teacher=work / "mamba.pt")
    info["mamba_small"], secs["mamba_small"] = timed(
        train, ds.root, work / "mamba_small.pt", TrainConfig(model=SMALL, **base), resume=True)
    # training seconds accumulate over resumed runs
    times_path = work / "train_seconds.json"
    total = json.loads(times_path.read_text()) if times_path.exists() else {}
    secs = {k: total.get(k, 0.0) + v for k, v in secs.items()}
    times_path.write_text(json.dumps(secs))
    scorers = {name: mamba_scorer(work / f"{name}.pt") for name in ("mamba", "mamba_small_kd", "mamba_small")}
    scorers["xgb"], secs["xgb"] = timed(xgb_scorer, ds, train_tasks)  # not cached: retrained every run
    scorers["mlp"], secs["mlp"] = timed(mlp_scorer, ds, train_tasks)
    scorers["random"] = random_scorer()
    results = evaluate(ds.root, scorers, split["test"])

    test_tasks = load_tasks(ds, tasks_of(split["test"]))
    biggest = max(test_tasks, key=lambda t: len(t.seconds)).task_hash
    predict = predict_cost(ds, biggest, {"mamba": work / "mamba.pt", "mamba_small_kd": work / "mamba_small_kd.pt"})

    for name, r in results.items():
        r["train_seconds"] = round(secs.get(name, 0.0), 1)
        r["params"] = sum(p.numel() for p in torch.load(work / f"{name}.pt")["state"].values()) \
            if name.startswith("mamba") else None
        r["predict_512_seconds"] = predict.get(name)
    report = {
        **results,
        "setup": {
            "data": str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
            "train_networks": sorted(split["train"]), "test_networks": sorted(split["test"]),
            "train_tasks": len(train_tasks), "train_programs": int(sum(len(t.seconds) for t in train_tasks)),
            "test_tasks": len(test_tasks), "test_programs": int(sum(len(t.seconds) for t in test_tasks)),
            "steps": args.steps, "mamba_large": LARGE.__dict__, "mamba_small": SMALL.__dict__,
            "training": {k: {"final_loss": v["final_loss"]} for k, v in info.items()},
            "predict_task": biggest, "threads": 2, "date": time.strftime("%Y-%m-%d"),
        },
    }
    (args.out / "offline.json").write_text(json.dumps(report, indent=1) + "\n")
    WEIGHTS.mkdir(exist_ok=True)
    shutil.copy(work / "mamba.pt", WEIGHTS / "mamba_cpu.pt")
    shutil.copy(work / "mamba_small_kd.pt", WEIGHTS / "mamba_cpu_small.pt")
    for name, r in results.items():
        print(f"{name:15s} top1 {r['top1']:.3f} top5 {r['top5']:.3f} pairwise {r['pairwise']:.3f}"
              f"  predict512 {r['predict_512_seconds'] or float('nan'):.3f}s")


if __name__ == "__main__":
    main()
