"""The training loop shared by the example teacher and distillation, and the evaluation both report.

Glossary: b batch, c classes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdcompile.progress import console, progress

# loss_fn(student_logits (b, c), inputs (b, ...), labels (b,) or None) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def random_shift(x: torch.Tensor, max_pixels: float, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_pixels` in x and y (bilinear, zero fill): cheap augmentation for small data."""
    b, _, h, w = x.shape
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * max_pixels
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss_fn: LossFn, *, epochs: int, batch_size: int,
        lr: float, seed: int, description: str, augment_pixels: float = 0.0,
        on_epoch: Callable[[int], str] | None = None, checkpoint: Path | None = None, resume: bool = False,
        extra: nn.Module | None = None) -> None:
    """AdamW with a one-cycle schedule; `on_epoch(epoch)` may return a short status shown beside the bar.

    With `checkpoint`, the whole training state (weights, optimiser, schedule, random generators) is saved after
    every epoch; `resume` continues from it, and the result equals an uninterrupted run with the same seed.
    `extra` holds trainable helpers of the loss (projectors): optimised and checkpointed with the model.
    """
    extra = extra if extra is not None else nn.ModuleDict()
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    opt = torch.optim.AdamW([*model.parameters(), *extra.parameters()], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    start = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        extra.load_state_dict(state["extra"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = state["epoch"] + 1
    with progress() as bar:
        task = bar.add_task(description, total=epochs * steps_per_epoch, completed=start * steps_per_epoch, info="")
        for epoch in range(start, epochs):
            model.train()
            extra.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb = x[idx]
                if augment_pixels and xb.ndim == 4:
                    xb = random_shift(xb, augment_pixels, gen)
                loss = loss_fn(model(xb), xb, None if y is None else y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(task, advance=1, info=f"loss {loss.item():.3f}")
            info = on_epoch(epoch) if on_epoch is not None else f"loss {loss.item():.3f}"
            bar.update(task, info=info)
            if bar.disable:  # no terminal (CI, a log file): one line per epoch instead of a bar
                console.print(f"{description}: epoch {epoch + 1}/{epochs}, {info}")
            if checkpoint is not None:
                save_training_state(checkpoint, epoch, model, extra, opt, sched, gen)
    model.eval()


def save_training_state(path: Path, epoch: int, model: nn.Module, extra: nn.Module, opt, sched,
                        gen: torch.Generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict(), "extra": extra.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state()},
               tmp)
    tmp.replace(path)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits (n, c) for inputs (n, ...), in eval mode, in batches."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of inputs on which two models predict the same class."""
    return (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean().item()
