"""What a measured run time is: MetaSchedule's mark of a failed program, and the one test for it.

MetaSchedule records a program that failed to build or run with run_secs [1e10]; the dataset stores failures as
None. Every reader of run times asks `is_measured` (or `mean_seconds`) instead of comparing with a literal. A tuning
run's trials in measurement order, as (task name, mean seconds or None), make a trial log
(`tvm_layer.records.trial_log`); its curve and measured tasks are computed here, without TVM.
"""

from __future__ import annotations

FAILED_SECS = 1e10  # MetaSchedule's run_secs of a failed trial
_FAILED_ABOVE = 1e9  # any repeat this slow is the failure mark, not a time


def is_measured(run_secs) -> bool:
    """Whether `run_secs` (a list of every repeat's seconds, or None) holds a successful measurement."""
    return bool(run_secs) and max(float(s) for s in run_secs) < _FAILED_ABOVE


def mean_seconds(run_secs) -> float | None:
    """The mean of the repeats of a successful measurement; None for a failure."""
    if not is_measured(run_secs):
        return None
    secs = [float(s) for s in run_secs]
    return sum(secs) / len(secs)


def failed() -> list[float]:
    """run_secs of a failed trial, as MetaSchedule writes it."""
    return [FAILED_SECS]


def measured_in(log: list) -> set[str]:
    """Names of the tasks with at least one successful measurement in a `trial_log`. A task can have none after a
    whole run: TVM 0.27's rfactor traces of some reductions do not replay, and the database keeps no record that
    does not (AddReplayableToDatabase)."""
    return {name for name, secs in log if name is not None and secs is not None}


def curve_of(log: list, weights: dict[str, int]) -> list[float | None]:
    """After each trial of a `trial_log`: the network's latency as MetaSchedule's task scheduler estimates it, the
    sum over the tasks in `weights` (name -> occurrences) of occurrences x best seconds measured so far; None while
    one of them has no successful measurement yet (every point, when `weights` is empty)."""
    if not weights:
        return [None] * len(log)
    best: dict[str, float] = {}
    curve = []
    for name, secs in log:
        if secs is not None and name in weights:
            best[name] = min(best.get(name, float("inf")), secs)
        curve.append(sum(weights[n] * s for n, s in best.items()) if len(best) == len(weights) else None)
    return curve
