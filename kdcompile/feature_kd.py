"""Feature distillation: capture intermediate outputs with forward hooks, and the losses that compare them.

Hooks work on the eager model without rewriting it (torchdistill's approach; FX-traced graphs drop hooks, so
features are taken from the eager modules). Glossary: b batch, c channels, h x w spatial, d features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.errors import KdError

Tensor = torch.Tensor


class FeatureHooks:
    """Records the outputs of named submodules on every forward pass: `hooks.features[name]`.

    Use as a context manager so the hooks are removed before export (a student must leave with no hooks).
    """

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KdError(f"No module named {missing[0]!r}; some names: {', '.join(list(modules)[1:8])}.")
        self.features: dict[str, Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._saver(n)) for n in names]

    def _saver(self, name: str):
        def save(module, inputs, output):
            self.features[name] = output

        return save

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def projector(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A learned map from student to teacher features when their widths differ: a 1x1 conv + BN for (b, c, h, w)
    maps (FitNets' regressor; spatial size resized to the teacher's), a Linear for (b, ..., d)."""
    if len(student_shape) == 4:
        layers: list[nn.Module] = [nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False),
                                   nn.BatchNorm2d(teacher_shape[1])]
        if student_shape[2:] != teacher_shape[2:]:
            layers.insert(0, nn.Upsample(size=tuple(teacher_shape[2:]), mode="bilinear", align_corners=False))
        return nn.Sequential(*layers)
    return nn.Linear(student_shape[-1], teacher_shape[-1])


def hint_loss(f_s: Tensor, f_t: Tensor, proj: nn.Module | None = None) -> Tensor:
    """FitNets: mean squared error between the projected student feature and the teacher's."""
    return F.mse_loss(proj(f_s) if proj is not None else f_s, f_t.detach())


def attention_map(f: Tensor) -> Tensor:
    """Zagoruyko & Komodakis: the L2-normalised spatial map of mean squared activations, (b, h*w)."""
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Mean squared difference of attention maps; needs no projector (channel counts may differ). The larger
    map is average-pooled to the smaller one's size."""
    if f_s.shape[2:] != f_t.shape[2:]:
        size = min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3])
        f_s, f_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
    return (attention_map(f_s) - attention_map(f_t.detach())).pow(2).mean()


def _pdist(e: Tensor) -> Tensor:
    d = (e.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * e @ e.t()).clamp_min(1e-12).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device))


def relational_kd(f_s: Tensor, f_t: Tensor, w_distance: float = 25.0, w_angle: float = 50.0) -> Tensor:
    """Park et al. 2019: match pairwise distances (normalised by their mean) and triplet angles between the
    samples of a batch; dimension-free, so no projector."""
    e_s, e_t = f_s.float().flatten(1), f_t.detach().float().flatten(1)
    d_s, d_t = _pdist(e_s), _pdist(e_t)
    off = ~torch.eye(len(e_s), dtype=torch.bool, device=e_s.device)
    d_s, d_t = d_s / d_s[off].mean(), d_t / d_t[off].mean()
    loss_d = F.smooth_l1_loss(d_s[off], d_t[off])

    def angles(e: Tensor) -> Tensor:  # (b, b, b): cosine of the angle at j between i and k
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()

    loss_a = F.smooth_l1_loss(angles(e_s), angles(e_t))
    return w_distance * loss_d + w_angle * loss_a
