"""Compiled teachers become trainable, prunable modules (kdcompile/unlift.py): the rewritten graph computes what the
compiled one did, its weights sit in torch.nn layers again (which the pruner needs), and what cannot be done is
one sentence."""

import warnings

import pytest
import torch
from torch import nn

from kdcompile.errors import KdError
from kdcompile.lm import char_lm
from kdcompile.student import flops_and_params, prune_width
from kdcompile.unlift import modular, trainable

warnings.filterwarnings("ignore", module="torch")


def _compiled(model, kind, example):
    return torch.export.export(model, (example,)).module() if kind == "exported_program" else torch.jit.script(model)


@pytest.mark.parametrize("kind", ["exported_program", "torchscript"])
def test_a_compiled_cnn_becomes_layers_with_the_same_outputs_and_prunes(tiny_cnn, kind):
    x = torch.randn(1, 1, 28, 28)
    g = trainable(_compiled(tiny_cnn, kind, x), kind, x)
    layers = [type(m) for m in g.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    assert layers.count(nn.Conv2d) == 5 and layers.count(nn.BatchNorm2d) == 5 and layers.count(nn.Linear) == 1
    assert not [n for n in g.graph.nodes if n.op == "get_attr"]  # every weight belongs to a layer now
    batch = torch.randn(6, 1, 28, 28)  # batches of any size, though exported at batch 1
    with torch.no_grad():
        assert torch.equal(g(batch), tiny_cnn(batch))
    assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for p in tiny_cnn.parameters())
    student = prune_width(g, x, 0.25)
    assert flops_and_params(student, x)[0] <= 0.25 * flops_and_params(g, x)[0]
    assert student(batch).shape == (6, 10)


def test_a_compiled_transformer_keeps_its_outputs_with_embedding_layer_norm_and_linear_layers():
    torch.manual_seed(0)
    lm = char_lm(20, d=16, heads=2, layers=2, context=8).eval()
    ids = torch.randint(0, 20, (3, 8))
    g = modular(torch.export.export(lm, (ids,)).module())
    kinds = {type(m) for m in g.modules()}
    assert {nn.Embedding, nn.LayerNorm, nn.Linear} <= kinds
    with torch.no_grad():
        assert torch.allclose(g(ids), lm(ids), atol=1e-6)


def test_a_graph_with_its_batch_written_in_is_one_sentence():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(x.reshape(1, 12))  # batch 1 only
    x = torch.randn(1, 3, 4)
    with pytest.raises(KdError, match="batch 1 only"):
        trainable(torch.export.export(Flat(), (x,)).module(), "exported_program", x)


def test_a_graph_without_layers_to_prune_is_one_sentence():
    class Act(nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2
    x = torch.randn(1, 4)
    with pytest.raises(KdError, match="nothing to prune"):
        trainable(torch.export.export(Act(), (x,)).module(), "exported_program", x)
