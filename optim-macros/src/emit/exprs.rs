//! Token helpers shared by the emitters: literals, host (`f64`) expressions of hoisted scalars,
//! binary operators, domains and routing guards.

use crate::ir::{self, BinOp, Fused, Guard, GuardNum, Kind, NodeId, Op, TextField, TextTest};
use crate::plan::Variant;
use crate::private::Private;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

/// `tokens` with every token's span set to `span` (so rustc errors about a generated
/// expression land on the user's tokens).
pub(crate) fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                tt = proc_macro2::TokenTree::Group(ng);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

pub(crate) fn domain_tokens(d: ir::Domain) -> TokenStream {
    let p = Private;
    match d {
        ir::Domain::Finite => quote!(#p::Domain::Finite),
        ir::Domain::NonNegative => quote!(#p::Domain::NonNegative),
        ir::Domain::Positive => quote!(#p::Domain::Positive),
        ir::Domain::UnitOpen => quote!(#p::Domain::UnitOpen),
        ir::Domain::UnitClosed => quote!(#p::Domain::UnitClosed),
        ir::Domain::NonPositive => quote!(#p::Domain::NonPositive),
        ir::Domain::Count => quote!(#p::Domain::Count),
    }
}

pub(crate) fn f64_lit(v: f64) -> TokenStream {
    if !v.is_finite() {
        // lowering rejects non-finite literals; stay panic-free regardless
        let p = Private;
        return quote!(#p::F64::NAN);
    }
    let lit = Literal::f64_suffixed(v.abs());
    if v.is_sign_negative() {
        quote!((-#lit))
    } else {
        quote!(#lit)
    }
}

pub(crate) fn flag_scrutinee(
    opt: &ir::Optimizer,
    plan: &crate::plan::RulePlan,
    src: TokenStream,
) -> TokenStream {
    let fields = plan.flags.iter().map(|&h| {
        let n = &opt.hypers[h].name;
        quote!(#src.#n)
    });
    quote!((#(#fields,)*))
}

pub(crate) fn flag_pattern(v: &Variant) -> TokenStream {
    let vals = v.flags.iter().map(|(_, b)| b);
    quote!((#(#vals,)*))
}

/// `::optim_dsl::__private::ops::{name}`: the runtime function of an element-wise word.
pub(crate) fn func_path(f: &ir::FuncDef) -> TokenStream {
    let p = Private;
    let name = format_ident!("{}", f.name);
    quote!(#p::ops::#name)
}

pub(crate) fn bin_tokens(
    op: BinOp,
    a: TokenStream,
    b: TokenStream,
    elementwise: bool,
) -> TokenStream {
    match op {
        BinOp::Add => quote!((#a + #b)),
        BinOp::Sub => quote!((#a - #b)),
        BinOp::Mul => quote!((#a * #b)),
        BinOp::Div => quote!((#a / #b)),
        BinOp::Lt => quote!((#a < #b)),
        BinOp::Le => quote!((#a <= #b)),
        BinOp::Gt => quote!((#a > #b)),
        BinOp::Ge => quote!((#a >= #b)),
        BinOp::Eq => quote!((#a == #b)),
        BinOp::Ne => quote!((#a != #b)),
        // non-short-circuit forms vectorise
        BinOp::And if elementwise => quote!((#a & #b)),
        BinOp::Or if elementwise => quote!((#a | #b)),
        BinOp::And => quote!((#a && #b)),
        BinOp::Or => quote!((#a || #b)),
    }
}

/// The identifier `{prefix}{k}` (generated locals: `x3`, `s0`, `first_1`, ...).
pub(crate) fn numbered_ident(prefix: &str, k: usize) -> TokenStream {
    let l = format_ident!("{}{}", prefix, k);
    quote!(#l)
}

/// `(-a)`.
pub(crate) fn neg_tokens(a: TokenStream) -> TokenStream {
    quote!((-#a))
}

/// `(!a)`.
pub(crate) fn not_tokens(a: TokenStream) -> TokenStream {
    quote!((!#a))
}

/// `(if c { a } else { b })`.
pub(crate) fn select_tokens(c: TokenStream, a: TokenStream, b: TokenStream) -> TokenStream {
    quote!((if #c { #a } else { #b }))
}

/// A host (`f64`/`bool`) expression for node `id` as one tree (used for reuse bindings and
/// state initial values, which are small). `leaf` may override a node.
pub(crate) fn host_expr_tree(
    opt: &ir::Optimizer,
    nodes: &[ir::Node],
    id: NodeId,
    leaf: &dyn Fn(NodeId) -> Option<TokenStream>,
) -> TokenStream {
    let p = Private;
    if let Some(t) = leaf(id) {
        return t;
    }
    let sub = |x: NodeId| host_expr_tree(opt, nodes, x, leaf);
    match &nodes[id].op {
        Op::Num(v) => f64_lit(*v),
        Op::Bool(b) => quote!(#b),
        Op::Hyper(h) | Op::Flag(h) => {
            let l = format_ident!("h_{}", opt.hypers[*h].name);
            quote!(#l)
        }
        Op::Step => quote!(t),
        Op::Shape(s) => {
            let m = format_ident!("{}", s);
            quote!((info.#m() as #p::F64))
        }
        Op::Neg(a) => neg_tokens(sub(*a)),
        Op::Not(a) => not_tokens(sub(*a)),
        Op::Bin(op, a, b) => bin_tokens(*op, sub(*a), sub(*b), false),
        Op::Func(f, args) => {
            let path = func_path(f);
            let args = args.iter().map(|a| sub(*a));
            quote!(#path::<#p::F64>(#(#args),*))
        }
        Op::Select(c, a, b) => select_tokens(sub(*c), sub(*a), sub(*b)),
        Op::First(k) => numbered_ident("first_", *k),
        Op::ScalarRead(k) => numbered_ident("sread_", *k),
        // reuse bindings (the only trees) cannot call words, so never an `Eta`
        Op::Eta(_)
        | Op::Param
        | Op::Grad
        | Op::StateRead(_)
        | Op::Reduce(..)
        | Op::Global(..)
        | Op::Axis(..)
        | Op::Mat(..) => {
            quote!(0.0f64)
        }
    }
}

/// The host value of node `x` as `f64` (booleans are `1.0` / `0.0`).
pub(crate) fn hnum(v: &Variant, x: NodeId) -> TokenStream {
    let x = v.repl[x];
    if let Some(b) = v.konst[x] {
        return if b { quote!(1.0f64) } else { quote!(0.0f64) };
    }
    quote!(h[#x])
}

/// The host value of boolean node `x`.
pub(crate) fn hbool(v: &Variant, x: NodeId) -> TokenStream {
    let x = v.repl[x];
    if let Some(b) = v.konst[x] {
        return quote!(#b);
    }
    quote!((h[#x] != 0.0f64))
}

fn b2f(t: TokenStream) -> TokenStream {
    quote!((if #t { 1.0f64 } else { 0.0f64 }))
}

/// The assignment computing host node `id`, or `None` for nodes set elsewhere (state flags,
/// scalar state reads, per-tensor reductions).
///
/// Under `ScalarPrecision::Param` (`ps.round_scalars`), a value that depends on the step is
/// computed as the parameter's type would: its operands and its result are rounded to it (as
/// JAX computes `1 - b2 ** count` in `float32`), while arithmetic on constants alone stays in
/// `f64` (as Python folds `1 - b2` before JAX sees it).
pub(crate) fn host_assign(
    opt: &ir::Optimizer,
    f: &Fused,
    v: &Variant,
    id: NodeId,
    per_step: &[bool],
) -> Option<TokenStream> {
    let p = Private;
    let hnum = |v: &Variant, x: NodeId| -> TokenStream {
        let h = hnum(v, x);
        // an operand stored rounded is not rounded again (rounding is idempotent)
        if per_step[id] && !stored_rounded(f, v, x, per_step) {
            quote!(#p::round_scalar::<E>(ps.round_scalars, #h))
        } else {
            h
        }
    };
    let e = match &f.nodes[id].op {
        Op::Num(x) => f64_lit(*x),
        Op::Bool(b) => b2f(quote!(#b)),
        Op::Hyper(h) => {
            let n = &opt.hypers[*h].name;
            quote!(values.#n)
        }
        Op::Flag(h) => {
            let n = &opt.hypers[*h].name;
            b2f(quote!(values.#n))
        }
        Op::Eta(h) => {
            let n = format_ident!("__eta_{}", opt.hypers[*h].name);
            quote!(values.#n)
        }
        Op::Step => quote!(t),
        Op::Shape(s) => {
            let m = format_ident!("{}", s);
            quote!((info.#m() as #p::F64))
        }
        Op::Neg(a) => neg_tokens(hnum(v, *a)),
        Op::Not(a) => b2f(not_tokens(hbool(v, *a))),
        Op::Bin(op, a, b) => match op {
            BinOp::And | BinOp::Or => b2f(bin_tokens(*op, hbool(v, *a), hbool(v, *b), false)),
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                bin_tokens(*op, hnum(v, *a), hnum(v, *b), false)
            }
            _ => b2f(bin_tokens(*op, hnum(v, *a), hnum(v, *b), false)),
        },
        Op::Func(fun, args) => {
            let path = func_path(fun);
            let args = args.iter().map(|a| hnum(v, *a));
            quote!(#path::<#p::F64>(#(#args),*))
        }
        Op::Select(c, a, b) => select_tokens(hbool(v, *c), hnum(v, *a), hnum(v, *b)),
        Op::Global(_, _, g) => quote!(globals.get(#g).copied().unwrap_or(0.0f64)),
        op => {
            debug_assert!(set_elsewhere(op));
            return None;
        }
    };
    Some(if per_step[id] {
        quote!(h[#id] = #p::round_scalar::<E>(ps.round_scalars, #e);)
    } else {
        quote!(h[#id] = #e;)
    })
}

/// Whether `h[x]` holds a value already rounded under `ScalarPrecision::Param`: a
/// step-dependent node that [`host_assign`] computes (and stores rounded); not a node set
/// elsewhere (state flags, scalar state reads, reductions), nor a compile-time constant.
fn stored_rounded(f: &Fused, v: &Variant, x: NodeId, per_step: &[bool]) -> bool {
    let x = v.repl[x];
    v.konst[x].is_none() && per_step[x] && !set_elsewhere(&f.nodes[x].op)
}

/// Nodes whose host value [`host_assign`] does not compute: state flags, scalar state reads,
/// reductions and primitives set it elsewhere; element-wise streams have none.
fn set_elsewhere(op: &Op) -> bool {
    matches!(
        op,
        Op::First(_)
            | Op::ScalarRead(_)
            | Op::Reduce(..)
            | Op::Param
            | Op::Grad
            | Op::StateRead(_)
            | Op::Axis(..)
            | Op::Mat(..)
    )
}

/// Which nodes depend on the parameter's step count (`step`, directly or through operands).
pub(crate) fn step_dependent(f: &Fused, v: &Variant) -> Vec<bool> {
    let mut out = vec![false; f.nodes.len()];
    for i in 0..f.nodes.len() {
        let i = v.repl[i];
        out[i] = matches!(f.nodes[i].op, Op::Step)
            || crate::plan::operands(&f.nodes[i].op)
                .iter()
                .any(|&o| out[v.repl[o]]);
    }
    out
}

/// Does host node `id` depend on per-parameter state (`First`, `ScalarRead`) or on a reduction?
pub(crate) fn depends_on_state(
    f: &Fused,
    v: &Variant,
    id: NodeId,
    memo: &mut Vec<Option<bool>>,
) -> bool {
    if let Some(b) = memo[id] {
        return b;
    }
    let r = match &f.nodes[id].op {
        Op::First(_) | Op::ScalarRead(_) | Op::Reduce(..) | Op::Global(..) => true,
        Op::Mat(m) if m.def.phase == ir::MatPhase::Basis => true,
        op => crate::plan::operands(op)
            .iter()
            .any(|&a| depends_on_state(f, v, v.repl[a], memo)),
    };
    memo[id] = Some(r);
    r
}

/// Does `x` depend (through element-wise operations) on a `rotate(_, basis)`?
pub(crate) fn depends_on_rotation(f: &Fused, v: &Variant, x: NodeId, basis: NodeId) -> bool {
    let mut seen = vec![false; f.nodes.len()];
    let mut work = vec![x];
    while let Some(n) = work.pop() {
        let n = v.repl[n];
        if std::mem::replace(&mut seen[n], true) {
            continue;
        }
        match &f.nodes[n].op {
            Op::Mat(m)
                if std::ptr::eq(m.def, &crate::words::matrix::ROTATE)
                    && m.basis.map(|b| v.repl[b]) == Some(basis) =>
            {
                return true
            }
            Op::Mat(..) | Op::StateRead(_) => {}
            op => work.extend(crate::plan::operands(op)),
        }
    }
    false
}

/// Kernels, job type and `prepare` function of one rule variant.
/// A routing guard as a Rust condition over `info: &ParamInfo`.
pub(crate) fn guard_tokens(g: &Guard) -> TokenStream {
    let p = Private;
    match g {
        Guard::Kinds(kinds) => {
            let alts = kinds.iter().map(|k| match k {
                Kind::Matrix => quote!(info.is_matrix()),
                Kind::Vector => quote!(info.is_vector()),
                Kind::Scalar => quote!(info.is_scalar()),
                Kind::Tensor => quote!((info.rank() > 2)),
            });
            quote!((false #(|| #alts)*))
        }
        Guard::Text { field, test, lit } => {
            let recv = match field {
                TextField::Name => quote!(info.name),
                TextField::Module => quote!(info.module),
            };
            match test {
                TextTest::Contains => quote!(#recv.contains(#lit)),
                TextTest::StartsWith => quote!(#recv.starts_with(#lit)),
                TextTest::EndsWith => quote!(#recv.ends_with(#lit)),
                TextTest::Eq => quote!((#recv == #lit)),
                TextTest::Ne => quote!((#recv != #lit)),
            }
        }
        Guard::Cmp(op, a, b) => {
            let num = |n: &GuardNum| match n {
                GuardNum::Shape(s) => {
                    let m = format_ident!("{}", s);
                    quote!((info.#m() as #p::F64))
                }
                GuardNum::Num(v) => f64_lit(*v),
            };
            bin_tokens(*op, num(a), num(b), false)
        }
        Guard::Bool(b) => quote!(#b),
        Guard::Not(a) => {
            let a = guard_tokens(a);
            quote!((!#a))
        }
        Guard::And(a, b) => bin_tokens(BinOp::And, guard_tokens(a), guard_tokens(b), false),
        Guard::Or(a, b) => bin_tokens(BinOp::Or, guard_tokens(a), guard_tokens(b), false),
    }
}
