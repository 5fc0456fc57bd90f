#!/usr/bin/env bash
# GPU checks of the CUDA backend: ONE short script (about 2-5 minutes) for a machine with an
# NVIDIA GPU. Not part of CI, which type-checks `--features cuda,ci-check` and runs the GPU-free
# tests (cuda_source, cuda_emulated). See docs/gpu.md for what is done and what is left.
#
#   scripts/gpu-check.sh             # all steps, then one summary table
#   SKIP_BENCH=1 scripts/gpu-check.sh
#
# Two modes, picked automatically:
#   bundle  target/gpu-bundle/ exists (built on a machine without a GPU by
#           /work/shared/gpu/build-gpu-binaries.sh, carried with the run): no Rust toolchain is
#           needed; the carried binaries run against the machine's driver and CUDA 13 libraries
#           (the bundle's run-on-gpu.sh finds them).
#   cargo   otherwise: builds with `--features cuda` here (needs cargo, nvcc and the CUDA
#           libraries under $CUDA_ROOT, default /usr/local/cuda).
#
# Steps (each logged to target/gpu-check/<step>.log; the script goes on after a failure and
# exits 1 at the end if any step failed; every step has a time limit, STEP_TIMEOUT, default 240 s):
#   probe      nvidia-smi, driver and nvcc versions
#   smoke      (bundle) dfdx `Cuda` device, a cuBLAS matmul, nvcc-compiled dfdx kernels
#   kernels    tests/cuda_gpu.rs: every stage of every zoo optimizer, f32 and f64, single- and
#              multi-tensor, on the GPU against its Rust twin (bit for bit except within 4 ulp
#              where CUDA's exp/ln/pow differ from libm; reduction totals within 1e-9 relative)
#   reference  every shared reference trajectory (conformance.rs, conformance_2026.rs, compiled
#              into cuda_gpu) through `opt.update` on a dfdx `Cuda` model, within the case's
#              tolerance, final state checked (OPTIM_GPU=1 turns that leg on)
#   models     every zoo optimizer stepping a `Cuda` model as the CPU driver steps it on `Cpu`
#   checkpoint state saved from `Cuda` loads on `Cpu` with identical bytes, and back
#   candle     optim-candle `candle-cuda`: the shared reference cases stepping candle CUDA `Var`s
#              (target/candle-cuda-bundle/run-on-gpu.sh, built by scripts/build-candle-cuda.sh)
#   bench      (release, fixed iterations) AdamW via `opt.update` at 10 M / 100 M parameters
#              against a device-to-device copy and dfdx's `Adam`; 100 small tensors, one launch
#              each against one multi-tensor launch; Muon 4096 x 4096 against direct cuBLAS
#              Newton-Schulz; AdamW's kernel alone at 64 Mi
# Everything runs from the binaries of the bundle (cuda_smoke, cuda_gpu, cuda_gpu-release), so
# the whole script stays under 5 minutes; the summary table comes last.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
logs="$root/target/gpu-check"
bundle="${BUNDLE_DIR:-$root/target/gpu-bundle}"
limit="${STEP_TIMEOUT:-240}"
mkdir -p "$logs"
# the reference cases read their fixtures from this checkout (the binaries were built elsewhere)
# and run their `Cuda` leg
export OPTIM_FIXTURES="$root/tests/fixtures" OPTIM_GPU=1

declare -a report=()
failed=0

step() { # name, command...
    local name="$1"
    shift
    local log="$logs/$name.log"
    local t0=$SECONDS
    echo "== $name: $*"
    if timeout "$limit" "$@" >"$log" 2>&1; then
        report+=("$(printf 'PASS  %-9s %4d s' "$name" $((SECONDS - t0)))")
    else
        local rc=$?
        report+=("$(printf 'FAIL  %-9s %4d s  (exit %d%s) see %s' "$name" $((SECONDS - t0)) \
            "$rc" "$([[ $rc == 124 ]] && echo ", timed out after $limit s")" "$log")")
        failed=1
        tail -n 30 "$log"
    fi
}

echo "== probe"
{
    command -v cargo rustc nvcc nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
        echo "nvidia-smi failed: no NVIDIA driver?"
    if command -v nvcc >/dev/null; then nvcc --version | tail -n 1; fi
} 2>&1 | tee "$logs/probe.log"
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"

if [[ -x "$bundle/run-on-gpu.sh" ]]; then
    mode=bundle
    head -n 1 "$bundle/MANIFEST" 2>/dev/null
    # run-on-gpu.sh (written by build-gpu-binaries.sh) sets LD_LIBRARY_PATH (driver, CUDA 13
    # nvrtc/cublas), then runs the smoke program, cuda_gpu (kernels) and, unless SKIP_BENCH,
    # the release cuda_gpu benchmarks; one log, split into table rows below
    limit=$((limit * 2)) step bundle "$bundle/run-on-gpu.sh"
    cp "$logs/bundle.log" "$logs/kernels.log"
    cp "$logs/bundle.log" "$logs/bench.log"
    row() { # name, pattern that marks success
        if grep -q "$2" "$logs/bundle.log"; then
            report+=("$(printf 'PASS  %-9s (in bundle)' "$1")")
        else
            report+=("$(printf "FAIL  %-9s no '%s' in %s" "$1" "$2" "$logs/bundle.log")")
            failed=1
        fi
    }
    row smoke "CUDA SMOKE OK"
    row kernels-f32 "f32 kernels match their Rust twins"
    row kernels-f64 "f64 kernels match their Rust twins"
    row reference "max |err| / tolerance: dfdx Cuda path"
    row models "zoo models on Cuda match the CPU driver"
    row checkpoint "checkpoints cross between Cuda and Cpu"
    if [[ -z "${SKIP_BENCH:-}" && -x "$bundle/cuda_gpu-release" ]]; then
        row bench "^BENCH adamw n="
    fi
else
    mode=cargo
    export CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
    export PATH="$CUDA_ROOT/bin:$PATH"
    export LD_LIBRARY_PATH="$CUDA_ROOT/lib64:${LD_LIBRARY_PATH:-}"
    limit=$((limit * 3)) step build cargo build -p optim-tests --features cuda --tests
    step kernels cargo test -p optim-tests --features cuda --test cuda_gpu -- \
        --test-threads=1 --nocapture
    step emulated cargo test -p optim-tests --test it cuda_emulated::
    if [[ -z "${SKIP_BENCH:-}" ]]; then
        step bench cargo test --release -p optim-tests --features cuda --test cuda_gpu -- \
            --ignored gpu_bench --test-threads=1 --nocapture
    fi
fi

# optim-candle's `candle-cuda` feature: DSL optimizers stepping candle CUDA `Var`s (the shared
# reference cases against the trajectories and the candle CPU path). From its own bundle
# (scripts/build-candle-cuda.sh, carried as target/candle-cuda-bundle) or, in cargo mode, built
# here (needs nvcc for candle-kernels).
candle_bundle="${CANDLE_BUNDLE_DIR:-$root/target/candle-cuda-bundle}"
if [[ -x "$candle_bundle/run-on-gpu.sh" ]]; then
    step candle "$candle_bundle/run-on-gpu.sh"
elif [[ $mode == cargo ]]; then
    limit=$((limit * 3)) step candle cargo test -p optim-candle --features candle-cuda --test it -- \
        cuda:: --include-ignored --test-threads=1
else
    report+=("$(printf 'SKIP  %-9s no %s (scripts/build-candle-cuda.sh builds it)' candle "$candle_bundle")")
fi

echo
echo "== summary ($mode mode; GPU: ${gpu:-none found})"
printf '%s\n' "${report[@]}"
{
    grep -h "kernels match their Rust twins\|zoo models on Cuda match\|checkpoints cross between" \
        "$logs/kernels.log" 2>/dev/null
    echo "reference cases through Cuda: $(grep -c 'tolerance: dfdx Cuda path' "$logs/kernels.log" 2>/dev/null)," \
        "worst max |err|/tolerance $(grep -o 'dfdx Cuda path [0-9.]*' "$logs/kernels.log" 2>/dev/null |
            awk '{print $4}' | sort -g | tail -n 1)"
    grep -h "^BENCH" "$logs/bench.log" 2>/dev/null
} | sed 's/^/      /'
exit "$failed"
