//! Stage 2, lower: `parse::Input` → `ir::Optimizer`. Resolves every name against the rule's
//! bindings, the hyperparameters, the builtins and the DSL's words (`words`), expands each word
//! into dataflow nodes, and type-checks levels (flag / per-step / per-element) and booleans.
//!
//! Policy: lowering never returns early on a semantic error; it pushes to `cx`, substitutes a
//! harmless node, and keeps going, so that independent mistakes are all reported at once.
//!
//! - `mod.rs`: the optimizer, its hyperparameters and rules;
//! - `guard.rs`: rule patterns and guards;
//! - `body.rs`: the `Lowerer` of a rule body (statements, expressions, names) and the node
//!   builders words use;
//! - `call.rs`: binding a word's arguments and checking their roles.

mod body;
mod call;
mod guard;

pub(crate) use body::{Binding, Lowerer};
pub(crate) use call::Call;

use crate::errors::{did_you_mean, Errors};
use crate::ir::{self, Domain};
use crate::parse::{self as ast, LitValue, Pattern, RuleTarget, Stmt};
use crate::words;
use proc_macro2::Span;
use syn::spanned::Spanned;

pub(crate) fn lower(cx: &mut Errors, input: &ast::Input) -> ir::Optimizer {
    check_type_name(cx, &input.name);
    let hypers = lower_hypers(cx, input);
    let mut domains: Vec<Domain> = hypers.iter().map(|h| h.domain).collect();
    let rules = lower_rules(cx, input, &hypers, &mut domains);
    let mut hypers = hypers;
    for (h, d) in hypers.iter_mut().zip(domains) {
        h.domain = d;
    }
    // defaults must lie in the (possibly refined) domains
    for (h, decl) in hypers.iter().zip(&input.hypers) {
        if let LitValue::Num(v) = h.default {
            if !h.domain.contains(v) {
                cx.error(
                    decl.default.span,
                    format!(
                        "default of `{}` must be {}, found {}",
                        h.name,
                        h.domain.describe(),
                        fmt_num(v)
                    ),
                );
            }
        }
    }
    ir::Optimizer {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        hypers,
        rules,
    }
}

pub(super) fn fmt_num(v: f64) -> String {
    format!("{v:?}")
}

/// Domain implied by a hyperparameter's name (PyTorch's argument checks).
fn domain_from_name(name: &str) -> Domain {
    if name == "lr"
        || name.ends_with("_lr")
        || name.ends_with("weight_decay")
        || name == "momentum"
        || name == "dampening"
    {
        Domain::NonNegative
    } else if name.starts_with("eps") {
        Domain::Positive
    } else if name
        .strip_prefix("beta")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    {
        Domain::UnitOpen
    } else {
        Domain::Finite
    }
}

/// The optimizer's name becomes a type whose element type parameter is `E`, next to generated
/// items named `__…`; a name that would clash with them is rejected here, on the name.
fn check_type_name(cx: &mut Errors, name: &syn::Ident) {
    let s = name.to_string();
    if s == "E" {
        cx.error(name.span(), "`E` cannot name an optimizer: the generated `E<E = f32>` would shadow its own element type parameter; choose another name");
    } else if s.starts_with("__") {
        cx.error(
            name.span(),
            format!("`{s}` cannot name an optimizer: names starting with `__` are reserved for generated items"),
        );
    }
}

fn lower_hypers(cx: &mut Errors, input: &ast::Input) -> Vec<ir::Hyper> {
    let mut out: Vec<ir::Hyper> = Vec::new();
    for decl in &input.hypers {
        let name = decl.name.to_string();
        if out.iter().any(|h| h.name == decl.name) {
            cx.error(
                decl.name.span(),
                format!("duplicate hyperparameter `{name}`"),
            );
            continue;
        }
        if let Some((why, builtin)) = words::reserved_hyper(&name) {
            cx.error(decl.name.span(), why);
            if builtin {
                // a builtin keeps its meaning in the body; other names stay declared, so that
                // their uses do not add "cannot find" errors
                continue;
            }
        }
        let is_flag = matches!(decl.default.value, LitValue::Bool(_));
        out.push(ir::Hyper {
            name: decl.name.clone(),
            default: decl.default.value,
            is_flag,
            domain: if is_flag {
                Domain::Finite
            } else if let Some(d) = &decl.domain {
                match d.to_string().as_str() {
                    "finite" => Domain::Finite,
                    "nonneg" => Domain::NonNegative,
                    "positive" => Domain::Positive,
                    "unit" => Domain::UnitOpen,
                    "nonpos" => Domain::NonPositive,
                    "count" => Domain::Count,
                    other => {
                        cx.error(
                            d.span(),
                            format!(
                                "unknown domain `{other}`; expected `finite`, `nonneg`, `positive`, `unit` ([0, 1)), `nonpos` or `count` (whole numbers >= 1){}",
                                did_you_mean(other, ["finite", "nonneg", "positive", "unit", "nonpos", "count"])
                            ),
                        );
                        domain_from_name(&name)
                    }
                }
            } else {
                domain_from_name(&name)
            },
        });
    }
    out
}

fn lower_rules(
    cx: &mut Errors,
    input: &ast::Input,
    hypers: &[ir::Hyper],
    domains: &mut [Domain],
) -> Vec<ir::Rule> {
    match &input.body {
        ast::Body::Block(stmts) => {
            let body = lower_fused(cx, hypers, domains, stmts, input.body_span, false);
            vec![ir::Rule {
                text: "_".into(),
                condition: None,
                body,
            }]
        }
        ast::Body::Rules(rules) => {
            let mut out = Vec::new();
            let mut catch_all_seen = false;
            for rule in rules {
                if catch_all_seen {
                    cx.error(rule.span, "unreachable rule: it comes after the catch-all rule `_`, which matches every parameter");
                }
                let (cond, text) = guard::lower_pattern(cx, rule);
                if cond.is_none() {
                    catch_all_seen = true;
                }
                let body = match &rule.target {
                    RuleTarget::Block { stmts, span } => {
                        let matrix_rule = matches!(&rule.pattern, Pattern::Kinds(k) if k.iter().all(|k| k == "matrix" || k == "tensor"));
                        lower_fused(cx, hypers, domains, stmts, *span, matrix_rule)
                    }
                    RuleTarget::Reuse(reuse) => {
                        if reuse.name == input.name {
                            cx.error(reuse.name.span(), format!("`{}` cannot reuse itself; reuse another optimizer or write the rule's body", reuse.name));
                        }
                        lower_reuse(cx, hypers, reuse)
                    }
                };
                out.push(ir::Rule {
                    text,
                    condition: cond,
                    body,
                });
            }
            if !catch_all_seen {
                let span = rules.last().map_or(input.body_span, |r| r.span);
                cx.error(span, "missing catch-all rule: add `_ => { ... }` as the last rule so that every parameter is routed");
            }
            out
        }
    }
}

/// The condition of a rule as Rust tokens over `info: &ParamInfo`, and its text.
fn lower_reuse(cx: &mut Errors, hypers: &[ir::Hyper], reuse: &ast::Reuse) -> ir::RuleBody {
    let mut domains: Vec<Domain> = hypers.iter().map(|h| h.domain).collect();
    let mut lw = Lowerer::new(cx, hypers, &mut domains, true);
    let mut bindings = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (k, e) in &reuse.bindings {
        if seen.contains(&k.to_string()) {
            lw.cx.error(k.span(), format!("`{k}` is bound twice"));
            continue;
        }
        seen.push(k.to_string());
        let id = lw.expr(e, None);
        if !lw.nodes[id].ty.level.per_step() {
            lw.cx.error(e.span(), format!("`{k}` must be bound to a per-step value (hyperparameters and literals), found a per-element value"));
        }
        bindings.push((k.clone(), id, e.span()));
    }
    let nodes = std::mem::take(&mut lw.nodes);
    ir::RuleBody::Reuse {
        name: reuse.name.clone(),
        bindings,
        nodes,
    }
}

fn lower_fused(
    cx: &mut Errors,
    hypers: &[ir::Hyper],
    domains: &mut [Domain],
    stmts: &[Stmt],
    span: Span,
    matrix_rule: bool,
) -> ir::RuleBody {
    let mut lw = Lowerer::new(cx, hypers, domains, false);
    lw.matrix_rule = matrix_rule;
    lw.declared = stmts
        .iter()
        .filter_map(|s| match s {
            Stmt::Let { name, .. } => Some(name.to_string()),
            Stmt::Assign { .. } => None,
        })
        .collect();
    for stmt in stmts {
        lw.stmt(stmt);
    }
    if lw.param_write.is_none() {
        lw.cx.error(span, "this rule never updates `param`; end it with an update such as `param -= lr * update;`");
    }
    ir::RuleBody::Fused(ir::Fused {
        nodes: lw.nodes,
        slots: lw.slots,
        scalar_slots: lw.scalar_slots,
        mat_slots: lw.mat_slots,
        param_write: lw.param_write,
        lets: lw.lets,
    })
}
