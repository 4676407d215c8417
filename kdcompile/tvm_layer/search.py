"""The search: MetaSchedule tunes a lowered module's tasks in our design space, builder, runner and database,
within the budget that `budget` decides. Resumable: trials already in the database count, and the search
starts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import tvm
from tvm.s_tir import meta_schedule as ms

from kdcompile.files import write_json
from kdcompile.measured import failed, mean_seconds
from kdcompile.tvm_layer import budget
from kdcompile.tvm_layer.measure import ProgressCallback, build_and_time, builder, quiet_ms_logging, runner
from kdcompile.tvm_layer.records import (TuningRecordFiles, best_seconds, count_records, has_record, load_database,
                                         measure_callbacks, private_copy)
from kdcompile.tvm_layer.space import schedulable_tasks, space_generator

SEARCHED = "searched.json"  # in the tuning folder: which tasks the search got, and why


def tune(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path, num_trials: int,
         cost_model: str | object = "xgb", seed: int = 0,
         on_batch: Callable[[int], None] | None = None, population: int | None = None,
         defaults_dir: Path | None = None, min_share: float = budget.MIN_SHARE,
         min_seconds: float = budget.MIN_SECONDS, small_trials: int = budget.SMALL_TRIALS,
         dropped: list[int] | None = None, rpc: str | None = None) -> int:
    """Tune the tasks of the lowered `mod` with MetaSchedule; records go to `work_dir`'s tuning database.
    `rpc` ("tracker_host:port:key"): candidates are timed on the RPC servers registered under that key.

    With `defaults_dir` (default schedules, `defaults.default_schedules`), each task's default program is
    measured first (one trial per task, `measure_defaults`), and only the tasks `budget.worth_searching` picks are
    searched; the others first get up to `small_trials` trials each and keep the best. MetaSchedule's scheduler
    would otherwise spend a warm-up batch of the same size on every task, however small (the demo student has
    six: a reshape, the classifier, two poolings, a mean, the 1-channel convolution). The tasks searched are
    written to `work_dir`/searched.json.
    `population`: the evolutionary search's population per round (TVM 0.27's default, 512, when None); the search
    costs about proportionally to it. `dropped`, when given, gets the count of measured candidates the database
    could not keep (traces that do not replay, `records.AddReplayableToDatabase`) appended. Returns the number of
    trials run by this call.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    start = count_records(work_dir)
    tasks = schedulable_tasks(mod, target)
    if num_trials - start <= 0 or not tasks:
        return 0
    callbacks = [ProgressCallback(on_batch)] if on_batch is not None else []
    if defaults_dir is not None:
        seconds = measure_defaults(mod, target, defaults_dir, work_dir, limit=num_trials - start, rpc=rpc)
        if on_batch is not None:
            on_batch(count_records(work_dir) - start)
        chosen = budget.worth_searching({t.task_name: seconds.get(t.task_name, 0.0) * int(t.weight) for t in tasks},
                                        min_share, min_seconds)
        big = [t for t in tasks if t.task_name not in seconds or t.task_name in chosen]
        small = [t for t in tasks if t not in big]
        write_json(work_dir / SEARCHED, {"searched": [t.task_name for t in big], "min_share": min_share,
                                         "min_seconds": min_seconds, "small_trials": small_trials,
                                         "seconds_before_search": seconds}, indent=None)
        _tune_small(small, target, work_dir, small_trials,
                    budget.small_tasks_budget(num_trials - count_records(work_dir)), cost_model, seed, callbacks,
                    dropped, rpc)
        tasks = big
    remaining = num_trials - count_records(work_dir)
    if remaining <= 0 or not tasks:
        return count_records(work_dir) - start
    per_batch = budget.trials_per_batch(remaining, len(tasks))
    strategy = "evolutionary" if population is None else ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 4))
    _search(tasks, target, work_dir, strategy, budget.search_limit(remaining, per_batch), per_batch, cost_model,
            seed, callbacks, dropped, rpc)
    return count_records(work_dir) - start


def _search(tasks: list, target: tvm.target.Target, work_dir: Path, strategy, max_trials: int, per_batch: int,
            cost_model, seed: int, callbacks: list, dropped: list[int] | None = None, rpc: str | None = None) -> None:
    """One MetaSchedule tuning run over `tasks` in our design space, builder, runner and database."""
    quiet_ms_logging()
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), space=space_generator(target), strategy=strategy, seed=seed)
    quiet_ms_logging()
    measure = measure_callbacks(callbacks)
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=max_trials,
                  num_trials_per_iter=per_batch, builder=builder(), runner=runner(rpc=rpc),
                  database=TuningRecordFiles(work_dir), cost_model=cost_model, measure_callbacks=measure)
    if dropped is not None:
        dropped.append(measure[0].skipped)  # measure_callbacks puts AddReplayableToDatabase first


def _tune_small(tasks: list, target: tvm.target.Target, work_dir: Path, small_trials: int, limit: int,
                cost_model, seed: int, callbacks: list, dropped: list[int] | None = None,
                rpc: str | None = None) -> None:
    """Bring each of `tasks` to `small_trials` records in `work_dir` (at most `limit` new trials in all): one
    batch each, the same size for all, so that MetaSchedule's warm-up round is all they get."""
    db = TuningRecordFiles(work_dir)
    counts = {t.task_name: len(db.get_top_k(db.commit_workload(t.dispatched[0]), small_trials)) for t in tasks}
    todo = [t for t in tasks if counts[t.task_name] < small_trials]
    per_task = min([small_trials - counts[t.task_name] for t in todo] + [limit // max(1, len(todo))])
    if not todo or per_task <= 0:
        return
    strategy = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16)  # small spaces
    _search(todo, target, work_dir, strategy, per_task * len(todo), per_task, cost_model, seed, callbacks, dropped,
            rpc)


def measure_defaults(mod: tvm.IRModule, target: tvm.target.Target, defaults_dir: Path, work_dir: Path,
                     limit: int | None = None, rpc: str | None = None) -> dict[str, float]:
    """Build and time each task's default schedule (from `defaults_dir`) once, as the tuner measures, and add
    it to `work_dir`'s tuning database as a measured record, a trial like any other. Tasks that already have a
    measured record are not measured again. At most `limit` new trials. Returns each task's best seconds."""
    defaults, db = load_database(defaults_dir), TuningRecordFiles(work_dir)
    seconds, todo = {}, []
    for task in schedulable_tasks(mod, target):
        if has_record(db, task):
            if (best := best_seconds(db, task)) is not None:
                seconds[task.task_name] = best
        elif has_record(defaults, task) and (limit is None or len(todo) < limit):
            todo.append((task, defaults.get_top_k(defaults.commit_workload(task.dispatched[0]), 1)[0]))
    schedules = []
    for task, record in todo:
        sch = tvm.s_tir.Schedule(private_copy(task.dispatched[0]))
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        schedules.append(sch)
    timed = build_and_time(schedules, [record.args_info for _, record in todo], target, rpc=rpc)
    for (task, record), sch, secs in zip(todo, schedules, timed):
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.dispatched[0]), secs or failed(), target, record.args_info))
        if (mean := mean_seconds(secs)) is not None:
            seconds[task.task_name] = mean
    return seconds
