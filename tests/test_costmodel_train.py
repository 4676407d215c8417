"""Training and offline evaluation on a synthetic dataset whose latency is a known function of the trace."""

import numpy as np
import pytest
import torch

from costmodel.dataset import ProgramDataset
from costmodel.evaluate import evaluate, mamba_scorer, packsum_objective, random_scorer
from costmodel.mamba import MambaConfig
from costmodel.train import TrainConfig, train
from kdcompile.errors import KdError


def _trace(a: int, b: int) -> list:
    return [[["GetSBlock", [], ["blk", "main"], ["b0"]], ["GetLoops", ["b0"], [], ["l1"]],
             ["SamplePerfectTile", ["l1"], [2, 64], ["v2", "v3"]], ["Split", ["l1", "v2", "v3"], [], ["l4", "l5"]]],
            [[2, [a, b]]]]


def _dataset(root, seed=0):
    """Tiles with a larger inner factor b run faster (latency ~ 1 / b), with 5% noise."""
    rng = np.random.default_rng(seed)
    ds = ProgramDataset(root)
    for t in range(8):
        f = ds.task(f"t{t}")
        f.create({"task_hash": f"t{t}", "task_name": "x", "workload": ["0", ""], "args_info": [], "target": {}})
        rows = []
        for b in rng.choice([1, 2, 4, 8, 16, 32, 64], size=7, replace=False):
            secs = float(1e-3 / b * (1 + 0.05 * rng.standard_normal()))
            rows.append({"trace": _trace(64 // int(b), int(b)), "run_secs": [secs, secs], "error": None,
                         "source": "random", "fp": None, "ts": 0.0, "load": 0.0})
        rows.append({"trace": _trace(3, 3), "run_secs": None, "error": "boom", "source": "random", "fp": None,
                     "ts": 0.0, "load": 0.0})
        f.append(rows)
    ds.add_network("resnet18@b1", {"network": "resnet18", "tasks": {f"t{t}": 1 for t in range(6)}})
    ds.add_network("resnet50@b1", {"network": "resnet50", "tasks": {"t6": 2, "t7": 1}})
    return ds


def test_mamba_learns_the_ranking_and_beats_random_on_held_out_tasks(tmp_path):
    ds = _dataset(tmp_path / "ds")
    cfg = TrainConfig(model=MambaConfig(d_model=16, n_layers=1, d_state=4), steps=120, tasks_per_batch=4,
                      programs_per_task=7, lr=1e-2, checkpoint_every=50)
    info = train(ds.root, tmp_path / "m.pt", cfg)
    assert info["tasks"] == 6 and info["programs"] == 42  # failures are not trained on; test tasks never
    res = evaluate(ds.root, {"mamba": mamba_scorer(tmp_path / "m.pt"), "random": random_scorer()})
    assert res["mamba"]["pairwise"] > 0.9 and res["mamba"]["top1"] > 0.9
    assert res["mamba"]["pairwise"] > res["random"]["pairwise"]
    assert set(res["mamba"]["per_network"]) == {"resnet50@b1"}


def test_interrupted_training_resumes_only_the_missing_steps_to_the_same_weights(tmp_path, monkeypatch):
    import costmodel.train as t

    ds = _dataset(tmp_path / "ds")
    cfg = TrainConfig(model=MambaConfig(d_model=8, n_layers=1, d_state=2), steps=10, tasks_per_batch=3,
                      programs_per_task=4, checkpoint_every=5)
    straight = train(ds.root, tmp_path / "a.pt", cfg)
    real_loss, calls, kill_at = t.rank_loss, [], [8]

    def counting_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) in kill_at:
            raise KeyboardInterrupt  # Ctrl-C in step 8, after step 5's checkpoint
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(t, "rank_loss", counting_loss)
    with pytest.raises(KeyboardInterrupt):
        train(ds.root, tmp_path / "b.pt", cfg)
    calls.clear()
    kill_at.clear()
    info = train(ds.root, tmp_path / "b.pt", cfg, resume=True)
    assert len(calls) == 5  # steps 6-10 only: it resumed
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    assert info["final_loss"] == straight["final_loss"]  # the losses of steps 1-5 came back too


def test_resume_refuses_a_missing_or_another_runs_checkpoint(tmp_path):
    ds = _dataset(tmp_path / "ds")
    small = dict(steps=2, tasks_per_batch=3, programs_per_task=4, checkpoint_every=1)
    with pytest.raises(KdError, match="no checkpoint"):
        train(ds.root, tmp_path / "m.pt", TrainConfig(model=MambaConfig(d_model=8, n_layers=1), **small),
              resume=True)
    train(ds.root, tmp_path / "m.pt", TrainConfig(model=MambaConfig(d_model=8, n_layers=1), **small))
    with pytest.raises(KdError, match="another model;"):
        train(ds.root, tmp_path / "m.pt", TrainConfig(model=MambaConfig(d_model=16, n_layers=1), **small),
              resume=True)
    # how often it saves is not part of the run's identity
    train(ds.root, tmp_path / "m.pt", TrainConfig(model=MambaConfig(d_model=8, n_layers=1),
                                                  **small | {"checkpoint_every": 2}), resume=True)


def test_packsum_objective_gradient_is_per_program():
    program_of_row = np.array([0, 0, 1])
    grad, hess = packsum_objective(program_of_row, np.array([1.0, 0.5]))(np.array([0.2, 0.3, 0.9]), None)
    assert np.allclose(grad, [2 * (0.5 - 1.0), 2 * (0.5 - 1.0), 2 * (0.9 - 0.5)]) and np.allclose(hess, 2.0)


def test_random_scores_have_one_per_program():
    from costmodel.train import TaskData

    assert random_scorer()(TaskData("t", [None] * 5, np.ones(5))).shape == (5,)


def test_distillation_pulls_a_small_ranker_to_its_teacher(tmp_path):
    ds = _dataset(tmp_path / "ds")
    teacher_cfg = TrainConfig(model=MambaConfig(d_model=16, n_layers=1, d_state=4), steps=120, tasks_per_batch=4,
                              programs_per_task=7, lr=1e-2, checkpoint_every=60)
    train(ds.root, tmp_path / "teacher.pt", teacher_cfg)
    small = dict(model=MambaConfig(d_model=8, n_layers=1, d_state=2), steps=60, tasks_per_batch=4,
                 programs_per_task=7, lr=1e-2, checkpoint_every=60)
    # distillation alone (kd_weight=1): the true latencies never enter the student's loss
    train(ds.root, tmp_path / "kd.pt", TrainConfig(kd_weight=1.0, **small), teacher=tmp_path / "teacher.pt")
    res = evaluate(ds.root, {"teacher": mamba_scorer(tmp_path / "teacher.pt"), "kd": mamba_scorer(tmp_path / "kd.pt")})
    assert res["teacher"]["pairwise"] > 0.9
    assert res["kd"]["pairwise"] > 0.8  # learned the ranking from the teacher's scores only


def test_validation_keeps_the_best_step_and_says_which(tmp_path):
    from costmodel.mamba import load_ranker
    from costmodel.train import load_tasks, ranking_metrics

    ds = _dataset(tmp_path / "ds")
    cfg = TrainConfig(model=MambaConfig(d_model=8, n_layers=1, d_state=2), steps=60, tasks_per_batch=3,
                      programs_per_task=7, lr=1e-2, validate_every=10, checkpoint_every=30)
    info = train(ds.root, tmp_path / "m.pt", cfg, task_hashes=["t0", "t1", "t2", "t3"],
                 validation_hashes=["t4", "t5"])
    curve = info["validation"]
    assert [c["step"] for c in curve] == [10, 20, 30, 40, 50, 60]
    best = max(curve, key=lambda c: c["task_mean_top1"])  # the first of equals
    assert info["kept_step"] == best["step"]
    again = ranking_metrics(load_ranker(tmp_path / "m.pt"), load_tasks(ds, ["t4", "t5"]))
    assert again["task_mean_top1"] == pytest.approx(best["task_mean_top1"])
    assert again["pairwise"] == pytest.approx(best["pairwise"])


def test_learning_rate_warms_up_then_decays_to_zero():
    from costmodel.train import learning_rate

    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) <= 1.0
    assert all(b >= a for a, b in zip(lrs[:9], lrs[1:10]))  # warm-up rises
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01  # cosine falls to ~0
    assert learning_rate(TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="constant"), 50) == 1.0


def test_joined_ranker_learns_from_store_rows_the_tokens_do_not_carry(tmp_path):
    """Latency follows a per-store feature, tile decisions are noise: only a ranker that reads store rows can
    rank. The store rows are written into the feature cache as the TVM featuriser would leave them."""
    from costmodel.features import featurize_task

    rng = np.random.default_rng(0)
    ds = ProgramDataset(tmp_path / "ds")
    for t in range(8):
        f = ds.task(f"t{t}")
        f.create({"task_hash": f"t{t}", "task_name": "x", "workload": ["0", ""], "args_info": [], "target": {}})
        speed = rng.permutation(8) + 1
        f.append([{"trace": _trace(int(a), 64 // int(a)), "run_secs": [1e-3 / s, 1e-3 / s], "error": None,
                   "source": "random", "fp": None, "ts": 0.0, "load": 0.0}
                  for a, s in zip([1, 2, 4, 8, 16, 32, 64, 3], speed)])
        cached = featurize_task(ds, f"t{t}", with_store_features=False)
        rows = [np.zeros((2, 164), np.float32) for _ in speed]
        for r, s in zip(rows, speed):
            r[:, 7] = np.log2(s)  # the "feature" that sets the speed
        cached["psf"], cached["psf_offsets"] = np.concatenate(rows), np.arange(0, 17, 2)
        np.savez_compressed(ds.root / "features" / f"t{t}.npz", **cached)
    ds.add_network("resnet18@b1", {"network": "resnet18", "tasks": {f"t{t}": 1 for t in range(6)}})
    ds.add_network("resnet50@b1", {"network": "resnet50", "tasks": {"t6": 1, "t7": 1}})
    results = {}
    for store_features in (0, 164):
        cfg = TrainConfig(model=MambaConfig(d_model=16, n_layers=1, d_state=4, store_features=store_features),
                          steps=150, tasks_per_batch=4, programs_per_task=8, lr=1e-2, warmup_steps=10)
        train(ds.root, tmp_path / f"m{store_features}.pt", cfg)
        scorer = mamba_scorer(tmp_path / f"m{store_features}.pt", ds)
        results[store_features] = evaluate(ds.root, {"m": scorer})["m"]["pairwise"]
    assert results[164] > 0.8 and results[164] > results[0] + 0.3, results
