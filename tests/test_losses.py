import torch

from kdcompile.losses import hinton_kd


def test_hinton_zero_on_identical_and_positive_otherwise():
    z = torch.randn(16, 10)
    assert hinton_kd(z, z.clone()).abs().item() < 1e-6
    assert hinton_kd(torch.randn(16, 10), z).item() > 0


def test_hinton_t_squared_scaling():
    """T^2 * KL at temperature T equals T^2 times the plain KL of the softened distributions."""
    z_s, z_t, T = torch.randn(8, 5), torch.randn(8, 5), 3.0
    p, q = torch.softmax(z_t / T, -1), torch.softmax(z_s / T, -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(hinton_kd(z_s, z_t, temperature=T), T**2 * kl, atol=1e-5)


def test_hinton_gradient_finite_with_extreme_logits():
    z_s = torch.tensor([[0.0, 1e4, -1e4]], requires_grad=True)
    hinton_kd(z_s, torch.tensor([[1e4, 0.0, -1e4]]), temperature=0.5).backward()
    assert torch.isfinite(z_s.grad).all()
