"""`kdcompile costmodel ...`: the tensor-program dataset and the learned cost model. A table from verbs to the
functions that do the work; hung under kdcompile's CLI through the entry-point group kdcompile.commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdcompile.errors import KdError

app = typer.Typer(no_args_is_help=True, help="The tensor-program dataset and the learned cost model: collect, "
                  "import/export MetaSchedule logs, train, evaluate, inspect.")



@app.command("collect")
def costmodel_collect(
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Dataset folder (default: datasets/<cpu>-<cores>c)."),
        networks: Optional[str] = typer.Option(None, "--networks", help="Comma-separated zoo networks (default: all)."),
        random: int = typer.Option(64, "--random", help="Random design-space samples per task."),
        evolutionary: int = typer.Option(128, "--evolutionary", help="Evolutionary-search programs per task."),
        max_tasks: Optional[int] = typer.Option(None, "--max-tasks", help="Stop after this many tasks."),
        target: Optional[str] = typer.Option(None, "--target", help="TVM target: default this CPU; cuda:sm_86 "
                                             "(this machine's GPU, or with --rpc a remote one), a TVM tag such as "
                                             "nvidia/geforce-rtx-3090, or a JSON dict."),
        rpc: Optional[str] = typer.Option(None, "--rpc", help="tracker_host:port:key: measure on the device "
                                                              "registered with a TVM RPC tracker under that key.")) -> None:
    """Measure MetaSchedule programs of the zoo's tasks on this machine. Resumable: rerun to continue."""
    from costmodel import zoo
    from costmodel.collect import CollectConfig, collect

    names = tuple(n.strip() for n in networks.split(",")) if networks else tuple(zoo.NETWORKS)
    print(collect(CollectConfig(out=out, networks=names, random_per_task=random, evolutionary_per_task=evolutionary,
                                max_tasks=max_tasks, target=target, rpc=rpc)))


@app.command("import")
def costmodel_import(work_dir: Path = typer.Argument(..., help="Folder with database_workload.json and "
                                                               "database_tuning_record.json."),
                     dataset: Path = typer.Option(..., "--dataset", help="Dataset folder to add to."),
                     network: str = typer.Option(..., "--network", help="Name to file the records under.")) -> None:
    """Add a MetaSchedule JSONDatabase's records to a dataset (duplicates skipped)."""
    from costmodel.dataset import ProgramDataset
    from costmodel.jsondb import import_json_database

    if not (work_dir / "database_tuning_record.json").exists():
        raise KdError(f"{work_dir} has no database_tuning_record.json.")
    print(f"added {import_json_database(ProgramDataset(dataset), work_dir, network)} records")


@app.command("export")
def costmodel_export(dataset: Path = typer.Argument(..., help="Dataset folder."),
                     out: Path = typer.Option(..., "--out", "-o", help="Folder for the JSONDatabase files.")) -> None:
    """Write a dataset as a MetaSchedule JSONDatabase that any MetaSchedule user can load."""
    from costmodel.dataset import ProgramDataset
    from costmodel.jsondb import export_json_database

    print(f"wrote {export_json_database(ProgramDataset(dataset), out)} records to {out}")


@app.command("remeasure")
def costmodel_remeasure(dataset: Path = typer.Argument(..., help="Dataset folder."),
                        sample: int = typer.Option(500, "--sample", help="How many programs to time again.")) -> None:
    """Time a random sample of programs again to measure the data's noise (run it on an idle machine)."""
    from costmodel.remeasure import remeasure

    print(remeasure(dataset, sample))


@app.command("xgb-picker")
def costmodel_xgb_picker(data: Path = typer.Option(None, "--data", help="Dataset folder (default: the shipped one)."),
                         out: Path = typer.Option(None, "--out", "-o", help="Model file to write (default: "
                                                  "costmodel/weights/xgb_cpu.tar, what `tune --defaults xgb` loads).")
                         ) -> None:
    """Train the default-schedule picker, TVM's XGBoost, on the dataset's training networks and save it without
    its feature data. Featurises every program first (cached under <dataset>/features/): minutes."""
    from costmodel.xgb_pretrain import DEFAULT_DATA, ship_picker

    print(f"wrote {ship_picker(data or DEFAULT_DATA, out)}")


@app.command("train")
def costmodel_train(data: Path = typer.Option(..., "--data", help="Dataset folder."),
                    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write."),
                    steps: int = typer.Option(600, "--steps", help="Optimiser steps (8 tasks x 32 programs each)."),
                    d_model: int = typer.Option(64, "--d-model", help="Width of the Mamba blocks."),
                    layers: int = typer.Option(2, "--layers", help="Number of Mamba blocks."),
                    d_state: int = typer.Option(16, "--d-state", help="State size of the selective scan."),
                    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Weights of a larger ranker to "
                                                           "distil from (listwise KD within each task)."),
                    kd_weight: float = typer.Option(0.5, "--kd-weight", help="With --teacher: weight of the KD "
                                                    "term; 1 - it goes to LambdaRank on the measured times."),
                    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint.")) -> None:
    """Train the Mamba ranker (LambdaRank within tasks) on the dataset's training networks.

    Example, the shipped pair: `--out big.pt --steps 600`, then
    `--out small.pt --d-model 32 --layers 1 --d-state 8 --teacher big.pt --steps 600`."""
    from costmodel.mamba import MambaConfig
    from costmodel.train import TrainConfig, train

    cfg = TrainConfig(model=MambaConfig(d_model=d_model, n_layers=layers, d_state=d_state), steps=steps,
                      kd_weight=kd_weight)
    print(train(data, out, cfg, resume=resume, teacher=teacher))


@app.command("eval")
def costmodel_eval(data: Path = typer.Option(..., "--data", help="Dataset folder."),
                   weights: Optional[Path] = typer.Option(None, "--weights", help="Mamba weights to evaluate."),
                   baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Train and evaluate "
                                                  "TVM's XGBoost and MLP recipes on the same training split."),
                   out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the results as JSON.")) -> None:
    """Top-1/top-5 scores and pairwise accuracy on the held-out networks, against XGBoost, MLP and random."""
    import json

    from costmodel.evaluate import compare

    results = compare(data, weights, baselines)
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("top1", "top5", "pairwise")} for k, v in results.items()}, indent=1))


@app.command("stats")
def costmodel_stats(dataset: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Counts per network, failure rate and collection time; writes <dataset>/stats.json."""
    from costmodel.stats import stats

    print(stats(dataset))
