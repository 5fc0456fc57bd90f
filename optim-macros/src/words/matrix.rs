//! Whole-tensor primitives: barriers between loops. Each is one runtime type in
//! `optim_runtime::matrix` (implementing `Primitive`), named by `ir::MatDef::runtime`, with a
//! config whose fields are the word's arguments by name; arguments the user leaves out take the
//! config's `Default` there. The generated code calls every primitive through one generic path
//! (`optim_runtime::matrix::run`), which also collects their diagnostics.

use super::{matrix_word, named, pos, word, Entry, Role::*};
use crate::ir::{Level, MatConst, MatDef, MatNode, MatPhase, NodeId, Op, Ty};
use crate::lower::{Call, Lowerer};

/// A primitive's definition: `phase`, and whether it runs again after the step on the gradient.
const fn def(
    explain: &'static str,
    runtime: &'static str,
    state: &'static [&'static str],
    phase: MatPhase,
    grad_after_step: bool,
) -> MatDef {
    MatDef {
        explain,
        runtime,
        state,
        phase,
        grad_after_step,
    }
}

/// A primitive that runs between loops.
const fn barrier(e: &'static str, r: &'static str, s: &'static [&'static str]) -> MatDef {
    def(e, r, s, MatPhase::Barrier, false)
}

/// A primitive that runs between loops and again after the step on the gradient.
const fn barrier_then_grad(e: &'static str, r: &'static str, s: &'static [&'static str]) -> MatDef {
    def(e, r, s, MatPhase::Barrier, true)
}

/// An eigenbasis.
const fn basis(e: &'static str, r: &'static str, s: &'static [&'static str]) -> MatDef {
    def(e, r, s, MatPhase::Basis, false)
}

pub(crate) static ORTHOGONALIZE: MatDef = barrier("orthogonalize", "Orthogonalize", &[]);
pub(crate) static FACTORED: MatDef = barrier("factored", "Factored", &[""]);
pub(crate) static KRON: MatDef = barrier("kron", "Kron", &["stats", "roots"]);
pub(crate) static KFAC: MatDef = barrier("kfac", "Kfac", &["inverses"]);
pub(crate) static EIGENBASIS: MatDef = basis("eigenbasis", "Eigenbasis", &["stats", "q"]);
pub(crate) static ROTATE: MatDef = barrier("rotate", "Rotate", &[]);
pub(crate) static UNROTATE: MatDef = barrier("unrotate", "Unrotate", &[]);
pub(crate) static EIGEN_SIGN: MatDef =
    barrier_then_grad("eigen_sign", "EigenSign", &["stats", "q"]);
pub(crate) static PSGD: MatDef = barrier("psgd", "Psgd", &["q"]);
pub(crate) static LOW_RANK: MatDef = barrier("low_rank", "LowRank", &["momentum", "q"]);

pub(crate) const WORDS: &[Entry] = &[
    matrix_word(
        "orthogonalize",
        &[
            pos("x", Value),
            named("steps", Count),
            named("a", Scalar),
            named("b", Scalar),
            named("c", Scalar),
            named("eps", Scalar),
            named("coeffs", Coeffs),
            named("batch", Batch),
        ],
        |lw, c| {
            let consts = super::ns_coeffs::coeffs(lw, c);
            primitive_with(lw, c, &ORTHOGONALIZE, String::new(), &["x"], consts)
        },
    ),
    word(
        "factored_second_moment",
        &[
            pos("x", Value),
            pos("beta", Beta),
            named("eps", Scalar),
            named("batch", Batch),
        ],
        |lw, c| {
            let base = c.slot_name(lw, "factored");
            primitive(lw, c, &FACTORED, base)
        },
    ),
    word(
        "kron_precondition",
        &[
            pos("x", Value),
            named("beta", Beta),
            named("eps", Scalar),
            named("update_freq", Count),
            named("exponent", Scalar),
            named("max_dim", Count),
            named("rank_rtol", Scalar),
            named("batch", Batch),
        ],
        |lw, c| numbered_primitive(lw, c, &KRON, "kron"),
    ),
    word(
        "kfac_precondition",
        &[
            pos("x", Value),
            named("damping", Scalar),
            named("rank_rtol", Scalar),
        ],
        |lw, c| {
            let base = c.binding_or("kfac".to_string());
            primitive(lw, c, &KFAC, base)
        },
    ),
    word(
        "kron_eigenbasis",
        &[
            pos("x", Value),
            pos("beta", Beta),
            named("update_freq", Count),
            named("max_dim", Count),
            named("batch", Batch),
        ],
        |lw, c| {
            require_grad(
                lw,
                c,
                "x",
                "`kron_eigenbasis` takes its statistics from the gradient; pass `grad`",
            );
            numbered_primitive(lw, c, &EIGENBASIS, "basis")
        },
    ),
    word(
        "rotate",
        &[pos("x", Value), pos("basis", Value)],
        |lw, c| rotation(lw, c, &ROTATE),
    ),
    word(
        "unrotate",
        &[pos("x", Value), pos("basis", Value)],
        |lw, c| rotation(lw, c, &UNROTATE),
    ),
    word(
        "eigen_sign",
        &[
            pos("x", Value),
            pos("grad", Value),
            pos("beta", Beta),
            named("update_freq", Count),
            named("max_dim", Count),
            named("eps", Scalar),
            named("batch", Batch),
        ],
        |lw, c| {
            require_grad(lw, c, "grad", "`eigen_sign` takes its statistics from the gradient; pass `grad` as its second argument");
            let base = numbered(lw, c, "eigen_sign");
            primitive_with(lw, c, &EIGEN_SIGN, base, &["x", "grad"], Vec::new())
        },
    ),
    word(
        "psgd_precondition",
        &[
            pos("x", Value),
            named("precond_lr", Scalar),
            named("precond_init_scale", Scalar),
            named("max_size_triangular", Count),
            named("min_ndim_triangular", Count),
            named("update", Cond),
            named("seed", Scalar),
            named("batch", Batch),
        ],
        |lw, c| {
            if let Some(u) = c.arg("update") {
                let ty = lw.ty(u);
                if ty.boolean && !ty.level.per_step() {
                    lw.cx.error(
                        c.arg_span("update"),
                        format!("`update` of `psgd_precondition` decides once per step whether the preconditioner is fitted; it must be a flag or a per-step condition, found {}", ty.level.describe()),
                    );
                }
            }
            numbered_primitive(lw, c, &PSGD, "psgd")
        },
    ),
    matrix_word(
        "low_rank_orthonormalize",
        &[
            pos("x", Value),
            pos("mu", Beta),
            named("rank_fraction", Scalar),
            named("rank_multiple_of", Count),
            named("power_iters", Count),
            named("epsilon", Scalar),
            named("seed", Scalar),
            named("batch", Batch),
        ],
        |lw, c| numbered_primitive(lw, c, &LOW_RANK, "low_rank"),
    ),
];

/// The name of a primitive's state: the `let` it is bound to, or `prefix` numbered by the
/// primitive state buffers so far.
fn numbered(lw: &Lowerer<'_, '_>, c: &Call<'_>, prefix: &str) -> String {
    c.binding_or(format!("{prefix}{}", lw.mat_slots.len()))
}

/// [`primitive`] with its state named by [`numbered`].
fn numbered_primitive(
    lw: &mut Lowerer<'_, '_>,
    c: &Call<'_>,
    def: &'static MatDef,
    prefix: &str,
) -> NodeId {
    let base = numbered(lw, c, prefix);
    primitive(lw, c, def, base)
}

/// Reports `msg` at argument `arg` unless it is the gradient itself (primitives that take their
/// statistics from the gradient).
fn require_grad(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, arg: &str, msg: &str) {
    if !matches!(lw.nodes[c.req(arg)].op, Op::Grad) {
        lw.cx.error(c.arg_span(arg), msg);
    }
}

/// A primitive applied to argument `x`, its other arguments passed by name to its runtime
/// config, with one state buffer per suffix of `def.state` named `base.suffix` (`base` for the
/// empty suffix).
fn primitive(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, def: &'static MatDef, base: String) -> NodeId {
    primitive_with(lw, c, def, base, &["x"], Vec::new())
}

/// [`primitive`], passing every argument except those in `skip` to the runtime config, plus the
/// compile-time constant arguments `consts`.
fn primitive_with(
    lw: &mut Lowerer<'_, '_>,
    c: &Call<'_>,
    def: &'static MatDef,
    base: String,
    skip: &[&str],
    consts: Vec<(&'static str, MatConst)>,
) -> NodeId {
    let x = c.req("x");
    let word = c.entry.name;
    if def.phase == MatPhase::Barrier && lw.ty(x).level != Level::Elem {
        lw.cx
            .error(c.span, format!("`{word}` needs a per-element value"));
    }
    let mut consts = consts;
    if let Some(k) = batch(lw, c) {
        consts.push(("batch", MatConst::Batch(k)));
    }
    let slots = def
        .state
        .iter()
        .map(|suffix| {
            let name = if suffix.is_empty() {
                base.clone()
            } else {
                format!("{base}.{suffix}")
            };
            lw.new_mat_slot(name)
        })
        .collect();
    let node = MatNode {
        def,
        input: x,
        args: c.args_except(skip),
        consts,
        slots,
        basis: None,
    };
    let level = match def.phase {
        MatPhase::Barrier => Level::Elem,
        MatPhase::Basis => Level::Scalar,
    };
    lw.push(Op::Mat(node), Ty::num(level))
}

/// The `batch = k` argument of `c` (leading batch axes; `None` when absent or wrong, errors at
/// its token): a whole-number literal, only in rules that receive nothing but matrices and
/// tensors (a vector or scalar has no axis to spare). `batch >= rank` is refused at run time
/// (`matrix::check_call`), before the step writes anything.
fn batch(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> Option<usize> {
    let e = c.raw("batch")?;
    let word = c.entry.name;
    let k = match e {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) if i.suffix().is_empty() => i.base10_parse::<usize>().ok(),
        _ => None,
    };
    let Some(k) = k else {
        lw.cx.error(
            c.arg_span("batch"),
            format!("`batch` of `{word}` is the number of leading batch axes: a whole-number literal such as `batch = 1`"),
        );
        return None;
    };
    if k > 0 && !lw.matrix_rule {
        lw.cx.error(
            c.arg_span("batch"),
            format!("`batch = {k}` needs parameters with axes to spare, but this rule can also receive vectors and scalars; use it in a `matrix` or `tensor` rule"),
        );
        return None;
    }
    Some(k)
}

/// `rotate(x, q)` / `unrotate(x, q)` in the eigenbasis `q` of a `kron_eigenbasis`.
fn rotation(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, def: &'static MatDef) -> NodeId {
    let (x, basis) = (c.req("x"), c.req("basis"));
    let word = c.entry.name;
    let mut consts = Vec::new();
    let max_dim = match &lw.nodes[basis].op {
        Op::Mat(m) if m.def.phase == MatPhase::Basis => {
            // the rotation sees the parameter as its basis does: same batch axes
            consts.extend(
                m.consts
                    .iter()
                    .filter(|c| matches!(c.1, MatConst::Batch(_)))
                    .cloned(),
            );
            m.args.iter().find(|(k, _)| *k == "max_dim").map(|a| a.1)
        }
        _ => {
            lw.cx.error(
                c.arg_span("basis"),
                format!("`{word}` expects an eigenbasis made by `kron_eigenbasis(grad, beta)`"),
            );
            None
        }
    };
    if lw.ty(x).level != Level::Elem {
        lw.cx
            .error(c.span, format!("`{word}` needs a per-element value"));
    }
    let node = MatNode {
        def,
        input: x,
        args: max_dim.map(|m| ("max_dim", m)).into_iter().collect(),
        consts,
        slots: Vec::new(),
        basis: Some(basis),
    };
    lw.push(Op::Mat(node), Ty::num(Level::Elem))
}
