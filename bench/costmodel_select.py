"""Choosing the Mamba ranker's recipe on validation networks, never on the held-out ones.

    python -m bench.costmodel_select                       # every candidate, bench/results/costmodel/selection.json
    python -m bench.costmodel_select --only stores_800     # one

Each candidate trains on the training networks minus the validation networks (costmodel.splits.validation_split:
resnet18 and bert_small, with every task they share), is scored on the validation tasks every `validate_every`
steps, and keeps its best weights (task-mean top-1). Candidates differ in the representation (trace tokens alone,
or joined with the per-store features of the scheduled program), steps and learning rate. The winner's recipe is
what bench.costmodel_offline trains on the full training split and what `kdcompile costmodel train` defaults to.
Each run resumes from its checkpoint, so the benchmark can be spread over sittings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from costmodel.dataset import ProgramDataset
from costmodel.mamba import MambaConfig
from costmodel.splits import tasks_of, validation_split
from costmodel.train import TrainConfig, load_tasks, train
from costmodel.xgb_pretrain import DEFAULT_DATA
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "costmodel"


def model(stores: bool) -> MambaConfig:
    return MambaConfig(d_model=64, n_layers=2, d_state=16, store_features=164 if stores else 0)


CANDIDATES = {
    "tokens_800": TrainConfig(model=model(False), steps=800, validate_every=200),
    "stores_800": TrainConfig(model=model(True), steps=800, validate_every=200),
    "stores_1600": TrainConfig(model=model(True), steps=1600, validate_every=200),
    # tokens alone at the winning budget: featurising was 358 of the joined ranker's 493 s inside a 500-trial
    # MobileNet-V2 run (runs/cpu-rocketlake-2c/), and a tokens-only ranker skips MetaSchedule's per-store
    # extraction, so if it ranked nearly as well it would be the cheaper cost model. On 2026-12-03's data it did
    # not (validation top-1 0.347 against XGBoost's 0.533: bench/results/costmodel/selection_2026-12-03.json)
    "tokens_1600": TrainConfig(model=model(False), steps=1600, validate_every=200),
    # plus a squared error of sigmoid(score) to normalised throughput, XGBoost's target: the pooled top-1 is
    # carried by heavy tasks, where a ranker that only orders within a task has no sense of how much faster
    "stores_800_reg": TrainConfig(model=model(True), steps=800, validate_every=200, regression_weight=1.0),
}


def baselines(ds: ProgramDataset, train_hashes: list[str], val_hashes: list[str]) -> dict:
    """XGBoost and MLP (TVM's recipes) and random, trained on the candidates' training tasks, scored on the
    validation tasks with the candidates' metrics (every task weighted once)."""
    from costmodel.evaluate import mlp_scorer, random_scorer, xgb_scorer
    from costmodel.train import scored_metrics

    min_programs = TrainConfig().min_programs
    train_tasks = load_tasks(ds, train_hashes, min_programs)
    val_tasks = load_tasks(ds, val_hashes, min_programs)
    out = {}
    for name, scorer in {"xgb": xgb_scorer(ds, train_tasks), "mlp": mlp_scorer(ds, train_tasks),
                         "random": random_scorer()}.items():
        out[name] = scored_metrics([(scorer(t), t.seconds, 1.0) for t in val_tasks])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--out", type=Path, default=OUT / "selection.json")
    ap.add_argument("--baselines", action="store_true", help="also score XGBoost and MLP trained on the same "
                    "tasks, on the same validation tasks (the bar a candidate has to clear)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ds = ProgramDataset(args.data)
    split = validation_split(ds)
    train_hashes, val_hashes = tasks_of(split["train"]), tasks_of(split["validation"])
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.baselines:
        report["baselines"] = baselines(ds, train_hashes, val_hashes)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print("baselines", report["baselines"], flush=True)
    for name in args.only:
        work = args.out.parent / "work" / "select"
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        info = train(args.data, work / f"{name}.pt", CANDIDATES[name], resume=None,
                     task_hashes=train_hashes, validation_hashes=val_hashes)
        kept = next(c for c in info["validation"] if c["step"] == info["kept_step"])
        report[name] = {"validation": kept, "kept_step": info["kept_step"], "curve": info["validation"],
                        "train_tasks": info["tasks"], "train_programs": info["programs"],
                        "seconds": round(time.perf_counter() - start, 1), "config": info["config"],
                        "machine": machine_info(torch.get_num_threads()) | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
        report["validation_networks"] = sorted(split["validation"])
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"{name}: validation {kept} at step {info['kept_step']}, {report[name]['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
