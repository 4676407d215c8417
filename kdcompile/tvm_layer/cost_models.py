"""MetaSchedule's cost-model slot, filled: TVM's XGBoost (untrained, pretrained, loaded), a thin adapter for any
trace ranker, and a timer that wraps either. Which one a run uses is chosen by name (kdcompile.plugins)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from kdcompile.measured import mean_seconds
from kdcompile.tvm_layer.plain import TraceJSON


def untrained_xgb(num_cores: int | None = None) -> ms.cost_model.XGBModel:
    from kdcompile.machine import cores

    return ms.cost_model.XGBModel(num_tuning_cores=num_cores or cores())


def pretrained_xgb(groups: dict[str, tuple[list[np.ndarray], np.ndarray]]) -> ms.cost_model.XGBModel:
    """TVM's XGBModel trained on measured programs before tuning starts (the fair baseline for a pretrained
    cost model, and the picker of default schedules). `groups` maps a task hash to its programs' PerStoreFeature
    rows and mean seconds. Like XGBModel.update, it regresses each program's throughput relative to its
    task's best; the data stays in the model, so online updates retrain on it plus the new measurements."""
    from tvm.s_tir.meta_schedule.cost_model.xgb_model import FeatureGroup

    model = untrained_xgb()
    for task_hash, (features, costs) in groups.items():
        model.data[task_hash] = FeatureGroup(group_hash=task_hash, features=[f.astype("float32") for f in features],
                                             costs=np.asarray(costs, dtype="float32"))
        model.data_size += len(costs)
    xs = [f for g in model.data.values() for f in g.features]
    ys = np.concatenate([g.min_cost / g.costs for g in model.data.values()])
    model._train(xs=xs, ys=ys)  # what update() runs after adding data, without a dummy TuneContext
    model.last_train_size = model.data_size
    return model


def load_xgb(path: Path) -> ms.cost_model.XGBModel:
    import xgboost as xgb

    model = untrained_xgb()
    with xgb.config_context(verbosity=0):  # TVM names the booster file *.bin: "Unknown file format: bin"
        model.load(str(path))
    model.last_train_size = model.data_size
    if model.booster is not None:  # trained: predict from the first candidate. XGBModel returns random scores
        model.num_warmup_samples = 0  # until it holds 100 programs, and a shipped picker holds none
    return model


def builtin(name: str):
    """MetaSchedule's own cost models by name, as objects: "xgb" (untrained XGBoost) or "random"."""
    return {"xgb": untrained_xgb, "random": ms.cost_model.RandomModel}[name]()


@derived_object
class TraceRankerCostModel(ms.cost_model.PyCostModel):
    """MetaSchedule's cost-model slot filled by a ranker of trace JSON (costmodel.online.MambaScorer, say): an
    object with predict(keys, featurise) -> scores, update(task, keys, featurise, seconds), save(path) and a
    classmethod load(path). This class names each candidate by a key (the structural hashes of its workload and
    of its trace's JSON: the same key, the same program, even for one cost model used on several modules, as the
    picker is)
    and hands the scorer a function that featurises the candidates it asks for: trace JSON, and for a scorer
    that `wants_stores`, MetaSchedule's per-store feature rows (the ones XGBoost reads). The scorer caches by
    key, so a candidate the evolutionary search proposes again costs a hash of its trace."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.extractor = ms.feature_extractor.PerStoreFeature()
        self.trace_json = TraceJSON()

    def _keyed(self, context, candidates) -> tuple[list[str], Callable]:
        workload = f"{tvm_ffi.structural_hash(context.mod):016x}"
        raws = [self.trace_json.raw(c.sch.trace) for c in candidates]
        keys = [workload + self.trace_json.key(r) for r in raws]

        def featurise(indices: list[int]) -> tuple[list, list[np.ndarray] | None]:
            picked = [candidates[i] for i in indices]
            traces = [self.trace_json(raws[i]) for i in indices]
            if not getattr(self.scorer, "wants_stores", False):
                return traces, None
            return traces, [f.numpy() for f in self.extractor.extract_from(context, picked)]

        return keys, featurise

    def clear_cache(self) -> None:
        """Forget cached features and scores (a timing of cold predictions needs this)."""
        if hasattr(self.scorer, "clear_cache"):
            self.scorer.clear_cache()

    def load(self, path: str) -> None:
        self.scorer = type(self.scorer).load(path)

    def save(self, path: str) -> None:
        self.scorer.save(path)

    def update(self, context, candidates, results) -> None:
        seconds = [mean_seconds([float(s) for s in r.run_secs]) if r.error_msg is None and r.run_secs is not None
                   else None for r in results]
        self.scorer.update(str(context.task_name), *self._keyed(context, candidates), seconds)

    def predict(self, context, candidates) -> np.ndarray:
        return strengths(self.scorer.predict(*self._keyed(context, candidates)))


MAX_LOG_STRENGTH = 80.0  # exp(+-80) stays finite and non-zero in float64, whatever a drifting ranker scores


def strengths(scores: np.ndarray) -> np.ndarray:
    """A ranker's scores as MetaSchedule's evolutionary search reads a prediction: it clamps each at 0 (it expects a
    normalised throughput, as XGBoost predicts), keeps the highest and samples parents in proportion to them. A
    LambdaRank score is a log-odds, most often negative: with the shipped ranker every sampled program of some
    MobileNet-V2 convolutions scores below 0, so clamped they all tie at 0 and the search runs blind on those tasks
    (found 2026-12-03; every earlier Mamba tuning and picker figure ran that way). exp(score) keeps the order, is
    positive, and is the Bradley-Terry strength the rank loss models: P(i beats j) = e^si / (e^si + e^sj), so parents
    are drawn by their odds of being the best."""
    return np.exp(np.clip(np.asarray(scores, dtype="float64"), -MAX_LOG_STRENGTH, MAX_LOG_STRENGTH))


@derived_object
class TimedCostModel(ms.cost_model.PyCostModel):
    """A cost model (an object, or "xgb"/"random") with the seconds spent in its predict and update counted."""

    def __init__(self, inner):
        self.inner = builtin(inner) if isinstance(inner, str) else inner
        self.seconds = 0.0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def load(self, path: str) -> None:
        self.inner.load(path)

    def save(self, path: str) -> None:
        self.inner.save(path)

    def update(self, context, candidates, results) -> None:
        self._timed(self.inner.update, context, candidates, results)

    def predict(self, context, candidates) -> np.ndarray:
        return np.asarray(self._timed(self.inner.predict, context, candidates), dtype="float64")
