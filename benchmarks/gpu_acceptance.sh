#!/usr/bin/env bash
# GPU acceptance (about 5-8 minutes on one GPU): every kernel against the float64 oracle on CUDA in
# float32 and bfloat16, compute-sanitizer's racecheck and synccheck on small shapes, the scan
# against flash-linear-attention (when installed) and the cache ops' share of a layer at
# B=2,T=16384,H=16 and B=8,T=2048,H=16 (K=V=128). Run from anywhere:
#
#     bash benchmarks/gpu_acceptance.sh 2>&1 | tee gpu_acceptance.log
#
# Exits 0 when every step passed, 1 otherwise, 0 with a message on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
export HOLA_CACHE_DIR="${HOLA_CACHE_DIR:-$HOME/.cache/hola-gpu-acceptance}"
if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_acceptance: no CUDA GPU here; nothing to accept (run it on a machine with one)."
    exit 0
fi
failed=0
step() {  # step NAME COMMAND...: run, time, remember a failure
    local name=$1; shift
    echo; echo "=== $name: $*"
    local t0=$SECONDS
    "$@"
    local rc=$?
    echo "=== $name: exit $rc in $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || failed=$((failed + 1))
}
step env python3 -m tools.cli env
step "check float32" python3 -m tools.cli check --device cuda --dtype float32 --no-nvcc
step "check bfloat16" python3 -m tools.cli check --device cuda --dtype bfloat16 --no-nvcc
# Compiled once outside the sanitizer (its runs are 10-100x slower), then checked under it.
step "small calls" python3 benchmarks/gpu_small_calls.py
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SANITIZER" ]; then
    for tool in racecheck synccheck; do
        step "$tool" "$SANITIZER" --tool "$tool" --error-exitcode 1 python3 benchmarks/gpu_small_calls.py
    done
else
    echo "=== compute-sanitizer not found: racecheck and synccheck NOT run"; failed=$((failed + 1))
fi
for shape in "--B 2 --T 16384 --H 16" "--B 8 --T 2048 --H 16"; do
    # shellcheck disable=SC2086  # the shape is several flags
    step "scan vs fla ($shape)" python3 benchmarks/gpu_scan_vs_fla.py $shape --K 128 --V 128 --dtype bfloat16
    # shellcheck disable=SC2086
    step "layer ($shape)" python3 benchmarks/gpu_layer.py $shape --dtype bfloat16
done
echo
echo "gpu_acceptance: $([ $failed -eq 0 ] && echo "all steps passed" || echo "$failed step(s) FAILED") in $SECONDS s"
[ $failed -eq 0 ]
