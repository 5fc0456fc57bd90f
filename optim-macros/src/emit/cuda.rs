//! Printer: every planned loop (`LoopIr`) as CUDA C, in `f32` and `f64`, and the
//! `DslOptimizer::cuda_sources` item that hands them to the runtime (`optim-runtime/src/cuda.rs` compiles and launches them).
//!
//! Both printers print the same `LoopIr` statements in the same order: the same loads, the same
//! operations, the same reductions (accumulated in `double`) and the same writes. Arithmetic
//! goes through `__fadd_rn`-style intrinsics, which CUDA never contracts into FMAs, and `sqrt`/division are the IEEE-rounded ones, so an `f32`
//! step matches the CPU bit for bit except where a libm function (`exp`, `ln`, `pow`) differs
//! by an ulp or two, and except for reduction totals, summed in another order (in `double`).
//! `sign`, `max`, `min`, `clamp`, `lerp` and `rsqrt` copy `optim-runtime/src/ops.rs`
//! (`sign(±0) = ±0`, NaN passes through, NaN-propagating `max`/`min`, `lerp = a + t * (b - a)`,
//! `rsqrt = 1 / sqrt`).
//!
//! ABI of one source (`S` = max(`n_scalars`, 1), `B` = max(`n_bufs`, 1), `R` = `n_reductions`):
//!
//! ```c
//! struct Params { unsigned long long n; T s[S]; };     // one per tensor: its length, scalars
//! struct TensorEntry { T* p; const T* g; T* b[B]; unsigned long long params; };
//! extern "C" __global__ void NAME(const Params* prm, T* p, const T* g, T* b0, …, double* red);
//! extern "C" __global__ void NAME_multi(const Params* prm, const TensorEntry* tab, double* red);
//! ```
//!
//! Scalars are packed into one device struct so that a launch has `4 + n_bufs` arguments
//! (cudarc's `LaunchAsync` takes at most 12), booleans as `1`/`0` like the Rust path. Both
//! entry points use a grid-stride loop and need `blockDim.x` to be a multiple of 32 (the
//! runtime launches 256 threads). Reductions are deterministic two-pass: each block writes its
//! partial sums to `red[j * gridDim.x + blockIdx.x]` (`NAME_multi`: tensor `blockIdx.y`, at
//! `red[(blockIdx.y * R + j) * gridDim.x + blockIdx.x]`) and the host adds them in block
//! order — the host needs the totals anyway to compute the next stage's scalars. No atomics,
//! so any architecture NVRTC targets works.
//!
//! `NAME_multi` updates many tensors in one launch: `blockIdx.y` selects the table entry, whose
//! `params` field indexes the `Params` array (each tensor has its own step count, so its own
//! bias corrections). Blocks past a tensor's end do nothing, so group tensors of similar size;
//! it pays for tensors under ~64 Ki elements, where a launch (~3–5 µs) costs more than moving
//! the tensor's bytes.

use crate::ir::{self, BinOp, RedKind};
use crate::loop_ir::{Elem, LExpr, LStmt, LStream, LoopIr, Role, Val};
use crate::plan::{Plan, Stream};
use crate::private::Private;
use crate::words;
use proc_macro2::{Literal, TokenStream};
use quote::quote;
use std::fmt::Write as _;

/// One planned loop as CUDA C.
pub(crate) struct CudaKernel {
    pub rule: usize,
    pub variant: usize,
    pub stage: usize,
    pub stages: usize,
    /// `(flag name, value)` of the variant.
    pub flags: Vec<(String, bool)>,
    pub name: String,
    pub multi_name: String,
    pub source_f32: String,
    pub source_f64: String,
    pub n_scalars: usize,
    pub n_bufs: usize,
    pub n_reductions: usize,
    pub writes_param: bool,
    /// State slots among the streams, ascending (the runtime binds them first).
    pub slots: Vec<usize>,
    /// Scratch buffers among the streams, ascending (bound after the slots).
    pub temps: Vec<usize>,
}

/// Every loop of every fused rule and flag combination, in rule, variant, stage order.
pub(crate) fn kernels(opt: &ir::Optimizer, plan: &Plan) -> Vec<CudaKernel> {
    let base = c_ident(&opt.name.to_string());
    let prelude = prelude();
    let mut out = Vec::new();
    for (ri, rule_plan) in plan.rules.iter().enumerate() {
        let Some(rule_plan) = rule_plan else {
            continue;
        };
        for (vi, v) in rule_plan.variants.iter().enumerate() {
            // 16-bit and 8-bit state (`let m: bf16 = ...`, `let m: q8 = ...`) has no CUDA twin
            // yet: the loop IR carries the streams' element types, but the device path passes
            // `ParamState::buffers` only; such a variant's `KernelCall::cuda` is `None`, and a
            // device step refuses it with an error naming the storage types
            if crate::loop_ir::has_low_state(&v.loops) {
                continue;
            }
            let nstages = v.loops.len();
            for (k, l) in v.loops.iter().enumerate() {
                let name = format!("optim_{base}_r{ri}_v{vi}_s{k}");
                let multi_name = format!("{name}_multi");
                let flags: Vec<(String, bool)> = v
                    .flags
                    .iter()
                    .map(|&(h, b)| (opt.hypers[h].name.to_string(), b))
                    .collect();
                let header = header_comment(&opt.name.to_string(), l, (ri, vi, k, nstages), &flags);
                let body = kernel_body(l, &name, &multi_name);
                let (mut slots, mut temps) = (Vec::new(), Vec::new());
                for s in &v.stages[k].bufs {
                    match *s {
                        Stream::Slot(j) => slots.push(j),
                        Stream::Temp(t) => temps.push(t),
                        Stream::Param | Stream::Grad => {}
                    }
                }
                slots.sort_unstable();
                temps.sort_unstable();
                out.push(CudaKernel {
                    rule: ri,
                    variant: vi,
                    stage: k,
                    stages: nstages,
                    flags,
                    source_f32: format!("{header}typedef float T;\n{prelude}{body}"),
                    source_f64: format!("{header}typedef double T;\n{prelude}{body}"),
                    name,
                    multi_name,
                    n_scalars: l.scalars.len(),
                    n_bufs: l.bufs.len(),
                    n_reductions: l.reductions,
                    writes_param: l.writes_param,
                    slots,
                    temps,
                });
            }
        }
    }
    out
}

/// The table of every stage's CUDA twin (an item of the generated `const _` block).
pub(crate) fn cuda_sources_fn(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let p = Private;
    let optimizer = opt.name.to_string();
    let records = kernels(opt, plan).into_iter().map(|k| {
        let CudaKernel {
            rule,
            variant,
            stage,
            stages,
            flags,
            name,
            multi_name,
            source_f32,
            source_f64,
            n_scalars,
            n_bufs,
            n_reductions,
            writes_param,
            slots,
            temps,
        } = k;
        let flags = flags.iter().map(|(n, b)| quote!((#n, #b)));
        let (s32, s64) = (Literal::string(&source_f32), Literal::string(&source_f64));
        quote! {
            #p::CudaKernelSource {
                optimizer: #optimizer,
                rule: #rule,
                variant: #variant,
                flags: &[#(#flags),*],
                stage: #stage,
                stages: #stages,
                name: #name,
                multi_name: #multi_name,
                source_f32: #s32,
                source_f64: #s64,
                n_scalars: #n_scalars,
                n_bufs: #n_bufs,
                n_reductions: #n_reductions,
                writes_param: #writes_param,
                slots: &[#(#slots),*],
                temps: &[#(#temps),*],
            }
        }
    });
    quote! {
        /// Every stage's CUDA twin, in rule, variant, stage order (`cuda_sources()`); each
        /// generated `KernelCall` points at its own record.
        const __OPTIM_CUDA_SOURCES: &[#p::CudaKernelSource] = &[#(#records),*];
    }
}

/// The `DslOptimizer::cuda_sources` override for the generated impl.
pub(crate) fn cuda_sources_method() -> TokenStream {
    let p = Private;
    quote! {
        fn cuda_sources() -> &'static [#p::CudaKernelSource] {
            __OPTIM_CUDA_SOURCES
        }
    }
}

/// `s` with every character that is not an ASCII letter, digit or `_` replaced by `_`.
pub(crate) fn c_ident(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// IEEE round-to-nearest arithmetic, then every word's function (`words::funcs`), then the
/// reduction helpers; `T` is typedef'd just before.
fn prelude() -> String {
    let mut s = String::from(ARITH);
    s.push_str("/* element-wise functions (optim-runtime/src/ops.rs) */\n");
    for f in words::funcs() {
        s.push_str(f.cuda_src);
    }
    s.push_str(REDUCE);
    s
}

const ARITH: &str = r#"#define DSL_FN __device__ __forceinline__
/* IEEE round-to-nearest operations that are never contracted into an FMA: each one rounds
   exactly like the Rust loop on the CPU. Do not compile with --use_fast_math. */
DSL_FN float dsl_add(float a, float b) { return __fadd_rn(a, b); }
DSL_FN double dsl_add(double a, double b) { return __dadd_rn(a, b); }
DSL_FN float dsl_sub(float a, float b) { return __fsub_rn(a, b); }
DSL_FN double dsl_sub(double a, double b) { return __dsub_rn(a, b); }
DSL_FN float dsl_mul(float a, float b) { return __fmul_rn(a, b); }
DSL_FN double dsl_mul(double a, double b) { return __dmul_rn(a, b); }
DSL_FN float dsl_div(float a, float b) { return __fdiv_rn(a, b); }
DSL_FN double dsl_div(double a, double b) { return __ddiv_rn(a, b); }
"#;

const REDUCE: &str = r#"/* reductions: `r += y` and `r += y * y` in double, as the Rust loop */
DSL_FN double dsl_acc(double r, double y) { return __dadd_rn(r, y); }
DSL_FN double dsl_acc_sq(double r, double y) { return __dadd_rn(r, __dmul_rn(y, y)); }
/* Sum of `v` over the block, valid in thread 0. blockDim.x must be a multiple of 32 and every
   thread of the block must call it. `sh` holds 32 doubles of shared memory. */
DSL_FN double dsl_block_sum(double v, double* sh) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned nwarps = (blockDim.x + 31u) >> 5;
    for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_down_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = threadIdx.x < nwarps ? sh[threadIdx.x] : 0.0;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_down_sync(0xffffffffu, v, o));
    }
    return v;
}
"#;

fn header_comment(
    optimizer: &str,
    l: &LoopIr,
    (ri, vi, k, nstages): (usize, usize, usize, usize),
    flags: &[(String, bool)],
) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* optim-dsl: {optimizer}, rule {ri}, flag variant {vi}, stage {k} of {nstages}. Generated by optimizer!; do not edit."
    );
    if !flags.is_empty() {
        let fl: Vec<String> = flags.iter().map(|(n, b)| format!("{n} = {b}")).collect();
        let _ = writeln!(h, "   flags: {}", fl.join(", "));
    }
    let bufs: Vec<String> = l
        .bufs
        .iter()
        .enumerate()
        .map(|(j, b)| {
            let role = match b.role {
                Role::State => "state",
                Role::Scratch => "scratch",
            };
            format!("b{j} = {} ({role})", b.name)
        })
        .collect();
    let _ = writeln!(
        h,
        "   streams: p = param, g = grad{}{}",
        if bufs.is_empty() { "" } else { ", " },
        bufs.join(", ")
    );
    let _ = writeln!(
        h,
        "   scalars: {}, reductions: {} */",
        l.scalars.len(),
        l.reductions
    );
    h
}

/// The C expression of a binary operation.
pub(crate) fn bin_expr(op: BinOp, a: &str, b: &str) -> String {
    match op {
        BinOp::Add => format!("dsl_add({a}, {b})"),
        BinOp::Sub => format!("dsl_sub({a}, {b})"),
        BinOp::Mul => format!("dsl_mul({a}, {b})"),
        BinOp::Div => format!("dsl_div({a}, {b})"),
        cmp => format!("({a} {} {b})", cmp.symbol()),
    }
}

/// The C type of a stream's elements.
fn c_elem(e: Elem) -> &'static str {
    match e {
        Elem::Param => "T",
        // not printed yet: `kernels` leaves out variants with 16-bit state (see there)
        Elem::Bf16 => "__nv_bfloat16",
        Elem::F16 => "__half",
        Elem::Q8 | Elem::Uq8 => "unsigned char",
    }
}

fn val(v: Val) -> String {
    match v {
        Val::Var(x) => format!("x{x}"),
        Val::Scalar(k) => format!("s{k}"),
        Val::Bool(b) => b.to_string(),
    }
}

fn stream(s: LStream) -> String {
    match s {
        LStream::Param => "p".into(),
        LStream::Grad => "g".into(),
        LStream::Buf(j) => format!("b{j}"),
    }
}

/// One element-wise operation.
pub(crate) fn expr(e: &LExpr) -> String {
    match e {
        LExpr::Neg(a) => format!("(-{})", val(*a)),
        LExpr::Not(a) => format!("(!{})", val(*a)),
        LExpr::Bin(op, a, b) => bin_expr(*op, &val(*a), &val(*b)),
        LExpr::Call(def, args) => {
            let args: Vec<String> = args.iter().map(|a| val(*a)).collect();
            format!("{}({})", def.cuda, args.join(", "))
        }
        LExpr::Select(c, a, b) => format!("({} ? {} : {})", val(*c), val(*a), val(*b)),
    }
}

/// One statement of the loop body (one line, without indentation).
pub(crate) fn stmt(s: &LStmt) -> String {
    match s {
        LStmt::Load { var, from } => format!("const T x{var} = {}[i];", stream(*from)),
        LStmt::Let {
            var,
            boolean,
            expr: e,
        } => {
            let ty = if *boolean { "bool" } else { "T" };
            format!("const {ty} x{var} = {};", expr(e))
        }
        LStmt::Accumulate { acc, kind, value } => {
            let f = match kind {
                RedKind::SumSq => "dsl_acc_sq",
                RedKind::Sum => "dsl_acc",
            };
            format!("acc[{acc}] = {f}(acc[{acc}], (double){});", val(*value))
        }
        LStmt::Store { to, value } => format!("{}[i] = {};", stream(*to), val(*value)),
    }
}

/// Everything after the prelude: the two structs, the loop (a device function) and the two
/// entry points.
fn kernel_body(l: &LoopIr, name: &str, multi_name: &str) -> String {
    let nbufs = l.bufs.len();
    let nred = l.reductions;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "struct Params {{ unsigned long long n; T s[{}]; }};",
        l.scalars.len().max(1)
    );
    let _ = writeln!(
        c,
        "struct TensorEntry {{ T* p; const T* g; T* b[{}]; unsigned long long params; }};",
        nbufs.max(1)
    );
    let buf_params: String = l
        .bufs
        .iter()
        .enumerate()
        .map(|(j, b)| format!(", {}* __restrict__ b{j}", c_elem(b.elem)))
        .collect();
    let _ = writeln!(
        c,
        "DSL_FN void dsl_stage(const Params* __restrict__ P, T* __restrict__ p, const T* __restrict__ g{buf_params}, double* acc, unsigned long long i0, unsigned long long stride) {{"
    );
    let _ = writeln!(c, "    const unsigned long long n = P->n;");
    for (k, &boolean) in l.scalars.iter().enumerate() {
        if boolean {
            let _ = writeln!(c, "    const bool s{k} = P->s[{k}] != T(0);");
        } else {
            let _ = writeln!(c, "    const T s{k} = P->s[{k}];");
        }
    }
    let _ = writeln!(
        c,
        "    for (unsigned long long i = i0; i < n; i += stride) {{"
    );
    for s in &l.body {
        let _ = writeln!(c, "        {}", stmt(s));
    }
    let _ = writeln!(c, "    }}\n}}");

    // reductions: per-block partial sums
    let reduce = |slot: &dyn Fn(usize) -> String| -> String {
        if nred == 0 {
            return String::new();
        }
        let mut r = String::from("    __shared__ double dsl_sh[32];\n");
        for j in 0..nred {
            let _ = writeln!(
                r,
                "    {{ const double t = dsl_block_sum(acc[{j}], dsl_sh); if (threadIdx.x == 0) red[{}] = t; }}",
                slot(j)
            );
        }
        r
    };
    let acc_init = format!("    double acc[{}] = {{}};\n", nred.max(1));
    let grid = "(unsigned long long)blockIdx.x * blockDim.x + threadIdx.x, (unsigned long long)gridDim.x * blockDim.x";

    // single tensor
    let _ = writeln!(
        c,
        "extern \"C\" __global__ void {name}(const Params* __restrict__ prm, T* __restrict__ p, const T* __restrict__ g{buf_params}, double* __restrict__ red) {{"
    );
    c.push_str(&acc_init);
    let bargs: String = (0..nbufs).map(|j| format!(", b{j}")).collect();
    let _ = writeln!(c, "    dsl_stage(prm, p, g{bargs}, acc, {grid});");
    c.push_str(&reduce(&|j| {
        format!("(unsigned long long){j} * gridDim.x + blockIdx.x")
    }));
    c.push_str("}\n");
    // multi tensor
    let _ = writeln!(
        c,
        "extern \"C\" __global__ void {multi_name}(const Params* __restrict__ prm, const TensorEntry* __restrict__ tab, double* __restrict__ red) {{"
    );
    let _ = writeln!(c, "    const TensorEntry e = tab[blockIdx.y];");
    c.push_str(&acc_init);
    let eargs: String = (0..nbufs).map(|j| format!(", e.b[{j}]")).collect();
    let _ = writeln!(
        c,
        "    dsl_stage(prm + e.params, e.p, e.g{eargs}, acc, {grid});"
    );
    c.push_str(&reduce(&|j| {
        format!("((unsigned long long)blockIdx.y * {nred} + {j}) * gridDim.x + blockIdx.x")
    }));
    c.push_str("}\n");
    c
}
