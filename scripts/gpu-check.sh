#!/usr/bin/env bash
# GPU checks of the CUDA backend, for a machine with an NVIDIA GPU, its driver and the CUDA
# toolkit (nvcc, libnvrtc; cudarc and dfdx look for them under $CUDA_ROOT, default
# /usr/local/cuda). Not part of CI, which only type-checks `--features cuda,ci-check`.
#
#   scripts/gpu-check.sh            # all steps, then a short report
#   SKIP_BENCH=1 scripts/gpu-check.sh
#
# Steps (each logged to target/gpu-check/<step>.log; the script goes on after a failure and
# exits 1 at the end if any step failed):
#   build        cargo build with --features cuda (dfdx compiles its own kernels with nvcc)
#   sources      the CUDA sources' structure tests (tests/cuda_source.rs)
#   kernels      every stage of every zoo optimizer, f32 and f64, single- and multi-tensor, on
#                the GPU against its Rust twin (tests/cuda_gpu.rs)
#   cpu-suite    the CPU conformance suite, built with the cuda feature on (it must not change
#                the CPU path)
#   bench        AdamW bandwidth on 64 Mi elements; 2000 small tensors, one launch each versus
#                one multi-tensor launch (release build)
# A conformance run of whole optimizers on dfdx `Cuda` modules is not possible yet: there is no
# `update` for `Cuda` (see optim-runtime/src/cuda/device.rs); the report says so.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
logs="$root/target/gpu-check"
mkdir -p "$logs"
export CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
export PATH="$CUDA_ROOT/bin:$PATH"
export LD_LIBRARY_PATH="$CUDA_ROOT/lib64:${LD_LIBRARY_PATH:-}"

declare -a report=()
failed=0

step() { # name, command...
    local name="$1"
    shift
    local log="$logs/$name.log"
    local t0=$SECONDS
    echo "== $name: $*"
    if "$@" >"$log" 2>&1; then
        report+=("PASS  $name ($((SECONDS - t0)) s)")
    else
        report+=("FAIL  $name ($((SECONDS - t0)) s) -- see $log")
        failed=1
        tail -n 30 "$log"
    fi
}

echo "== machine"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
else
    echo "nvidia-smi not found: no NVIDIA driver?" >&2
fi
if command -v nvcc >/dev/null; then
    nvcc --version | tail -n 1
else
    echo "nvcc not found under \$CUDA_ROOT/bin ($CUDA_ROOT): set CUDA_ROOT" >&2
fi

step build cargo build -p optim-tests --features cuda --tests
step sources cargo test -p optim-tests --features cuda --test cuda_source
step kernels cargo test -p optim-tests --features cuda --test cuda_gpu -- --test-threads=1 --nocapture
step cpu-suite cargo test -p optim-tests --features cuda --test conformance --test runtime
if [[ -z "${SKIP_BENCH:-}" ]]; then
    step bench cargo test --release -p optim-tests --features cuda --test cuda_gpu -- \
        --ignored gpu_bench --test-threads=1 --nocapture
fi

echo
echo "== report"
for line in "${report[@]}"; do
    echo "$line"
done
grep -h "kernels match their Rust twins" "$logs/kernels.log" 2>/dev/null | sed 's/^/      /'
grep -h "^BENCH" "$logs/bench.log" 2>/dev/null | sed 's/^/      /'
echo "SKIP  dfdx Cuda conformance (no DslOptimizer::update for Cuda modules yet)"
exit "$failed"
