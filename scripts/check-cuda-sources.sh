#!/usr/bin/env bash
# Compile every generated CUDA kernel of the zoo with NVRTC, without a GPU or nvcc.
#
#   scripts/check-cuda-sources.sh [--arch ARCH ...]
#
# 1. dumps every source (`DslOptimizer::cuda_sources` of each zoo optimizer, f32 and f64) to
#    target/cuda-sources with the ignored test `dump_cuda_sources` (tests/tests/it/cuda_source.rs);
# 2. compiles each with NVRTC through ctypes (scripts/nvrtc_compile.py): by default once with
#    NVRTC's default options (what cudarc's `compile_ptx` does) and once for sm_90 (NVRTC then
#    also assembles the PTX), checking both entry points and their parameter counts;
# 3. builds each source as host C++ (`c++`, with shims for the CUDA intrinsics and a one-thread
#    grid) and runs its real entry points, single- and multi-tensor, against the Rust kernel on
#    the same inputs, packed with the runtime's `pack_params`/`pack_table_entry`: the results
#    must be bit for bit equal (ignored test `host_compiled_sources_match_the_rust_kernels`).
#    Skip it with SKIP_HOST=1.
#
# NVRTC comes from PyPI (`nvidia-cuda-nvrtc-cu12`, ~100 MB); the script installs it into a venv at
# target/nvrtc-venv unless NVRTC_LIB points at a libnvrtc.so. Not part of CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${OPTIM_CUDA_DUMP_DIR:-$root/target/cuda-sources}"
rm -rf "$out"
OPTIM_CUDA_DUMP_DIR="$out" cargo test -q -p optim-tests --test it -- \
    --ignored cuda_source::dump_cuda_sources --nocapture

py=python3
if [[ -z "${NVRTC_LIB:-}" ]]; then
    venv="$root/target/nvrtc-venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q nvidia-cuda-nvrtc-cu12
    fi
    py="$venv/bin/python"
fi
"$py" "$root/scripts/nvrtc_compile.py" "$out" "$@"
if [[ -z "${SKIP_HOST:-}" ]]; then
    cargo test -q -p optim-tests --test it -- \
        --ignored cuda_source::host_compiled_sources_match_the_rust_kernels --nocapture
fi
