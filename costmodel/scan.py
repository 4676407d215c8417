"""The selective scan of Mamba (Gu & Dao 2023), three ways that must agree (tests/test_costmodel_scan.py):

- `selective_scan_ref`: the recurrence as written, one step at a time (the reference; slow).
- `selective_scan_chunked`: a parallel scan in torch for training: within chunks of `chunk` steps a log-depth
  (Hillis-Steele) scan of the linear recurrence, the state carried from chunk to chunk.
- `selective_scan_numba`: a compiled CPU loop for inference (no autograd), parallel over the batch.
When mamba-ssm is installed on a CUDA machine, `selective_scan` uses its fused kernel for CUDA tensors.

Glossary: b batch, l length, e channels (the block's inner width), n state size.
    u, delta (b, l, e); A (e, n); B, C (b, l, n); D (e,)
    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t      (b, e, n)
    y_t = <C_t, h_t> + D u_t                               (b, e)
"""

from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    b, l, e = u.shape
    h = u.new_zeros(b, e, A.shape[1])  # (b, e, n)
    ys = []
    for t in range(l):
        decay = torch.exp(delta[:, t, :, None] * A)  # (b, e, n)
        h = decay * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))  # (b, e)
    return torch.stack(ys, dim=1) + u * D  # (b, l, e)


def _scan_chunk(decay: Tensor, drive: Tensor, h0: Tensor) -> Tensor:
    """All states of h_t = decay_t h_{t-1} + drive_t for one chunk (b, T, e, n), from h0 (b, e, n).

    Hillis-Steele: after step k, position t holds the composition of the 2^k operators ending at t:
    (a, x) o (a', x') = (a a', a' x + x'). log2(T) steps, each a shifted multiply-add.
    """
    a, x = decay, drive
    step = 1
    while step < a.shape[1]:
        a_prev = torch.nn.functional.pad(a[:, :-step], (0, 0, 0, 0, step, 0), value=1.0)
        x_prev = torch.nn.functional.pad(x[:, :-step], (0, 0, 0, 0, step, 0), value=0.0)
        x = a * x_prev + x
        a = a * a_prev
        step *= 2
    return a * h0[:, None] + x  # (b, T, e, n)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                           chunk: int = 16) -> Tensor:
    b, l, e = u.shape
    h = u.new_zeros(b, e, A.shape[1])
    ys = []
    for start in range(0, l, chunk):
        sl = slice(start, start + chunk)
        decay = torch.exp(delta[:, sl, :, None] * A)  # (b, T, e, n)
        drive = delta[:, sl, :, None] * B[:, sl, None, :] * u[:, sl, :, None]  # (b, T, e, n)
        states = _scan_chunk(decay, drive, h)
        ys.append((states * C[:, sl, None, :]).sum(-1))  # (b, T, e)
        h = states[:, -1]
    return torch.cat(ys, dim=1) + u * D


def _numba_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def scan(u, delta, A, B, C, D, y):  # float32 arrays, shapes as in the module docstring
        b, l, e = u.shape
        n = A.shape[1]
        for i in numba.prange(b):
            h = np.zeros((e, n), dtype=np.float32)
            for t in range(l):
                for c in range(e):
                    dt = delta[i, t, c]
                    du = dt * u[i, t, c]
                    acc = np.float32(0.0)
                    for s in range(n):
                        h[c, s] = np.exp(dt * A[c, s]) * h[c, s] + du * B[i, t, s]
                        acc += h[c, s] * C[i, t, s]
                    y[i, t, c] = acc + D[c] * u[i, t, c]

    return scan


_NUMBA_SCAN = None


def selective_scan_numba(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    global _NUMBA_SCAN
    if _NUMBA_SCAN is None:
        _NUMBA_SCAN = _numba_kernel()
    arrays = [np.ascontiguousarray(t.detach().float().cpu().numpy()) for t in (u, delta, A, B, C, D)]
    y = np.empty(u.shape, dtype=np.float32)
    _NUMBA_SCAN(*arrays, y)
    return torch.from_numpy(y)


def _mamba_ssm_scan():
    """mamba-ssm's fused CUDA kernel, if installed (it cannot be built without CUDA); None otherwise."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means: not available here
        return None
    return selective_scan_fn


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """The fastest implementation that fits: mamba-ssm on CUDA, the torch parallel scan when gradients are
    needed, the numba loop for CPU inference."""
    if u.is_cuda and (fused := _mamba_ssm_scan()) is not None:
        # mamba-ssm's layout: u, delta (b, e, l); B, C (b, n, l); it applies no softplus when given delta as is.
        y = fused(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                  B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D)
        return y.transpose(1, 2)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D)):
        return selective_scan_chunked(u, delta, A, B, C, D)
    if u.is_cuda:
        return selective_scan_chunked(u, delta, A, B, C, D)
    return selective_scan_numba(u, delta, A, B, C, D).to(u.dtype)
