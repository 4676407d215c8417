"""CUDA targets of the dataset collector. What needs no GPU (the target, the design space, nvcc builds) runs
everywhere; measuring runs only where TVM sees a CUDA device (marked gpu)."""

import json
import shutil

import numpy as np
import pytest

from costmodel.dataset import ProgramDataset
from kdcompile.tvm_layer.measure import fast_build
from kdcompile.tvm_layer.space import space_generator
from kdcompile.tvm_layer.target import CUDA_LIMITS, local_gpu, parse_target


def _has_gpu() -> bool:
    return local_gpu(parse_target("cuda:sm_80")) is not None


def _matmul(n=64):
    import tvm
    from tvm import te

    a, b = te.placeholder((n, n), name="A"), te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def test_cuda_shorthand_has_the_limits_of_tvms_own_gpu_tags():
    import tvm

    from kdcompile.errors import KdError

    ours, tag = parse_target("cuda:sm_86"), tvm.target.Target("nvidia/geforce-rtx-3090")
    assert str(ours.attrs["arch"]) == str(tag.attrs["arch"]) == "sm_86"
    for key in CUDA_LIMITS:
        assert int(ours.attrs[key]) == int(tag.attrs[key]), key
    assert parse_target("nvidia/geforce-rtx-3090").attrs["max_threads_per_block"] == 1024  # tags pass through
    with pytest.raises(KdError, match="max_threads_per_block"):  # MetaSchedule's AutoBind would fail later
        parse_target('{"kind": "cuda", "arch": "sm_86"}')


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to build CUDA kernels")
def test_cuda_design_space_builds_with_nvcc():
    """Sampled programs of a matmul in the collector's design space compile to kernels bound to GPU threads."""
    from tvm.s_tir import meta_schedule as ms

    target = parse_target("cuda:sm_80")
    mod = _matmul()
    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target),
                         search_strategy="replay-trace", task_name="mm", num_threads=2, rand_state=0).clone()
    spaces = ctx.space_generator.generate_design_space(mod)
    ctx.search_strategy.pre_tuning(4, 4, spaces, None, ms.cost_model.RandomModel())
    candidates = ctx.search_strategy.generate_measure_candidates()
    built = ms.builder.LocalBuilder(f_build=fast_build, timeout_sec=120, max_workers=2).build(
        [ms.builder.BuilderInput(c.sch.mod, target) for c in candidates])
    assert len(built) == 4 and all(b.error_msg is None for b in built), [b.error_msg for b in built]
    assert all("threadIdx.x" in str(c.sch.mod) for c in candidates)


def test_collect_for_a_cuda_target_needs_a_gpu_or_rpc(tmp_path):
    from costmodel.collect import CollectConfig, collect
    from kdcompile.errors import KdError

    if _has_gpu():
        pytest.skip("this machine has a GPU")
    with pytest.raises(KdError, match="No CUDA device"):
        collect(CollectConfig(out=tmp_path / "ds", target="cuda:sm_80", networks=("mnist_student",)))
    assert not (tmp_path / "ds").exists()  # refused before anything was written


@pytest.mark.gpu
@pytest.mark.slow
def test_collection_on_a_local_gpu(tmp_path):
    """Programs of a small network measured on this machine's GPU, the GPU named in the fingerprint."""
    from torch import nn

    from costmodel import zoo
    from costmodel.collect import CollectConfig, collect

    if not _has_gpu():
        pytest.skip("no CUDA device")
    gpu = local_gpu(parse_target("cuda:sm_80"))
    arch = "sm_" + gpu["compute_version"].replace(".", "")
    saved = dict(zoo.NETWORKS)
    zoo.NETWORKS["mlp"] = (lambda: nn.Sequential(nn.Linear(256, 256), nn.ReLU()), (1, 256))
    try:
        counts = collect(CollectConfig(out=tmp_path / "ds", target=f"cuda:{arch}", networks=("mlp",), batches=(1,),
                                       random_per_task=8, evolutionary_per_task=0, per_iter=8, repeats=3,
                                       max_tasks=1, cache=tmp_path / "cache"))
    finally:
        zoo.NETWORKS.clear()
        zoo.NETWORKS.update(saved)
    records = [r for _, r in ProgramDataset(tmp_path / "ds").records()]
    assert counts["records"] == len(records) >= 1
    ok = [r for r in records if r["run_secs"]]
    assert ok, [r["error"] for r in records]
    assert all(len(r["run_secs"]) == 3 and 0 < np.median(r["run_secs"]) < 0.1 for r in ok)
    fingerprint, = json.loads((tmp_path / "ds" / "fingerprints.json").read_text()).values()
    assert fingerprint["gpu"] == gpu["gpu"] and fingerprint["target"]["kind"] == "cuda"
