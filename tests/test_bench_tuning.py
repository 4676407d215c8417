"""The online benchmark's arithmetic (bench/costmodel_tuning.py) on made-up runs: trials and seconds to reach a
baseline's final latency, the ratios built from them, and their geometric mean."""

import math

import pytest

from bench.costmodel_tuning import common_curves, geomean, seconds_at, summarise, trials_to_reach


def _run(model: str, seed: int, curve: list, seconds_per_trial: float, costmodel_seconds: float) -> dict:
    n = len(curve)
    return {"model": model, "seed": seed, "curve": curve, "tuning_seconds": n * seconds_per_trial,
            "costmodel_seconds": costmodel_seconds,
            "timeline": [(i, i * seconds_per_trial) for i in range(2, n + 1, 2)]}


def test_trials_and_seconds_to_reach_a_baseline_final():
    # xgb reaches 4 ms at its 8th (last) trial; mamba reaches 4 ms at its 4th, but each of its trials costs 3 s
    xgb = [None, 9, 8, 7, 6, 5, 5, 4]
    mamba = [None, 8, 6, 4, 4, 3, 3, 3]
    runs = [_run("xgb", 0, xgb, 1.0, 0.5), _run("mamba", 0, mamba, 3.0, 6.0)]
    out = summarise(runs)
    assert out["reach_xgb_final"] == {"mamba": {"trials": 4, "seconds": 12.0}, "xgb": {"trials": 8, "seconds": 8.0}}
    assert out["trials_ratio_vs_xgb"] == 2.0
    assert out["time_ratio_vs_xgb"] == pytest.approx(8 / 12)
    assert out["final_latency_ratio_vs_xgb"] == pytest.approx(3 / 4)
    assert out["costmodel_time_share"] == {"xgb": 0.5 / 8, "mamba": 6.0 / 24}


def test_a_model_that_never_reaches_has_no_ratio():
    runs = [_run("xgb", 0, [5, 4, 3, 2], 1.0, 0), _run("mamba", 0, [5, 5, 5, 5], 1.0, 0)]
    out = summarise(runs)
    assert out["trials_ratio_vs_xgb"] is None and out["time_ratio_vs_xgb"] is None
    assert geomean([2.0, None]) is None
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)


def test_curves_come_from_the_kept_trial_logs_over_the_tasks_every_run_measured():
    # task "c" never measured in run b (a failed measurement, None): both curves leave it out, and name it
    weights = {"a": 2, "b": 1, "c": 1}
    a = {"weights": weights, "log": [("a", 3.0), ("b", 1.0), ("c", 9.0), ("a", 2.0), (None, 0.1)]}
    b = {"weights": weights, "log": [("b", 2.0), ("c", None), ("a", 4.0), ("b", 1.0), ("a", 5.0)]}
    got = common_curves([a, b])
    assert [g["left_out_tasks"] for g in got] == [["c"], ["c"]]
    assert got[0]["curve"] == [None, 7.0, 7.0, 5.0, 5.0]  # 2 x best(a) + best(b); another workload's trial counts
    assert got[1]["curve"] == [None, None, 10.0, 9.0, 9.0]
    # no task measured by every run: no curve (an empty sum would read as a latency of 0 ms), and a clear stop
    from kdcompile.measured import curve_of

    assert curve_of(a["log"], {}) == [None] * 5
    nothing = {"weights": weights, "log": [("a", None), ("b", None)]}
    with pytest.raises(SystemExit, match="no task has a measured program in every run"):
        common_curves([a, nothing])


def test_seconds_at_reads_the_first_batch_that_holds_the_trial():
    run = {"timeline": [(3, 10.0), (6, 25.0), (9, 31.0)]}
    assert [seconds_at(run, n) for n in (1, 3, 4, 9, 10, None)] == [10.0, 10.0, 25.0, 31.0, None, None]
    assert trials_to_reach([None, 3.0, 2.0], 2.0) == 3 and trials_to_reach([None, 3.0], 2.0) is None
    assert math.isclose(geomean([1.0]), 1.0)


def test_zero_trial_picker_summary_takes_the_geometric_mean_and_never_picks_random():
    from bench.costmodel_pickers import summary

    networks = {"a": {"vs_ort": {"xgb": 2.0, "mamba": 1.0, "random": 0.5}},
                "b": {"vs_ort": {"xgb": 2.0, "mamba": 4.0, "random": 0.5}}}
    out = summary(networks, ["xgb", "mamba", "random"])
    assert out["geomean_vs_ort"]["xgb"] == pytest.approx(2.0)
    assert out["geomean_vs_ort"]["mamba"] == pytest.approx(2.0)
    assert out["geomean_vs_ort"]["random"] == pytest.approx(0.5)  # lowest, but chance is not a default
    networks["b"]["vs_ort"]["mamba"] = 3.0
    assert summary(networks, ["xgb", "mamba", "random"])["best_learned_picker"] == "mamba"
    del networks["b"]["vs_ort"]["mamba"]  # a network without the picker makes its mean undefined
    assert summary(networks, ["xgb", "mamba", "random"])["geomean_vs_ort"]["mamba"] is None
