"""Where the tuning budget is decided: which tasks the search gets, how many trials the others get, and how large
each measured batch is. Pure arithmetic on measured seconds; `search.tune` carries it out.

The rule, measured on the three e2e models (bench/results/e2e/): every task's default schedule is timed first
(one trial each); tasks under MIN_SHARE of the model's time and under MIN_SECONDS get SMALL_TRIALS trials each
(their default included: a pooling or a mean may run faster serial, or vectorized) from at most a quarter of what
is left, and the search spends the rest on the others.
"""

from __future__ import annotations

MIN_SHARE = 0.02  # tasks under this share of the model's time (default schedules measured)...
MIN_SECONDS = 10e-6  # ...and under this time (x their weight) get...
SMALL_TRIALS = 6  # ...this many trials each, their default included; the rest of the budget goes to the others
MAX_BATCH = 64  # trials measured per batch, at most


def worth_searching(seconds: dict[str, float], min_share: float = MIN_SHARE,
                    min_seconds: float = MIN_SECONDS) -> set[str]:
    """The tasks (name -> default schedule's time x weight) that the search gets: those that take at least
    `min_share` of the total or at least `min_seconds`. A share alone misjudges a model whose defaults include a
    few far-off ones: MobileNet-V2's two ~1 ms defaults made 2% of its total 79 us, and its classifier and six
    convolution tasks of 44-65 us each were left out; in one inference, four of its six slowest kernels were
    among them (bench/results/e2e/earlier_runs/0506_*)."""
    total = sum(seconds.values())
    return {name for name, s in seconds.items() if s >= min_share * total or s >= min_seconds}


def small_tasks_budget(remaining: int) -> int:
    """Trials the small tasks may take in all: at most a quarter of what is left, so that a small budget still
    goes mostly to the tasks that matter."""
    return remaining // 4


def trials_per_batch(remaining: int, num_tasks: int) -> int:
    """MetaSchedule's gradient scheduler warms up every task with one batch, then gives batches to the tasks that
    gain most. Batches of trials/(2 tasks) leave half the budget to that second phase, where the cost model has
    learned from the first; a task that still gets nothing runs its default schedule."""
    return max(1, min(MAX_BATCH, remaining // (2 * num_tasks)))


def search_limit(remaining: int, per_batch: int) -> int:
    """MetaSchedule's max_trials_global for `remaining` trials: it starts a batch whenever fewer than that many
    trials ran, so the limit stops one batch early and a budget is never exceeded."""
    return max(1, remaining - per_batch + 1)
