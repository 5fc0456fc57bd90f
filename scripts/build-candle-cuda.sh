#!/usr/bin/env bash
# Builds optim-candle's `candle-cuda` feature (DSL optimizers stepping candle CUDA `Var`s) on a
# machine WITHOUT a GPU, nvcc or CUDA libraries, and bundles its GPU test binary for a GPU machine.
#
#   scripts/build-candle-cuda.sh              # toolkit, build, GPU-free tests, bundle
#   SKIP_LOCAL=1 scripts/build-candle-cuda.sh # do not run the GPU-free tests here
#   ONLY_CHECK=1 scripts/build-candle-cuda.sh # toolkit + `cargo clippy` of the feature, no tests
#
# Why nvcc: candle-core's `cuda` feature pulls candle-kernels, whose build script compiles its
# kernels with nvcc (PTX, plus a static library of MoE/GGUF kernels linked against libcudart).
# cudarc 0.19 comes with candle's `dynamic-linking`: the binary links libcuda, libnvrtc, cuBLAS(Lt)
# and cuRAND, here link-time stubs (step 1b), on the GPU machine the real ones.
#
# Steps:
#   1 toolkit  pip-installs the pinned CUDA 13.0 wheels (as /work/shared/gpu/build-gpu-binaries.sh
#              does: `--no-deps`, 13.0 so a 580 driver can load the PTX) into a venv under
#              target/cuda-tools: nvcc, cicc (nvvm), crt and cccl headers, the runtime (cudart,
#              linked by candle-kernels) and NVRTC (linked; the GPU-free tests compile with it). No
#              cuBLAS/cuRAND wheels: link-time stubs stand in for them (1b).
#   2 build    `cargo test -p optim-candle --features candle-cuda --no-run` for the test target
#              `it` (CUDA_COMPUTE_CAP=90: H100/H200; CUDARC_CUDA_VERSION=13000).
#   3 local    the GPU-free tests of module `cuda` of that binary here: every zoo kernel tested
#              compiles with NVRTC 13.0 (the wheel's) through cudarc 0.19, and with the stub
#              libcuda `cuda_device` is a clear error (CUDA_ERROR_NO_DEVICE); `--list` of the rest.
#   4 bundle   target/candle-cuda-bundle/: the stripped test binary (candle_it.xz), lib/libcudart.so.13
#              and run-on-gpu.sh (scripts/candle-cuda-run-on-gpu.sh); carry target/candle-cuda-bundle
#              to the GPU machine and run target/candle-cuda-bundle/run-on-gpu.sh there (or
#              scripts/gpu-check.sh, which runs it as its `candle` step).
#
# Env: CARGO_TARGET_DIR (default target), CUDA_COMPUTE_CAP (default 90), CUDA_TOOLS_DIR (default
# target/cuda-tools), BUNDLE_DIR (default target/candle-cuda-bundle).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
tools="${CUDA_TOOLS_DIR:-$root/target/cuda-tools}"
bundle="${BUNDLE_DIR:-$root/target/candle-cuda-bundle}"
cap="${CUDA_COMPUTE_CAP:-90}"
venv="$tools/venv"
mkdir -p "$tools"
t_start=$SECONDS
declare -a times=()
mark() { times+=("$1: $((SECONDS - $2)) s"); echo "== [$1 done in $((SECONDS - $2)) s]"; }

# ---------------------------------------------------------------- 1 toolkit (PyPI wheels)
t0=$SECONDS
echo "== 1 toolkit: CUDA 13.0 wheels into $venv"
wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
)
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --no-deps "${wheels[@]}"
cuda="$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
test -f "$cuda/include/cuda.h" && test -x "$cuda/bin/nvcc"
"$cuda/bin/nvcc" --version | tail -n 2
mark toolkit $t0

# ---------------------------------------------------------------- 1b link stubs
# candle-core's `cuda` selects cudarc 0.19's `dynamic-linking`: the binary links libcuda,
# libnvrtc, libcublas, libcublasLt and libcurand (and candle-kernels libcudart). NVRTC and
# cudart come from the wheels; the others are link-time stubs with the real sonames, generated
# from cudarc 0.19's declarations (every function returns 100, CUDA_ERROR_NO_DEVICE); the GPU
# machine's real libraries replace them at run time. They also serve the GPU-free tests here.
t0=$SECONDS
cargo fetch -q
cudarc_dir="$(cargo metadata -q --format-version 1 --features optim-candle/candle-cuda | "$venv/bin/python" -c '
import json, os, sys
m = json.load(sys.stdin)
p = [p for p in m["packages"] if p["name"] == "cudarc" and p["version"].startswith("0.19.")]
print(os.path.dirname(p[0]["manifest_path"]))')"
mkdir -p "$tools/link19" "$tools/runstub19"
stub() { # library name, soname, cudarc sys module, symbol prefix
    local c="$tools/lib$1_stub.c"
    {
        echo "/* Link-time stub of $2 (generated from cudarc 0.19 src/$3/sys/mod.rs). */"
        if [[ $1 == cuda ]]; then
            echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = "libcuda stub: no CUDA driver"; return 0; }'
            echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE (libcuda stub)"; return 0; }'
        fi
        grep -oE "pub (unsafe )?fn $4[A-Za-z0-9_]+" "$cudarc_dir/src/$3/sys/mod.rs" | awk '{print $NF}' |
            sort -u | grep -vxE 'cuGetErrorString|cuGetErrorName' |
            sed 's/.*/int &(void) { return 100; }/'
    } >"$c"
    gcc -shared -fPIC -O1 -Wl,-soname,"$2" -o "$tools/link19/lib$1.so" "$c"
    ln -sf "../link19/lib$1.so" "$tools/runstub19/$2"
    echo "stub $2: $(grep -c '^int ' "$c") functions"
}
stub cuda libcuda.so.1 driver cu
stub cublas libcublas.so.13 cublas cublas
stub cublasLt libcublasLt.so.13 cublaslt cublasLt
stub curand libcurand.so.10 curand curand
ln -sf "$cuda/lib/libnvrtc.so.13" "$tools/link19/libnvrtc.so"
ln -sf "$cuda/lib/libcudart.so.13" "$tools/link19/libcudart.so"
mark stubs $t0

# ---------------------------------------------------------------- 2 build
export CUDA_ROOT="$cuda" CUDA_HOME="$cuda" CUDA_PATH="$cuda" NVCC="$cuda/bin/nvcc"
export CUDA_COMPUTE_CAP="$cap" CUDARC_CUDA_VERSION=13000
export PATH="$cuda/bin:$PATH"
# (no RUSTFLAGS: changing them would rebuild every dependency) the C linker finds cudart here
export LIBRARY_PATH="$tools/link19${LIBRARY_PATH:+:$LIBRARY_PATH}"
t0=$SECONDS
if [[ -n "${ONLY_CHECK:-}" ]]; then
    echo "== 2 clippy: -p optim-candle --features candle-cuda --all-targets"
    nice -n 10 cargo clippy -p optim-candle --features candle-cuda --all-targets -- -D warnings
    mark clippy $t0
    printf '%s\n' "${times[@]}" "total: $((SECONDS - t_start)) s"
    exit 0
fi
echo "== 2 build (debug): optim-candle test target it, --features candle-cuda, sm_$cap"
nice -n 10 cargo test -p optim-candle --features candle-cuda --test it --no-run \
    --message-format=json-render-diagnostics |
    "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])' >"$tools/exe-candle-it.txt"
exe="$(tail -n 1 "$tools/exe-candle-it.txt")"
echo "test binary: $exe"
mark build $t0

# ---------------------------------------------------------------- 3 local (GPU-free) checks
if [[ -z "${SKIP_LOCAL:-}" ]]; then
    t0=$SECONDS
    echo "== 3 local: GPU-free tests of the candle-cuda build"
    (
        cd "$root/optim-candle" # as cargo test would
        export LD_LIBRARY_PATH="$tools/runstub19:$cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        "$exe" -q cuda::
        "$exe" --list --ignored | grep -c ': test' | sed 's/^/ignored (GPU) tests: /'
    )
    mark local $t0
fi

# ---------------------------------------------------------------- 4 bundle
t0=$SECONDS
echo "== 4 bundle: $bundle"
rm -rf "$bundle"
mkdir -p "$bundle"
objcopy --strip-debug "$exe" "$bundle/candle_it"
# ~62 MB stripped of debug info, ~9 MB as xz: small enough to carry next to target/gpu-bundle
xz -T2 -3 -f "$bundle/candle_it"
cp "$root/scripts/candle-cuda-run-on-gpu.sh" "$bundle/run-on-gpu.sh"
mkdir -p "$bundle/lib"
cp -L "$cuda/lib/libcudart.so.13" "$bundle/lib/" # DT_NEEDED of the binary (candle-kernels)
chmod +x "$bundle/run-on-gpu.sh"
{
    echo "built $(date -u +%FT%TZ) from $(git -C "$root" rev-parse --short HEAD) for sm_$cap with $("$cuda/bin/nvcc" --version | tail -n 1)"
    echo "candle_it.xz $(stat -c %s "$bundle/candle_it.xz") bytes (xz of the debug-stripped binary); NEEDED: $(readelf -d "$exe" | grep NEEDED | grep -oE '\[[^]]*\]' | tr -d '[]' | tr '\n' ' ')"
    echo "total: $(du -sb "$bundle" | cut -f1) bytes"
} >"$bundle/MANIFEST"
cat "$bundle/MANIFEST"
mark bundle $t0

echo "== times"
printf '%s\n' "${times[@]}" "total: $((SECONDS - t_start)) s"
echo "carry: ${bundle#"$root"/}   then on the GPU machine: ${bundle#"$root"/}/run-on-gpu.sh"
