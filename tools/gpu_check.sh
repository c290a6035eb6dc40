#!/usr/bin/env bash
# GPU check for the compiled ops, for a CUDA machine: build the extension with its CUDA kernels,
# run the op tests (CUDA tests included: CPU vs CUDA agreement), then the op and detector benchmarks on CUDA.
# Ends well within 5 minutes on an H100. Results go to $OUT (default ./output/gpu_check).
#
# On the lent GPU machine (its own torch; our other dependencies as wheels in .whl/, see
# ../shared/device-wheels/README.md):   bash tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}"
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
start=$(date +%s)
"$PY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -5 | tee "$OUT/build.txt"
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/build.txt"
"$PY" -m retdet.utils.collect_env | tee "$OUT/env.txt"
"$PY" - <<'PY'
import torch, retdet.ops as ops
assert torch.cuda.is_available() and ops.extension_has_cuda(), "no CUDA kernels to check"
PY
status=0
"$PY" -m pytest -q tests/test_focal_loss.py tests/test_nms.py 2>&1 | tee "$OUT/tests.txt" | tail -15 || status=1
"$PY" tools/benchmark.py --task ops --device cuda --json "$OUT/ops_cuda.json" 2>&1 | tee "$OUT/bench_cuda.txt" || status=1
# The detector against torchvision (R50-FPN, same run): inference at batch 1 and 8, fp32 and AMP;
# training at batch 8 with AMP.
R50=configs/retinanet_R50_FPN_1x.py
for b in 1 8; do
  for amp in "" "--amp"; do
    "$PY" tools/benchmark.py --config $R50 --task inference --device cuda --compare torchvision --batch-size $b $amp \
      --iters 20 --json "$OUT/inference_b${b}${amp:+_amp}.json" 2>&1 | tee -a "$OUT/bench_model.txt" || status=1
  done
done
"$PY" tools/benchmark.py --config $R50 --task train --device cuda --compare torchvision --batch-size 8 --amp \
  --input-size 800x1216 --iters 20 --json "$OUT/train_b8_amp.json" 2>&1 | tee -a "$OUT/bench_model.txt" || status=1
echo "gpu_check: total $(( $(date +%s) - start )) s, status $status"
exit $status
