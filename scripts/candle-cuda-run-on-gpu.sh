#!/usr/bin/env bash
# Runs optim-candle's CUDA tests from a bundle built without a GPU by scripts/build-candle-cuda.sh
# (copied there as run-on-gpu.sh next to `candle_it`, the stripped `optim-candle --test it`
# binary built with `--features candle-cuda`). Needs the NVIDIA driver (libcuda.so.1, >= 580 for
# the PTX ISA of CUDA 13.0) and CUDA 13 libnvrtc.so.13, libcublas.so.13 and libcurand.so.10, which
# the binary links (cudarc 0.19 `dynamic-linking`, as candle-core selects it): found via CUDA13_LIB, else the loader's path, /usr/local/cuda/lib64 or a pip
# site-packages nvidia/cu13/lib (PyTorch's cu13 wheels). libcudart.so.13 (linked by
# candle-kernels) is carried in lib/.
#   target/candle-cuda-bundle/run-on-gpu.sh        # prints CANDLE CUDA OK when every test passed
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ -n "${CUDA13_LIB:-}" ]]; then
    export LD_LIBRARY_PATH="$CUDA13_LIB:$LD_LIBRARY_PATH"
else
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(python3 -c 'import site, glob; [print(p) for d in site.getsitepackages() + [site.getusersitepackages()] for p in glob.glob(d + "/nvidia/cu13/lib")]' 2>/dev/null) \
        $(find / -xdev -path '*/nvidia/cu13/lib/libnvrtc.so.13' -printf '%h\n' 2>/dev/null | head -n 1); do
        if [[ -f "$d/libnvrtc.so.13" && -f "$d/libcublas.so.13" ]]; then
            export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
            break
        fi
    done
fi
# the reference trajectories of this checkout (the bundle lies in <checkout>/target/...)
export OPTIM_FIXTURES="${OPTIM_FIXTURES:-$here/../../tests/fixtures}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "OPTIM_FIXTURES=$OPTIM_FIXTURES"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
exe="$here/candle_it"
if [[ -f "$here/candle_it.xz" ]]; then # unpacked under TMPDIR
    exe="${TMPDIR:-/tmp}/optim-candle-cuda/candle_it"
    mkdir -p "$(dirname "$exe")"
    xz -dc "$here/candle_it.xz" >"$exe" 2>/dev/null ||
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$here/candle_it.xz" "$exe"
    chmod +x "$exe"
fi
ldd "$exe" | grep -E 'cuda|nvrtc|cublas|curand|not found'
cd "$here" || exit 1
# every test of module `cuda` (device selection, then the GPU tests), one thread: one device
if "$exe" cuda:: --include-ignored --test-threads=1 --nocapture; then
    echo "CANDLE CUDA OK"
else
    echo "CANDLE CUDA FAILED"
    exit 1
fi
