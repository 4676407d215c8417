import time

from kdcompile.timing import TimingConfig, measure


def test_measure_reports_ordered_percentiles_of_real_calls():
    calls = []
    r = measure(lambda: (calls.append(1), time.sleep(0.001)), TimingConfig(warmup_s=0.0, min_calls=20, min_time_s=0.0))
    assert r["calls"] == 20 and len(calls) == 21  # one warm-up call
    assert 1.0 <= r["p50"] <= r["p90"] <= r["p99"]


def test_rounds_take_turns_and_paired_ratios_compare_within_a_round():
    from kdcompile.timing import in_rounds, versus

    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    p50 = in_rounds(calls, TimingConfig(warmup_s=0.0, min_calls=1, min_time_s=0.0), rounds=3)
    assert [len(v) for v in p50.values()] == [3, 3]
    firsts = [order[0]] + [c for prev, c in zip(order, order[1:]) if c != prev]
    assert firsts == ["a", "b", "a", "b", "a", "b"]  # whole turns, not all of a's calls first
    # the machine slows down round by round: b takes 2x a's time in every round; c ties a in two rounds of three,
    # which the ratio of medians (2) misses and the paired median (1) sees
    vs = versus({"a": [1.0, 2.0, 4.0], "b": [2.0, 4.0, 8.0], "c": [1.0, 4.0, 4.0]}, "a")
    assert vs["b"] == {"ms": 4.0, "ratio": 2.0, "paired": 2.0}
    assert vs["c"] == {"ms": 4.0, "ratio": 2.0, "paired": 1.0} and "a" not in vs
