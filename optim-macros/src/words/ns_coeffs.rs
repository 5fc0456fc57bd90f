//! `orthogonalize(x, coeffs = …)`: the Newton–Schulz coefficient schedule, a preset name or a
//! literal list of `(a, b, c)` triples, fixed at compile time. Presets name runtime constants
//! (`optim_runtime::matrix::NS_*`); their values live there only.

use crate::errors::did_you_mean;
use crate::ir::MatConst;
use crate::lower::{Call, Lowerer};
use syn::spanned::Spanned;
use syn::{Expr, Lit, UnOp};

/// Preset names and the runtime constants they stand for.
const PRESETS: &[(&str, &str)] = &[
    ("keller", "NS_KELLER"),
    ("polar_express", "NS_POLAR_EXPRESS"),
    ("cubic", "NS_CUBIC"),
];

/// The `coeffs` argument of `c` as a config constant (none when it is absent or wrong; errors
/// are reported at their tokens).
pub(crate) fn coeffs(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> Vec<(&'static str, MatConst)> {
    let Some(e) = c.raw("coeffs") else {
        return Vec::new();
    };
    if let Some(k) = ["a", "b", "c"].into_iter().find(|k| c.arg(k).is_some()) {
        lw.cx.error(
            c.arg_span(k),
            "give either `coeffs` (a schedule) or `a`, `b`, `c` (one triple for every iteration), not both",
        );
        return Vec::new();
    }
    let value = match e {
        Expr::Path(p) if p.path.get_ident().is_some() => preset(lw, e, &p.path.segments[0].ident),
        Expr::Array(a) if a.elems.is_empty() => {
            lw.cx
                .error(e.span(), "`coeffs` needs at least one `(a, b, c)` triple");
            None
        }
        Expr::Array(a) => {
            let rows: Vec<Option<[f64; 3]>> = a.elems.iter().map(|t| triple(lw, t)).collect();
            rows.into_iter()
                .collect::<Option<Vec<_>>>()
                .map(MatConst::Triples)
        }
        _ => {
            lw.cx.error(
                e.span(),
                format!(
                    "`coeffs` takes a preset ({}) or a list of literal triples `[(a, b, c), ...]`",
                    preset_names()
                ),
            );
            None
        }
    };
    value.map(|v| ("coeffs", v)).into_iter().collect()
}

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| format!("`{}`", p.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn preset(lw: &mut Lowerer<'_, '_>, e: &Expr, id: &syn::Ident) -> Option<MatConst> {
    let name = id.to_string();
    if let Some(&(_, konst)) = PRESETS.iter().find(|p| p.0 == name) {
        return Some(MatConst::Preset(konst));
    }
    let hyper = lw.hypers.iter().any(|h| h.name == name);
    let why = if hyper {
        format!("; `{name}` is a hyperparameter, but a schedule is fixed at compile time (pass one coefficient triple by hyperparameters with `a = …, b = …, c = …`)")
    } else {
        did_you_mean(&name, PRESETS.iter().map(|p| p.0))
    };
    lw.cx.error(
        e.span(),
        format!(
            "unknown Newton–Schulz preset `{name}`: expected {} or a list of triples `[(a, b, c), ...]`{why}",
            preset_names()
        ),
    );
    None
}

/// One `(a, b, c)` of number literals.
fn triple(lw: &mut Lowerer<'_, '_>, t: &Expr) -> Option<[f64; 3]> {
    let elems: Vec<&Expr> = match t {
        Expr::Tuple(t) => t.elems.iter().collect(),
        Expr::Paren(p) => vec![&*p.expr],
        _ => {
            lw.cx.error(
                t.span(),
                "each entry of `coeffs` is a triple `(a, b, c)` of the polynomial `a x + b x³ + c x⁵`",
            );
            return None;
        }
    };
    if elems.len() != 3 {
        lw.cx.error(
            t.span(),
            format!(
                "a Newton–Schulz coefficient triple has 3 numbers `(a, b, c)` (X ← a X + (b A + c A²) X with A = X Xᵀ), found {}",
                elems.len()
            ),
        );
        return None;
    }
    let v: Vec<Option<f64>> = elems.into_iter().map(|e| number(lw, e)).collect();
    Some([v[0]?, v[1]?, v[2]?])
}

/// A number literal, possibly negated.
fn number(lw: &mut Lowerer<'_, '_>, e: &Expr) -> Option<f64> {
    let (neg, inner) = match e {
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => (true, &*u.expr),
        _ => (false, e),
    };
    let v = match inner {
        Expr::Lit(l) => match &l.lit {
            Lit::Float(f) => f.base10_parse::<f64>().ok(),
            Lit::Int(i) => i.base10_parse::<f64>().ok(),
            _ => None,
        },
        _ => None,
    };
    match v {
        Some(v) if v.is_finite() => Some(if neg { -v } else { v }),
        Some(_) => {
            lw.cx
                .error(e.span(), "a Newton–Schulz coefficient must be finite");
            None
        }
        None => {
            lw.cx.error(e.span(), "a Newton–Schulz coefficient must be a number literal: a schedule is fixed at compile time (pass one triple by hyperparameters with `a = …, b = …, c = …`)");
            None
        }
    }
}
