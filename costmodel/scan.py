"""The selective scan of Mamba (Gu & Dao 2023), three ways that must agree (tests/test_costmodel_scan.py):

- `selective_scan_ref`: the recurrence as written, one step at a time (the reference; slow).
- `selective_scan_chunked`: a parallel scan in torch: within chunks of `chunk` steps a log-depth (Hillis-Steele)
  scan of the linear recurrence, the state carried from chunk to chunk. For accelerators without mamba-ssm: on
  this CPU it is slower than the plain loop (it streams (b, chunk, e, n) tensors through memory log2(chunk) times).
- `selective_scan_numba`: compiled CPU loops, parallel over the batch, with a hand-written backward pass (an
  autograd Function that keeps the states): what training and inference use on CPU. At the ranker's sizes it
  was much faster than the chunked scan in a one-off timing (no committed benchmark yet).
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


def _numba_kernels():
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def forward(u, delta, A, B, C, D, y, states):  # float32; states (b, l, e, n) kept for backward, or (0, 0, 0, 0)
        b, l, e = u.shape
        n = A.shape[1]
        keep = states.shape[0] > 0
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
                if keep:
                    states[i, t] = h

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def backward(u, delta, A, B, C, D, states, gy, gu, gdelta, gA, gB, gC, gD):
        """Reverse-mode through the recurrence: g_h carries dL/dh_t back to step t-1 (times exp(dt A)). gA and gD
        are per-program partial sums (b, e, n), (b, e), summed by the caller: prange iterations must not share
        an accumulator."""
        b, l, e = u.shape
        n = A.shape[1]
        for i in numba.prange(b):
            gh = np.zeros((e, n), dtype=np.float32)
            for t in range(l - 1, -1, -1):
                for c in range(e):
                    dt, uc, g = delta[i, t, c], u[i, t, c], gy[i, t, c]
                    g_dt = np.float32(0.0)
                    g_u = g * D[c]
                    gD[i, c] += g * uc
                    for s in range(n):
                        gC[i, t, s] += g * states[i, t, c, s]
                        g_h = gh[c, s] + g * C[i, t, s]  # dL/dh_t: from y_t and from h_{t+1}
                        a = np.exp(dt * A[c, s])
                        h_prev = states[i, t - 1, c, s] if t > 0 else np.float32(0.0)
                        g_a = g_h * h_prev
                        g_dt += g_a * a * A[c, s] + g_h * B[i, t, s] * uc
                        gA[i, c, s] += g_a * a * dt
                        gB[i, t, s] += g_h * dt * uc
                        g_u += g_h * dt * B[i, t, s]
                        gh[c, s] = g_h * a
                    gdelta[i, t, c] = g_dt
                    gu[i, t, c] = g_u

    return forward, backward


_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _numba_kernels()
    return _KERNELS


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


class _NumbaScan(torch.autograd.Function):
    """The numba kernels as a differentiable op: forward keeps every state (b, l, e, n) for the backward pass."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):
        arrays = [_np(t) for t in (u, delta, A, B, C, D)]
        y = np.empty(u.shape, dtype=np.float32)
        states = np.empty((*u.shape, A.shape[1]), dtype=np.float32)
        _kernels()[0](*arrays, y, states)
        ctx.arrays, ctx.states = arrays, states
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D = ctx.arrays
        b = u.shape[0]
        gu, gdelta = np.empty_like(u), np.empty_like(delta)
        gB, gC = np.zeros_like(B), np.zeros_like(C)
        gA, gD = np.zeros((b, *A.shape), np.float32), np.zeros((b, *D.shape), np.float32)
        _kernels()[1](u, delta, A, B, C, D, ctx.states, _np(gy), gu, gdelta, gA, gB, gC, gD)
        return tuple(torch.from_numpy(g) for g in (gu, gdelta, gA.sum(0), gB, gC, gD.sum(0)))


def selective_scan_numba(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """Differentiable when any input requires grad (then it keeps the states); a plain compiled loop otherwise."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D)):
        return _NumbaScan.apply(u, delta, A, B, C, D)
    y = np.empty(u.shape, dtype=np.float32)
    _kernels()[0](*[_np(t) for t in (u, delta, A, B, C, D)], y, np.empty((0, 0, 0, 0), np.float32))
    return torch.from_numpy(y)


_FUSED: dict = {}  # the import is tried once; its outcome is said once


def _mamba_ssm_scan():
    """mamba-ssm's fused CUDA kernel, if installed (it cannot be built without CUDA); None otherwise. Not installed
    is the usual case and says nothing; installed but failing to import (a build for another CUDA or torch) is
    said once, with the reason, since the run then uses the slower chunked scan."""
    if "fn" not in _FUSED:
        import importlib.util

        _FUSED["fn"] = None
        if importlib.util.find_spec("mamba_ssm") is not None:
            try:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

                _FUSED["fn"] = selective_scan_fn
            except Exception as e:  # noqa: BLE001 - whatever broke, the fallback works; the user is told why
                import warnings

                warnings.warn(f"mamba-ssm is installed but does not import ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); using the chunked torch scan instead.")
    return _FUSED["fn"]


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """The fastest implementation that fits: mamba-ssm on CUDA (the torch parallel scan there without it), the
    numba kernels on CPU, for training and inference alike."""
    if u.is_cuda and (fused := _mamba_ssm_scan()) is not None:
        # mamba-ssm's layout: u, delta (b, e, l); B, C (b, n, l); it applies no softplus when given delta as is.
        y = fused(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                  B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D)
        return y.transpose(1, 2)
    if u.is_cuda:
        return selective_scan_chunked(u, delta, A, B, C, D)
    return selective_scan_numba(u, delta, A, B, C, D).to(u.dtype)
