"""A trainable, prunable module from a compiled teacher (TorchScript or torch.export), so that a user with only the
compiled file still gets an automatic student.

An ExportedProgram unlifts to a GraphModule (`ep.module()`) whose weights hang off empty holder modules and reach
the ops through get_attr nodes; a pruning library that follows modules (torch-pruning) sees "unwrapped parameters"
there and prunes nothing. `modular` rewrites every conv / linear / batch-norm / layer-norm / embedding call whose
weights are used by that call alone into a call of the matching torch.nn layer holding the same Parameter objects,
so the graph computes exactly what it did and the pruner finds layers again. A TorchScript model is first converted
to an ExportedProgram by PyTorch's own converter (torch._export.converter.TS2EPConverter) on a batch of two, which
keeps the batch dimension free.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from kdcompile.errors import KdError

aten = torch.ops.aten


def _conv(w, b, stride=1, padding=0, dilation=1, groups=1) -> nn.Module:
    cls = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[w.dim()]
    return cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
               dilation=dilation, groups=groups, bias=b is not None)


def _batch_norm(w, b, mean, var, training=False, momentum=0.1, eps=1e-5, *_):
    return nn.BatchNorm2d(len(mean), eps=eps, momentum=momentum, affine=w is not None)


# op -> (positions of its tensor arguments that become the layer's state, their names on the layer, layer builder
# from (those tensors, the remaining arguments)). The graph input is argument 0, except for embedding (1).
LAYERS = {
    aten.conv1d.default: ((1, 2), ("weight", "bias"), lambda t, rest: _conv(*t, *rest)),
    aten.conv2d.default: ((1, 2), ("weight", "bias"), lambda t, rest: _conv(*t, *rest)),
    aten.conv3d.default: ((1, 2), ("weight", "bias"), lambda t, rest: _conv(*t, *rest)),
    aten.linear.default: ((1, 2), ("weight", "bias"),
                          lambda t, _: nn.Linear(t[0].shape[1], t[0].shape[0], bias=t[1] is not None)),
    aten.batch_norm.default: ((1, 2, 3, 4), ("weight", "bias", "running_mean", "running_var"),
                              lambda t, rest: _batch_norm(*t, *rest)),
    aten.layer_norm.default: ((2, 3), ("weight", "bias"),
                              lambda t, rest: nn.LayerNorm(tuple(rest[0]), eps=rest[1] if len(rest) > 1 else 1e-5,
                                                           elementwise_affine=t[0] is not None, bias=t[1] is not None)),
    aten.embedding.default: ((0,), ("weight",), lambda t, rest: nn.Embedding(*t[0].shape)),
}
DATA_ARG = {aten.embedding.default: 1}


def _owner(gm: nn.Module, target: str) -> tuple[nn.Module, str]:
    path, _, attr = target.rpartition(".")
    return (gm.get_submodule(path) if path else gm), attr


def _layer_name(gm: fx.GraphModule, targets: list[str]) -> str:
    """Where the new layer goes: the holder the weights came from ("features.0.0") when it will be left empty,
    else a fresh top-level name."""
    holder = targets[0].rpartition(".")[0]
    if holder and all(t.rpartition(".")[0] == holder for t in targets):
        module = gm.get_submodule(holder)
        names = {n for n, _ in module.named_parameters(recurse=False)} | {n for n, _ in module.named_buffers(recurse=False)}
        if names <= {"num_batches_tracked"} and not list(module.children()):  # what the layer did not consume
            return holder
    i = 0
    while hasattr(gm, f"layer_{i}"):
        i += 1
    return f"layer_{i}"


def _rewrite(gm: fx.GraphModule, node: fx.Node) -> bool:
    positions, names, build = LAYERS[node.target]
    args = list(node.args)
    data = DATA_ARG.get(node.target, 0)
    state_nodes = [args[p] if p < len(args) else None for p in positions]
    if not any(isinstance(s, fx.Node) for s in state_nodes) or not all(
            s is None or (isinstance(s, fx.Node) and s.op == "get_attr" and len(s.users) == 1) for s in state_nodes):
        return False  # shared or computed weights: leave the call as it is
    tensors = [None if s is None else getattr(*_owner(gm, s.target)) for s in state_nodes]
    rest = [a for i, a in enumerate(args) if i not in positions and i != data]
    layer = build(tensors, rest)
    for name, s, value in zip(names, state_nodes, tensors):
        if s is None:
            continue
        owner, attr = _owner(gm, s.target)
        delattr(owner, attr)
        if isinstance(getattr(layer, name, None), nn.Parameter) or isinstance(value, nn.Parameter):
            setattr(layer, name, value if isinstance(value, nn.Parameter) else nn.Parameter(value))
        else:
            layer.register_buffer(name, value)
    name = _layer_name(gm, [s.target for s in state_nodes if s is not None])
    owner, attr = _owner(gm, name)
    setattr(owner, attr, layer)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, (args[data],))
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    for s in state_nodes:
        if s is not None:
            gm.graph.erase_node(s)
    return True


def modular(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` (changed in place and returned) with its layer calls as torch.nn layers; see the module docstring.
    Also drops torch.export's input-shape guard, so the module trains on batches of any size when its graph
    allows (`trainable` checks)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
        elif node.op == "call_function" and node.target in LAYERS:
            _rewrite(gm, node)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:  # e.g. batch norms' num_batches_tracked, never read
            gm.graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    gm.graph.lint()
    gm.recompile()
    return gm


def trainable(module: nn.Module, kind: str, example: torch.Tensor) -> fx.GraphModule:
    """A compiled teacher's module ("torchscript" or "exported_program" as kdcompile.load gives it) as a
    trainable nn.Module with the same outputs, ready for width pruning."""
    if kind == "torchscript":
        from torch._export.converter import TS2EPConverter

        two = example.expand(2, *example.shape[1:]).clone()
        try:
            gm = TS2EPConverter(module, (two,)).convert().module()
        except Exception as e:  # noqa: BLE001 - the converter raises many types for TorchScript it cannot follow
            raise KdError(f"PyTorch's TorchScript converter cannot turn this model into a graph to prune "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); pass --student "
                          "package.module:factory to distil into your own architecture.")
    else:
        gm = module
    gm = modular(copy.deepcopy(gm))
    if not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in gm.modules()):
        raise KdError("The compiled teacher has no convolution or linear layer that owns its weights, so there is "
                      "nothing to prune; pass --student package.module:factory.")
    batch = example.expand(2, *example.shape[1:]).clone()
    try:
        with torch.no_grad():
            gm.eval()(batch)
    except Exception as e:  # noqa: BLE001 - a graph with the batch size written into it
        raise KdError(f"The compiled teacher's graph runs on batch 1 only ({type(e).__name__}); export it with a "
                      "dynamic batch dimension (torch.export.Dim) or pass --student package.module:factory.")
    return gm.eval()
