"""The Mamba cost model inside a real MetaSchedule tuning run, and its save/load round trip."""

import copy
import json

import numpy as np
import pytest
import torch

from costmodel.mamba import MambaConfig, MambaRanker, model_inputs
from costmodel.online import MambaScorer
from costmodel.tokenize import tokenize
from kdcompile.tvm_layer.cost_models import MAX_LOG_STRENGTH, TimedCostModel, TraceRankerCostModel, strengths
from kdcompile.tvm_layer.lowering import extract_tasks, import_onnx, lower
from kdcompile.tvm_layer.plain import TraceJSON, plain_json, trace_json
from kdcompile.measured import measured_in
from kdcompile.tvm_layer.records import load_database, trial_log, tuning_curve
from kdcompile.tvm_layer.search import tune
from kdcompile.tvm_layer.target import host_target



def test_ranker_scores_reach_the_search_positive_in_the_same_order():
    # MetaSchedule clamps every prediction at 0 (evolutionary_search.cc, PredictNormalizedScore); raw ranker scores
    # of one task can all be negative, which the clamp would tie
    raw = np.array([-9.4, -3.5, -0.77, -3.49, -12.0], dtype=np.float32)
    assert (np.maximum(raw, 0) == 0).all()
    got = np.maximum(strengths(raw), 0)  # what the search keeps
    assert (got > 0).all() and list(np.argsort(got)) == list(np.argsort(raw))
    assert got[2] / got[0] == pytest.approx(np.exp(raw[2] - raw[0]), rel=1e-5)  # odds, as the rank loss models
    far = strengths(np.array([-1e6, 1e6]))
    assert np.isfinite(far).all() and far[0] > 0 and far[1] == pytest.approx(np.exp(MAX_LOG_STRENGTH))



@pytest.mark.parametrize("store_features", [0, 164])
@pytest.mark.slow
def test_mamba_cost_model_tunes_a_matmul_and_round_trips(tmp_path, store_features):
    from kdcompile.export import INPUT_NAME, to_onnx

    to_onnx(torch.nn.Linear(64, 64).eval(), torch.zeros(16, 64), tmp_path / "linear.onnx", opset=18)
    target = host_target(2)
    mod = lower(import_onnx(tmp_path / "linear.onnx", INPUT_NAME, (16, 64)), target)
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=16, n_layers=1, d_state=4, store_features=store_features)),
                         steps_per_update=2, update_every=1)
    calls = {"predict": 0, "keys": 0}
    real_predict = scorer.predict

    def counting_predict(keys, featurise):
        calls["predict"] += 1
        calls["keys"] += len(keys)
        # a joined model gets each candidate's per-store rows from the adapter, a tokens-only one none
        traces, stores = featurise(list(range(len(keys))))
        assert len(traces) == len(keys) and (stores is not None) == bool(store_features)
        if stores is not None:
            assert len(stores) == len(traces) and all(r.shape[1] == 164 for r in stores)
        scores = real_predict(keys, featurise)
        assert scores.shape == (len(keys),) and np.isfinite(scores).all()
        # cached scores are the uncached reference's, on the real candidates
        ref = scorer.score([tokenize(t) for t in traces], stores)
        assert np.allclose(scores, ref, atol=1e-5)
        return scores

    scorer.predict = counting_predict
    timed = TimedCostModel(TraceRankerCostModel(scorer))
    ran = tune(mod, target, tmp_path / "work", num_trials=8, cost_model=timed, population=32)
    assert 0 < ran <= 8 and calls["predict"] > 0  # the budget is a ceiling
    assert 0 < scorer.featurised < calls["keys"]  # the search proposed programs again, featurised once each
    assert len(scorer.seen) > 0 and scorer.rounds > 0  # update() received the measured programs and learned
    assert timed.seconds > 0

    # the fast trace conversion the adapter uses equals TVM's own, on every program of the run
    cached = TraceJSON()
    for record in load_database(tmp_path / "work").get_all_tuning_records():
        assert trace_json(record.trace) == plain_json(record.trace.as_json()) == cached(record.trace)
        assert cached(record.trace) == trace_json(record.trace)  # again, from the instruction cache
    assert cached.hits > 0
    # a program's key: the same for the same program loaded again (new objects, a fresh cache, so nothing rests on
    # object identity); different for every distinct program of the run
    traces = [r.trace for r in load_database(tmp_path / "work").get_all_tuning_records()]
    keys = [cached.key(cached.raw(t)) for t in traces]
    fresh = TraceJSON()
    assert keys == [fresh.key(fresh.raw(r.trace)) for r in load_database(tmp_path / "work").get_all_tuning_records()]
    assert len(set(keys)) == len({str(t) for t in traces})
    assert all(cached(cached.raw(t)) == trace_json(t) for t in traces)

    # the benchmark's curve: one point per trial, defined once every task has a measurement, never rising
    curve = tuning_curve(extract_tasks(mod, target), tmp_path / "work")
    tasks = extract_tasks(mod, target)
    assert measured_in(trial_log(tasks, tmp_path / "work")) == {t.task_name for t in tasks}
    (tmp_path / "none").mkdir()  # a database holding the workloads but no record: no task measured
    (tmp_path / "none" / "database_workload.json").write_text((tmp_path / "work" / "database_workload.json").read_text())
    (tmp_path / "none" / "database_tuning_record.json").write_text("")
    assert measured_in(trial_log(tasks, tmp_path / "none")) == set()
    assert len(curve) == ran and curve[-1] is not None and curve[-1] > 0
    defined = [v for v in curve if v is not None]
    assert all(b <= a for a, b in zip(defined, defined[1:]))
    if len(tasks) == 1:
        best = min(np.mean(json.loads(r)[1][1]) for r in (tmp_path / "work" / "database_tuning_record.json").open())
        assert curve[-1] == pytest.approx(int(tasks[0].weight) * best)

    records = list((tmp_path / "work" / "database_tuning_record.json").open())[:4]
    traces = [json.loads(r)[1][0] for r in records]

    # the tokeniser on these real traces: deterministic, and blind to block names
    for trace in traces:
        renamed = copy.deepcopy(trace)
        names: dict[str, str] = {}
        for inst in renamed[0]:
            if inst[0] == "GetSBlock":
                inst[2][0] = names.setdefault(inst[2][0], f"block{len(names)}_renamed")
        assert names  # the trace does name blocks
        (k1, n1), (k2, n2), (k3, n3) = tokenize(trace), tokenize(trace), tokenize(renamed)
        assert np.array_equal(k1, k2) and np.array_equal(n1, n2)
        assert np.array_equal(k1, k3) and np.array_equal(n1, n3)
    scorer.save(tmp_path / "m.pt")
    again = MambaScorer.load(tmp_path / "m.pt")
    seen = scorer.seen[:4]
    inputs = model_inputs(scorer.model.cfg, [s[1] for s in seen], [s[2] for s in seen] if store_features else None)
    with torch.no_grad():
        assert torch.equal(scorer.model.eval()(**inputs), again.model(**inputs))
