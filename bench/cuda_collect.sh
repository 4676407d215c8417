#!/usr/bin/env bash
# Check the dataset collector on a machine with an NVIDIA GPU: the CUDA tests, then a time-boxed collection
# for this GPU, stopped the way a user stops it (SIGINT: the batch in flight is saved), then its stats.
# Needs TVM with CUDA (apache-tvm), nvcc, torch and the project's other dependencies importable, and the project
# installed (`pip install --no-deps -e .`), so that `kdcompile costmodel` finds its commands' entry point.
# Usage: bench/cuda_collect.sh OUT_DIR [SECONDS] [NETWORKS]   (SKIP_TESTS=1: the collection alone)
set -u
out=${1:?OUT_DIR}; seconds=${2:-180}; networks=${3:-mnist_student,resnet18}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 KDCOMPILE_QUIET=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 - <<'PY' | tee -a "$out/gpu.txt"
import tvm
from kdcompile.tvm_layer.target import local_gpu, parse_target
print("tvm", tvm.__version__, "cuda device:", local_gpu(parse_target("cuda:sm_80")))
PY
arch=sm_$(python3 -c "import tvm; print(tvm.cuda(0).compute_version.replace('.', ''))")
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_costmodel_scan.py 2>&1 | tee "$out/pytest.txt"
start=$(date +%s)
timeout --preserve-status -k 60 -s INT "$seconds" python3 -m kdcompile.cli costmodel collect --target "cuda:$arch" --networks "$networks" \
    --data "$out/dataset" > "$out/collect.log" 2>&1
echo "collect: exit $? after $(( $(date +%s) - start )) s (130: stopped by SIGINT once its batch was saved)"
tail -n 3 "$out/collect.log"
python3 -m kdcompile.cli costmodel stats "$out/dataset" 2>&1 | tee "$out/stats.txt"
