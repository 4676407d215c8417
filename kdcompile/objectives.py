"""What a classifier student is trained on: a method name -> its loss, built from the registry of pure losses.

- "scratch": cross-entropy on labels only, from re-initialised weights (the control).
- "ce": cross-entropy only, from the student's initial (pruned-teacher) weights.
- any logit loss in LOSSES ("hinton", "fkl", "rkl", "skl", "srkl", "gjsd", "tvd"): alpha * T^2 * KD +
  (1 - alpha) * CE. Every temperature-scaled loss gets the T^2 (Hinton's carries it itself): the soft term's
  gradient shrinks as 1/T^2, and without the factor the 0.1 CE term dominated fkl..tvd at T=4 (measured gradient
  ratio of KD to CE 0.15-0.78, against 12.4 for hinton; issue #23).
- "dkd": CE + DKD (alpha 1, beta 8, T), labels required, with mdistiller's linear warm-up: the DKD term is scaled
  by min(epoch / warmup, 1), epochs counted from 1.
- "fitnets", "at", "rkd": Hinton KD plus a feature loss on one layer (FitNets hint through a learned projector,
  attention transfer, relational KD on the penultimate features), captured with forward hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.errors import KdError
from kdcompile.feature_kd import FeatureHooks, attention_transfer, hint_loss, projector, relational_kd
from kdcompile.losses import LOSSES, dkd

FEATURE_METHODS = {"fitnets": 100.0, "at": 1000.0, "rkd": 1.0}  # default feature-loss weights (RepDistiller's)
METHODS = ("scratch", "ce", *LOSSES, "dkd", *FEATURE_METHODS)


DKD_WARMUP_EPOCHS = 2  # mdistiller warms DKD up over 20 of 240 epochs; kdcompile distils for 8 by default


def temperature_scaled(name: str, z_s: torch.Tensor, z_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """LOSSES[name] at `temperature`, times T^2 (hinton_kd multiplies by it itself)."""
    loss = LOSSES[name](z_s, z_t, temperature=temperature)
    return loss if name == "hinton" else loss * temperature**2


@dataclass
class Objective:
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    extra: nn.Module = field(default_factory=nn.ModuleDict)  # trainable helpers (projectors), saved with the student
    hooks: list[FeatureHooks] = field(default_factory=list)
    epoch: list[int] = field(default_factory=lambda: [0])  # the epoch being trained (0-based), for warm-ups

    def start_epoch(self, epoch: int) -> None:
        self.epoch[0] = epoch

    def close(self) -> None:
        """Remove the hooks: the student leaves with none."""
        for h in self.hooks:
            h.remove()


def default_feature_layer(model: nn.Module, method: str) -> str:
    """The middle conv/linear layer (FitNets' "guided layer"), or for RKD the input of the last Linear."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]
    if len(layers) < 2:
        raise KdError("The model has too few conv/linear layers for feature distillation; pass --feature-layer.")
    if method == "rkd":
        return layers[-2]
    return layers[(len(layers) - 1) // 2]


def make_objective(method: str, teacher: nn.Module, student: nn.Module, example: torch.Tensor, *, has_labels: bool,
                   temperature: float, alpha: float, feature_layer: str | None = None,
                   feature_weight: float | None = None) -> Objective:
    if method not in METHODS:
        raise KdError(f"Unknown distillation method '{method}': choose one of {', '.join(METHODS)}.")
    if method in ("scratch", "ce", "dkd") and not has_labels:
        raise KdError(f"'{method}' trains on labels, and this dataset has none; use a KD loss such as hinton.")
    if method == "scratch":
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def ce(z_s, y):
        return F.cross_entropy(z_s, y) if has_labels else z_s.sum() * 0.0

    def teacher_logits(x):
        with torch.no_grad():
            return teacher(x)

    if method in ("scratch", "ce"):
        return Objective(lambda z_s, x, y: ce(z_s, y))
    if method == "dkd":
        objective = Objective(lambda z_s, x, y: None)
        warm = lambda: min((objective.epoch[0] + 1) / DKD_WARMUP_EPOCHS, 1.0)  # noqa: E731
        objective.loss_fn = lambda z_s, x, y: ce(z_s, y) + warm() * dkd(z_s, teacher_logits(x), y,
                                                                         temperature=temperature)
        return objective
    kd_name = "hinton" if method in FEATURE_METHODS else method

    def logit_kd(z_s, z_t, y):
        loss = temperature_scaled(kd_name, z_s, z_t, temperature)
        return alpha * loss + (1 - alpha) * ce(z_s, y) if has_labels and alpha < 1 else loss

    if method not in FEATURE_METHODS:
        return Objective(lambda z_s, x, y: logit_kd(z_s, teacher_logits(x), y))

    layer = feature_layer or default_feature_layer(student, method)
    weight = FEATURE_METHODS[method] if feature_weight is None else feature_weight
    hooks_s, hooks_t = FeatureHooks(student, [layer]), FeatureHooks(teacher, [layer])
    extra = nn.ModuleDict()
    if method == "fitnets":
        with torch.no_grad():
            student(example)
            teacher(example)
        f_s, f_t = hooks_s.features[layer], hooks_t.features[layer]
        if f_s.shape != f_t.shape:
            extra["proj"] = projector(f_s.shape, f_t.shape)
    feature = {"fitnets": lambda f_s, f_t: hint_loss(f_s, f_t, extra["proj"] if "proj" in extra else None),
               "at": attention_transfer, "rkd": relational_kd}[method]

    def loss_fn(z_s, x, y):
        z_t = teacher_logits(x)  # fills hooks_t; z_s's forward filled hooks_s
        return logit_kd(z_s, z_t, y) + weight * feature(hooks_s.features[layer], hooks_t.features[layer])

    return Objective(loss_fn, extra, [hooks_s, hooks_t])
