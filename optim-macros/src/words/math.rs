//! Stateless element-wise math. Each function word is an `ir::FuncDef`: the runtime function
//! `optim_runtime::ops::{name}` (used in loops with the parameter's type and on the host in
//! `f64`) and its CUDA twin, defined here for `float`/`double` or the kernel's `T`. CUDA twins
//! follow `ops.rs` exactly (IEEE-rounded `sqrt` and division, no FMA contraction, NaN-propagating
//! `max`/`min`, `sign(±0) = ±0`).

use super::{pos, word, Entry, Role::*};
use crate::ir::{FuncDef, NodeId};
use crate::lower::{Call, Lowerer};

pub(crate) static SQRT: FuncDef = FuncDef {
    name: "sqrt",
    cuda: "dsl_sqrt",
    cuda_src: "DSL_FN float dsl_sqrt(float x) { return __fsqrt_rn(x); }\nDSL_FN double dsl_sqrt(double x) { return __dsqrt_rn(x); }\n",
};
pub(crate) static ABS: FuncDef = FuncDef {
    name: "abs",
    cuda: "dsl_abs",
    cuda_src: "DSL_FN float dsl_abs(float x) { return fabsf(x); }\nDSL_FN double dsl_abs(double x) { return fabs(x); }\n",
};
pub(crate) static EXP: FuncDef = FuncDef {
    name: "exp",
    cuda: "dsl_exp",
    cuda_src: "DSL_FN float dsl_exp(float x) { return expf(x); }\nDSL_FN double dsl_exp(double x) { return exp(x); }\n",
};
pub(crate) static LN: FuncDef = FuncDef {
    name: "ln",
    cuda: "dsl_ln",
    cuda_src: "DSL_FN float dsl_ln(float x) { return logf(x); }\nDSL_FN double dsl_ln(double x) { return log(x); }\n",
};
pub(crate) static POW: FuncDef = FuncDef {
    name: "pow",
    cuda: "dsl_pow",
    cuda_src: "DSL_FN float dsl_pow(float x, float y) { return powf(x, y); }\nDSL_FN double dsl_pow(double x, double y) { return pow(x, y); }\n",
};
pub(crate) static RSQRT: FuncDef = FuncDef {
    name: "rsqrt",
    cuda: "dsl_rsqrt",
    cuda_src: "DSL_FN T dsl_rsqrt(T x) { return dsl_div(T(1), dsl_sqrt(x)); }\n",
};
pub(crate) static SIGN: FuncDef = FuncDef {
    name: "sign",
    cuda: "dsl_sign",
    cuda_src: "DSL_FN T dsl_sign(T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x); }\n",
};
pub(crate) static MAX: FuncDef = FuncDef {
    name: "max",
    cuda: "dsl_max",
    cuda_src: "DSL_FN T dsl_max(T a, T b) { return (a > b || a != a) ? a : b; }\n",
};
pub(crate) static MIN: FuncDef = FuncDef {
    name: "min",
    cuda: "dsl_min",
    cuda_src: "DSL_FN T dsl_min(T a, T b) { return (a < b || a != a) ? a : b; }\n",
};
pub(crate) static CLAMP: FuncDef = FuncDef {
    name: "clamp",
    cuda: "dsl_clamp",
    cuda_src: "DSL_FN T dsl_clamp(T x, T lo, T hi) { return dsl_min(dsl_max(x, lo), hi); }\n",
};
pub(crate) static LERP: FuncDef = FuncDef {
    name: "lerp",
    cuda: "dsl_lerp",
    cuda_src:
        "DSL_FN T dsl_lerp(T a, T b, T t) { return dsl_add(a, dsl_mul(t, dsl_sub(b, a))); }\n",
};

pub(crate) static SOFTSIGN: FuncDef = FuncDef {
    name: "softsign",
    cuda: "dsl_softsign",
    cuda_src: "DSL_FN T dsl_softsign(T x) { return dsl_div(x, dsl_add(T(1), dsl_abs(x))); }\n",
};

/// Every function, in the order their CUDA definitions are emitted (a definition may use the
/// ones before it).
pub(crate) static FUNCS: &[&FuncDef] = &[
    &SQRT, &ABS, &EXP, &LN, &POW, &RSQRT, &SIGN, &MAX, &MIN, &CLAMP, &LERP, &SOFTSIGN,
];

/// A word that is one function applied to its positional arguments.
macro_rules! func_word {
    ($name:literal, $def:ident, [$($arg:literal),*]) => {
        word($name, &[$(pos($arg, Value)),*], |lw: &mut Lowerer<'_, '_>, c: &Call<'_>| -> NodeId {
            let args = vec![$(c.req($arg)),*];
            lw.func(&$def, args)
        })
    };
}

pub(crate) const WORDS: &[Entry] = &[
    func_word!("sqrt", SQRT, ["x"]),
    func_word!("rsqrt", RSQRT, ["x"]),
    func_word!("abs", ABS, ["x"]),
    func_word!("sign", SIGN, ["x"]),
    func_word!("exp", EXP, ["x"]),
    func_word!("ln", LN, ["x"]),
    func_word!("max", MAX, ["a", "b"]),
    func_word!("min", MIN, ["a", "b"]),
    func_word!("clamp", CLAMP, ["x", "lo", "hi"]),
    func_word!("pow", POW, ["x", "y"]),
    func_word!("lerp", LERP, ["a", "b", "t"]),
    func_word!("softsign", SOFTSIGN, ["x"]),
    word(
        "select",
        &[pos("cond", Cond), pos("a", Value), pos("b", Value)],
        |lw, c| {
            let (cond, a, b) = (c.req("cond"), c.req("a"), c.req("b"));
            lw.select(cond, a, b)
        },
    ),
];
