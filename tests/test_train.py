import pytest
import torch
import torch.nn.functional as F

from kdcompile.data import digits
from kdcompile.models import mnist_cnn
from kdcompile.train import fit


class Killed(Exception):
    pass


def _train(epochs, **kwargs):
    torch.manual_seed(0)
    model = mnist_cnn(width=4)
    ds = digits()
    fit(model, ds.x_train[:256], ds.y_train[:256], lambda z, x, y: F.cross_entropy(z, y), epochs=epochs,
        batch_size=64, lr=3e-3, seed=0, description="t", augment_pixels=1.0, **kwargs)
    return model


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = _train(3)
    ckpt = tmp_path / "state.pt"

    def killed_in_second_epoch(epoch):
        if epoch == 1:
            raise Killed  # after the epoch's steps, before its checkpoint
        return ""

    with pytest.raises(Killed):
        _train(3, checkpoint=ckpt, on_epoch=killed_in_second_epoch)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    resumed = _train(3, checkpoint=ckpt, resume=True)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
