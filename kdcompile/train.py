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

from kdcompile import parallel
from kdcompile.checkpoint import Checkpoint
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
        on_epoch: Callable[[int], str] | None = None, on_epoch_start: Callable[[int], None] | None = None,
        checkpoint: Path | None = None, resume: bool | None = False,
        identity: dict | None = None, extra: nn.Module | None = None,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
    """AdamW with a one-cycle schedule; `on_epoch(epoch)` may return a short status shown beside the bar.

    With `checkpoint`, the whole training state (weights, optimiser, schedule, random generators) is saved after
    every epoch (kdcompile.checkpoint). `identity` says which run this is (config, data and teacher hashes; the
    training hyperparameters given here are added to it); `resume` follows Checkpoint.restore's rule, and a
    resumed run ends with the same weights as an uninterrupted one with the same seed.
    `extra` holds trainable helpers of the loss (projectors): optimised and checkpointed with the model.
    `prepare(batch)` changes each batch before the forward pass (an on-policy student writes part of it).
    Under torchrun each process trains on its shard of every batch (kdcompile.parallel); rank 0 checkpoints.
    Returns the number of epochs run by this call (fewer than `epochs` when it resumed).
    """
    extra = extra if extra is not None else nn.ModuleDict()
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    opt = torch.optim.AdamW([*model.parameters(), *extra.parameters()], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    state = {"model": model, "extra": extra, "optimizer": opt, "scheduler": sched, "generator": gen}
    hyper = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "augment_pixels": augment_pixels,
             "samples": len(x)}
    ckpt = Checkpoint(checkpoint, hyper | (identity or {}))
    start = ckpt.restore(state, resume)
    net = parallel.wrap(model)  # DistributedDataParallel under torchrun (kdcompile.parallel), else the model
    with progress() as bar:
        task = bar.add_task(description, total=epochs * steps_per_epoch, completed=start * steps_per_epoch, info="")
        for epoch in range(start, epochs):
            if on_epoch_start is not None:
                on_epoch_start(epoch)  # a loss's warm-up reads it
            model.train()
            extra.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb = x[idx]
                if augment_pixels and xb.ndim == 4:
                    xb = random_shift(xb, augment_pixels, gen)  # the whole batch: the generator stays in step
                mine, weight = parallel.shard(torch.arange(len(idx)))  # everything, outside torchrun
                xb, yb = xb[mine], None if y is None else y[idx][mine]
                if prepare is not None:  # e.g. on-policy: the student rewrites part of its inputs
                    xb = prepare(xb)
                loss = loss_fn(net(xb), xb, yb)
                opt.zero_grad(set_to_none=True)
                (loss * weight).backward()
                parallel.average_gradients(extra)
                opt.step()
                sched.step()
                bar.update(task, advance=1, info=f"loss {loss.item():.3f}")
            info = on_epoch(epoch) if on_epoch is not None else f"loss {loss.item():.3f}"
            bar.update(task, info=info)
            if bar.disable:  # no terminal (CI, a log file): one line per epoch instead of a bar
                console.print(f"{description}: epoch {epoch + 1}/{epochs}, {info}")
            if parallel.is_main():
                ckpt.save(epoch + 1, state)
            parallel.barrier()
    model.eval()
    return epochs - start


def eval_mode(model: nn.Module) -> nn.Module:
    """`model.eval()`, except for a torch.export graph (`ep.module()`): its mode was fixed when it was exported,
    and it refuses to switch ("Calling eval() is not supported yet")."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits (n, c) for inputs (n, ...), in eval mode, in batches."""
    eval_mode(model)
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Fraction of inputs on which two models predict the same class."""
    return (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean().item()
