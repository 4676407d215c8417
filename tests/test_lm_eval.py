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


def test_head_and_tail_add_up_to_the_whole_kl():
    from kdcompile.lm_eval import head_tail_kl

    log_p, log_q = torch.randn(8, 12).log_softmax(-1), torch.randn(8, 12).log_softmax(-1)
    d = head_tail_kl(log_p, log_q, k=3)
    p, q = log_p.exp(), log_q.exp()
    assert d["fkl_head"] + d["fkl_tail"] == pytest.approx(float((p * (log_p - log_q)).sum(-1).mean()), rel=1e-5)
    assert d["rkl_head"] + d["rkl_tail"] == pytest.approx(float((q * (log_q - log_p)).sum(-1).mean()), rel=1e-5)
    assert d["teacher_tail_mass"] == pytest.approx(float(1 - p.topk(3, -1).values.sum(-1).mean()), rel=1e-5)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    from kdcompile.lm_eval import expected_calibration_error

    sure = torch.log(torch.tensor([[0.99, 0.01]] * 10))
    assert expected_calibration_error(sure, torch.zeros(10, dtype=torch.long)) == pytest.approx(0.01, abs=1e-6)
    assert expected_calibration_error(sure, torch.ones(10, dtype=torch.long)) == pytest.approx(0.99, abs=1e-6)


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    from kdcompile.lm_eval import fit_temperature

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 6, generator=g) * 3
    y = torch.multinomial(torch.softmax(logits / 2.0, -1), 1, generator=g)[:, 0]
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.06)
