"""Loading a teacher (or any model file) without surprises.

Accepted, detected from the file's contents rather than its name:
- TorchScript (`torch.jit.save`),
- an ExportedProgram (`torch.export.save`, usually `.pt2`),
- a kdcompile checkpoint: `{"kdcompile_checkpoint": 1, "arch": "pkg.mod:factory", "arch_kwargs": {...}, "state_dict": ...}`,
- a plain `state_dict`, with `arch="pkg.mod:factory"`,
- a fully pickled `nn.Module`, only with `trust_pickle=True`: unpickling runs whatever code the file names;
- a Hugging Face folder (config.json and weights; a sentence-transformers folder too) or a GGUF file: loaded through
  transformers by kdcompile.hf, which builds the model from transformers' own classes and runs no code from them.

Everything but the last is read with `torch.load(weights_only=True)` or the TorchScript/export readers, which run
no code from the file. A checkpoint may name its own architecture only from the registry ARCHITECTURES, with
plain-valued arguments that factory takes; any other factory must be named by the user (`arch=`), so a file can
never choose which code gets imported or what it is called with.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from kdcompile.errors import KdError
from kdcompile.files import atomic_path
from kdcompile.hf import HFModel, load_gguf, load_hf

Kind = Literal["torchscript", "exported_program", "checkpoint", "state_dict", "pickle", "hf_folder", "gguf"]
CHECKPOINT_KEY = "kdcompile_checkpoint"


@dataclass
class LoadedModel:
    """A model in eval mode, how it was stored, and what the file says about its inputs (if anything)."""

    module: nn.Module
    kind: Kind
    input_shape: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)
    hf: HFModel | None = None  # a Hugging Face folder or GGUF file: the model's kind, tokenizer and pooling

    @property
    def is_eager(self) -> bool:
        """True when the module is a plain nn.Module tree that can be pruned (not a TorchScript or exported graph)."""
        return self.kind in ("checkpoint", "state_dict", "pickle")


# The architectures a checkpoint may name by itself, and the keyword arguments each accepts from the file. Any
# other factory runs only when the user names it (--arch, --student), since a file could otherwise choose which
# code runs and with which arguments (a trainer that writes where the file says, say).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "kdcompile.models:mnist_cnn": ("width", "in_channels", "num_classes"),
    "kdcompile.lm:char_lm": ("vocab", "d", "heads", "layers", "context"),
}


def import_factory(spec: str):
    """`package.module:factory` to the callable it names. Modules are looked up in the current folder too, as
    uvicorn, gunicorn and pytest do."""
    import sys

    if ":" not in spec:
        raise KdError(f"--arch must look like package.module:factory, got '{spec}'.")
    module_name, attr = spec.split(":", 1)
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise KdError(f"Cannot import the architecture '{spec}': {e} (looked in the current folder {cwd} and on "
                      "Python's path).") from e
    finally:
        if added:
            sys.path.remove(cwd)


def _checked_architecture(arch: str, kwargs: dict, path: Path) -> None:
    """A checkpoint's own architecture must be in ARCHITECTURES, with plain-valued arguments it accepts."""
    if arch not in ARCHITECTURES:
        raise KdError(f"{path} names the architecture '{arch}', which kdcompile does not build on a file's word; "
                      f"pass --arch {arch} if you trust it.")
    unknown = set(kwargs) - set(ARCHITECTURES[arch])
    plain = all(isinstance(v, (bool, int, float, str)) for v in kwargs.values())
    if unknown or not plain:
        raise KdError(f"{path} gives '{arch}' arguments it does not take or that are not plain values "
                      f"({sorted(unknown) or sorted(kwargs)}); pass --arch {arch} if you trust the file.")


def _archive_kind(path: Path) -> Literal["torchscript", "exported_program", "torch_save"] | None:
    try:
        names = zipfile.ZipFile(path).namelist()
    except zipfile.BadZipFile:
        return None
    if any("/code/__torch__" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "exported_program"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch_save"
    return None


def _from_state_dict(state: dict, arch: str, kwargs: dict, path: Path) -> nn.Module:
    module = import_factory(arch)(**kwargs)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KdError(f"The weights in {path} do not fit the architecture '{arch}': {first}")
    return module


def save_checkpoint(module: nn.Module, path: Path, arch: str, arch_kwargs: dict | None = None,
                    input_shape: tuple[int, ...] | None = None, **meta) -> None:
    """Save weights plus the factory that rebuilds them; loads without pickle and without --arch."""
    with atomic_path(path) as tmp:
        torch.save({CHECKPOINT_KEY: 1, "arch": arch, "arch_kwargs": arch_kwargs or {},
                    "state_dict": module.state_dict(), "input_shape": list(input_shape) if input_shape else None,
                    "meta": meta}, tmp)


def load_model(path: str | Path, arch: str | None = None, trust_pickle: bool = False) -> LoadedModel:
    """Load any supported model file; every failure is a KdError with one sentence saying what to do."""
    path = Path(path)
    if not path.exists():
        raise KdError(f"No such file: {path}.")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("config.json", "modules.json")):
            raise KdError(f"{path} is a folder; give the model file itself, or a Hugging Face model folder "
                          "(config.json and weights).")
        return _from_hf(load_hf(path), "hf_folder")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _from_hf(load_gguf(path), "gguf")
    kind = _archive_kind(path)
    try:
        if kind == "torchscript":
            return LoadedModel(torch.jit.load(str(path), map_location="cpu").eval(), "torchscript")
        if kind == "exported_program":
            ep = torch.export.load(str(path))
            shape = tuple(ep.example_inputs[0][0].shape) if ep.example_inputs and ep.example_inputs[0] else None
            return LoadedModel(ep.module(), "exported_program", shape)
    except Exception as e:  # noqa: BLE001 - any reader failure means a damaged file
        raise KdError(f"{path} looks like a {kind.replace('_', ' ')} file but cannot be read ({type(e).__name__}); "
                      "it may be truncated or corrupted.")
    head = path.read_bytes()[:2]
    if kind is None and head == b"PK":  # a zip header on an unreadable archive: a torch file cut short or damaged
        raise KdError(f"{path} is truncated or corrupted.")
    if kind is None and head[:1] != b"\x80":  # neither a torch zip archive nor a pickle
        raise KdError(f"{path} is not a PyTorch model file (neither a torch.save archive nor a pickle).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise KdError(f"{path} is not a PyTorch model file (or it is corrupted).")
        return _load_pickle(path, trust_pickle)
    except Exception:  # noqa: BLE001 - torch.load raises many types for foreign or damaged bytes
        # A zip header on an unreadable archive means a torch file that was cut short or damaged.
        damaged = path.read_bytes()[:2] == b"PK"
        raise KdError(f"{path} {'is truncated or corrupted' if damaged else 'is not a PyTorch model file'}.")
    return _from_object(obj, path, arch)


def _from_hf(hf: HFModel, kind: Kind) -> LoadedModel:
    return LoadedModel(hf.model, kind, meta={"model_kind": hf.kind}, hf=hf)


def _from_object(obj, path: Path, arch: str | None) -> LoadedModel:
    if isinstance(obj, dict) and obj.get(CHECKPOINT_KEY):
        ckpt_arch = obj["arch"]
        if arch is None:
            _checked_architecture(ckpt_arch, obj.get("arch_kwargs") or {}, path)
        module = _from_state_dict(obj["state_dict"], arch or ckpt_arch, obj.get("arch_kwargs") or {}, path)
        shape = tuple(obj["input_shape"]) if obj.get("input_shape") else None
        return LoadedModel(module.eval(), "checkpoint", shape, dict(obj.get("meta") or {}, arch=arch or ckpt_arch,
                                                                    arch_kwargs=obj.get("arch_kwargs") or {}))
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise KdError(f"{path} is a state_dict (weights only); pass --arch package.module:factory to build the model.")
        return LoadedModel(_from_state_dict(obj, arch, {}, path).eval(), "state_dict", None, {"arch": arch})
    raise KdError(f"{path} holds a {type(obj).__name__}, not a model or a state_dict.")


def _load_pickle(path: Path, trust_pickle: bool) -> LoadedModel:
    if not trust_pickle:
        raise KdError(f"{path} is a fully pickled model: loading it runs arbitrary code stored in the file. "
                      "If you trust where it came from, pass --trust-pickle; otherwise save it with torch.jit.save, "
                      "torch.export.save, or as a state_dict with --arch.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise KdError(f"{path} could not be unpickled: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(obj, nn.Module):
        raise KdError(f"{path} unpickles to a {type(obj).__name__}, not an nn.Module.")
    return LoadedModel(obj.eval(), "pickle")


def check_input_shape(model: LoadedModel, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Run the model once on zeros of `input_shape`; return its output or say in one sentence why it does not fit."""
    try:
        with torch.inference_mode():
            out = model.module(torch.zeros(input_shape))
    except Exception as e:  # noqa: BLE001 - the model's own error says what it expected
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise KdError(f"The input shape {list(input_shape)} does not fit the model: {first}")
    if not isinstance(out, torch.Tensor):
        raise KdError(f"The model returns a {type(out).__name__}; kdcompile needs a model that returns one tensor.")
    return out


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' to a tuple of positive ints."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise KdError(f"--input-shape must be integers like 1,1,28,28, got '{text}'.")
    if not shape or any(d <= 0 for d in shape):
        raise KdError(f"--input-shape must be positive integers like 1,1,28,28, got '{text}'.")
    return shape
