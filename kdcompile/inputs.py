"""The one input a run's models take, as export.json records it, and the inputs made from it for timing and
parity: float32 images or features, or int64 token ids (a Hugging Face student, or an ONNX file that takes ids).

export.json keys: "input_shape", and for integer inputs "input_dtype": "int64" with "input_high" (ids are drawn
from 0..high-1, the vocabulary). Runs written before token inputs existed have neither key: float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"  # or "int64"
    high: int | None = None  # int64: values in [0, high)

    @classmethod
    def of(cls, exported: dict) -> "InputSpec":
        return cls(tuple(exported["input_shape"]), exported.get("input_dtype", "float32"), exported.get("input_high"))

    def as_json(self) -> dict:
        extra = {"input_dtype": self.dtype, "input_high": self.high} if self.dtype != "float32" else {}
        return {"input_shape": list(self.shape)} | extra

    def random(self, seed: int) -> np.ndarray:
        """A seeded input: standard normal floats, or ids uniform over the vocabulary."""
        rng = np.random.default_rng(seed)
        if self.dtype == "float32":
            return rng.standard_normal(self.shape).astype(np.float32)
        return rng.integers(0, self.high or 1, self.shape).astype(self.dtype)

    def randoms(self, n: int, seed: int) -> list[np.ndarray]:
        """`n` seeded inputs (one generator, so they differ)."""
        rng = np.random.default_rng(seed)
        return [self.random(int(s)) for s in rng.integers(0, 2**31, n)]

    def zeros(self):
        """A torch tensor of zeros: the example an exporter traces."""
        import torch

        return torch.zeros(self.shape, dtype=getattr(torch, self.dtype))
