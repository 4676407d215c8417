"""The Mamba cost model's online half and its caches: what is cached equals what is computed afresh, scores do not
depend on the batch, and online learning runs exactly as often as its rule says."""

import json

import numpy as np
import torch

from costmodel.mamba import MambaConfig, MambaRanker, model_inputs
from costmodel.online import MambaScorer
from costmodel.tokenize import STORE_KIND, tokenize


def _trace(tiles: list[int]) -> list:
    """A small trace JSON of the shape MetaSchedule writes: sample a tiling, split, parallelise."""
    insts = [["GetSBlock", [], ["C", "main"], ["b0"]], ["GetLoops", ["b0"], [], ["l1", "l2"]],
             ["SamplePerfectTile", ["l1"], [len(tiles), 64], ["v3", "v4"]],
             ["Split", ["l1", "v3", "v4"], [1], ["l5", "l6"]],
             ["Annotate", ["b0"], ["meta_schedule.parallel"], []]]
    return [insts, [[2, tiles]]]


def _stores(rng, n: int) -> np.ndarray:
    return rng.normal(size=(n, 164)).astype(np.float32)


class _Featuriser:
    """The adapter's side for plain traces: keys are the traces' JSON; counts what it was asked to featurise."""

    def __init__(self, traces: list, stores: list | None = None):
        self.traces, self.stores, self.asked = traces, stores, []

    def keys(self) -> list[str]:
        return [json.dumps(t) for t in self.traces]

    def __call__(self, indices: list[int]):
        self.asked += indices
        return [self.traces[i] for i in indices], None if self.stores is None else [self.stores[i] for i in indices]


def test_cached_scores_equal_uncached_and_each_program_is_featurised_once():
    rng = np.random.default_rng(0)
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=8, n_layers=1, d_state=4, store_features=164)))
    traces = [_trace([4, 16]), _trace([8, 8]), _trace([4, 16]), _trace([2, 32])]
    stores = [_stores(rng, 2), _stores(rng, 1), None, _stores(rng, 3)]
    stores[2] = stores[0]  # the same program, the same rows
    feat = _Featuriser(traces, stores)
    cached = scorer.predict(feat.keys(), feat)
    fresh = scorer.score([tokenize(t) for t in traces], stores)
    assert np.allclose(cached, fresh, rtol=0, atol=1e-6)  # batches differ: float sums, not values
    assert sorted(feat.asked) == [0, 1, 3]  # the repeated program was featurised once
    for ((k, n), rows), t, r in zip(scorer.features(feat.keys(), feat), traces, stores):  # cached = fresh
        assert np.array_equal(k, tokenize(t)[0]) and np.array_equal(n, tokenize(t)[1]) and rows is r
    # scored again (a surviving population): nothing featurised, the same scores
    feat.asked.clear()
    assert np.array_equal(scorer.predict(feat.keys()[::-1], feat), cached[::-1]) and feat.asked == []
    # a new program among old ones: only it is featurised
    more = _Featuriser(traces + [_trace([64, 1])], stores + [_stores(rng, 2)])
    scorer.predict(more.keys(), more)
    assert more.asked == [4]


def test_scores_are_scored_again_after_the_weights_change():
    torch.manual_seed(0)
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=8, n_layers=1, d_state=4)), steps_per_update=3,
                         update_every=2, lr=1e-2)
    traces = [_trace([2 ** i, 64 // 2 ** i]) for i in range(4)]
    feat = _Featuriser(traces)
    before = scorer.predict(feat.keys(), feat)
    scorer.update("t", feat.keys()[:2], feat, [1e-3, 2e-3])  # one round: the weights move
    assert scorer.rounds == 1
    after = scorer.predict(feat.keys(), feat)
    assert not np.array_equal(before, after)
    assert np.allclose(after, scorer.score([tokenize(t) for t in traces]), rtol=0, atol=1e-6)


def test_joined_scores_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MambaRanker(MambaConfig(d_model=16, n_layers=2, d_state=4, store_features=164)).eval()
    tokens = [tokenize(_trace(t)) for t in ([4, 16], [8, 8], [2, 32], [64, 1])]
    stores = [_stores(rng, n) for n in (1, 3, 0, 2)]  # a program may own no store rows (it did not replay)
    with torch.no_grad():
        together = model(**model_inputs(model.cfg, tokens, stores))
        alone = torch.cat([model(**model_inputs(model.cfg, [t], [s])) for t, s in zip(tokens, stores)])
        reversed_ = model(**model_inputs(model.cfg, tokens[::-1], stores[::-1])).flip(0)
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, reversed_, atol=1e-5)
    # the store rows are read: other rows, other scores
    with torch.no_grad():
        other = model(**model_inputs(model.cfg, tokens, [s + 1 for s in stores]))
    assert not torch.allclose(together[[0, 1, 3]], other[[0, 1, 3]])
    assert torch.allclose(together[2], other[2])  # no rows, nothing to change


def test_joined_inputs_put_stores_after_the_cut_trace():
    cfg = MambaConfig(d_model=8, store_features=164)
    rng = np.random.default_rng(1)
    tokens, stores = [tokenize(_trace([4, 16]))], [_stores(rng, 2)]
    x = model_inputs(cfg, tokens, stores, max_tokens=3)
    assert x["kind"].shape == (1, 5) and x["mask"].all()
    assert (x["kind"][0, 3:] == STORE_KIND).all() and (x["kind"][0, :3] != STORE_KIND).all()
    assert torch.equal(x["store"][0, 3:], torch.as_tensor(stores[0])) and not x["store"][0, :3].any()
    assert not x["num"][0, 3:].any()


def test_online_update_runs_when_its_rule_says():
    torch.manual_seed(0)
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=8, n_layers=1, d_state=4)), steps_per_update=3,
                         update_every=4)
    steps = {"n": 0}
    real_step = scorer.opt.step

    def counting_step(*a, **k):
        steps["n"] += 1
        return real_step(*a, **k)

    scorer.opt.step = counting_step
    feat = _Featuriser([_trace([2 ** i, 64 // 2 ** i]) for i in range(7)])
    keys = feat.keys()

    def update(task, picked, seconds):
        scorer.update(task, [keys[i] for i in picked], lambda idx: feat([picked[i] for i in idx]), seconds)

    update("t", [0, 1, 2], [None, 1e-3, 2e-3])  # 2 measured (a failure is no program): below 4
    assert (scorer.rounds, steps["n"], scorer.pending) == (0, 0, 2)
    assert sorted(feat.asked) == [1, 2]  # a failure is not featurised
    for (_, tokens, _, secs), i in zip(scorer.seen, (1, 2)):  # each time beside its own program's tokens
        assert np.array_equal(tokens[0], tokenize(feat.traces[i])[0]) and secs == [None, 1e-3, 2e-3][i]
    update("t", [3, 4], [3e-3, 4e-3])  # 4 pending: one round of 3 steps
    assert (scorer.rounds, steps["n"], scorer.pending) == (1, 3, 0)
    update("t", [5], [5e-3])
    assert (scorer.rounds, steps["n"]) == (1, 3)
    update("u", [6, 6, 6], [1e-3, 1e-3, 2e-3])
    assert (scorer.rounds, steps["n"], len(scorer.seen)) == (2, 6, 8)


def test_a_full_cache_restarts_without_losing_the_programs_of_the_call(monkeypatch):
    import costmodel.online as online

    monkeypatch.setattr(online, "CACHE_LIMIT", 3)
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=8, n_layers=1, d_state=4)))
    traces = [_trace([2 ** i, 64 // 2 ** i]) for i in range(5)]
    feat = _Featuriser(traces)
    keys = feat.keys()
    scorer.predict(keys[:2], feat)
    got = scorer.predict(keys[:4], feat)  # 2 cached + 2 new > 3: the caches restart mid-call
    assert np.allclose(got, scorer.score([tokenize(t) for t in traces[:4]]), rtol=0, atol=1e-6)
    assert len(scorer._features) <= 3 and len(scorer._scores) <= 3
    scorer.clear_cache()
    feat.asked.clear()
    scorer.predict(keys[:1], feat)
    assert feat.asked == [0]  # forgotten: featurised again
