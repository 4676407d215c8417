import time

from kdcompile.timing import TimingConfig, measure


def test_measure_reports_ordered_percentiles_of_real_calls():
    calls = []
    r = measure(lambda: (calls.append(1), time.sleep(0.001)), TimingConfig(warmup_s=0.0, min_calls=20, min_time_s=0.0))
    assert r["calls"] == 20 and len(calls) == 21  # one warm-up call
    assert 1.0 <= r["p50"] <= r["p90"] <= r["p99"]
