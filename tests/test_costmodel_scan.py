"""The three selective scans agree, in values and (where differentiable) in gradients."""

import pytest
import torch

from costmodel.scan import selective_scan, selective_scan_chunked, selective_scan_numba, selective_scan_ref


def _inputs(b=3, l=37, e=5, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, l, e, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, l, e, generator=g))
    A = -torch.rand(e, n, generator=g) * 2  # negative: a decaying state
    B, C = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g)
    D = torch.randn(e, generator=g)
    return u, delta, A, B, C, D


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_equals_reference_values_and_gradients(chunk):
    args = [t.clone().requires_grad_(True) for t in _inputs()]
    ref = selective_scan_ref(*args)
    ref_grads = torch.autograd.grad(ref.square().sum(), args)
    args2 = [t.detach().clone().requires_grad_(True) for t in args]
    out = selective_scan_chunked(*args2, chunk=chunk)
    grads = torch.autograd.grad(out.square().sum(), args2)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-3, rtol=1e-3)


def test_numba_equals_reference():
    args = _inputs(b=4, l=50, e=6, n=8, seed=1)
    assert torch.allclose(selective_scan_numba(*args), selective_scan_ref(*args), atol=1e-4, rtol=1e-4)


def test_numba_backward_equals_reference_gradients():
    # float64 reference, so the comparison measures the kernel's error, not the reference's
    args = [t.double().requires_grad_(True) for t in _inputs(b=3, l=41, e=5, n=6, seed=2)]
    weights = torch.randn(3, 41, 5, dtype=torch.float64)  # a loss whose gradient differs at every output
    ref_grads = torch.autograd.grad((selective_scan_ref(*args) * weights).sum(), args)
    args32 = [t.detach().float().requires_grad_(True) for t in args]
    out = selective_scan_numba(*args32)
    assert out.requires_grad
    grads = torch.autograd.grad((out * weights.float()).sum(), args32)
    for name, g, r in zip("u delta A B C D".split(), grads, ref_grads):
        assert g.shape == r.shape, name
        assert torch.allclose(g.double(), r, atol=1e-3, rtol=1e-3), name


def test_dispatch_picks_a_differentiable_scan_when_training():
    args = [t.requires_grad_(True) for t in _inputs(l=9)]
    y = selective_scan(*args)
    assert y.requires_grad
    with torch.no_grad():
        assert torch.allclose(selective_scan(*args), y.detach(), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dispatch_equals_reference_values_and_gradients():
    """On a GPU the dispatch takes mamba-ssm's fused kernel where installed, the chunked torch scan otherwise:
    either must match the float64 reference, gradients included."""
    args = [t.double().requires_grad_(True) for t in _inputs(b=4, l=64, e=8, n=16, seed=3)]
    ref = selective_scan_ref(*args)
    ref_grads = torch.autograd.grad(ref.square().sum(), args)
    cuda = [t.detach().float().cuda().requires_grad_(True) for t in args]
    out = selective_scan(*cuda)
    grads = torch.autograd.grad(out.square().sum(), cuda)
    assert out.is_cuda and torch.allclose(out.double().cpu(), ref, atol=1e-3, rtol=1e-3)
    for name, g, r in zip("u delta A B C D".split(), grads, ref_grads):
        assert torch.allclose(g.double().cpu(), r, atol=1e-2, rtol=1e-3), name
