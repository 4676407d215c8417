import numpy as np
import pytest

from costmodel.metrics import best_in_top_k, pairwise_accuracy, top_k_recall, top_k_score

LAT = np.array([4.0, 1.0, 3.0, 2.0])  # program 1 is fastest


def test_perfect_and_reversed_rankings():
    perfect = -LAT  # higher score = faster
    assert pairwise_accuracy(perfect, LAT) == 1.0 and pairwise_accuracy(LAT, LAT) == 0.0
    assert top_k_score([(perfect, LAT, 1.0)], k=1) == 1.0
    assert top_k_score([(LAT, LAT, 1.0)], k=1) == pytest.approx(1.0 / 4.0)  # picks the slowest
    assert top_k_recall(perfect, LAT, 2) == 1.0 and top_k_recall(LAT, LAT, 2) == 0.0


def test_top_k_score_weights_tasks_by_latency_times_weight():
    a = (np.array([0.0, 1.0]), np.array([1.0, 2.0]), 3.0)  # picks 2.0 where 1.0 was possible
    b = (np.array([1.0, 0.0]), np.array([5.0, 6.0]), 1.0)  # right
    assert top_k_score([a, b], k=1) == pytest.approx((3 * 1 + 1 * 5) / (3 * 2 + 1 * 5))
    assert top_k_score([a, b], k=2) == 1.0
    assert best_in_top_k(np.array([0.0, 1.0, 2.0]), np.array([1.0, 5.0, 3.0]), 2) == 3.0


def test_pairwise_counts_score_ties_as_half_and_skips_latency_ties():
    assert pairwise_accuracy(np.zeros(3), np.array([1.0, 2.0, 3.0])) == 0.5
    assert pairwise_accuracy(np.array([1.0, 0.0]), np.array([2.0, 2.0])) == 1.0


def test_task_mean_top1_weighs_every_task_once():
    import numpy as np

    from costmodel.metrics import task_mean_top1, top_k_score

    heavy = (np.array([1.0, 0.0]), np.array([10.0, 1.0]), 100.0)  # picks a program 10x slower, on a heavy task
    light = (np.array([1.0, 0.0]), np.array([1.0, 2.0]), 1.0)  # picks the best
    assert task_mean_top1([heavy, light]) == (0.1 + 1.0) / 2
    assert top_k_score([heavy, light], 1) < 0.2  # the pooled score is the heavy task's


def test_the_network_key_names_its_generation():
    from costmodel.evaluate import generation

    assert generation("bert_base@b1+prepack+fastmath+pad16") == "prepack+fastmath+pad16"
    assert generation("resnet50@b8") == "as exported"
