import torch
from torch import nn

from kdcompile.student import flops_and_params, prune_width


def test_prune_width_meets_flops_target_and_keeps_teacher_weights(tiny_cnn):
    x = torch.randn(2, 1, 8, 8)
    student = prune_width(tiny_cnn, x[:1], flops_ratio=0.25)
    t_flops, t_params = flops_and_params(tiny_cnn, x[:1])
    s_flops, s_params = flops_and_params(student, x[:1])
    assert s_flops <= 0.25 * t_flops and s_params < t_params
    assert student(x).shape == tiny_cnn(x).shape  # classes untouched
    # The first conv keeps a subset of the teacher's filters, unchanged.
    t_w = tiny_cnn.features[0][0].weight.detach()
    s_w = student.features[0][0].weight.detach()
    assert all(any(torch.equal(f, g) for g in t_w) for f in s_w)
    assert isinstance(student.head, nn.Linear) and student.head.out_features == 10


def test_keep_blocks_keeps_first_last_and_evenly_spaced_with_weights():
    from costmodel.zoo import Encoder

    from kdcompile.student import keep_blocks

    torch.manual_seed(0)
    teacher = Encoder(d=16, h=2, ff=32, layers=6).eval()
    x = torch.randn(2, 5, 16)
    student = keep_blocks(teacher, x, 3)
    assert len(student.layers) == 3 and student(x).shape == x.shape
    for kept, original in zip(student.layers, [teacher.layers[0], teacher.layers[2], teacher.layers[5]]):
        assert torch.equal(kept.qkv.weight, original.qkv.weight)
    assert len(teacher.layers) == 6  # the teacher is untouched


def test_keep_blocks_explains_what_cannot_be_dropped(tiny_cnn):
    import pytest

    from kdcompile.errors import KdError
    from kdcompile.student import keep_blocks

    with pytest.raises(KdError):
        keep_blocks(tiny_cnn, torch.randn(1, 1, 8, 8), 1)  # every block changes the shape
