import pytest
import torch

from kdcompile.errors import KdError
from kdcompile.objectives import METHODS, make_objective
from kdcompile.models import mnist_cnn
from kdcompile.student import prune_width


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = mnist_cnn(width=4).eval()
    return teacher, prune_width(teacher, torch.zeros(1, 1, 8, 8), 0.3)


@pytest.fixture
def teacher_student(pair):
    import copy

    return copy.deepcopy(pair[0]), copy.deepcopy(pair[1])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_the_student_and_leaves_no_hooks(method, teacher_student):
    tiny_cnn, student = teacher_student
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    obj = make_objective(method, tiny_cnn, student, x[:1], has_labels=True, temperature=4.0, alpha=0.9)
    loss = obj.loss_fn(student(x), x, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in obj.extra.parameters())  # projectors learn too
    assert all(p.grad is None for p in tiny_cnn.parameters())  # the teacher never does
    obj.close()
    assert all(not m._forward_hooks for m in [*student.modules(), *tiny_cnn.modules()])


def test_fitnets_adds_a_projector_when_widths_differ(teacher_student):
    tiny_cnn, student = teacher_student
    x = torch.randn(2, 1, 8, 8)
    obj = make_objective("fitnets", tiny_cnn, student, x[:1], has_labels=False, temperature=4.0, alpha=0.9)
    assert "proj" in obj.extra
    obj.close()


def test_label_methods_refuse_unlabelled_data(tiny_cnn):
    with pytest.raises(KdError, match="labels"):
        make_objective("dkd", tiny_cnn, tiny_cnn, torch.zeros(1, 1, 8, 8), has_labels=False, temperature=4.0,
                       alpha=0.9)
    with pytest.raises(KdError, match="Unknown distillation method"):
        make_objective("magic", tiny_cnn, tiny_cnn, torch.zeros(1, 1, 8, 8), has_labels=True, temperature=4.0,
                       alpha=0.9)
