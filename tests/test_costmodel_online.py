"""The Mamba cost model's online half and its caches: what is cached equals what is computed afresh, scores do not
depend on the batch, and online learning runs exactly as often as its rule says."""

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


def test_token_cache_returns_what_tokenize_returns():
    scorer = MambaScorer(MambaRanker(MambaConfig(d_model=8, n_layers=1, d_state=4)))
    traces = [_trace([4, 16]), _trace([8, 8]), _trace([4, 16])]
    for t in traces:
        cached, fresh = scorer.tokens(t), tokenize(t)
        assert np.array_equal(cached[0], fresh[0]) and np.array_equal(cached[1], fresh[1])
    assert len(scorer._tokens) == 2  # the repeated trace was tokenised once
    # cached and uncached scoring agree
    first = scorer.predict(traces)
    scorer._tokens.clear()
    assert np.array_equal(first, scorer.predict(traces))


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
    traces = [_trace([2 ** i, 64 // 2 ** i]) for i in range(7)]
    scorer.update("t", traces[:3], [1e-3, 2e-3, None])  # 2 measured (a failure is no program): below 4
    assert (scorer.rounds, steps["n"], scorer.pending) == (0, 0, 2)
    scorer.update("t", traces[3:5], [3e-3, 4e-3])  # 4 pending: one round of 3 steps
    assert (scorer.rounds, steps["n"], scorer.pending) == (1, 3, 0)
    scorer.update("t", traces[5:6], [5e-3])
    assert (scorer.rounds, steps["n"]) == (1, 3)
    scorer.update("u", traces[6:7] * 3, [1e-3, 1e-3, 2e-3])
    assert (scorer.rounds, steps["n"], len(scorer.seen)) == (2, 6, 8)
