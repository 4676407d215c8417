"""Building a student from the teacher: structured width pruning (torch-pruning), or the user's own architecture.

Pruning keeps the teacher's strongest channels (L2 magnitude) and their weights, so the student starts close to
the teacher and distillation only has to recover what the removed channels carried.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from kdcompile.errors import KdError


def flops_and_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """FLOPs (2 x multiply-adds) of one forward pass on `example_input`, and the parameter count."""
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(2 * macs), int(params)


def _classifier(model: nn.Module, out_features: int) -> list[nn.Module]:
    """The last Linear whose width is the model's output width: its outputs are classes and must stay."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == out_features]
    return linears[-1:]


def prune_once(model: nn.Module, example_input: torch.Tensor, ratio: float, round_to: int | None) -> nn.Module:
    student = copy.deepcopy(model).eval()
    with torch.no_grad():
        out_features = student(example_input).shape[-1]
    pruner = tp.pruner.MetaPruner(student, example_input, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=_classifier(student, out_features),
                                  round_to=round_to)
    pruner.step()
    return student


def prune_width(model: nn.Module, example_input: torch.Tensor, flops_ratio: float = 0.25,
                round_to: int | None = 4) -> nn.Module:
    """The widest pruned copy of `model` whose FLOPs are at most `flops_ratio` of the original's.

    Bisects torch-pruning's channel ratio; FLOPs(ratio) is monotone but stepped (whole channels, rounded to
    `round_to` so that kernels keep vector-friendly widths), hence a search rather than a formula.
    Falls back to no rounding when rounded widths cannot reach the target (tiny models).
    """
    if not 0 < flops_ratio < 1:
        raise KdError(f"The FLOPs ratio must be between 0 and 1, got {flops_ratio}.")
    try:
        target = flops_ratio * flops_and_params(model, example_input)[0]
    except Exception as e:  # noqa: BLE001
        raise KdError(f"Cannot trace the teacher for pruning ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "pass --student package.module:factory instead.")
    for rounding in ([round_to, None] if round_to else [None]):
        lo, hi, best = 0.0, 0.97, None
        for _ in range(12):
            mid = (lo + hi) / 2
            candidate = prune_once(model, example_input, mid, rounding)
            if flops_and_params(candidate, example_input)[0] <= target:
                best, hi = candidate, mid
            else:
                lo = mid
        if best is not None:
            return best
    raise KdError(f"Width pruning cannot bring the teacher to {flops_ratio:.3g} of its FLOPs; "
                  "pass a larger --flops-ratio or your own --student.")


def _shape_preserving_runs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, list[int]]]:
    """For every Sequential/ModuleList, the longest run of consecutive same-type children whose output shape equals
    their input shape (only such blocks can be dropped without breaking the network)."""
    shapes: dict[nn.Module, tuple] = {}
    handles = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(
        m, (tuple(i[0].shape) if i and isinstance(i[0], torch.Tensor) else None,
            tuple(o.shape) if isinstance(o, torch.Tensor) else None)))
        for m in model.modules()]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    runs = []
    for name, container in model.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        children = list(container)
        best: list[int] = []
        current: list[int] = []
        for i, child in enumerate(children):
            s = shapes.get(child)
            ok = s is not None and s[0] is not None and s[0] == s[1] and not isinstance(child, (nn.ReLU, nn.Dropout))
            if ok and current and type(children[current[-1]]) is type(child):
                current.append(i)
            else:
                current = [i] if ok else []
            if len(current) > len(best):
                best = list(current)
        if len(best) >= 2:
            runs.append((name, best))
    return runs


def keep_blocks(model: nn.Module, example_input: torch.Tensor, num_blocks: int) -> nn.Module:
    """Depth reduction, DistilBERT style: in the longest run of repeated same-shape blocks, keep `num_blocks`
    evenly spaced ones, the first and last included (idx_i = round(i (L - 1) / (k - 1))), weights copied."""
    runs = _shape_preserving_runs(model, example_input)
    if not runs:
        raise KdError("The teacher has no run of repeated same-shape blocks (Sequential/ModuleList) to drop from.")
    name, run = max(runs, key=lambda r: len(r[1]))
    if not 1 <= num_blocks < len(run):
        raise KdError(f"The longest run of repeated blocks ({name or 'the model'}) has {len(run)} blocks; "
                      f"keep between 1 and {len(run) - 1}.")
    picks = [run[0]] if num_blocks == 1 else \
        [run[round(i * (len(run) - 1) / (num_blocks - 1))] for i in range(num_blocks)]
    dropped = set(run) - set(picks)
    student = copy.deepcopy(model)
    container = student.get_submodule(name) if name else student
    kept = [child for i, child in enumerate(container) if i not in dropped]
    replacement = type(container)(*kept) if isinstance(container, nn.Sequential) else nn.ModuleList(kept)
    if name:
        parent_name, _, attr = name.rpartition(".")
        setattr(student.get_submodule(parent_name) if parent_name else student, attr, replacement)
        return student.eval()
    return replacement.eval()
