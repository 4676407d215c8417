import torch

from costmodel.mamba import MambaConfig, MambaRanker, pad_tokens
from costmodel.rank import lambdarank, rank_loss


def _seqs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(1, 20, (n,), generator=g), torch.randn(n, MambaConfig().num_features, generator=g))
            for n in lengths]


def test_scores_ignore_padding_and_batch_neighbours():
    model = MambaRanker(MambaConfig(d_model=16, n_layers=2, d_state=4)).eval()
    seqs = _seqs([5, 9, 3])
    with torch.no_grad():
        together = model(*pad_tokens(seqs))
        alone = torch.stack([model(*pad_tokens([s])) for s in seqs]).squeeze(-1)
        longer = model(*pad_tokens(seqs, max_len=20))
    assert together.shape == (3,)
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, longer, atol=1e-5)


def test_training_path_and_inference_path_agree():
    model = MambaRanker(MambaConfig(d_model=16, n_layers=1, d_state=4))
    batch = pad_tokens(_seqs([7, 4]))
    train_scores = model(*batch)  # grad enabled: the numba scan that keeps its states for backward
    with torch.no_grad():
        infer_scores = model(*batch)  # the numba scan alone
    assert torch.allclose(train_scores.detach(), infer_scores, atol=1e-5)
    train_scores.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_lambdarank_prefers_the_right_order_and_learns_it():
    latency = torch.tensor([1.0, 2.0, 4.0, 8.0])
    right, wrong = torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert lambdarank(right, latency) < lambdarank(wrong, latency)
    assert lambdarank(torch.zeros(4), torch.ones(4)) == 0  # no pair is ordered by the truth
    scores = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([scores], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        lambdarank(scores, latency).backward()
        opt.step()
    assert torch.argsort(scores, descending=True).tolist() == [0, 1, 2, 3]


def test_rank_loss_only_compares_within_a_task():
    scores = torch.tensor([2.0, 1.0, 1.0, 2.0])
    latency = torch.tensor([1.0, 2.0, 1.0, 2.0])  # task 0 ranked right, task 1 ranked wrong
    task = torch.tensor([0, 0, 1, 1])
    both = rank_loss(scores, latency, task)
    assert both == (lambdarank(scores[:2], latency[:2]) + lambdarank(scores[2:], latency[2:])) / 2
    # Across tasks the first program of task 1 would look "as fast" as task 0's best: irrelevant here.
    assert rank_loss(scores[:2], latency[:2], task[:2]) < both


def test_listwise_kd_is_zero_at_the_teacher_shift_invariant_and_within_tasks():
    from costmodel.rank import listwise_kd

    teacher = torch.tensor([3.0, 1.0, 0.0, 2.0, -1.0])
    task = torch.tensor([0, 0, 0, 1, 1])
    assert listwise_kd(teacher, teacher, task) < 1e-6
    shifted = teacher + torch.tensor([5.0, 5.0, 5.0, -7.0, -7.0])  # a constant per task changes no ranking
    assert listwise_kd(shifted, teacher, task) < 1e-6
    assert listwise_kd(teacher.flip(0), teacher, task) > 0.1
    # gradient descent on the student's scores recovers the teacher's order within each task
    student = torch.zeros(5, requires_grad=True)
    opt = torch.optim.SGD([student], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        listwise_kd(student, teacher, task).backward()
        opt.step()
    assert torch.argsort(student[:3], descending=True).tolist() == [0, 1, 2]
    assert student[3] > student[4]


def test_segment_sum_mlp_learns_a_ranking_and_scores_each_program_alone():
    import numpy as np

    from costmodel.mlp import MLPConfig, predict_mlp, train_mlp

    rng = np.random.default_rng(0)

    def task(n=12):  # programs of 1-3 store rows; latency falls with the sum of feature 0 over the rows
        rows = [rng.random((int(rng.integers(1, 4)), 8)).astype(np.float32) * 10 for _ in range(n)]
        return rows, np.array([1.0 / (1.0 + r[:, 0].sum()) for r in rows])

    train = [task() for _ in range(6)]
    model = train_mlp(train, MLPConfig(in_dim=8, hidden=32, epochs=60, lr=3e-3, tasks_per_batch=3))
    rows, lat = task(20)
    scores = predict_mlp(model, rows)
    i, j = np.triu_indices(20, 1)
    agree = np.mean((scores[i] > scores[j]) == (lat[i] < lat[j]))
    assert agree > 0.85
    # fixed scaling: a program's score does not depend on what it is predicted beside (TVM's MLP's does)
    assert np.allclose(predict_mlp(model, rows[:5]), scores[:5], atol=1e-5)
    assert np.allclose(predict_mlp(model, [r * 0 + 100 for r in rows[5:8]] + rows[:5])[3:], scores[:5], atol=1e-5)


def test_a_programs_score_does_not_depend_on_the_batch_it_is_scored_in():
    from costmodel.mamba import MambaConfig, MambaRanker, pad_tokens
    from costmodel.tokenize import tokenize

    torch.manual_seed(0)
    model = MambaRanker(MambaConfig(d_model=16, n_layers=2, d_state=4)).eval()
    short = tokenize([[["GetSBlock", [], ["a", "main"], ["b0"]], ["Split", ["l1", None, "v2"], [], ["l3", "l4"]]],
                      []])
    long = tokenize([[["GetSBlock", [], ["a", "main"], ["b0"]]] * 9, []])
    with torch.no_grad():
        alone = model(*pad_tokens([short]))
        beside = model(*pad_tokens([long, short, long]))  # padded to the long one's length
    assert torch.allclose(alone[0], beside[1], atol=1e-6)
