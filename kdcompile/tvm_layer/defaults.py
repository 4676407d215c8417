"""Default schedules: a program for every task that has no measured record, chosen with no hardware measurement.

The stock CPU pipeline leaves such tasks as naive serial loops (40-150x slower). Here MetaSchedule's own
evolutionary search runs against a cost model alone: random programs of the design space evolve for a few
generations toward higher predicted scores, and the best-scoring one is kept. With a cost model trained on
measured programs (the shipped XGBoost picker) this transfers what the dataset knows; with an untrained one it is
a random program of the space, which still vectorizes and tiles.

A task whose exact workload has measured programs elsewhere (a source of known programs, `plugins.KNOWN`: the
shipped dataset) starts from the fastest of them that replays instead: a measurement beats a prediction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from kdcompile.tvm_layer.measure import MS_LOGGER, quiet_ms_logging
from kdcompile.tvm_layer.records import TuningRecordFiles, count_records, has_record, load_database, trace_replays
from kdcompile.tvm_layer.space import schedulable_tasks, space_generator
from kdcompile.tvm_layer.target import search_threads

UNMEASURED_SECS = 1.0  # run_secs of a default record: it was predicted, never measured
POPULATION = 256  # evolved per task toward a learned picker's scores (bench/results/demo/README.md)


def population_for(picker: str, learned: int = POPULATION) -> int:
    """The population to evolve toward `picker` (a PICKERS name): an untrained picker ("random") predicts noise,
    and evolving a large population toward it buys nothing."""
    return 16 if picker == "random" else learned


def default_schedules(mod: tvm.IRModule, target: tvm.target.Target, out_dir: Path, cost_model,
                      tuned_dir: Path | None = None, seed: int = 0, population: int = POPULATION,
                      on_task: Callable[[str], None] | None = None,
                      known: Callable[[str], list[dict]] | None = None, from_known: list[str] | None = None) -> int:
    """Pick a default schedule for every task of `mod` that has none, neither in `out_dir` nor measured in
    `tuned_dir`. Records go to a tuning database in `out_dir` with run_secs = UNMEASURED_SECS; measured records,
    where they exist, take precedence (`build.compile_tuned`). Resumable: tasks that already have a default are
    skipped. `known` (task hash -> measured records, fastest first): a task it has programs for gets the fastest
    that replays, and its workload hash is appended to `from_known`. Returns the number of new defaults."""
    out_dir.mkdir(parents=True, exist_ok=True)
    db = TuningRecordFiles(out_dir)
    tuned = load_database(tuned_dir) if tuned_dir and count_records(tuned_dir) else None
    made = 0
    for task in schedulable_tasks(mod, target):
        if has_record(db, task) or (tuned is not None and has_record(tuned, task)):
            continue
        if on_task is not None:
            on_task(task.task_name)
        if known is not None and (record := _fastest_known(task.dispatched[0], target, known)) is not None:
            db.commit_tuning_record(ms.database.TuningRecord(
                record.trace, db.commit_workload(task.dispatched[0]), [UNMEASURED_SECS], target, record.args_info))
            made += 1
            if from_known is not None:
                from_known.append(workload_hash(task.dispatched[0]))
            continue
        quiet_ms_logging()
        ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=space_generator(target),
                             search_strategy=ms.search_strategy.EvolutionarySearch(
                                 population_size=population, init_min_unmeasured=population),
                             task_name=task.task_name, rand_state=seed, num_threads=search_threads(target),
                             logger=logging.getLogger(MS_LOGGER))
        ctx.pre_tuning(max_trials=8, num_trials_per_iter=8, design_spaces=ctx.generate_design_space(),
                       database=ms.database.MemoryDatabase(), cost_model=cost_model)
        candidates = ctx.generate_measure_candidates() or []
        ctx.post_tuning()
        if not candidates:
            continue
        scores = cost_model.predict(ctx, candidates)  # re-ranked: the search mixes in random picks
        ranked = (candidates[i] for i in np.argsort(-scores))
        best = next((c for c in ranked if trace_replays(c.sch.trace, task.dispatched[0])), None)
        if best is None:
            continue
        db.commit_tuning_record(ms.database.TuningRecord(
            best.sch.trace, db.commit_workload(task.dispatched[0]), [UNMEASURED_SECS], target, best.args_info))
        made += 1
    return made


def workload_hash(mod: tvm.IRModule) -> str:
    """A task's name in a dataset of measured programs: the structural hash MetaSchedule's Workload stores."""
    return str(ms.database.Workload(mod).as_json()[0])


def _fastest_known(mod: tvm.IRModule, target: tvm.target.Target, known: Callable[[str], list[dict]]):
    """The fastest known program of `mod`'s workload that replays on it (a TuningRecord), or None."""
    from kdcompile.tvm_layer.programs import known_programs

    records = known(workload_hash(mod))
    if not records:
        return None
    db = known_programs(mod, target.export(), records)  # drops the traces that do not re-apply
    top = db.get_top_k(db.commit_workload(mod), 1)
    return top[0] if top and trace_replays(top[0].trace, mod) else None
