"""Offline featurisation of dataset records, cached per task next to the dataset.

Per task, in <dataset>/features/<task_hash>.npz (recomputed when the task gained records):
    latency_s (n,) float64          mean of the repeats; nan for failed programs
    psf (rows, 164) float32         MetaSchedule PerStoreFeature rows of the measured programs, concatenated
                                    (failed programs own no rows)
    psf_offsets (n + 1,) int64      program i owns psf[psf_offsets[i]:psf_offsets[i + 1]]
    tok_kind (tokens,) int64, tok_num (tokens, f) float32, tok_offsets (n + 1,) int64: trace tokens, likewise
"""

from __future__ import annotations


import numpy as np

from costmodel.dataset import ProgramDataset, mean_seconds
from kdcompile.files import atomic_path
from costmodel.tokenize import NUM_FEATURES, tokenize


def _ragged(parts: list[np.ndarray], width: int | None, dtype) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    shape = (0, width) if width else (0,)
    return (np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)), offsets


def featurize_task(ds: ProgramDataset, task_hash: str, with_store_features: bool = True) -> dict[str, np.ndarray]:
    """Features and latencies of every record of one task, from the cache when it is current."""
    cache = ds.root / "features" / f"{task_hash}.npz"
    f = ds.task(task_hash)
    header, records = f.header(), list(f.records())
    if cache.exists():
        cached = dict(np.load(cache))
        if len(cached["latency_s"]) == len(records) and ("psf" in cached or not with_store_features):
            return cached
    latency = np.array([np.nan if (m := mean_seconds(r)) is None else m for r in records], dtype=np.float64)
    tokens = [tokenize(r["trace"]) for r in records]
    out = {"latency_s": latency}
    out["tok_kind"], out["tok_offsets"] = _ragged([k for k, _ in tokens], None, np.int64)
    out["tok_num"], _ = _ragged([n for _, n in tokens], NUM_FEATURES, np.float32)
    if with_store_features and records:
        from kdcompile.tvm_layer.programs import per_store_features

        # measured programs only: a failure may be a trace that does not replay (kept as a failure by the collector)
        ok = np.flatnonzero(np.isfinite(latency))
        found = per_store_features(header["workload"], header["target"],
                                   [records[i]["trace"] for i in ok]) if len(ok) else []
        rows = [np.zeros((0, 164), np.float32)] * len(records)
        for i, r in zip(ok, found):
            rows[i] = r
        out["psf"], out["psf_offsets"] = _ragged(rows, 164, np.float32)
    with atomic_path(cache) as tmp:
        np.savez_compressed(tmp, **out)
    return out
