"""`kdcompile costmodel ...`: the tensor-program dataset and the learned cost model. A table from verbs to the
functions that do the work; hung under kdcompile's CLI through the entry-point group kdcompile.commands.

Every verb names its dataset folder the same way (`--data`), prints its result as JSON on stdout (for scripts),
and its progress on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kdcompile.errors import KdError

app = typer.Typer(no_args_is_help=True, help="The tensor-program dataset and the learned cost model: collect, "
                  "import/export MetaSchedule logs, train, evaluate, inspect. Results print as JSON.")

DataOpt = typer.Option(..., "--data", "-d", help="Dataset folder.")


def _print(result) -> None:
    print(json.dumps(result, indent=1, default=str))


@app.command("collect")
def costmodel_collect(
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder (default: "
                                            "datasets/<cpu>-<cores>c, named after this machine)."),
        networks: Optional[str] = typer.Option(None, "--networks", help="Comma-separated zoo networks (default: all)."),
        batches: Optional[str] = typer.Option(None, "--batches", help="Comma-separated batch sizes (default: 1,8)."),
        random: int = typer.Option(64, "--random", help="Random design-space samples per task."),
        evolutionary: int = typer.Option(128, "--evolutionary", help="Evolutionary-search programs per task."),
        max_tasks: Optional[int] = typer.Option(None, "--max-tasks", help="Stop after this many tasks."),
        target: Optional[str] = typer.Option(None, "--target", help="TVM target: default this CPU; cuda:sm_86 "
                                             "(this machine's GPU, or with --rpc a remote one), a TVM tag such as "
                                             "nvidia/geforce-rtx-3090, or a JSON dict."),
        rpc: Optional[str] = typer.Option(None, "--rpc", help="tracker_host:port:key: measure on the device "
                                                              "registered with a TVM RPC tracker under that key."),
        threads: int = typer.Option(0, "--threads", help="Cores to compile for and measure with (0: all this "
                                    "process may use).")) -> None:
    """Measure MetaSchedule programs of the zoo's tasks on this machine. Resumable: rerun to continue."""
    from costmodel import zoo
    from costmodel.collect import CollectConfig, collect

    names = tuple(n.strip() for n in networks.split(",")) if networks else tuple(zoo.NETWORKS)
    unknown = [n for n in names if n not in zoo.NETWORKS]
    if unknown:
        raise typer.BadParameter(f"unknown zoo network(s) {', '.join(unknown)}; choose from {', '.join(zoo.NETWORKS)}.")
    try:
        sizes = tuple(int(b) for b in batches.split(",")) if batches else zoo.BATCHES
    except ValueError:
        raise typer.BadParameter(f"--batches takes comma-separated integers, not {batches!r}.") from None
    _print(collect(CollectConfig(out=data, networks=names, batches=sizes, random_per_task=random,
                                 evolutionary_per_task=evolutionary,
                                 max_tasks=max_tasks, target=target, rpc=rpc, threads=threads)))


@app.command("import")
def costmodel_import(work_dir: Path = typer.Argument(..., help="Folder with database_workload.json and "
                                                               "database_tuning_record.json."),
                     data: Path = DataOpt,
                     network: str = typer.Option(..., "--network", help="Name to file the records under.")) -> None:
    """Add a MetaSchedule JSONDatabase's records to a dataset (duplicates skipped)."""
    from costmodel.dataset import ProgramDataset
    from costmodel.jsondb import import_json_database

    for name in ("database_workload.json", "database_tuning_record.json"):
        if not (work_dir / name).exists():
            raise KdError(f"{work_dir} has no {name}: give the folder a MetaSchedule JSONDatabase wrote.")
    _print({"added": import_json_database(ProgramDataset(data), work_dir, network)})


@app.command("export")
def costmodel_export(data: Path = DataOpt,
                     out: Path = typer.Option(..., "--out", "-o", help="Folder for the JSONDatabase files.")) -> None:
    """Write a dataset as a MetaSchedule JSONDatabase that any MetaSchedule user can load."""
    from costmodel.dataset import ProgramDataset
    from costmodel.jsondb import export_json_database

    _print({"records": export_json_database(ProgramDataset(data), out), "out": str(out)})


@app.command("remeasure")
def costmodel_remeasure(data: Path = DataOpt,
                        sample: int = typer.Option(500, "--sample", help="How many programs to time again.")) -> None:
    """Time a random sample of programs again to measure the data's noise (run it on an idle machine)."""
    from costmodel.remeasure import remeasure

    _print(remeasure(data, sample))


@app.command("retarget")
def costmodel_retarget(
        data: Path = typer.Option(..., "--data", "-d", help="The dataset whose programs are measured again."),
        out: Path = typer.Option(..., "--out", "-o", help="Dataset folder for the new target's measurements."),
        target: str = typer.Option(..., "--target", help='The new TVM target, e.g. \'{"kind": "llvm", "mcpu": '
                                   '"x86-64-v3", "num-cores": 1}\' (AVX2, one core).'),
        networks: Optional[str] = typer.Option(None, "--networks", help="Comma-separated network keys of the source "
                                               "dataset, e.g. resnet50@b1+prepack+fastmath (default: all)."),
        per_task: int = typer.Option(24, "--per-task", help="Programs per task: the source's fastest few, then a "
                                     "seeded random draw of the rest."),
        best: int = typer.Option(4, "--best", help="How many of them are the source's fastest."),
        rpc: Optional[str] = typer.Option(None, "--rpc", help="tracker_host:port:key: time on every server "
                                          "registered under that key (`kdcompile rpc-farm` starts a local farm)."),
        max_programs: Optional[int] = typer.Option(None, "--max-programs", help="Stop after this many.")) -> None:
    """Measure a dataset's programs again, compiled for another target, into a dataset of its own: the new
    target's ground truth, program for program comparable with the old one. Resumable: rerun to continue."""
    from costmodel.retarget import RetargetConfig, retarget

    names = tuple(n.strip() for n in networks.split(",")) if networks else None
    _print(retarget(RetargetConfig(source=data, out=out, target=target, networks=names, per_task=per_task, best=best,
                                   rpc=rpc, max_programs=max_programs)))


@app.command("xgb-picker")
def costmodel_xgb_picker(data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset folder (default: "
                                                             "the shipped one)."),
                         out: Optional[Path] = typer.Option(None, "--out", "-o", help="Model file to write "
                                                            "(default: costmodel/weights/xgb_cpu.tar, what `tune "
                                                            "--defaults xgb` loads).")) -> None:
    """Train the default-schedule picker, TVM's XGBoost, on the dataset's training networks and save it without
    its feature data. Featurises every program first (cached under <dataset>/features/): minutes."""
    from costmodel.xgb_pretrain import DEFAULT_DATA, ship_picker

    _print({"wrote": str(ship_picker(data or DEFAULT_DATA, out))})


@app.command("train")
def costmodel_train(data: Path = DataOpt,
                    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write."),
                    steps: int = typer.Option(1600, "--steps", help="Optimiser steps (8 tasks x 32 programs each); "
                                              "1,600 was chosen on validation networks "
                                              "(bench/results/costmodel/selection.json)."),
                    d_model: int = typer.Option(64, "--d-model", help="Width of the Mamba blocks."),
                    layers: int = typer.Option(2, "--layers", help="Number of Mamba blocks."),
                    d_state: int = typer.Option(16, "--d-state", help="State size of the selective scan."),
                    stores: bool = typer.Option(True, "--stores/--tokens-only", help="Join each program's "
                                                "per-store features (MetaSchedule's PerStoreFeature, what XGBoost "
                                                "reads) to its trace tokens, or read the trace alone. A dataset's "
                                                "stores are featurised once (slow), then cached."),
                    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (warm-up, then cosine to 0)."),
                    validate: bool = typer.Option(False, "--validate", help="Hold the validation networks "
                                                  "(costmodel.zoo.VALIDATION_NETWORKS) out of training, score them "
                                                  "every 100 steps and keep the best weights: for choosing "
                                                  "settings. Without it, every training network is trained on."),
                    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Weights of a larger ranker to "
                                                           "distil from (listwise KD within each task)."),
                    kd_weight: float = typer.Option(0.5, "--kd-weight", help="With --teacher: weight of the KD "
                                                    "term; 1 - it goes to LambdaRank on the measured times."),
                    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint (same "
                                                "data and settings; anything else is refused).")) -> None:
    """Train the Mamba ranker (LambdaRank within tasks) on the dataset's training networks.

    Example, the shipped pair: `--out big.pt`, then
    `--out small.pt --d-model 32 --layers 1 --d-state 8 --teacher big.pt`. Choosing settings:
    `--validate` (scores on validation networks, never on the held-out ones)."""
    from costmodel.dataset import ProgramDataset
    from costmodel.mamba import MambaConfig
    from costmodel.splits import tasks_of, validation_split
    from costmodel.train import TrainConfig, train

    cfg = TrainConfig(model=MambaConfig(d_model=d_model, n_layers=layers, d_state=d_state,
                                        store_features=164 if stores else 0), steps=steps, lr=lr,
                      kd_weight=kd_weight)
    hashes = val = None
    if validate:
        split = validation_split(ProgramDataset(data))
        hashes, val = tasks_of(split["train"]), tasks_of(split["validation"])
    _print(train(data, out, cfg, resume=resume, teacher=teacher, task_hashes=hashes, validation_hashes=val))


@app.command("eval")
def costmodel_eval(data: Path = DataOpt,
                   weights: Optional[Path] = typer.Option(None, "--weights", help="Mamba weights to evaluate."),
                   baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Train and evaluate "
                                                  "TVM's XGBoost and MLP recipes on the same training split."),
                   out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the full results as JSON.")
                   ) -> None:
    """Top-1/top-5 scores and pairwise accuracy on the held-out networks, against XGBoost, MLP and random."""
    from costmodel.evaluate import compare
    from kdcompile.files import write_json

    results = compare(data, weights, baselines)
    if out:
        write_json(out, results)
    _print({k: {m: v[m] for m in ("top1", "top5", "pairwise")} for k, v in results.items()})


@app.command("stats")
def costmodel_stats(data: Path = DataOpt) -> None:
    """Counts per network, failure rate and collection time; writes <dataset>/stats.json and stats.md."""
    from costmodel.stats import stats

    _print(stats(data))
