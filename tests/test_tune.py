"""The tune stage's pure decisions."""

import pytest

from kdcompile.tune import faster_layout as _faster


def faster_layout(rounds: list[dict[str, float]]) -> str:
    """`faster_layout` on rounds written one dict per round (`in_rounds` gives one list per layout)."""
    return _faster({layout: [r[layout] for r in rounds] for layout in rounds[0]})


def test_faster_layout_compares_within_rounds_when_the_machine_drifts():
    # nhwc is 5% faster in every round, but the machine slowed down 2x after two rounds: pooled medians would
    # pick nchw (1.0 against 1.9), the ratio within each round picks nhwc
    rounds = [{"nchw": 1.0, "nhwc": 0.95}] * 2 + [{"nchw": 2.0, "nhwc": 1.9}] * 3
    assert faster_layout(rounds) == "nhwc"
    assert faster_layout([{"nchw": r["nchw"], "nhwc": r["nhwc"] * 1.2} for r in rounds]) == "nchw"


@pytest.mark.parametrize("first", ["nchw", "nhwc"])
def test_faster_layout_does_not_depend_on_which_layout_was_timed_first(first):
    rounds = [{"nchw": 0.5, "nhwc": 0.3}, {"nchw": 0.6, "nhwc": 0.4}, {"nchw": 0.9, "nhwc": 1.0}]
    ordered = [dict(sorted(r.items(), key=lambda kv: kv[0] != first)) for r in rounds]
    assert faster_layout(ordered) == "nhwc"  # faster in 2 of 3 rounds
