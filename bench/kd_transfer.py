"""One run of label-scarce transfer (issue #23), for bench.kd_classifier: a student trained on every input of the
transfer set, with labels on a class-balanced subset only.

The distillation term sees every training input; cross-entropy sees only the labelled rows of each batch. The
controls run the same loop: "ce" is the KD run without its KD term (same initialisation, same batches, same
schedule), "scratch" is "ce" from a fresh random initialisation.

Glossary: n transfer-set inputs, m evaluation inputs, b batch, c classes, d penultimate features.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.data import DistillData, _stratified_split
from kdcompile.losses import dkd
from kdcompile.objectives import DKD_WARMUP_EPOCHS, FEATURE_METHODS, temperature_scaled
from kdcompile.student import prune_width
from kdcompile.train import accuracy, agreement, fit, predict

Tensor = torch.Tensor
HIDDEN = {"mlp64": (64,), "mlp16": (16,), "mlp800": (800, 800)}  # MLP students' hidden widths (mlp800 is Hinton's)
CNN_FLOPS_RATIO = 0.02  # cnn2pct: the teacher width-pruned to at most 2% of its FLOPs (1.7% reached on MNIST-5k)
STUDENTS = (*HIDDEN, "cnn2pct")
# Of the training inputs, held out (labelled) to choose T and alpha. At 10 labels per class that is 800 labels
# against 100 for training, the caveat of Oliver et al. 2018 ("Realistic evaluation of semi-supervised learning"):
# it tunes two knobs of the loss and nothing else.
VAL_FRACTION = 0.2


class Penultimate:
    """Records the input of a model's last nn.Linear on every forward pass, (b, d): an MLP's last hidden ReLU
    output, the CNN's pooled features. FitNets hints this layer for every student (one rule for all)."""

    def __init__(self, model: nn.Module):
        self.layer = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        self.features: Tensor | None = None
        self._handle = self.layer.register_forward_pre_hook(self._save)

    def _save(self, module: nn.Module, inputs: tuple) -> None:
        self.features = inputs[0]

    def remove(self) -> None:
        self._handle.remove()


@dataclass
class Split:
    """Training inputs (all of them the transfer set) and evaluation inputs, with the teacher's outputs computed
    once: the teacher is frozen and inputs are not shifted, so its outputs never change, and a run costs only the
    student's compute (the MNIST teacher is 146 MFLOPs per image, 58x the largest student)."""

    x_train: Tensor  # (n, ...)
    y_train: Tensor  # (n,)
    t_logits: Tensor  # (n, c)
    t_features: Tensor  # (n, d)
    x_eval: Tensor  # (m, ...)
    y_eval: Tensor  # (m,)
    t_eval_logits: Tensor  # (m, c)


def teacher_outputs(teacher: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (n, c) and penultimate features (n, d) of the teacher, in eval mode."""
    hook = Penultimate(teacher)
    try:
        logits, feats = [], []
        for i in range(0, len(x), 500):
            logits.append(predict(teacher, x[i:i + 500]))
            feats.append(hook.features.detach().flatten(1))
        return torch.cat(logits), torch.cat(feats)
    finally:
        hook.remove()


def make_splits(teacher: nn.Module, ds: DistillData) -> tuple[Split, Split]:
    """(tune, final). tune trains on the training inputs less a stratified validation share (data.py's split rule,
    seed 0) and evaluates on that share; final trains on all training inputs and evaluates on the test portion."""
    logits, feats = teacher_outputs(teacher, ds.x_train)
    test_logits, _ = teacher_outputs(teacher, ds.x_test)
    parts = _stratified_split(np.arange(len(ds.y_train)), ds.y_train.numpy(), VAL_FRACTION)  # split indices
    fit_idx, val_idx = parts.x_train, parts.x_test
    tune = Split(ds.x_train[fit_idx], ds.y_train[fit_idx], logits[fit_idx], feats[fit_idx],
                 ds.x_train[val_idx], ds.y_train[val_idx], logits[val_idx])
    final = Split(ds.x_train, ds.y_train, logits, feats, ds.x_test, ds.y_test, test_logits)
    return tune, final


def labelled_mask(y: Tensor, per_class: int | None, seed: int) -> Tensor:
    """(n,) bool: `per_class` inputs of every class, drawn with `seed`; every input when `per_class` is None."""
    if per_class is None:
        return torch.ones(len(y), dtype=torch.bool)
    rng = np.random.default_rng(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y).tolist():
        idx = np.flatnonzero(y.numpy() == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} training inputs, fewer than {per_class} labels asked for")
        mask[torch.from_numpy(rng.choice(idx, per_class, replace=False))] = True
    return mask


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def student_factory(name: str, teacher: nn.Module, example: Tensor, num_classes: int) -> Callable[[], nn.Module]:
    """A function that builds a fresh student: an MLP drawn from torch's global generator (seed it first), or a
    copy of the teacher pruned once (its init is the teacher's strongest channels, the same for every seed)."""
    if name == "cnn2pct":
        pruned = prune_width(teacher, example, CNN_FLOPS_RATIO)
        return lambda: copy.deepcopy(pruned)
    sizes = (example[0].numel(), *HIDDEN[name], num_classes)
    return lambda: mlp(sizes)


@dataclass
class Seen:
    """What the loss terms were given over a run: evidence that KD saw the unlabelled inputs and CE did not."""

    kd_inputs: Tensor  # (n,) bool: the transfer-set inputs the KD term saw at least once
    kd_rows: int = 0
    ce_rows: int = 0
    epoch: list[int] = field(default_factory=lambda: [0])  # the epoch being trained (0-based), for DKD's warm-up


def make_loss(method: str, split: Split, labelled: Tensor, temperature: float | None, alpha: float | None,
              seen: Seen, student_features: Penultimate | None, regressor: nn.Module | None):
    """loss_fn(z_s (b, c), x (b, ...), idx (b,)) for kdcompile.train.fit, which is handed the row indices as
    "labels" so that the loss can look up labels, the labelled mask and the cached teacher outputs."""

    def loss_fn(z_s: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        lab, y = labelled[idx], split.y_train[idx]
        seen.ce_rows += int(lab.sum())
        # A batch with no labelled row contributes no CE (a mean over nothing would be NaN).
        ce = F.cross_entropy(z_s[lab], y[lab]) if lab.any() else z_s.sum() * 0.0
        if method in ("scratch", "ce"):
            return ce
        z_t = split.t_logits[idx]
        seen.kd_rows += len(idx)
        seen.kd_inputs[idx] = True
        if method == "dkd":
            # DKD splits target from non-target classes; an unlabelled input takes the teacher's class as target.
            target = torch.where(lab, y, z_t.argmax(-1))
            warm = min((seen.epoch[0] + 1) / DKD_WARMUP_EPOCHS, 1.0)  # as kdcompile.objectives warms DKD up
            return ce + warm * dkd(z_s, z_t, target, temperature=temperature)
        kd = temperature_scaled("hinton" if method == "fitnets" else method, z_s, z_t, temperature)
        loss = alpha * kd + (1 - alpha) * ce
        if method == "fitnets":
            hint = F.mse_loss(regressor(student_features.features), split.t_features[idx])
            loss = loss + FEATURE_METHODS["fitnets"] * hint  # RepDistiller's 100, set for conv feature maps
        return loss

    return loss_fn


def train_one(method: str, make_student: Callable[[], nn.Module], split: Split, labelled: Tensor, *, seed: int,
              temperature: float | None, alpha: float | None, epochs: int, batch_size: int = 128,
              lr: float = 3e-3, description: str = "") -> dict:
    """Train one student and evaluate it on split's evaluation inputs. Returns accuracy, agreement with the
    teacher, the predicted classes, what the loss terms saw, and the wall time."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    student = make_student()
    if method == "scratch":  # a fresh draw: for cnn2pct this drops the pruned teacher weights
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    seen = Seen(torch.zeros(len(split.y_train), dtype=torch.bool))
    hook, extra = (Penultimate(student), nn.ModuleDict()) if method == "fitnets" else (None, nn.ModuleDict())
    if hook is not None:  # FitNets' learned linear regressor from the student's features to the teacher's
        extra["regressor"] = nn.Linear(hook.layer.in_features, split.t_features.shape[1])
    loss_fn = make_loss(method, split, labelled, temperature, alpha, seen, hook,
                        extra["regressor"] if hook is not None else None)
    try:
        fit(student, split.x_train, torch.arange(len(split.y_train)), loss_fn, epochs=epochs, batch_size=batch_size,
            lr=lr, seed=seed, description=description or method, on_epoch_start=lambda e: seen.epoch.__setitem__(0, e),
            extra=extra)
    finally:
        if hook is not None:
            hook.remove()
    logits = predict(student, split.x_eval)
    return {"accuracy": accuracy(logits, split.y_eval), "agreement": agreement(logits, split.t_eval_logits),
            "predictions": logits.argmax(-1).tolist(), "labelled": int(labelled.sum()),
            "kd_inputs": int(seen.kd_inputs.sum()), "kd_rows": seen.kd_rows, "ce_rows": seen.ce_rows,
            "seconds": time.perf_counter() - start}
