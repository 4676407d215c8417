"""MetaSchedule traces (their JSON) as token sequences for a sequence cost model. Pure Python, no TVM.

One token per instruction:
- `kind` (l,) int: the instruction kind, with the annotation key folded in for Annotate/Unannotate
  ("Annotate:meta_schedule.parallel"), as an index into KINDS (0 = unknown);
- `num` (l, NUM_FEATURES) float32: the sampled decision on a numeric channel (log2(1 + v) of each tile factor, or
  of the chosen categorical value), integer attributes, how far back the first inputs were produced, how many
  inputs, and which block the instruction touches (blocks numbered by first appearance, so names never matter).

Glossary: l instructions (tokens), f NUM_FEATURES.
"""

from __future__ import annotations

import math

import numpy as np

KINDS = [
    "<unk>", "GetSBlock", "GetLoops", "GetChildBlocks", "GetProducers", "GetConsumers", "Split", "Fuse", "Reorder",
    "Parallel", "Vectorize", "Bind", "Unroll", "CacheRead", "CacheWrite", "ReIndex", "ComputeAt",
    "ReverseComputeAt", "ComputeInline", "ReverseComputeInline", "DecomposeReduction", "RFactor", "StorageAlign",
    "SetScope", "Blockize", "Tensorize", "SamplePerfectTile", "SamplePartitionedTile", "SampleCategorical",
    "SampleComputeLocation", "EnterPostproc", "TransformLayout", "TransformBlockLayout", "PadEinsum", "AddUnitLoop",
    "Merge", "LoopPartition", "Annotate", "Unannotate",
    "Annotate:meta_schedule.parallel", "Annotate:meta_schedule.vectorize", "Annotate:meta_schedule.unroll_explicit",
    "Annotate:meta_schedule.unroll_implicit", "Annotate:meta_schedule.tiling_structure",
    "Annotate:meta_schedule.auto_tensorize", "Annotate:meta_schedule.cooperative_fetch",
    "Annotate:meta_schedule.random_compute_producer", "Annotate:meta_schedule.layout_rewrite_preproc",
    "Annotate:pragma_auto_unroll_max_step", "Annotate:pragma_unroll_explicit",
    "Unannotate:meta_schedule.parallel", "Unannotate:meta_schedule.vectorize",
    "Unannotate:meta_schedule.unroll_explicit", "Unannotate:meta_schedule.tiling_structure",
    "Unannotate:meta_schedule.random_compute_producer",
    "<store>",  # not an instruction: a buffer store of the scheduled program (costmodel.mamba, store features)
]
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
STORE_KIND = KIND_INDEX["<store>"]
DECISION_SLOTS, ATTR_SLOTS, INPUT_SLOTS = 6, 2, 2
NUM_FEATURES = DECISION_SLOTS + ATTR_SLOTS + INPUT_SLOTS + 2  # + number of inputs, block index
# Longer traces are cut to their first MAX_TOKENS instructions before the ranker sees them (bounds the scan's length).
MAX_TOKENS = 256


def _log2p(v: float) -> float:
    return math.log2(1.0 + abs(v)) * (1.0 if v >= 0 else -1.0)


def _kind_name(kind: str, attrs: list) -> str:
    if kind in ("Annotate", "Unannotate") and attrs and isinstance(attrs[0], str):
        folded = f"{kind}:{attrs[0]}"
        return folded if folded in KIND_INDEX else kind
    return kind


def tokenize(trace_json: list) -> tuple[np.ndarray, np.ndarray]:
    """A trace's JSON ([instructions, decisions]) to (kind (l,) int64, num (l, f) float32)."""
    insts, decisions = trace_json
    decided = {int(i): v for i, v in decisions}
    producer: dict[str, int] = {}  # variable name -> index of the instruction that made it
    blocks: dict[str, int] = {}  # block name -> order of first appearance
    block_of_var: dict[str, int] = {}
    kind = np.zeros(len(insts), dtype=np.int64)
    num = np.zeros((len(insts), NUM_FEATURES), dtype=np.float32)
    for t, (name, inputs, attrs, outputs) in enumerate(insts):
        kind[t] = KIND_INDEX.get(_kind_name(name, attrs), 0)
        row = num[t]
        d = decided.get(t)
        if name == "SampleCategorical" and d is not None and attrs and isinstance(attrs[0], list):
            values = [d] if not 0 <= int(d) < len(attrs[0]) else [attrs[0][int(d)]]
        elif isinstance(d, list):
            values = d
        else:
            values = [] if d is None else [d]
        for j, v in enumerate(values[:DECISION_SLOTS]):
            if isinstance(v, (int, float)):
                row[j] = _log2p(v)
        ints = [a for a in attrs if isinstance(a, (int, float)) and not isinstance(a, bool)]
        for j, v in enumerate(ints[:ATTR_SLOTS]):
            row[DECISION_SLOTS + j] = _log2p(v)
        refs = [i for i in inputs if isinstance(i, str) and i in producer]
        for j, var in enumerate(refs[:INPUT_SLOTS]):
            row[DECISION_SLOTS + ATTR_SLOTS + j] = _log2p(t - producer[var])
        row[-2] = len(inputs)
        if name == "GetSBlock" and attrs and isinstance(attrs[0], str):
            block = blocks.setdefault(attrs[0], len(blocks))
            for out in outputs:
                block_of_var[out] = block
        block_ids = [block_of_var[i] for i in [*inputs, *outputs] if isinstance(i, str) and i in block_of_var]
        row[-1] = (block_ids[0] + 1) if block_ids else 0  # 0 = touches no block
        for out in outputs:
            producer[out] = t
            if block_ids and out not in block_of_var:
                block_of_var[out] = block_ids[0]
    return kind, num
