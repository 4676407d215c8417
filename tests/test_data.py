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


def test_csv_with_and_without_labels(tmp_path):
    import pytest

    from kdcompile.errors import KdError

    rows = ["a,b,label"] + [f"{i},{i * 2},{i % 2}" for i in range(10)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(tmp_path / "d.csv"))
    assert ds.sample_shape == (2,) and ds.num_classes == 2 and len(ds.x_train) + len(ds.x_test) == 10
    assert all(float(x[1]) == 2 * float(x[0]) and int(y) == int(x[0]) % 2 for x, y in zip(ds.x_train, ds.y_train))
    (tmp_path / "u.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    assert load_dataset(str(tmp_path / "u.csv")).y_train is None
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n3,4\n")
    with pytest.raises(KdError, match="numeric"):
        load_dataset(str(tmp_path / "bad.csv"))


def test_image_folder_labels_from_subfolders(tmp_path):
    import numpy as np
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            value = 0 if label == "cat" else 255
            Image.fromarray(np.full((6, 5), value, dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.sample_shape == (1, 6, 5) and ds.num_classes == 2
    for x, y in zip(torch.cat([ds.x_train, ds.x_test]), torch.cat([ds.y_train, ds.y_test])):
        assert float(x.mean()) == float(y)  # dogs are white, cats black
