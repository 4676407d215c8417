"""What a measured run time is: MetaSchedule's mark of a failed program, and the one test for it.

MetaSchedule records a program that failed to build or run with run_secs [1e10]; the dataset stores failures as
None. Every reader of run times asks `is_measured` (or `mean_seconds`) instead of comparing with a literal.
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
