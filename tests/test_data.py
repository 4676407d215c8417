import torch

from kdcompile.data import digits, load_dataset, mnist5k


def test_mnist5k_split_is_fixed_and_stratified():
    a, b = mnist5k(), mnist5k()
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert torch.bincount(a.y_test).tolist() == [100] * 10
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_digits_and_unknown_name(tmp_path):
    d = digits()
    assert d.sample_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797
    import numpy as np
    import pytest

    from kdcompile.errors import KdError

    np.save(tmp_path / "x.npy", np.zeros((10, 3, 4), dtype=np.float32))
    user = load_dataset(str(tmp_path / "x.npy"))
    assert user.y_train is None and len(user.x_train) + len(user.x_test) == 10
    with pytest.raises(KdError, match="Unknown dataset"):
        load_dataset("imagenet")
