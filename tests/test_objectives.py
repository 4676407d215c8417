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


@pytest.mark.parametrize("name", ["hinton", "fkl", "rkl", "skl", "srkl", "gjsd", "tvd"])
def test_every_temperature_scaled_loss_gets_t_squared_on_the_classifier_path(name):
    """At T, each logit loss enters the objective as T^2 times the loss at T (hinton's own T^2 counted once)."""
    from kdcompile.losses import LOSSES
    from kdcompile.objectives import temperature_scaled

    torch.manual_seed(0)
    z_s, z_t = torch.randn(16, 10), torch.randn(16, 10)
    for T in (1.0, 2.0, 4.0):
        plain = LOSSES[name](z_s, z_t, temperature=T)
        expected = plain if name == "hinton" else plain * T**2
        assert torch.allclose(temperature_scaled(name, z_s, z_t, T), expected)
    if name == "fkl":  # and so the soft term keeps its weight against CE as T grows (the point of the factor)
        g = [torch.autograd.grad(temperature_scaled(name, z.requires_grad_(), z_t, T), z)[0].norm().item()
             for T, z in ((1.0, z_s.clone()), (4.0, z_s.clone()))]
        assert g[1] > 0.5 * g[0]


def test_dkd_warms_up_linearly_over_its_first_epochs():
    from kdcompile.losses import dkd
    from kdcompile.objectives import DKD_WARMUP_EPOCHS, make_objective

    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    obj = make_objective("dkd", teacher, student, x[:1], has_labels=True, temperature=4.0, alpha=0.9)
    z_s = student(x)
    ce = torch.nn.functional.cross_entropy(z_s, y)
    full = dkd(z_s, teacher(x).detach(), y, temperature=4.0)
    for epoch in range(DKD_WARMUP_EPOCHS + 2):
        obj.start_epoch(epoch)
        share = min((epoch + 1) / DKD_WARMUP_EPOCHS, 1.0)
        assert torch.allclose(obj.loss_fn(z_s, x, y), ce + share * full)
