//! Rule patterns and guards → `ir::Guard`, a condition over the parameter's `ParamInfo` (kind,
//! name, module type, shape scalars). `emit` turns it into the generated `route` function.

use crate::errors::{did_you_mean, Errors};
use crate::ir::{BinOp, Guard, GuardNum, Kind, TextField, TextTest};
use crate::parse::{self, Pattern};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::Expr;

/// The condition of a rule (`None` for a catch-all) and its text as written.
pub(crate) fn lower_pattern(cx: &mut Errors, rule: &parse::Rule) -> (Option<Guard>, String) {
    let mut text = String::new();
    let mut cond = match &rule.pattern {
        Pattern::Any(_) => {
            text.push('_');
            None
        }
        Pattern::Kinds(kinds) => {
            let mut out = Vec::new();
            for k in kinds {
                let s = k.to_string();
                match s.as_str() {
                    "matrix" => out.push(Kind::Matrix),
                    "vector" => out.push(Kind::Vector),
                    "scalar" => out.push(Kind::Scalar),
                    "tensor" => out.push(Kind::Tensor),
                    _ => cx.error(
                        k.span(),
                        format!(
                            "unknown parameter kind `{s}`; expected `matrix`, `vector`, `scalar`, `tensor` or `_`{}",
                            did_you_mean(&s, ["matrix", "vector", "scalar", "tensor"])
                        ),
                    ),
                }
            }
            text.push_str(
                &kinds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            Some(Guard::Kinds(out))
        }
    };
    if let Some(guard) = &rule.guard {
        let g = lower_guard(cx, guard);
        text.push_str(" if ");
        text.push_str(&guard.to_token_stream().to_string());
        cond = Some(match cond {
            Some(c) => Guard::And(Box::new(c), Box::new(g)),
            None => g,
        });
    }
    (cond, text)
}

const GUARD_HELP: &str = "supported guards: `name.contains(\"...\")`, `name.starts_with(\"...\")`, `name.ends_with(\"...\")`, `name == \"...\"` (the same for `module`, the dfdx module type), comparisons of `rows`, `cols`, `numel`, `rank`, `fan_in`, `fan_out` with numbers, combined with `&&`, `||`, `!`";

fn text_field(e: &Expr) -> Option<TextField> {
    match e {
        Expr::Path(p) if p.path.is_ident("name") => Some(TextField::Name),
        Expr::Path(p) if p.path.is_ident("module") => Some(TextField::Module),
        _ => None,
    }
}

fn lower_guard(cx: &mut Errors, e: &Expr) -> Guard {
    match e {
        Expr::Paren(p) => lower_guard(cx, &p.expr),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Not(_)) => {
            Guard::Not(Box::new(lower_guard(cx, &u.expr)))
        }
        Expr::MethodCall(m) => {
            let method = m.method.to_string();
            let Some(field) = text_field(&m.receiver) else {
                cx.error(
                    m.receiver.span(),
                    format!("only `name` and `module` have methods in a guard; {GUARD_HELP}"),
                );
                return Guard::Bool(false);
            };
            let test = match method.as_str() {
                "contains" => TextTest::Contains,
                "starts_with" => TextTest::StartsWith,
                "ends_with" => TextTest::EndsWith,
                _ => {
                    cx.error(
                        m.method.span(),
                        format!(
                            "unknown method `{method}` on `name`; expected `contains`, `starts_with` or `ends_with`{}",
                            did_you_mean(&method, ["contains", "starts_with", "ends_with"])
                        ),
                    );
                    return Guard::Bool(false);
                }
            };
            match m.args.first() {
                Some(Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                })) if m.args.len() == 1 => Guard::Text {
                    field,
                    test,
                    lit: s.value(),
                },
                _ => {
                    cx.error(
                        m.span(),
                        format!("`name.{method}` takes one string literal"),
                    );
                    Guard::Bool(false)
                }
            }
        }
        Expr::Binary(b) => lower_binary_guard(cx, b),
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Bool(b),
            ..
        }) => Guard::Bool(b.value),
        other => {
            cx.error(other.span(), format!("unsupported guard; {GUARD_HELP}"));
            Guard::Bool(false)
        }
    }
}

fn lower_binary_guard(cx: &mut Errors, b: &syn::ExprBinary) -> Guard {
    use syn::BinOp as B;
    let cmp = match b.op {
        B::And(_) | B::Or(_) => {
            let l = Box::new(lower_guard(cx, &b.left));
            let r = Box::new(lower_guard(cx, &b.right));
            return if matches!(b.op, B::And(_)) {
                Guard::And(l, r)
            } else {
                Guard::Or(l, r)
            };
        }
        B::Eq(_) => BinOp::Eq,
        B::Ne(_) => BinOp::Ne,
        B::Lt(_) => BinOp::Lt,
        B::Le(_) => BinOp::Le,
        B::Gt(_) => BinOp::Gt,
        B::Ge(_) => BinOp::Ge,
        _ => {
            cx.error(
                b.op.span(),
                format!("unsupported operator in a guard; {GUARD_HELP}"),
            );
            return Guard::Bool(false);
        }
    };
    if let (
        Some(field),
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }),
    ) = (text_field(&b.left), &*b.right)
    {
        if matches!(cmp, BinOp::Eq | BinOp::Ne) {
            let test = if cmp == BinOp::Eq {
                TextTest::Eq
            } else {
                TextTest::Ne
            };
            return Guard::Text {
                field,
                test,
                lit: s.value(),
            };
        }
    }
    let l = guard_number(cx, &b.left);
    let r = guard_number(cx, &b.right);
    Guard::Cmp(cmp, l, r)
}

fn guard_number(cx: &mut Errors, e: &Expr) -> GuardNum {
    match e {
        Expr::Path(p) if p.path.get_ident().is_some() => {
            let id = p
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if id == "name" || id == "module" {
                cx.error(p.span(), format!("`{id}` is text: compare it with a string literal (`{id} == \"...\"`) or use `{id}.contains(\"...\")`"));
                return GuardNum::Num(0.0);
            }
            const SHAPES: [&str; 6] = ["rows", "cols", "numel", "rank", "fan_in", "fan_out"];
            match SHAPES.iter().find(|s| **s == id) {
                Some(s) => GuardNum::Shape(s),
                None => {
                    cx.error(
                        p.span(),
                        format!(
                            "unknown name `{id}` in a guard; expected `rows`, `cols`, `numel`, `rank`, `fan_in` or `fan_out`{}",
                            did_you_mean(&id, ["rows", "cols", "numel", "rank", "fan_in", "fan_out", "name"])
                        ),
                    );
                    GuardNum::Num(0.0)
                }
            }
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => number(cx, e, i.base10_parse::<f64>()),
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Float(f),
            ..
        }) => number(cx, e, f.base10_parse::<f64>()),
        other => {
            cx.error(
                other.span(),
                format!("unsupported guard operand; {GUARD_HELP}"),
            );
            GuardNum::Num(0.0)
        }
    }
}

fn number(cx: &mut Errors, e: &Expr, v: syn::Result<f64>) -> GuardNum {
    match v {
        Ok(v) if !v.is_finite() => {
            cx.error(e.span(), "number literal is not a finite `f64`");
            GuardNum::Num(0.0)
        }
        Ok(v) => GuardNum::Num(v),
        Err(err) => {
            cx.push(err);
            GuardNum::Num(0.0)
        }
    }
}
