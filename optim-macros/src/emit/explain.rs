//! `explain()`: the generated `OptimizerConfig::plan` describing, for the current flag values,
//! each rule's loops (streams read and written, operations per element), barriers, state
//! buffers and hoisted scalars.

use super::exprs::flag_scrutinee;
use crate::ir::{self, Fused, MatPhase, NodeId, Op, RuleBody};
use crate::plan::{Plan, Variant};
use crate::private::Private;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// One `RulePlan` expression per rule.
pub(crate) fn plan_rules(opt: &ir::Optimizer, plan: &Plan) -> Vec<TokenStream> {
    let p = Private;
    opt.rules
        .iter()
        .zip(&plan.rules)
        .enumerate()
        .map(|(ri, (rule, rule_plan))| {
            let text = &rule.text;
            match (&rule.body, rule_plan) {
                (RuleBody::Fused(f), Some(rp)) => {
                    let arms = rp.variants.iter().map(|v| variant_body(opt, f, v));
                    let scrut = flag_scrutinee(opt, rp, quote!(self));
                    quote!(#p::RulePlan { pattern: #text, body: match #scrut { #(#arms,)* } })
                }
                _ => {
                    let fname = format_ident!("__reuse_{}", ri);
                    quote!(#p::RulePlan { pattern: #text, body: #p::RuleBody::Reuse { plan: ::std::boxed::Box::new(#p::OptimizerConfig::plan(&self.#fname(0))) } })
                }
            }
        })
        .collect()
}

/// `(flags...) => RuleBody::Fused { ... }` for one variant.
fn variant_body(opt: &ir::Optimizer, f: &Fused, v: &Variant) -> TokenStream {
    let p = Private;
    let pat = super::exprs::flag_pattern(v);
    let kernels = (0..v.stages.len()).map(|k| {
        let reads = v.reads(f, k);
        let writes = v.writes(f, k);
        let ops = v.ops(f, k);
        let low = v.loops[k]
            .bufs
            .iter()
            .filter(|b| b.elem.is_16())
            .map(|b| b.name.as_str());
        let q8 = v.loops[k]
            .bufs
            .iter()
            .filter(|b| b.elem.is_q8())
            .map(|b| b.name.as_str());
        quote!(#p::KernelPlan { reads: ::std::vec![#(#reads),*], writes: ::std::vec![#(#writes),*], ops: #ops, low: ::std::vec![#(#low),*], q8: ::std::vec![#(#q8),*] })
    });
    let barriers: Vec<String> = v
        .pre_barriers
        .iter()
        .chain(v.barriers.iter().flatten())
        .map(|b| format!("{}({})", b.def.explain, v.stream_name(f, b.input)))
        .chain(v.axis_calls.iter().flatten().map(|a| {
            format!(
                "{}_{}({})",
                format!("{:?}", a.axis).to_lowercase(),
                format!("{:?}", a.kind).to_lowercase(),
                v.stream_name(f, a.input)
            )
        }))
        .chain(
            v.stages
                .iter()
                .flat_map(|st| st.reductions.iter())
                .map(|r| {
                    format!(
                        "{}{}({})",
                        if r.global.is_some() { "global " } else { "" },
                        format!("{:?}", r.kind).to_lowercase(),
                        named(opt, f, v, r.value)
                    )
                }),
        )
        .collect();
    let mut state: Vec<&str> = v.slots.iter().map(|&s| f.slots[s].name.as_str()).collect();
    for b in v.pre_barriers.iter().chain(v.barriers.iter().flatten()) {
        for &s in &b.slots {
            state.push(f.mat_slots[s - f.slots.len()].as_str());
        }
    }
    let mut scalars: Vec<String> = Vec::new();
    for st in &v.stages {
        for &x in &st.scalars {
            let d = match &v.names[v.repl[x]] {
                Some(n) => format!("{n} = {}", describe(opt, f, v, x)),
                None => describe(opt, f, v, x),
            };
            if !scalars.contains(&d) {
                scalars.push(d);
            }
        }
    }
    quote! {
        #pat => #p::RuleBody::Fused {
            kernels: ::std::vec![#(#kernels),*],
            barriers: ::std::vec![#(#barriers),*],
            state: ::std::vec![#(#state),*],
            scalars: ::std::vec![#(#scalars),*],
        }
    }
}

/// Node `id` by its `let` name, or described.
fn named(opt: &ir::Optimizer, f: &Fused, v: &Variant, id: NodeId) -> String {
    match &v.names[v.repl[id]] {
        Some(n) => n.clone(),
        None => describe(opt, f, v, id),
    }
}

/// A readable description of a value, for `explain` (`"(1 - beta1)"`); values bound by a `let`
/// inside it appear by their names.
pub(crate) fn describe(opt: &ir::Optimizer, f: &Fused, v: &Variant, id: NodeId) -> String {
    let id = v.repl[id];
    if let Some(b) = v.konst[id] {
        return b.to_string();
    }
    let d = |x: NodeId| named(opt, f, v, x);
    match &f.nodes[id].op {
        Op::Num(x) => format!("{x}"),
        Op::Bool(b) => b.to_string(),
        Op::Hyper(h) | Op::Flag(h) => opt.hypers[*h].name.to_string(),
        Op::Eta(h) => format!("({0} / peak({0}))", opt.hypers[*h].name),
        Op::Step => "step".into(),
        Op::Shape(s) => (*s).into(),
        Op::Neg(a) => format!("-{}", d(*a)),
        Op::Not(a) => format!("!{}", d(*a)),
        Op::Bin(op, a, b) => format!("({} {} {})", d(*a), op.symbol(), d(*b)),
        Op::Func(fun, args) => format!(
            "{}({})",
            fun.name,
            args.iter().map(|a| d(*a)).collect::<Vec<_>>().join(", ")
        ),
        Op::Select(c, a, b) => format!("select({}, {}, {})", d(*c), d(*a), d(*b)),
        Op::First(k) => format!("first_step({})", f.slots[*k].name),
        Op::ScalarRead(k) => f.scalar_slots[*k].name.clone(),
        Op::Param => "param".into(),
        Op::Grad => "grad".into(),
        Op::StateRead(k) => f.slots[*k].name.clone(),
        Op::Reduce(kind, x) => format!("{}({})", format!("{kind:?}").to_lowercase(), d(*x)),
        Op::Global(kind, x, _) => {
            format!("global_{}({})", format!("{kind:?}").to_lowercase(), d(*x))
        }
        Op::Axis(axis, kind, x) => format!(
            "{}_{}({})",
            format!("{axis:?}").to_lowercase(),
            format!("{kind:?}").to_lowercase(),
            d(*x)
        ),
        Op::Mat(m) if m.def.phase == MatPhase::Basis => m.def.explain.into(),
        Op::Mat(m) => format!("{}({})", m.def.explain, d(m.input)),
    }
}
