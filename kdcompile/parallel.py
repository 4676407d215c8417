"""Data-parallel distillation under torchrun: `torchrun --nproc-per-node N -m kdcompile distill ...`.

torchrun starts N processes and sets RANK, WORLD_SIZE and LOCAL_WORLD_SIZE; outside it every function here is the
single-process case. Each process holds the whole model and data, walks the same shuffled order (the seed is
shared) and takes every N-th sample of each global batch (`shard`); PyTorch's DistributedDataParallel all-reduces
the gradients (gloo on CPU, NCCL on GPUs). Each process's loss is scaled by its share of the batch, so the averaged
gradient is the gradient of the global batch's mean loss, as in one process (tested: same weights to float
rounding). Batch norms keep per-process batch statistics, as DDP does by default. Only rank 0 writes files
(checkpoints, the student, reports) and draws progress; a resumed run reads the checkpoint in every process.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def start() -> None:
    """Join the process group torchrun set up (once); nothing outside torchrun."""
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def threads_per_process(cores: int) -> int:
    """The cores a process may use when torchrun put LOCAL_WORLD_SIZE of them on this machine."""
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """`model` inside DistributedDataParallel under torchrun (gradients all-reduced in backward), else itself."""
    if world()[1] == 1:
        return model
    start()
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def shard(idx: torch.Tensor) -> tuple[torch.Tensor | slice, float]:
    """This process's part of a global batch of sample indices, and the weight of its mean loss (its share of the
    batch times the world size). A process left without samples (a last batch smaller than the world) runs one
    sample at weight 0, so that every process joins the all-reduce. One process: the whole batch, as a slice, so
    indexing with it copies nothing."""
    rank, size = world()
    if size == 1:
        return slice(None), 1.0
    mine = idx[rank::size]
    if len(mine) == 0:
        return idx[:1], 0.0
    return mine, len(mine) * size / len(idx)


def average_gradients(module: nn.Module) -> None:
    """All-reduce (mean) the gradients of parameters DDP does not hold, e.g. a loss's projectors."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world()[1]


def sync_generator(gen: torch.Generator) -> None:
    """Give every process rank 0's generator state, so that all draw the same next batch even after sampling
    inside a loss consumed random numbers per shard."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    state = gen.get_state()
    dist.broadcast(state, src=0)
    gen.set_state(state)
