//! The CUDA twins of the generated kernels (`DslOptimizer::cuda_sources`), checked without a
//! GPU: every planned stage of every zoo optimizer has a source; its entry points take the
//! packed `Params` pointer plus the right number of pointers; its scalar, stream and reduction
//! counts are those of the Rust kernel the same rule hands the executor (`KernelCall`); the
//! sources are plausible C (balanced delimiters, one `typedef`, `extern "C" __global__`).
//!
//! `dump_cuda_sources` (ignored) writes every source to a directory, for
//! `scripts/check-cuda-sources.sh`, which compiles them with NVRTC (no GPU needed). On a GPU,
//! `tests/cuda_gpu.rs` (feature `cuda`) runs each kernel against its Rust twin.

use optim_dsl::__private::StagedJob;
use optim_dsl::zoo::*;
// issue 11 (branch ns-coeffs)
use optim_dsl::{
    CudaKernelSource, DslOptimizer, Field, Float, OptimizerConfig, ParamInfo, ParamState, Plan,
    RuleBody,
};
use std::collections::HashSet;

use crate::cuda_common;

/// What the tests need of one zoo optimizer, independent of its type.
struct Zoo {
    name: &'static str,
    sources: &'static [CudaKernelSource],
    rule_count: usize,
    /// `(kernel scalars, streams, reductions, stages)` as the Rust path builds them, for
    /// record `i` of `sources`.
    rust_shape: fn(&CudaKernelSource) -> (usize, usize, usize, usize),
    default_plan: fn() -> Plan,
}

/// `prepare` the record's rule under the record's flags for a 8 x 6 parameter and return the
/// shape of the record's stage as the Rust executor would get it.
fn rust_shape<E: Float, O: DslOptimizer<E>>(k: &CudaKernelSource) -> (usize, usize, usize, usize) {
    let mut cfg = O::Config::default();
    for &(flag, value) in k.flags {
        cfg.set_field(flag, Field::Flag(value))
            .unwrap_or_else(|e| panic!("{}: flag {flag}: {e}", k.name));
    }
    let values = cfg.values(1).unwrap();
    let shape = [8usize, 6];
    let numel = 48;
    let mut ps = ParamState::new(k.rule, numel);
    let mut p: Vec<E> = (0..numel)
        .map(|i| E::of_f64(0.1 + i as f64 * 0.01))
        .collect();
    let g: Vec<E> = (0..numel)
        .map(|i| E::of_f64(0.05 - i as f64 * 0.002))
        .collect();
    let info = ParamInfo::new("layer.weight", &shape);
    let mut job = O::prepare(&values, k.rule, &mut ps, info, &mut p, &g);
    let stages = job.stages();
    let call = job.kernel(k.stage, &[0.0; 4]);
    (call.scalars.len(), call.bufs.len(), call.reductions, stages)
}

macro_rules! zoo {
    ($($t:ident),* $(,)?) => {
        vec![$(Zoo {
            name: stringify!($t),
            sources: <$t<f32> as DslOptimizer<f32>>::cuda_sources(),
            rule_count: <$t<f32> as DslOptimizer<f32>>::rule_count(),
            rust_shape: rust_shape::<f32, $t<f32>>,
            default_plan: || $t::<f32>::default().explain(),
        }),*]
    };
}

fn zoo() -> Vec<Zoo> {
    optim_tests::for_each_zoo!(zoo)
}

/// The parameter list of `extern "C" __global__ void name(...)` in `src`, split at commas.
fn signature(src: &str, name: &str) -> Vec<String> {
    let head = format!("extern \"C\" __global__ void {name}(");
    let start = src
        .find(&head)
        .unwrap_or_else(|| panic!("no entry point {name}:\n{src}"))
        + head.len();
    let end = start + src[start..].find(')').unwrap();
    src[start..end]
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn assert_balanced(src: &str, name: &str) {
    for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
        let mut depth = 0i64;
        for c in src.chars() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
            }
            assert!(depth >= 0, "{name}: unbalanced {open}{close}");
        }
        assert_eq!(depth, 0, "{name}: unbalanced {open}{close}");
    }
}

#[test]
fn every_planned_kernel_has_a_cuda_source() {
    let mut total = 0;
    for z in zoo() {
        assert!(!z.sources.is_empty(), "{} has no CUDA sources", z.name);
        total += z.sources.len();
        // one record per (fused rule, variant, stage), each stage of each variant present
        let mut seen = HashSet::new();
        for k in z.sources {
            assert_eq!(k.optimizer, z.name);
            assert!(k.rule < z.rule_count, "{}", k.name);
            assert!(k.variant < 1 << k.flags.len(), "{}", k.name);
            assert!(k.stage < k.stages, "{}", k.name);
            assert_eq!(k.writes_param, k.stage + 1 == k.stages, "{}", k.name);
            assert!(
                seen.insert((k.rule, k.variant, k.stage)),
                "{} twice",
                k.name
            );
            for (j, &(_, value)) in k.flags.iter().enumerate() {
                assert_eq!(value, k.variant >> j & 1 == 1, "{}: flag bits", k.name);
            }
        }
        for k in z.sources {
            for s in 0..k.stages {
                assert!(
                    seen.contains(&(k.rule, k.variant, s)),
                    "{}: stage {s} missing",
                    k.name
                );
            }
        }
        // the default flags' kernel count matches `explain`
        for (ri, rule) in (z.default_plan)().rules.iter().enumerate() {
            if let RuleBody::Fused { kernels, .. } = &rule.body {
                let stages = z
                    .sources
                    .iter()
                    .filter(|k| k.rule == ri)
                    .filter(|k| {
                        k.flags
                            .iter()
                            .all(|&(flag, v)| default_flag(z.name, flag) == v)
                    })
                    .count();
                assert_eq!(stages, kernels.len(), "{} rule {ri}", z.name);
            }
        }
    }
    assert!(total >= 18, "only {total} kernels");
}

/// The default value of flag `flag` of zoo optimizer `name` (through its config's fields).
fn default_flag(name: &str, flag: &str) -> bool {
    macro_rules! fields {
        ($($t:ident),* $(,)?) => {
            match name {
                $(stringify!($t) => <$t<f32> as DslOptimizer<f32>>::Config::default().fields(),)*
                _ => unreachable!(),
            }
        };
    }
    let fields = optim_tests::for_each_zoo!(fields);
    fields
        .into_iter()
        .find_map(|(n, f)| match f {
            Field::Flag(b) if n == flag => Some(b),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} has no flag {flag}"))
}

#[test]
fn argument_packing_matches_the_rust_kernel() {
    for z in zoo() {
        for k in z.sources {
            let (scalars, bufs, reductions, stages) = (z.rust_shape)(k);
            assert_eq!(scalars, k.n_scalars, "{}: scalars", k.name);
            assert_eq!(bufs, k.n_bufs, "{}: streams", k.name);
            assert_eq!(reductions, k.n_reductions, "{}: reductions", k.name);
            assert_eq!(stages, k.stages, "{}: stages", k.name);
            assert!(
                k.n_bufs <= optim_dsl::cuda::MAX_BUFS,
                "{}: {} streams cannot be launched",
                k.name,
                k.n_bufs
            );
        }
    }
}

#[test]
fn signatures_take_the_params_struct_and_one_pointer_per_stream() {
    for z in zoo() {
        let mut names = HashSet::new();
        for k in z.sources {
            assert!(names.insert(k.name), "{}: name used twice", k.name);
            assert!(
                k.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{}",
                k.name
            );
            assert_eq!(k.multi_name, format!("{}_multi", k.name));
            for (src, ty) in [(k.source_f32, "float"), (k.source_f64, "double")] {
                assert_eq!(src.matches("typedef ").count(), 1, "{}", k.name);
                assert!(src.contains(&format!("typedef {ty} T;")), "{}", k.name);
                assert_eq!(src.matches("extern \"C\" __global__").count(), 2);
                assert_balanced(src, k.name);
                assert!(src.contains(&format!(
                    "struct Params {{ unsigned long long n; T s[{}]; }};",
                    k.n_scalars.max(1)
                )));
                assert!(src.contains(&format!("T* b[{}];", k.n_bufs.max(1))));
                let args = signature(src, k.name);
                assert_eq!(args.len(), k.n_args(), "{}: {args:?}", k.name);
                assert!(args[0].starts_with("const Params*"), "{args:?}");
                assert!(args[1].starts_with("T*") && args[1].ends_with(" p"));
                assert!(args[2].starts_with("const T*") && args[2].ends_with(" g"));
                for j in 0..k.n_bufs {
                    assert!(
                        args[3 + j].starts_with("T*") && args[3 + j].ends_with(&format!(" b{j}")),
                        "{args:?}"
                    );
                }
                assert!(args.last().unwrap().starts_with("double*"));
                let multi = signature(src, k.multi_name);
                assert_eq!(multi.len(), 3, "{multi:?}");
                assert!(multi[1].starts_with("const TensorEntry*"));
                // reductions write per-block partials, once per reduction and entry point
                assert_eq!(
                    src.matches("dsl_block_sum(acc[").count(),
                    2 * k.n_reductions,
                    "{}",
                    k.name
                );
                assert_eq!(
                    src.matches("const T s").count() + src.matches("const bool s").count(),
                    k.n_scalars,
                    "{}",
                    k.name
                );
                // the parameter is written in the last stage only
                assert_eq!(src.contains("p[i] = "), k.writes_param, "{}", k.name);
                assert!(!src.contains("--use_fast_math") || src.contains("Do not"));
            }
            assert_eq!(
                k.source_f32
                    .replace("typedef float T;", "typedef double T;"),
                k.source_f64,
                "{}: f32 and f64 differ beyond T",
                k.name
            );
        }
    }
}

#[test]
fn adamw_source_mirrors_the_rust_loop() {
    let ks = <AdamW<f32> as DslOptimizer<f32>>::cuda_sources();
    // amsgrad x maximize, one stage each
    assert_eq!(ks.len(), 4);
    let k = ks.iter().find(|k| k.flags.iter().all(|(_, v)| !v)).unwrap();
    let src = k.source_f32;
    // reads param, grad, m, v once and writes param, m, v once
    assert_eq!(k.n_bufs, 2);
    assert_eq!(src.matches("= p[i];").count(), 1, "{src}");
    assert_eq!(src.matches("= g[i];").count(), 1, "{src}");
    assert_eq!(src.matches("= b0[i];").count(), 1, "{src}");
    assert_eq!(src.matches("= b1[i];").count(), 1, "{src}");
    assert_eq!(src.matches("b0[i] = ").count(), 1, "{src}");
    assert_eq!(src.matches("b1[i] = ").count(), 1, "{src}");
    assert_eq!(src.matches("p[i] = ").count(), 1, "{src}");
    let body = &src[src.find("DSL_FN void dsl_stage").unwrap()..];
    assert!(body.contains("dsl_sqrt("), "{src}");
    assert!(
        !body.contains("dsl_pow("),
        "bias corrections are host scalars:\n{src}"
    );
    // no bare arithmetic operators that CUDA could contract into an FMA
    for line in body.lines().filter(|l| l.contains("const T x")) {
        let rhs = &line[line.find('=').unwrap() + 1..];
        assert!(
            !rhs.contains(" * ") && !rhs.contains(" + "),
            "contractible arithmetic: {line}"
        );
    }
}

#[test]
fn reductions_and_barriers_split_into_stages() {
    // Lamb: the trust ratio needs two per-tensor norms, so the update is a second loop
    let ks = <Lamb<f32> as DslOptimizer<f32>>::cuda_sources();
    assert!(ks.iter().any(|k| k.n_reductions > 0), "{ks:#?}");
    assert!(ks.iter().any(|k| k.stages > 1));
    // Muon: momentum, Newton-Schulz barrier, update
    let ks = <Muon<f32> as DslOptimizer<f32>>::cuda_sources();
    assert!(ks.iter().any(|k| k.stages > 1), "{ks:#?}");
}

/// Writes every source to `$OPTIM_CUDA_DUMP_DIR` (default `target/cuda-sources`) as
/// `<name>.f32.cu` / `<name>.f64.cu`, plus `manifest.tsv` (file, entry point, multi entry
/// point, argument count). Run by `scripts/check-cuda-sources.sh`.
#[test]
#[ignore = "writes files; run by scripts/check-cuda-sources.sh"]
fn dump_cuda_sources() {
    let dir = std::env::var("OPTIM_CUDA_DUMP_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/cuda-sources").to_string()
    });
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = String::from("file\tname\tmulti_name\tn_args\n");
    let mut n = 0;
    for z in zoo() {
        for k in z.sources {
            for (src, ty) in [(k.source_f32, "f32"), (k.source_f64, "f64")] {
                let file = format!("{}.{ty}.cu", k.name);
                std::fs::write(dir.join(&file), src).unwrap();
                manifest.push_str(&format!(
                    "{file}\t{}\t{}\t{}\n",
                    k.name,
                    k.multi_name,
                    k.n_args()
                ));
                n += 1;
            }
        }
    }
    std::fs::write(dir.join("manifest.tsv"), manifest).unwrap();
    println!("wrote {n} sources to {}", dir.display());
}

/// Compiler shims that let a generated CUDA source build as host C++: qualifiers vanish, the
/// `_rn` intrinsics are plain IEEE operations (compiled with `-ffp-contract=off`), and the grid
/// is one thread (`__shfl_down_sync` adds nothing), so the real entry points run the whole loop
/// sequentially.
const HOST_SHIM: &str = r#"#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
struct dsl_dim3 { unsigned x, y, z; };
static dsl_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double x) { return sqrt(x); }
static inline double __shfl_down_sync(unsigned, double, int) { return 0.0; }
static inline void __syncthreads() {}
"#;

/// `main` for a host build of record `k`: reads `mode, tensors, params bytes, table bytes, data
/// bytes` and those three blobs from stdin (table pointers are offsets into the data blob),
/// runs the single-tensor entry point (mode 0) or the multi-tensor one over `blockIdx.y`
/// (mode 1), and writes the data blob and the reduction partials to stdout.
fn host_driver(k: &CudaKernelSource) -> String {
    let nb = k.n_bufs.max(1);
    let bargs: String = (0..k.n_bufs).map(|j| format!(", e[0].b[{j}]")).collect();
    format!(
        r#"
static void* dsl_read(size_t n) {{
    void* p = malloc(n ? n : 1);
    if (n && fread(p, 1, n, stdin) != n) exit(2);
    return p;
}}
int main() {{
    unsigned long long h[5];
    if (fread(h, 8, 5, stdin) != 5) return 2;
    const unsigned long long mode = h[0], nt = h[1];
    char* prm = (char*)dsl_read(h[2]);
    TensorEntry* e = (TensorEntry*)dsl_read(h[3]);
    char* blob = (char*)dsl_read(h[4]);
    for (unsigned long long t = 0; t < nt; ++t) {{
        e[t].p = (T*)(blob + (size_t)e[t].p);
        e[t].g = (const T*)(blob + (size_t)e[t].g);
        for (int j = 0; j < {nb}; ++j) e[t].b[j] = (T*)(blob + (size_t)e[t].b[j]);
    }}
    const size_t nred = {nr} * nt;
    double* red = (double*)calloc(nred ? nred : 1, sizeof(double));
    if (mode == 0) {{
        {name}((const Params*)prm, e[0].p, e[0].g{bargs}, red);
    }} else {{
        gridDim.y = (unsigned)nt;
        for (unsigned long long t = 0; t < nt; ++t) {{
            blockIdx.y = (unsigned)t;
            {multi}((const Params*)prm, e, red);
        }}
    }}
    fwrite(blob, 1, h[4], stdout);
    fwrite(red, sizeof(double), nred, stdout);
    return 0;
}}
"#,
        nr = k.n_reductions,
        name = k.name,
        multi = k.multi_name,
    )
}

fn put<E: Float>(out: &mut Vec<u8>, xs: &[E]) {
    for &x in xs {
        if E::BYTES == 4 {
            out.extend_from_slice(&(x.as_f64() as f32).to_le_bytes());
        } else {
            out.extend_from_slice(&x.as_f64().to_le_bytes());
        }
    }
    out.resize(out.len().div_ceil(8) * 8, 0);
}

fn get<E: Float>(bytes: &[u8], at: &mut usize, n: usize) -> Vec<E> {
    let v = (0..n)
        .map(|i| {
            let o = *at + i * E::BYTES;
            if E::BYTES == 4 {
                E::of_f64(f64::from(f32::from_le_bytes(
                    bytes[o..o + 4].try_into().unwrap(),
                )))
            } else {
                E::of_f64(f64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()))
            }
        })
        .collect();
    *at = (*at + n * E::BYTES).div_ceil(8) * 8;
    v
}

/// Runs the host build `exe` of `k` on `xs` (one tensor in mode 0, a table in mode 1) with the
/// runtime's own `Params`/`TensorEntry` packing; returns each tensor's outputs.
fn run_host<E: Float>(
    exe: &std::path::Path,
    k: &CudaKernelSource,
    scalars: &[E],
    xs: &[cuda_common::Inputs<E>],
    multi: bool,
) -> Vec<cuda_common::Outputs<E>> {
    use optim_dsl::cuda::{pack_params, pack_table_entry};
    use std::io::Write;
    let (mut prm, mut tab, mut blob) = (Vec::new(), Vec::new(), Vec::new());
    for (t, x) in xs.iter().enumerate() {
        pack_params(x.param.len(), scalars, k.n_scalars, &mut prm);
        let p = blob.len() as u64;
        put(&mut blob, &x.param);
        let g = blob.len() as u64;
        put(&mut blob, &x.grad);
        let mut bufs = Vec::new();
        for b in &x.bufs {
            bufs.push(blob.len() as u64);
            put(&mut blob, b);
        }
        pack_table_entry(p, g, &bufs, k.n_bufs, t as u64, &mut tab);
    }
    let mut input = Vec::new();
    for h in [
        u64::from(multi),
        xs.len() as u64,
        prm.len() as u64,
        tab.len() as u64,
        blob.len() as u64,
    ] {
        input.extend_from_slice(&h.to_le_bytes());
    }
    input.extend_from_slice(&prm);
    input.extend_from_slice(&tab);
    input.extend_from_slice(&blob);
    let mut child = std::process::Command::new(exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}: host run failed", k.name);
    let bytes = out.stdout;
    let mut at = 0;
    let mut res: Vec<cuda_common::Outputs<E>> = Vec::new();
    for x in xs {
        let n = x.param.len();
        let p = get::<E>(&bytes, &mut at, n);
        let _g = get::<E>(&bytes, &mut at, n);
        let bufs = (0..x.bufs.len())
            .map(|_| get::<E>(&bytes, &mut at, n))
            .collect();
        res.push((p, bufs, Vec::new()));
    }
    for r in &mut res {
        r.2 = bytes[at..at + 8 * k.n_reductions]
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        at += 8 * k.n_reductions;
    }
    res
}

fn host_conformance<E: Float>(dir: &std::path::Path) -> usize {
    let stages = cuda_common::zoo::<E>();
    // compile every source as host C++, two at a time
    let exes: Vec<std::path::PathBuf> = stages
        .iter()
        .map(|(k, _, _)| dir.join(format!("{}.{}", k.name, E::NAME)))
        .collect();
    let jobs: Vec<_> = stages.iter().zip(&exes).collect();
    std::thread::scope(|s| {
        for chunk in jobs.chunks(jobs.len().div_ceil(2).max(1)) {
            s.spawn(move || {
                for ((k, _, _), exe) in chunk {
                    let cpp = exe.with_extension(format!("{}.cpp", E::NAME));
                    let src = k.source_for::<E>().unwrap();
                    std::fs::write(&cpp, format!("{HOST_SHIM}{src}{}", host_driver(k))).unwrap();
                    let st = std::process::Command::new("c++")
                        .args(["-std=c++17", "-O0", "-ffp-contract=off", "-fno-fast-math"])
                        .arg("-o")
                        .arg(exe)
                        .arg(&cpp)
                        .status()
                        .expect("a host C++ compiler (c++) to build the CUDA sources");
                    assert!(st.success(), "{} does not build as host C++", cpp.display());
                }
            });
        }
    });
    let mut rng = cuda_common::Rng(0x5851_f42d_4c95_7f2d);
    for ((k, f, scalars), exe) in stages.iter().zip(&exes) {
        // one tensor, then a table of three
        let one = vec![cuda_common::inputs::<E>(&mut rng, 1000, k.n_bufs)];
        let three: Vec<_> = [1usize, 300, 77]
            .iter()
            .map(|&n| cuda_common::inputs::<E>(&mut rng, n, k.n_bufs))
            .collect();
        for (xs, multi) in [(&one, false), (&three, true)] {
            let got = run_host(exe, k, scalars, xs, multi);
            for (t, (x, (p, bufs, red))) in xs.iter().zip(&got).enumerate() {
                let (wp, wbufs, wred) = cuda_common::cpu(*f, scalars, k.n_reductions, x);
                let what = format!("{} {} multi={multi} tensor {t}", k.name, E::NAME);
                // same operations in the same order on the same libm: bit for bit
                cuda_common::assert_close(&format!("{what} param"), &wp, p, false);
                for (j, (w, b)) in wbufs.iter().zip(bufs).enumerate() {
                    cuda_common::assert_close(&format!("{what} b{j}"), w, b, false);
                }
                let same =
                    |a: &f64, b: &f64| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                assert!(
                    wred.len() == red.len() && wred.iter().zip(red).all(|(a, b)| same(a, b)),
                    "{what} reductions: {wred:?} on the CPU, {red:?} host-built"
                );
            }
        }
    }
    stages.len()
}

/// Every source, built as host C++ with `HOST_SHIM` and run on one thread through its real entry
/// points (single- and multi-tensor, with the runtime's `pack_params`/`pack_table_entry`
/// layouts), gives exactly what its Rust kernel gives on the same inputs and scalars. Needs a
/// host C++ compiler (`c++`); run by `scripts/check-cuda-sources.sh`.
#[test]
#[ignore = "builds ~112 C++ programs (about a minute); run by scripts/check-cuda-sources.sh"]
fn host_compiled_sources_match_the_rust_kernels() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/cuda-host"));
    std::fs::create_dir_all(dir).unwrap();
    let n32 = host_conformance::<f32>(dir);
    let n64 = host_conformance::<f64>(dir);
    println!("{n32} f32 and {n64} f64 host-built CUDA kernels match their Rust twins bit for bit");
}
