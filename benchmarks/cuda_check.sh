#!/usr/bin/env bash
# The CUDA check (benchmarks/cuda_check.py) in one run (< 5 minutes on one GPU). From the repository root:
#
#     bash benchmarks/cuda_check.sh [OUT_DIR]
#
# 1. the CUDA tests: tests/test_cuda.py (state on device, no host sync in step under
#    torch.cuda.set_sync_debug_mode("error")) and every test marked `cuda` (Pop-Art, tasks, the
#    fused cell, batched problems);
# 2. benchmarks/cuda_check.py: step times at 1e6/1e7/1e8 parameters vs AdamW(fused=True), the
#    GPU's matmul rate, a short meta-training run; figures to OUT_DIR/cuda_check.md and .json.
set -u -o pipefail
OUT="${1:-${OUT:-.}}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 2
status=0
timeout 80 python -m pytest -q -x -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt" || status=1
timeout 80 python -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee -a "$OUT/cuda_tests.txt" || status=1
timeout 130 python benchmarks/cuda_check.py --out "$OUT/cuda_check.md" --json "$OUT/cuda_check.json" \
    ${CUDA_CHECK_ARGS:-} 2>&1 | tee "$OUT/cuda_check.log" || status=1
exit $status
