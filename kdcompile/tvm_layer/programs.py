"""The dataset's programs: a network's tasks, programs sampled and measured, stored traces replayed into exactly
the program that was measured, featurised as MetaSchedule's cost models see them, and timed again.
costmodel/collect.py and costmodel/features.py drive these."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from kdcompile.tvm_layer.lowering import Lowering, extract_tasks, import_onnx, lower
from kdcompile.tvm_layer.measure import build_and_time, builder, evaluator, quiet_ms_logging, runner
from kdcompile.tvm_layer.plain import plain_json, trace_json
from kdcompile.tvm_layer.records import measure_callbacks, private_copy, trace_replays
from kdcompile.tvm_layer.space import space_generator
from kdcompile.tvm_layer.target import search_threads, target_cores

PER_STORE_FEATURES = 164  # columns of MetaSchedule's PerStoreFeature rows


def network_tasks(onnx_path: Path, input_name: str, input_shape: tuple[int, ...], target: tvm.target.Target,
                  lowering: Lowering = Lowering()) -> list[dict]:
    """The tunable tasks of a network, lowered exactly as `tune` lowers it: name, weight, workload JSON, module."""
    mod = lower(import_onnx(onnx_path, input_name, input_shape), target, lowering)
    tasks = []
    for t in extract_tasks(mod, target):
        workload = ms.database.Workload(t.dispatched[0])
        args = [a.as_json() for a in ms.arg_info.ArgInfo.from_entry_func(t.dispatched[0])]
        tasks.append({"task_name": t.task_name, "weight": int(t.weight), "workload": plain_json(workload.as_json()),
                      "args_info": plain_json(args), "mod": t.dispatched[0]})
    return tasks


def workload_module(workload_json: list) -> tvm.IRModule:
    return ms.database.Workload.from_json(workload_json).mod


@derived_object
class RecordingCallback(ms.measure_callback.PyMeasureCallback):
    """Hands every measured candidate of a batch to `sink` as a plain dict: trace JSON, every repeat's seconds,
    and the builder's or runner's error message for failures (kept, not dropped)."""

    def __init__(self, sink: Callable[[list[dict]], None], with_features: bool = False):
        self.sink = sink
        self.with_features = with_features  # also the PerStoreFeature rows the cost model saw (for tests)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        features = [None] * len(measure_candidates)
        if self.with_features:
            ctx = task_scheduler.tasks_[task_id].ctx
            features = [f.numpy() for f in ms.feature_extractor.PerStoreFeature().extract_from(ctx, measure_candidates)]
        rows = []
        for cand, built, ran, feature in zip(measure_candidates, builder_results, runner_results, features):
            error = built.error_msg or ran.error_msg
            if error is None and not trace_replays(cand.sch.trace, task_scheduler.tasks_[task_id].ctx.mod):
                error = "trace does not replay on its workload (TVM 0.27 rfactor traces); not reusable offline"
            rows.append({"trace": trace_json(cand.sch.trace),
                         "run_secs": None if error else [float(s) for s in ran.run_secs],
                         "error": None if error is None else str(error)[:500]})
            if self.with_features:
                rows[-1]["features"] = feature
        self.sink(rows)


@derived_object
class NewProgramsOnly(ms.search_strategy.PySearchStrategy):
    """A search strategy that proposes only programs the task does not have yet, and ends at its first empty batch.

    `is_known(trace_json)` says whether a program is already in the dataset; such candidates are dropped before
    they are built, so no measurement is spent on them. A batch left empty ends the search: TVM's
    EvolutionarySearch gives up only after 5 empty batches (`num_empty_iters_before_early_stop`, read-only from
    Python), and each is a full population sampling and evolution. On a task whose whole design space has been
    measured (a reshape has 2 programs) that is all it does: on an H200 host, a minute of batches that found
    nothing new (bench/results/cuda_collect). For collection, ending early costs nothing: the source is then
    marked exhausted."""

    def __init__(self, inner, is_known: Callable[[list], bool] | None = None):
        self.inner = inner
        self.is_known = is_known

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        candidates = self.inner.generate_measure_candidates()
        if candidates is not None and self.is_known is not None:
            candidates = [c for c in candidates if not self.is_known(trace_json(c.sch.trace))]
        return None if candidates is not None and len(candidates) == 0 else candidates

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return NewProgramsOnly(self.inner.clone(), self.is_known)


def known_programs(mod: tvm.IRModule, target_json: dict, records: list[dict]):
    """A MemoryDatabase holding a task's measured programs (dataset records: trace JSON and run_secs), so that an
    evolutionary search starts from the best of them instead of from nothing. Records whose trace does not
    re-apply are left out."""
    db = ms.database.MemoryDatabase()
    workload = db.commit_workload(mod)
    for r in records:
        if not r.get("run_secs"):
            continue
        own = ms.database.Workload(private_copy(mod))  # parsing may change the workload (records.private_copy)
        try:
            args = [a.as_json() for a in ms.arg_info.ArgInfo.from_entry_func(mod)]
            parsed = ms.database.TuningRecord.from_json([r["trace"], r["run_secs"], target_json, args], own)
        except Exception:  # noqa: BLE001 - TVM raises plain errors for a trace that does not replay
            continue
        db.commit_tuning_record(ms.database.TuningRecord(parsed.trace, workload, parsed.run_secs, parsed.target,
                                                         parsed.args_info))
    return db


def measure_programs(mod: tvm.IRModule, target: tvm.target.Target, strategy: str, num_trials: int,
                     per_batch: int, seed: int, sink: Callable[[list[dict]], None], work_dir: Path,
                     repeats: int = 5, min_repeat_ms: int = 15, with_features: bool = False,
                     rpc: str | None = None, database=None, is_known: Callable[[list], bool] | None = None,
                     workers: tuple | None = None) -> None:
    """Sample and measure `num_trials` programs of one task; `strategy` is "random" (replay-trace: random
    samples of the design space) or "evolutionary" (MetaSchedule's search with XGBoost, so good programs
    are present). Builds run in parallel; measurements one at a time with `repeats` timed repeats each.
    `database`: what the search knows before it starts (default: nothing; `known_programs` makes one);
    `is_known(trace_json)`: programs not to propose again (`NewProgramsOnly`); `workers`: a builder and runner to
    reuse (`measurement_workers`), else fresh ones: each fresh worker process imports TVM, about 4 s here."""
    inner = {"random": ms.search_strategy.ReplayTrace, "evolutionary": ms.search_strategy.EvolutionarySearch}
    search = NewProgramsOnly(inner[strategy](), is_known)
    quiet_ms_logging()
    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target), search_strategy=search,
                         task_name="task", rand_state=seed, num_threads=search_threads(target),
                         logger=ms.logging.get_loggers_from_work_dir(str(work_dir), ["task"])[0]).clone()
    quiet_ms_logging()
    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(work_dir), max_trials_global=num_trials,
                  num_trials_per_iter=per_batch, database=database if database is not None else "memory",
                  builder=workers[0] if workers else builder(),
                  runner=workers[1] if workers else runner(evaluator(repeats, min_repeat_ms), rpc),
                  cost_model="xgb" if strategy == "evolutionary" else "random",
                  measure_callbacks=measure_callbacks([RecordingCallback(sink, with_features)]))


def measurement_workers(repeats: int = 5, min_repeat_ms: int = 15, rpc: str | None = None) -> tuple:
    """A builder and a runner for many `measure_programs` calls; close both (`close_workers`) when done. A
    collector measures a few programs of each of hundreds of tasks: with fresh workers per task, 72% of its CPU
    time went to worker processes importing TVM and torch (py-spy, 2026-12-02, 8 programs/min)."""
    return builder(), runner(evaluator(repeats, min_repeat_ms), rpc)


def close_workers(workers: tuple) -> None:
    for w in workers:
        w.close()


def schedules_from_traces(workload_json: list, target_json: dict, traces: list[list], strict: bool = True):
    """Each stored trace replayed on its workload (postprocessing included): exactly the program that was measured.
    Returns (workload module, target, each program's args info, schedules). With strict=False a trace that does
    not re-apply (`records.trace_replays`) gets None in both lists instead of raising."""
    from tvm.s_tir.schedule import Trace

    mod = workload_module(workload_json)
    schedules = []
    for trace in traces:
        sch = tvm.s_tir.Schedule(private_copy(mod))
        try:
            Trace.apply_json_to_schedule(trace, sch)
        except Exception:  # noqa: BLE001 - TVM raises plain InternalErrors here
            if strict:
                raise
            sch = None
        schedules.append(sch)
    # each program's own arguments: a program that packs its weights takes them in the packed layout
    args = [None if sch is None else ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
            for sch in schedules]
    return mod, tvm.target.Target(target_json), args, schedules


def per_store_features(workload_json: list, target_json: dict, traces: list[list]) -> list[np.ndarray]:
    """MetaSchedule's PerStoreFeature rows (n_stores, 164) of each traced program, recomputed offline; equal to
    the rows the cost model saw during tuning (tested). A trace that does not re-apply gets no rows: some of
    the first records of the mean1 task do not replay from JSON, though they were measured."""
    mod, target, args, schedules = schedules_from_traces(workload_json, target_json, traces, strict=False)
    ok = [i for i, sch in enumerate(schedules) if sch is not None]
    candidates = [ms.MeasureCandidate(schedules[i], args[i]) for i in ok]
    ctx = ms.TuneContext(mod=mod, target=target, num_threads=target_cores(target))
    rows = [np.zeros((0, PER_STORE_FEATURES), np.float32)] * len(traces)
    for i, f in zip(ok, ms.feature_extractor.PerStoreFeature().extract_from(ctx, candidates) if ok else []):
        rows[i] = f.numpy()
    return rows


def time_predict(workload_json: list, target_json: dict, traces: list[list], cost_models: dict,
                 repeats: int = 3) -> dict[str, float]:
    """Median seconds of each cost model's `predict(context, candidates)` on these programs, called as the
    evolutionary search calls it: on scheduled candidates, features (per-store rows, trace JSON) extracted inside.
    Cold: a model that caches by program (the Mamba adapter) forgets before every call."""
    import time

    mod, target, args, schedules = schedules_from_traces(workload_json, target_json, traces)
    candidates = [ms.MeasureCandidate(sch, a) for sch, a in zip(schedules, args)]
    ctx = ms.TuneContext(mod=mod, target=target, num_threads=target_cores(target))
    out = {}
    for name, model in cost_models.items():
        times = []
        for _ in range(repeats):
            if hasattr(model, "clear_cache"):
                model.clear_cache()
            start = time.perf_counter()
            model.predict(ctx, candidates)
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


def featurise_stages(workload_json: list, target_json: dict, traces: list[list], models: dict,
                     repeats: int = 3) -> tuple[dict[str, float], list, list[np.ndarray]]:
    """Median seconds of each TVM-side step a cost model takes on these programs inside the tuner (scheduled
    candidates, the tuner's threads), for bench.costmodel_featurise: the trace's JSON array (`trace_raw`), its key
    (`trace_key`), its conversion to Python with a cold instruction cache (`convert_cold`) and a warm one
    (`convert_warm`), MetaSchedule's per-store feature extraction with the tuner's threads (`per_store`) and one
    thread (`per_store_1thread`), an XGBoost booster's prediction from ready rows (`xgb_booster`), and each of
    `models`' whole `predict` (`predict:<name>`, cold as in time_predict). Returns them, the converted traces and the
    per-store rows (for the TVM-free steps the bench times itself)."""
    import time

    from kdcompile.tvm_layer.plain import TraceJSON

    mod, target, args, schedules = schedules_from_traces(workload_json, target_json, traces)
    candidates = [ms.MeasureCandidate(sch, a) for sch, a in zip(schedules, args)]
    ctx = ms.TuneContext(mod=mod, target=target, num_threads=target_cores(target))
    one = ms.TuneContext(mod=mod, target=target, num_threads=1)
    extractor = ms.feature_extractor.PerStoreFeature()
    raws = [TraceJSON.raw(c.sch.trace) for c in candidates]
    warm = TraceJSON()
    converted = [warm(r) for r in raws]
    rows = [f.numpy() for f in extractor.extract_from(ctx, candidates)]
    steps: dict[str, Callable] = {
        "trace_raw": lambda: [TraceJSON.raw(c.sch.trace) for c in candidates],
        "trace_key": lambda: [TraceJSON.key(r) for r in raws],
        "convert_cold": lambda: [converter(r) for converter in [TraceJSON()] for r in raws],
        "convert_warm": lambda: [warm(r) for r in raws],
        "per_store": lambda: [f.numpy() for f in extractor.extract_from(ctx, candidates)],
        "per_store_1thread": lambda: [f.numpy() for f in extractor.extract_from(one, candidates)],
    }
    for name, model in models.items():
        if hasattr(model, "_predict"):  # TVM's XGBModel: its booster alone, from rows already extracted
            steps["xgb_booster"] = lambda model=model: model._predict(xs=[r.astype("float32") for r in rows])

        def predict(model=model):
            if hasattr(model, "clear_cache"):
                model.clear_cache()
            model.predict(ctx, candidates)
        steps[f"predict:{name}"] = predict
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out, converted, rows


def remeasure(workload_json: list, target_json: dict, traces: list[list], repeats: int = 5,
              min_repeat_ms: int = 15, rpc: str | None = None, errors: list | None = None,
              seconds: dict | None = None, workers: tuple | None = None) -> list[list[float] | None]:
    """Build and time programs again, with the builder and runner the collector used (to measure how repeatable
    the data is, or, given another target, how the same programs fare there). Returns every repeat's seconds per
    program, or None where it did not replay, build or run (`errors` gets the reasons, `seconds` the build and
    timing wall time, `workers` a builder and runner to reuse: measure.build_and_time)."""
    _, target, args, schedules = schedules_from_traces(workload_json, target_json, traces, strict=False)
    ok = [i for i, sch in enumerate(schedules) if sch is not None]
    found: list = []
    timed = build_and_time([schedules[i] for i in ok], [args[i] for i in ok], target,
                           evaluator(repeats, min_repeat_ms), rpc=rpc, errors=found, seconds=seconds,
                           workers=workers)
    out: list[list[float] | None] = [None] * len(traces)
    why: list[str | None] = ["the trace does not replay on its workload"] * len(traces)
    for i, secs, message in zip(ok, timed, found):
        out[i], why[i] = secs, message
    if errors is not None:
        errors[:] = why
    return out
