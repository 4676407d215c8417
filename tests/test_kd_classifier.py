"""bench.kd_classifier's label-scarce protocol, seconds-long on sklearn's digits, and its McNemar test."""

import json

import pytest
import torch
from scipy.stats import binomtest

import bench.kd_classifier as kc
from bench.kd_transfer import labelled_mask, make_splits, student_factory, train_one
from kdcompile.data import digits

EPOCHS = 4


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    ds = digits()
    teacher = kc.digits_teacher(ds, width=16, epochs=4)  # 16: the narrowest demo CNN that prunes to 2% of its FLOPs
    return teacher, ds


def test_mcnemar_by_hand():
    # b=1, c=5: n=6, P[X <= 1] = (C(6,0) + C(6,1)) / 2^6 = 7/64, two-sided 14/64.
    assert kc.mcnemar_p(1, 5) == pytest.approx(14 / 64)
    assert kc.mcnemar_p(5, 1) == pytest.approx(14 / 64)
    assert kc.mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert kc.mcnemar_p(3, 3) == 1.0  # 2 * 42/64 capped at 1
    assert kc.mcnemar_p(0, 0) == 1.0
    assert kc.mcnemar_p(40, 70) == pytest.approx(binomtest(40, 110, 0.5).pvalue)
    # items: a right on 0, 1; b right on 1, 2, 3; labels all 0
    assert kc.discordant([0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]) == (1, 2)


def test_labelled_subset_is_class_balanced_and_seeded(setup):
    _, ds = setup
    mask = labelled_mask(ds.y_train, 10, seed=3)
    assert torch.bincount(ds.y_train[mask]).tolist() == [10] * 10
    assert torch.equal(mask, labelled_mask(ds.y_train, 10, seed=3))
    assert not torch.equal(mask, labelled_mask(ds.y_train, 10, seed=4))


def test_protocol_on_digits(setup, tmp_path, monkeypatch):
    teacher, ds = setup
    work = tmp_path / "work.jsonl"
    kwargs = {"data": "digits", "regimes": ["10"], "students": ["mlp64"], "methods": ["ce", "hinton"], "seeds": 2,
              "epochs": EPOCHS, "grid": {"temperature": (2.0, 4.0), "alpha": (0.9,)}, "work": work,
              "log": lambda s: None}
    results, details = kc.run_protocol(teacher, ds, **kwargs)
    assert set(results) == {"10"} and set(results["10"]) == {"mlp64"}
    assert set(results["10"]["mlp64"]) == {"ce", "hinton"}
    for v in results["10"]["mlp64"].values():
        assert set(v) == {"accuracy_mean", "accuracy_std", "agreement_mean", "p_vs_ce"}
        assert 0 <= v["accuracy_mean"] <= 1 and 0 <= v["agreement_mean"] <= 1 and 0 <= v["p_vs_ce"] <= 1
    assert results["10"]["mlp64"]["ce"]["p_vs_ce"] == 1.0  # ce against itself: no discordant pair
    assert details["chosen"]["10"]["mlp64"]["hinton"]["temperature"] in (2.0, 4.0)

    records = [json.loads(line) for line in work.read_text().splitlines()]
    assert len(records) == 2 + 1 + 2 * 2  # hinton's 2 grid points and ce's 1, then 2 seeds each
    n_train = len(ds.y_train)
    for r in records:
        if json.loads(r["key"])["phase"] == "final":
            assert r["labelled"] == 100 and r["ce_rows"] == 100 * EPOCHS  # CE saw only the labels, every epoch
            kd = json.loads(r["key"])["method"] == "hinton"
            assert r["kd_inputs"] == (n_train if kd else 0)  # KD saw every training input, labelled or not
            assert r["kd_rows"] == (n_train * EPOCHS if kd else 0)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(kc, "train_one", no_training)
    monkeypatch.setattr("bench.kd_transfer.train_one", no_training)
    assert kc.run_protocol(teacher, ds, **kwargs)[0] == results  # resumed from the work file


def test_controls_differ_from_kd_only_where_documented(setup):
    teacher, ds = setup
    _, final = make_splits(teacher, ds)
    make = student_factory("mlp16", teacher, ds.x_train[:1], 10)
    labelled = labelled_mask(final.y_train, 10, seed=0)
    common = {"seed": 0, "epochs": 2}
    ce = train_one("ce", make, final, labelled, temperature=None, alpha=None, **common)
    # ce is the KD run without the KD term: hinton with alpha=0 gives the very same predictions.
    no_kd = train_one("hinton", make, final, labelled, temperature=4.0, alpha=0.0, **common)
    assert no_kd["predictions"] == ce["predictions"] and no_kd["kd_inputs"] == len(final.y_train)
    # scratch is ce from a re-drawn initialisation, and nothing else.
    def redrawn():
        model = make()
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return model

    scratch = train_one("scratch", make, final, labelled, temperature=None, alpha=None, **common)
    assert scratch["predictions"] == train_one("ce", redrawn, final, labelled, temperature=None, alpha=None,
                                               **common)["predictions"]
    assert scratch["predictions"] != ce["predictions"]


def test_pruned_student_takes_a_feature_hint(setup):
    teacher, ds = setup
    _, final = make_splits(teacher, ds)
    make = student_factory("cnn2pct", teacher, ds.x_train[:1], 10)
    r = train_one("fitnets", make, final, labelled_mask(final.y_train, 10, seed=0), seed=0, temperature=4.0,
                  alpha=0.9, epochs=1)
    assert 0 <= r["accuracy"] <= 1 and r["kd_inputs"] == len(final.y_train)
