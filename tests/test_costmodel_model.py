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
    train_scores = model(*batch)  # grad enabled: torch parallel scan
    with torch.no_grad():
        infer_scores = model(*batch)  # numba scan
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
