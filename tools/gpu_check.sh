#!/usr/bin/env bash
# GPU check, for a CUDA machine, as one prepared script: build the extension with its CUDA kernels,
# run the op tests (CPU vs CUDA agreement, extreme logits), the op benchmark on CUDA, the detector
# against torchvision (training with AMP at batch 8 and 16, inference at batch 1 and 8 in fp32 and
# AMP), a short real training run of the quickstart config on CUDA, and, on the host CPU, the
# subnormal-sensitive cases (a CPU with slow subnormals shows them there). About 8 minutes on an H200.
# Results go to $OUT (default ./output/gpu_check); each step's output is also printed.
#
# On the lent GPU machine (its own torch; our other dependencies as wheels in .whl/, see
# ../shared/device-wheels/README.md):   bash tools/gpu_check.sh
# QUICK=1 skips the quickstart training run and the host-CPU cases.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-160 | tee "$OUT/cpu.txt"
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}"
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
start=$(date +%s)
status=0
step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, logs to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(( $(date +%s) - start )) s)"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  grep -v -E "Warning|warnings.warn|^\s*$" "$OUT/$name.txt" | tail -n 40
  if [ $rc -ne 0 ]; then echo "!!! $name failed (exit $rc)"; status=1; fi
}
step build 300 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
step env 60 "$PY" -m retdet.utils.collect_env
"$PY" -c "import torch, retdet.ops as ops; assert torch.cuda.is_available() and ops.extension_has_cuda(), 'no CUDA kernels'" \
  || { echo "no CUDA kernels to check"; exit 1; }
OP_TESTS="tests/test_focal_loss.py tests/test_nms.py tests/test_subnormals.py"
ERROR_TESTS="bad_inputs or non_finite or bad_shapes"
step tests 240 "$PY" -m pytest -q -p no:cacheprovider $OP_TESTS -k "not ($ERROR_TESTS)"
# The error-message tests apart: on the lent machine (its torch 2.11 wheel, g++ 13.3) any C++ exception
# raised by an extension op, even a minimal load_inline op's TORCH_CHECK, kills the process with a
# segfault, which would hide every result after it. With our pinned torch they raise as tested.
step tests_errors 120 "$PY" -m pytest -q -p no:cacheprovider $OP_TESTS -k "$ERROR_TESTS"
step ops_cuda 120 "$PY" tools/benchmark.py --task ops --device cuda --json "$OUT/ops_cuda.json"
R50=configs/retinanet_R50_FPN_1x.py
for b in 8 16; do
  step "train_b${b}_amp" 150 "$PY" tools/benchmark.py --config $R50 --task train --device cuda --compare torchvision \
    --batch-size $b --amp --input-size 800x1216 --iters 15 --fresh-steps 3 --json "$OUT/train_b${b}_amp.json"
done
for b in 1 8; do
  for amp in "" "--amp"; do
    step "inference_b${b}${amp:+_amp}" 120 "$PY" tools/benchmark.py --config $R50 --task inference --device cuda \
      --compare torchvision --batch-size $b $amp --iters 20 --json "$OUT/inference_b${b}${amp:+_amp}.json"
  done
done
if [ "${QUICK:-0}" != 1 ]; then
  # A real training run on CUDA: its losses against the same run on CPU (the note compares them).
  step quickstart_cuda 240 "$PY" tools/train_net.py --config configs/quickstart.py train.max_iter=600 \
    train.checkpoint_period=0 dataloader.train.num_workers=6 dataloader.test.num_workers=6 \
    train.output_dir="$OUT/quickstart_cuda"
  # Host CPU: is it slow on subnormals (1 thread), and the focal cases with extreme logits there.
  step cpu_subnormal_cost 60 "$PY" - <<'PY'
import time, torch
torch.set_num_threads(1)
for name, v in (("normal 1e-20", 1e-20), ("subnormal 1e-40", 1e-40)):
    a, b = torch.full((4_000_000,), v), torch.full((4_000_000,), 0.5)
    a * b
    t = time.perf_counter()
    for _ in range(10):
        a * b
    print(f"float32 multiply, {name} inputs: {(time.perf_counter() - t) * 100:.2f} ms per 4M")
PY
  step ops_cpu 150 "$PY" tools/benchmark.py --task ops --device cpu --cases focal --json "$OUT/ops_cpu.json"
fi
echo "gpu_check: total $(( $(date +%s) - start )) s, status $status"
exit $status
