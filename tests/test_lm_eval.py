"""Generation metrics (kdcompile/lm_eval.py) on hand-made samples and models whose answers are known."""

import math

import pytest
import torch
from torch import nn

from kdcompile.lm_eval import distinct_n, generation_metrics, sequence_nll, word_validity, words


def test_words_validity_and_distinct_n_on_hand_made_text():
    assert words("The cat, the CAT! 42 x_y") == ["the", "cat", "the", "cat", "x", "y"]
    assert word_validity(["the cat sat", "on a mat"], {"the", "cat", "on", "mat"}) == pytest.approx(4 / 6)
    assert word_validity(["123 !!"], {"the"}) == 0.0
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["a b", "b c"], 2) == 1.0  # no bigram "b b" across the two texts
    assert distinct_n([""], 2) == 0.0


class Fixed(nn.Module):
    """Next-token distribution `probs` at every position, whatever the prefix."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.log(torch.tensor(probs))

    def forward(self, x):
        return self.logits.expand(*x.shape, -1)


def test_sequence_nll_counts_only_the_continuation():
    model = Fixed([0.5, 0.25, 0.25])
    seq = torch.tensor([[0, 0, 1, 2], [1, 1, 0, 0]])
    nll = sequence_nll(model, seq, start=2)  # tokens 2 and 3 of each row
    assert torch.allclose(nll, torch.tensor([math.log(4), (math.log(2) + math.log(2)) / 2]))


def test_the_sequence_reverse_kl_is_the_gap_between_teacher_and_self_nll():
    student, teacher = Fixed([0.9, 0.05, 0.05]), Fixed([1 / 3, 1 / 3, 1 / 3])
    samples = torch.zeros(4, 6, dtype=torch.long)  # the student's favourite token, everywhere
    m = generation_metrics(samples, 2, student, teacher, decode=lambda ids: "x" * len(ids), vocabulary={"x"})
    assert m["tnll"] == pytest.approx(math.log(3)) and m["self_nll"] == pytest.approx(-math.log(0.9))
    assert m["sequence_reverse_kl"] == pytest.approx(math.log(3) + math.log(0.9))
    assert m["word_validity"] == 0.0  # "xxxx" is one word, not in the vocabulary {"x"}
    assert m["distinct1"] == 0.25  # four texts, one word each, all the same
