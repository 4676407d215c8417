"""The LM protocol's runner (bench/kd_lm.py) end to end at toy sizes: stage 1 once per seed, stage 2 from it,
the learning rate chosen on the validation split, lm.json in the issue's shape, and a rerun that trains nothing."""

import json
import sys

import pytest

from bench import kd_lm
from kdcompile.distill_lm import LMConfig, train_char_lm_teacher


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    teacher = tmp_path / "teacher.pt"
    train_char_lm_teacher(teacher, LMConfig(d=32, heads=2, layers=1, context=32, steps=20, batch_size=8))
    monkeypatch.setattr(kd_lm, "WORK", tmp_path / "work")
    monkeypatch.setattr(kd_lm, "RESULTS", tmp_path)
    monkeypatch.setattr(kd_lm, "RUNS", tmp_path / "runs" / "lm.jsonl")
    monkeypatch.setattr(kd_lm, "teacher_path", lambda: teacher)
    monkeypatch.setattr(sys, "argv", ["kd_lm", "--seeds", "0", "1", "--methods", "ce", "rkl", "--stage1", "4",
                                      "--stage2", "3", "--guards"])
    return tmp_path


def test_the_lm_protocol_writes_every_method_and_reruns_from_its_log(tiny):
    kd_lm.main()
    out = json.loads((tiny / "lm.json").read_text())
    for m in ("ce", "rkl"):
        r = out[m]
        assert {"nll_mean", "tnll_mean", "self_nll_mean", "word_validity_mean", "distinct2_mean"} <= set(r)
        assert r["lr"] in kd_lm.LR_GRID and r["nll_mean"] > 0
    assert (tiny / "lm.png").stat().st_size > 0
    work = tiny / "work"
    assert sorted(p.name for p in work.glob("stage1_*.pt")) == ["stage1_seed0_s4.pt", "stage1_seed0_val_s4.pt",
                                                                "stage1_seed1_s4.pt"]
    lines = (tiny / "runs" / "lm.jsonl").read_text().splitlines()
    # grid on validation, then 2 methods x 2 seeds, then rkl's two guards x 2 seeds (its "off" is the protocol's run)
    assert len(lines) == 2 * len(kd_lm.LR_GRID) + 2 * 2 + 2 * 2
    guards = json.loads((tiny / "guards.json").read_text())
    assert set(guards) == {"rkl", "_setup"}  # ce has no divergence to guard
    assert set(guards["rkl"]) == {"off", "lr", "teacher_top_k", "calibrated_teacher"}  # no on-policy guard for rkl
    top_k = guards["rkl"]["teacher_top_k"]
    assert top_k["delta_nll_mean"] == pytest.approx(top_k["nll_mean"] - guards["rkl"]["off"]["nll_mean"])
    assert guards["rkl"]["off"]["nll_mean"] == out["rkl"]["nll_mean"]
    runs = [json.loads(line) for line in lines]
    assert sum('"teacher_top_k": 10' in r["key"] for r in runs) == 2
    kd_lm.main()  # everything is in the log: nothing trains again
    assert (tiny / "runs" / "lm.jsonl").read_text().splitlines() == lines
    # a work folder lost between sittings (checkpoints retrained bit for bit): the kept log still holds every run
    import shutil

    shutil.rmtree(work)
    kd_lm.main()
    assert (tiny / "runs" / "lm.jsonl").read_text().splitlines() == lines
