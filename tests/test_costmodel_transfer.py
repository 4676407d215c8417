"""The transfer sampler (costmodel/sampler.py) by its properties, and the continual-KD trainer
(costmodel/transfer.py): the seconds of programs not chosen for measurement are never read."""

import numpy as np
import torch

from costmodel.mamba import MambaConfig, MambaRanker
from costmodel.sampler import embed_and_uncertainty, how_many, rdu_pick, representativeness, distances
from costmodel.train import TaskData
from costmodel.transfer import TransferConfig, fit
from costmodel.mamba import model_inputs


def test_a_tenth_rounded_up_and_never_fewer_than_a_pair():
    assert how_many(24, 0.1) == 3 and how_many(5, 0.1) == 2 and how_many(1, 0.1) == 1 and how_many(40, 1.0) == 40


def test_picks_cover_every_cluster_before_a_second_from_any():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    emb = np.concatenate([c + 0.1 * rng.standard_normal((8, 2)) for c in centres])
    picked = rdu_pick(emb, np.zeros(len(emb)), k=3)
    assert sorted(i // 8 for i in picked) == [0, 1, 2]
    assert len(set(rdu_pick(emb, np.zeros(len(emb)), k=24))) == 24


def test_a_duplicate_of_a_pick_waits_until_nothing_else_is_left():
    emb = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    picked = rdu_pick(emb, np.zeros(4), k=4)
    first_dup = picked.index(1) if picked.index(0) < picked.index(1) else picked.index(0)
    assert first_dup == 3


def test_among_equal_programs_the_most_uncertain_goes_first():
    emb = np.zeros((5, 3))
    assert rdu_pick(emb, np.array([0.1, 0.5, 0.9, 0.2, 0.3]), k=1) == [2]


def test_the_densest_program_is_the_most_representative():
    emb = np.array([[0.0], [0.1], [0.2], [5.0]])
    rep = representativeness(distances(emb), neighbours=2)
    assert rep.argmax() == 1 and rep.argmin() == 3


def _tasks(rng, n_tasks=4, n=12):
    """Programs whose speed is their first numeric token feature: a ranker can learn it."""
    cfg = MambaConfig(d_model=8, n_layers=1, d_state=4)
    tasks = []
    for h in range(n_tasks):
        tokens = [(rng.integers(0, cfg.vocab, 6), rng.standard_normal((6, cfg.num_features)).astype(np.float32))
                  for _ in range(n)]
        secs = np.array([1.0 + np.exp(-t[1][0, 0]) for t in tokens])
        tasks.append(TaskData(str(h), tokens, secs))
    return tasks, cfg


def test_the_seconds_of_unmeasured_programs_are_never_read():
    tasks, mcfg = _tasks(np.random.default_rng(0))
    measured = {t.task_hash: np.array([0, 3, 7]) for t in tasks}
    teacher = MambaRanker(mcfg)
    cfg = TransferConfig(steps=5, tasks_per_batch=2, programs_per_task=8)
    other = [TaskData(t.task_hash, t.tokens, np.where(np.isin(np.arange(12), [0, 3, 7]), t.seconds, np.nan))
             for t in tasks]
    for kd in (None, teacher):
        a = fit(tasks, measured, teacher, kd, cfg)
        b = fit(other, measured, teacher, kd, cfg)
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)


def test_token_dropout_uncertainty_is_zero_without_dropout_and_the_embedding_is_what_the_score_reads():
    tasks, mcfg = _tasks(np.random.default_rng(1), n_tasks=1)
    model = MambaRanker(mcfg).eval()
    emb, unc = embed_and_uncertainty(model, tasks[0].tokens, drop=0.0)
    assert np.allclose(unc, 0.0)
    assert torch.allclose(model.head(torch.as_tensor(emb)).squeeze(-1), model(**model_inputs(mcfg, tasks[0].tokens)))
    _, unc = embed_and_uncertainty(model, tasks[0].tokens, drop=0.3)
    assert (unc > 0).all()
