"""Built-in examples: a real teacher trained on data that ships inside installed packages (no download)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kdcompile.data import load_dataset
from kdcompile.errors import KdError
from kdcompile.load import save_checkpoint
from kdcompile.models import mnist_cnn
from kdcompile.progress import console
from kdcompile.train import accuracy, fit, predict
from kdcompile.machine import cores


@dataclass
class ExampleConfig:
    """How the example teacher is trained."""

    width: int = 32  # channels of the first block; 32 gives 0.54 M parameters
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 0  # 0: the cores this process may use


def mnist_cnn_teacher(out: Path, cfg: ExampleConfig = ExampleConfig()) -> dict:
    """Train the MNIST-5k teacher CNN and save it as a kdcompile checkpoint (loads without pickle or --arch)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or cores())
    ds = load_dataset("mnist5k")
    model = mnist_cnn(width=cfg.width)
    ce = lambda logits, x, y: F.cross_entropy(logits, y)  # noqa: E731
    status = lambda epoch: f"held-out acc {accuracy(predict(model, ds.x_test), ds.y_test):.4f}"  # noqa: E731
    fit(model, ds.x_train, ds.y_train, ce, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        description="train teacher", augment_pixels=2.0, on_epoch=status)
    acc = accuracy(predict(model, ds.x_test), ds.y_test)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out, "kdcompile.models:mnist_cnn", {"width": cfg.width}, (1, 1, 28, 28),
                    dataset="mnist5k", heldout_accuracy=acc)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"teacher: {n_params / 1e6:.2f} M parameters, held-out accuracy {acc:.4f} -> {out}")
    return {"accuracy": acc, "parameters": n_params, "path": str(out)}


def char_lm_teacher(out: Path) -> dict:
    from kdcompile.distill_lm import train_char_lm_teacher

    return train_char_lm_teacher(out)


EXAMPLES = {"mnist-cnn": mnist_cnn_teacher, "char-lm": char_lm_teacher}


def example(name: str, out: Path) -> dict:
    if name not in EXAMPLES:
        raise KdError(f"Unknown example '{name}': choose one of {', '.join(EXAMPLES)}.")
    return EXAMPLES[name](out)
