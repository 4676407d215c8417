import pytest
import torch
import torch.nn.functional as F

from kdcompile.data import digits
from kdcompile.errors import KdError
from kdcompile.models import mnist_cnn
from kdcompile.train import fit


class Killed(Exception):
    pass


def _train(epochs, **kwargs):
    """The model after `fit`, and how many epochs this call ran."""
    torch.manual_seed(0)
    model = mnist_cnn(width=4)
    ds = digits()
    ran = fit(model, ds.x_train[:256], ds.y_train[:256], lambda z, x, y: F.cross_entropy(z, y), epochs=epochs,
              batch_size=64, lr=3e-3, seed=0, description="t", augment_pixels=1.0, **kwargs)
    return model, ran


def test_resume_runs_only_the_missing_epochs_and_equals_an_uninterrupted_run(tmp_path):
    straight, ran = _train(3)
    assert ran == 3
    ckpt = tmp_path / "state.pt"

    def killed_in_second_epoch(epoch):
        if epoch == 1:
            raise Killed  # after the epoch's steps, before its checkpoint
        return ""

    with pytest.raises(Killed):
        _train(3, checkpoint=ckpt, on_epoch=killed_in_second_epoch, identity={"run": "a"})
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    resumed, ran = _train(3, checkpoint=ckpt, resume=True, identity={"run": "a"})
    assert ran == 2  # epochs 2 and 3 only: it resumed
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    ckpt = tmp_path / "state.pt"
    _train(1, checkpoint=ckpt, identity={"teacher_sha256": "aaa"})
    _, ran = _train(1, checkpoint=ckpt, resume=None, identity={"teacher_sha256": "bbb"})
    assert ran == 1  # started afresh
    with pytest.raises(KdError, match="another teacher_sha256"):
        _train(1, checkpoint=ckpt, resume=True, identity={"teacher_sha256": "ccc"})
    with pytest.raises(KdError, match="another epochs"):  # fit's own hyperparameters are part of the identity
        _train(2, checkpoint=ckpt, resume=True, identity={"teacher_sha256": "bbb"})
    _, ran = _train(1, checkpoint=ckpt, resume=None, identity={"teacher_sha256": "bbb"})
    assert ran == 0  # the same run, already complete
