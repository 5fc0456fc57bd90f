//! Stage 2, lower: `ast::Input` → `ir::Optimizer`. Resolves every name against the rule's
//! bindings, the hyperparameters, the builtins and the `catalog`, expands stateful primitives
//! into dataflow nodes, and type-checks levels (flag / per-step / per-element) and booleans.
//!
//! Policy: lowering never returns early on a semantic error; it pushes to `cx`, substitutes a
//! harmless node, and keeps going, so that independent mistakes are all reported at once.

use crate::ast::{self, AssignOp, LitValue, Pattern, RuleTarget, Stmt};
use crate::catalog::{self, Role, Word};
use crate::errors::{did_you_mean, Errors};
use crate::ir::{self, BinOp, Domain, Func, Level, Node, NodeId, Op, Ty};
use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use std::collections::HashMap;
use syn::spanned::Spanned;
use syn::{Expr, Ident};

/// Lowers the whole input. Errors go to `cx`.
pub(crate) fn lower(cx: &mut Errors, input: &ast::Input) -> ir::Optimizer {
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

fn fmt_num(v: f64) -> String {
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
        if catalog::RESERVED.contains(&name.as_str()) {
            cx.error(
                decl.name.span(),
                format!("`{name}` is a reserved name and cannot be a hyperparameter"),
            );
            continue;
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
                let (cond, text) = lower_pattern(cx, rule);
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
fn lower_pattern(cx: &mut Errors, rule: &ast::Rule) -> (Option<TokenStream>, String) {
    let mut text = String::new();
    let mut cond: Option<TokenStream> = match &rule.pattern {
        Pattern::Any(_) => {
            text.push('_');
            None
        }
        Pattern::Kinds(kinds) => {
            let mut alts = Vec::new();
            for k in kinds {
                let s = k.to_string();
                let t = match s.as_str() {
                    "matrix" => quote!(info.is_matrix()),
                    "vector" => quote!(info.is_vector()),
                    "scalar" => quote!(info.is_scalar()),
                    "tensor" => quote!((info.rank() > 2)),
                    _ => {
                        cx.error(
                            k.span(),
                            format!(
                                "unknown parameter kind `{s}`; expected `matrix`, `vector`, `scalar`, `tensor` or `_`{}",
                                did_you_mean(&s, ["matrix", "vector", "scalar", "tensor"])
                            ),
                        );
                        quote!(false)
                    }
                };
                alts.push(t);
            }
            text.push_str(
                &kinds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            Some(quote!((#(#alts)||*)))
        }
    };
    if let Some(guard) = &rule.guard {
        let g = lower_guard(cx, guard);
        text.push_str(" if ");
        text.push_str(&guard.to_token_stream().to_string());
        cond = Some(match cond {
            Some(c) => quote!((#c && #g)),
            None => g,
        });
    }
    (cond, text)
}

const GUARD_HELP: &str = "supported guards: `name.contains(\"...\")`, `name.starts_with(\"...\")`, `name.ends_with(\"...\")`, `name == \"...\"` (the same for `module`, the dfdx module type), comparisons of `rows`, `cols`, `numel`, `rank`, `fan_in`, `fan_out` with numbers, combined with `&&`, `||`, `!`";

fn lower_guard(cx: &mut Errors, e: &Expr) -> TokenStream {
    match e {
        Expr::Paren(p) => {
            let inner = lower_guard(cx, &p.expr);
            quote!((#inner))
        }
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Not(_)) => {
            let inner = lower_guard(cx, &u.expr);
            quote!((!#inner))
        }
        Expr::MethodCall(m) => {
            let method = m.method.to_string();
            let recv = match &*m.receiver {
                Expr::Path(p) if p.path.is_ident("name") => Some(quote!(info.name)),
                Expr::Path(p) if p.path.is_ident("module") => Some(quote!(info.module)),
                _ => None,
            };
            let recv_is_name = recv.is_some();
            let lit = match m.args.first() {
                Some(Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                })) if m.args.len() == 1 => Some(s.clone()),
                _ => None,
            };
            if !recv_is_name {
                cx.error(
                    m.receiver.span(),
                    format!("only `name` and `module` have methods in a guard; {GUARD_HELP}"),
                );
                return quote!(false);
            }
            if !["contains", "starts_with", "ends_with"].contains(&method.as_str()) {
                cx.error(
                    m.method.span(),
                    format!(
                        "unknown method `{method}` on `name`; expected `contains`, `starts_with` or `ends_with`{}",
                        did_you_mean(&method, ["contains", "starts_with", "ends_with"])
                    ),
                );
                return quote!(false);
            }
            match lit {
                Some(s) => {
                    let m = &m.method;
                    let recv = recv.unwrap_or_else(|| quote!(info.name));
                    quote!(#recv.#m(#s))
                }
                None => {
                    cx.error(
                        m.span(),
                        format!("`name.{method}` takes one string literal"),
                    );
                    quote!(false)
                }
            }
        }
        Expr::Binary(b) => {
            use syn::BinOp as B;
            match b.op {
                B::And(_) | B::Or(_) => {
                    let l = lower_guard(cx, &b.left);
                    let r = lower_guard(cx, &b.right);
                    let op = &b.op;
                    quote!((#l #op #r))
                }
                B::Eq(_) | B::Ne(_) | B::Lt(_) | B::Le(_) | B::Gt(_) | B::Ge(_) => {
                    let op = &b.op;
                    if let (
                        Expr::Path(p),
                        Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }),
                    ) = (&*b.left, &*b.right)
                    {
                        if p.path.is_ident("name") && matches!(b.op, B::Eq(_) | B::Ne(_)) {
                            return quote!((info.name #op #s));
                        }
                        if p.path.is_ident("module") && matches!(b.op, B::Eq(_) | B::Ne(_)) {
                            return quote!((info.module #op #s));
                        }
                    }
                    let l = guard_number(cx, &b.left);
                    let r = guard_number(cx, &b.right);
                    quote!((#l #op #r))
                }
                _ => {
                    cx.error(
                        b.op.span(),
                        format!("unsupported operator in a guard; {GUARD_HELP}"),
                    );
                    quote!(false)
                }
            }
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Bool(b),
            ..
        }) => quote!(#b),
        other => {
            cx.error(other.span(), format!("unsupported guard; {GUARD_HELP}"));
            quote!(false)
        }
    }
}

fn guard_number(cx: &mut Errors, e: &Expr) -> TokenStream {
    match e {
        Expr::Path(p) if p.path.get_ident().is_some() => {
            let id = p
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if id == "name" || id == "module" {
                cx.error(p.span(), format!("`{id}` is text: compare it with a string literal (`{id} == \"...\"`) or use `{id}.contains(\"...\")`"));
                return quote!(0.0);
            }
            let call = match id.as_str() {
                "rows" => quote!(info.rows()),
                "cols" => quote!(info.cols()),
                "numel" => quote!(info.numel()),
                "rank" => quote!(info.rank()),
                "fan_in" => quote!(info.fan_in()),
                "fan_out" => quote!(info.fan_out()),
                _ => {
                    cx.error(
                        p.span(),
                        format!(
                            "unknown name `{id}` in a guard; expected `rows`, `cols`, `numel`, `rank`, `fan_in` or `fan_out`{}",
                            did_you_mean(&id, ["rows", "cols", "numel", "rank", "fan_in", "fan_out", "name"])
                        ),
                    );
                    return quote!(0.0);
                }
            };
            let p = crate::private::Private;
            quote!((#call as #p::F64))
        }
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => match i.base10_parse::<f64>() {
            Ok(v) if !v.is_finite() => {
                cx.error(e.span(), "number literal is not a finite `f64`");
                quote!(0.0)
            }
            Ok(v) => quote!(#v),
            Err(e) => {
                cx.push(e);
                quote!(0.0)
            }
        },
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Float(f),
            ..
        }) => match f.base10_parse::<f64>() {
            Ok(v) if !v.is_finite() => {
                cx.error(e.span(), "number literal is not a finite `f64`");
                quote!(0.0)
            }
            Ok(v) => quote!(#v),
            Err(e) => {
                cx.push(e);
                quote!(0.0)
            }
        },
        other => {
            cx.error(
                other.span(),
                format!("unsupported guard operand; {GUARD_HELP}"),
            );
            quote!(0.0)
        }
    }
}

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
        if lw.nodes[id].ty.level == Level::Elem {
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
    })
}

#[derive(Clone, Copy)]
enum Binding {
    Value(NodeId),
    /// An explicit `state(...)` binding: its slot and current value.
    State(usize, NodeId),
    /// An explicit `scalar_state(...)` binding: its scalar slot and current value.
    ScalarState(usize, NodeId),
}

struct Lowerer<'c, 'h> {
    cx: &'c mut Errors,
    hypers: &'h [ir::Hyper],
    domains: &'h mut [Domain],
    /// Inside reuse bindings only hyperparameters and literals exist.
    hypers_only: bool,
    nodes: Vec<Node>,
    env: HashMap<String, Binding>,
    slots: Vec<ir::Slot>,
    scalar_slots: Vec<ir::ScalarSlot>,
    param_write: Option<NodeId>,
    param_cur: Option<NodeId>,
    grad: Option<NodeId>,
    /// EMA results and their coefficient, for `debias`.
    ema_beta: HashMap<NodeId, NodeId>,
    /// Whether the rule matches only matrices (so matrix primitives are allowed).
    matrix_rule: bool,
    /// Global reductions declared so far in this rule.
    globals: usize,
    /// Matrix-primitive state buffers.
    mat_slots: Vec<String>,
}

const NUM: Ty = Ty {
    level: Level::Flag,
    boolean: false,
};

impl<'c, 'h> Lowerer<'c, 'h> {
    fn new(
        cx: &'c mut Errors,
        hypers: &'h [ir::Hyper],
        domains: &'h mut [Domain],
        hypers_only: bool,
    ) -> Self {
        Lowerer {
            cx,
            hypers,
            domains,
            hypers_only,
            nodes: Vec::new(),
            env: HashMap::new(),
            slots: Vec::new(),
            scalar_slots: Vec::new(),
            param_write: None,
            param_cur: None,
            grad: None,
            ema_beta: HashMap::new(),
            matrix_rule: false,
            globals: 0,
            mat_slots: Vec::new(),
        }
    }

    fn new_mat_slot(&mut self, name: String) -> usize {
        self.mat_slots.push(name);
        self.mat_slots.len() - 1
    }

    /// A per-tensor or global reduction of an element-wise value.
    fn reduce(&mut self, kind: ir::RedKind, x: NodeId, global: bool, span: Span) -> NodeId {
        if self.ty(x).level != Level::Elem {
            self.cx.error(
                span,
                "a reduction needs a per-element value; this value is already a per-step scalar",
            );
        }
        let op = if global {
            self.globals += 1;
            Op::Global(kind, x, self.globals - 1)
        } else {
            Op::Reduce(kind, x)
        };
        self.push(
            op,
            Ty {
                level: Level::Scalar,
                boolean: false,
            },
        )
    }

    fn push(&mut self, op: Op, ty: Ty) -> NodeId {
        self.nodes.push(Node { op, ty });
        self.nodes.len() - 1
    }

    fn ty(&self, id: NodeId) -> Ty {
        self.nodes[id].ty
    }

    fn num(&mut self, v: f64) -> NodeId {
        self.push(Op::Num(v), NUM)
    }

    /// Numeric binary node; level is the max of the operands.
    fn bin(&mut self, op: BinOp, a: NodeId, b: NodeId) -> NodeId {
        let level = self.ty(a).level.max(self.ty(b).level);
        let boolean = !matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div);
        self.push(Op::Bin(op, a, b), Ty { level, boolean })
    }

    fn func(&mut self, f: Func, args: Vec<NodeId>) -> NodeId {
        let level = args
            .iter()
            .map(|&a| self.ty(a).level)
            .max()
            .unwrap_or(Level::Flag);
        self.push(
            Op::Func(f, args),
            Ty {
                level,
                boolean: false,
            },
        )
    }

    fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> NodeId {
        let level = self.ty(c).level.max(self.ty(a).level).max(self.ty(b).level);
        let boolean = self.ty(a).boolean;
        self.push(Op::Select(c, a, b), Ty { level, boolean })
    }

    /// `old + t * (new - old)`, PyTorch's `lerp_` form.
    fn lerp(&mut self, a: NodeId, b: NodeId, t: NodeId) -> NodeId {
        self.func(Func::Lerp, vec![a, b, t])
    }

    fn one_minus(&mut self, x: NodeId) -> NodeId {
        let one = self.num(1.0);
        self.bin(BinOp::Sub, one, x)
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { name, expr } => {
                let is_state = matches!(expr, Expr::Call(c) if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("state")));
                let is_scalar_state = matches!(expr, Expr::Call(c) if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("scalar_state")));
                let id = self.expr(expr, Some(name));
                let key = name.to_string();
                if catalog::BUILTINS.contains(&key.as_str()) {
                    self.cx.error(
                        name.span(),
                        format!("`{key}` is a builtin name and cannot be rebound"),
                    );
                    return;
                }
                let binding = if is_state {
                    Binding::State(self.slots.len().saturating_sub(1), id)
                } else if is_scalar_state {
                    Binding::ScalarState(self.scalar_slots.len().saturating_sub(1), id)
                } else {
                    Binding::Value(id)
                };
                self.env.insert(key, binding);
            }
            Stmt::Assign {
                target,
                op,
                op_span,
                expr,
            } => self.assign(target, *op, *op_span, expr),
        }
    }

    fn assign(&mut self, target: &Ident, op: AssignOp, op_span: Span, expr: &Expr) {
        let key = target.to_string();
        let value = self.expr(expr, None);
        if self.ty(value).boolean {
            self.cx.error(expr.span(), format!("cannot assign a condition to `{key}`; use `select(cond, a, b)` to pick a value"));
            if key == "param" && self.param_write.is_none() {
                // record the update anyway so that "never updates `param`" does not follow
                self.param_write = Some(value);
            }
            return;
        }
        let combine = |lw: &mut Self, cur: NodeId| match op {
            AssignOp::Set => value,
            AssignOp::Sub => lw.bin(BinOp::Sub, cur, value),
            AssignOp::Add => lw.bin(BinOp::Add, cur, value),
            AssignOp::Mul => lw.bin(BinOp::Mul, cur, value),
            AssignOp::Div => lw.bin(BinOp::Div, cur, value),
        };
        match key.as_str() {
            "param" => {
                if self.param_write.is_some() {
                    self.cx.error(
                        target.span(),
                        "`param` is updated twice; a rule updates `param` exactly once, so combine the updates into one statement",
                    );
                    return;
                }
                let cur = self.param_node();
                let new = combine(self, cur);
                self.param_write = Some(new);
                self.param_cur = Some(new);
            }
            "grad" => self.cx.error(target.span(), "cannot assign to `grad`; bind a new name instead, e.g. `let g = grad + weight_decay * param;`"),
            _ => match self.env.get(&key).copied() {
                Some(Binding::State(slot, cur)) => {
                    if self.slots[slot].write.is_some() {
                        self.cx.error(target.span(), format!("state `{key}` is assigned twice; a state is written once per step"));
                        return;
                    }
                    let new = combine(self, cur);
                    self.slots[slot].write = Some(new);
                    self.env.insert(key, Binding::State(slot, new));
                }
                Some(Binding::ScalarState(slot, cur)) => {
                    if self.scalar_slots[slot].write.is_some() {
                        self.cx.error(target.span(), format!("state `{key}` is assigned twice; a state is written once per step"));
                        return;
                    }
                    let new = combine(self, cur);
                    if self.ty(new).level == Level::Elem {
                        self.cx.error(expr.span(), format!("`{key}` is a scalar state; assign it a per-step value, not a per-element one"));
                        return;
                    }
                    self.scalar_slots[slot].write = Some(new);
                    self.env.insert(key, Binding::ScalarState(slot, new));
                }
                Some(Binding::Value(_)) => self.cx.error(
                    target.span(),
                    format!("cannot assign to `{key}`: only `param` and `state(...)` bindings can be updated; write `let {key} = ...;` to shadow it"),
                ),
                None => {
                    if self.hypers.iter().any(|h| h.name == key) {
                        self.cx.error(target.span(), format!("cannot assign to hyperparameter `{key}`; hyperparameters are set through the optimizer's config"));
                    } else if catalog::BUILTINS.contains(&key.as_str()) {
                        self.cx.error(target.span(), format!("cannot assign to `{key}`"));
                    } else {
                        let _ = op_span;
                        self.unknown_name(target);
                    }
                }
            },
        }
    }

    fn param_node(&mut self) -> NodeId {
        if let Some(p) = self.param_cur {
            return p;
        }
        let p = self.push(
            Op::Param,
            Ty {
                level: Level::Elem,
                boolean: false,
            },
        );
        self.param_cur = Some(p);
        p
    }

    fn names_in_scope(&self) -> Vec<String> {
        let mut v: Vec<String> = self.env.keys().cloned().collect();
        v.extend(self.hypers.iter().map(|h| h.name.to_string()));
        if !self.hypers_only {
            v.extend(catalog::BUILTINS.iter().map(|s| s.to_string()));
        }
        v
    }

    fn unknown_name(&mut self, id: &Ident) {
        let name = id.to_string();
        let names = self.names_in_scope();
        let hint = did_you_mean(&name, names.iter().map(String::as_str));
        let extra = if catalog::lookup(&name).is_some() {
            format!("; `{name}` is a primitive: call it as `{name}(...)`")
        } else {
            String::new()
        };
        self.cx.error(
            id.span(),
            format!("cannot find `{name}` in this optimizer{hint}{extra}"),
        );
    }

    fn ident(&mut self, id: &Ident) -> NodeId {
        let name = id.to_string();
        if let Some(b) = self.env.get(&name) {
            return match *b {
                Binding::Value(n) | Binding::State(_, n) | Binding::ScalarState(_, n) => n,
            };
        }
        if let Some(i) = self.hypers.iter().position(|h| h.name == name) {
            return if self.hypers[i].is_flag {
                self.push(
                    Op::Flag(i),
                    Ty {
                        level: Level::Flag,
                        boolean: true,
                    },
                )
            } else {
                self.push(
                    Op::Hyper(i),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                )
            };
        }
        if !self.hypers_only {
            match name.as_str() {
                "grad" => {
                    if let Some(g) = self.grad {
                        return g;
                    }
                    let g = self.push(
                        Op::Grad,
                        Ty {
                            level: Level::Elem,
                            boolean: false,
                        },
                    );
                    self.grad = Some(g);
                    return g;
                }
                "param" => return self.param_node(),
                "step" => {
                    return self.push(
                        Op::Step,
                        Ty {
                            level: Level::Scalar,
                            boolean: false,
                        },
                    )
                }
                "rows" | "cols" | "numel" | "fan_in" | "fan_out" => {
                    let s: &'static str = catalog::BUILTINS
                        .iter()
                        .find(|b| **b == name)
                        .copied()
                        .unwrap_or("numel");
                    return self.push(
                        Op::Shape(s),
                        Ty {
                            level: Level::Scalar,
                            boolean: false,
                        },
                    );
                }
                _ => {}
            }
        }
        self.unknown_name(id);
        self.num(0.0)
    }

    /// Lowers an expression. `name` is the `let` binding it is the right-hand side of (used to
    /// name state slots).
    fn expr(&mut self, e: &Expr, name: Option<&Ident>) -> NodeId {
        match e {
            Expr::Lit(l) => match &l.lit {
                syn::Lit::Float(f) => match f.base10_parse::<f64>() {
                    Ok(v) if !v.is_finite() => {
                        self.cx.error(
                            f.span(),
                            format!("number literal `{f}` is not a finite `f64`"),
                        );
                        self.num(0.0)
                    }
                    Ok(v) => self.num(v),
                    Err(err) => {
                        self.cx.push(err);
                        self.num(0.0)
                    }
                },
                syn::Lit::Int(i) => match i.base10_parse::<f64>() {
                    Ok(v) if !v.is_finite() => {
                        self.cx.error(
                            i.span(),
                            format!("number literal `{i}` is not a finite `f64`"),
                        );
                        self.num(0.0)
                    }
                    Ok(v) => self.num(v),
                    Err(err) => {
                        self.cx.push(err);
                        self.num(0.0)
                    }
                },
                syn::Lit::Bool(b) => self.push(
                    Op::Bool(b.value),
                    Ty {
                        level: Level::Flag,
                        boolean: true,
                    },
                ),
                other => {
                    self.cx
                        .error(other.span(), "expected a number or `true`/`false`");
                    self.num(0.0)
                }
            },
            Expr::Path(p) => match p.path.get_ident() {
                Some(id) => self.ident(id),
                None => {
                    self.cx
                        .error(p.span(), "expected a name; paths are not supported here");
                    self.num(0.0)
                }
            },
            Expr::Paren(p) => self.expr(&p.expr, name),
            Expr::Group(g) => self.expr(&g.expr, name),
            Expr::Unary(u) => {
                let a = self.expr(&u.expr, None);
                match u.op {
                    syn::UnOp::Neg(_) => {
                        if self.ty(a).boolean {
                            self.cx.error(
                                u.expr.span(),
                                "cannot negate a condition with `-`; use `!`",
                            );
                        }
                        if let Op::Num(v) = self.nodes[a].op {
                            return self.num(-v);
                        }
                        let ty = Ty {
                            level: self.ty(a).level,
                            boolean: false,
                        };
                        self.push(Op::Neg(a), ty)
                    }
                    syn::UnOp::Not(_) => {
                        if !self.ty(a).boolean {
                            self.cx.error(
                                u.expr.span(),
                                "`!` expects a condition (a flag or a comparison)",
                            );
                        }
                        let ty = Ty {
                            level: self.ty(a).level,
                            boolean: true,
                        };
                        self.push(Op::Not(a), ty)
                    }
                    _ => {
                        self.cx.error(u.span(), "unsupported unary operator");
                        a
                    }
                }
            }
            Expr::Binary(b) => self.binary(b),
            Expr::Call(c) => self.call(c, name),
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                let hint = if catalog::lookup(&method).is_some() {
                    format!("; write `{method}(x)` instead of `x.{method}()`")
                } else {
                    String::new()
                };
                self.cx.error(
                    m.method.span(),
                    format!("method calls are not supported in an optimizer body{hint}"),
                );
                self.num(0.0)
            }
            other => {
                self.cx.error(
                    other.span(),
                    "unsupported expression; an optimizer body uses names, numbers, `+ - * /`, comparisons, `&&`, `||`, `!` and primitive calls",
                );
                self.num(0.0)
            }
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary) -> NodeId {
        use syn::BinOp as B;
        let op = match b.op {
            B::Add(_) => BinOp::Add,
            B::Sub(_) => BinOp::Sub,
            B::Mul(_) => BinOp::Mul,
            B::Div(_) => BinOp::Div,
            B::Lt(_) => BinOp::Lt,
            B::Le(_) => BinOp::Le,
            B::Gt(_) => BinOp::Gt,
            B::Ge(_) => BinOp::Ge,
            B::Eq(_) => BinOp::Eq,
            B::Ne(_) => BinOp::Ne,
            B::And(_) => BinOp::And,
            B::Or(_) => BinOp::Or,
            B::BitXor(_) => {
                self.cx.error(
                    b.op.span(),
                    "unsupported operator `^`; write `pow(a, b)` for powers",
                );
                return self.num(0.0);
            }
            _ => {
                self.cx.error(
                    b.op.span(),
                    format!("unsupported operator `{}`", b.op.to_token_stream()),
                );
                return self.num(0.0);
            }
        };
        let l = self.expr(&b.left, None);
        let r = self.expr(&b.right, None);
        for (side, id) in [(&b.left, l), (&b.right, r)] {
            if matches!(self.nodes[id].op, Op::Basis(..)) {
                self.cx.error(
                    side.span(),
                    "an eigenbasis is not a number; use it only with `rotate` and `unrotate`",
                );
            }
        }
        let logical = matches!(op, BinOp::And | BinOp::Or);
        for (side, id) in [(&b.left, l), (&b.right, r)] {
            let is_bool = self.ty(id).boolean;
            if logical && !is_bool {
                self.cx.error(
                    side.span(),
                    format!(
                        "`{}` expects conditions on both sides",
                        b.op.to_token_stream()
                    ),
                );
            } else if !logical && is_bool {
                self.cx.error(
                    side.span(),
                    format!(
                        "expected a number, found a condition; `{}` works on numbers",
                        b.op.to_token_stream()
                    ),
                );
            }
        }
        self.bin(op, l, r)
    }

    fn call(&mut self, c: &syn::ExprCall, name: Option<&Ident>) -> NodeId {
        let Expr::Path(fp) = &*c.func else {
            self.cx.error(c.func.span(), "expected a primitive name");
            return self.num(0.0);
        };
        let Some(fid) = fp.path.get_ident() else {
            self.cx
                .error(fp.span(), "expected a primitive name, not a path");
            return self.num(0.0);
        };
        let fname = fid.to_string();
        let Some(entry) = catalog::lookup(&fname) else {
            let hint = did_you_mean(&fname, catalog::CATALOG.iter().map(|e| e.name));
            self.cx
                .error(fid.span(), format!("unknown primitive `{fname}`{hint}"));
            return self.num(0.0);
        };
        if self.hypers_only {
            self.cx.error(fid.span(), format!("`{fname}` cannot be used in a binding of a reused optimizer; bind hyperparameters or literals"));
            return self.num(0.0);
        }
        if catalog::matrix_only(entry.word) && !self.matrix_rule {
            self.cx.error(
                fid.span(),
                format!("`{fname}` needs a matrix, but this rule can also receive vectors and scalars; move it into a `matrix => {{ ... }}` (or `tensor`) rule"),
            );
            return self.num(0.0);
        }
        // bind arguments
        let positional: Vec<&catalog::Arg> = entry.args.iter().filter(|a| a.positional).collect();
        let mut bound: Vec<Option<(NodeId, Span, &Expr)>> = vec![None; entry.args.len()];
        let mut npos = 0usize;
        for arg in &c.args {
            match arg {
                Expr::Assign(a) => {
                    let key = match &*a.left {
                        Expr::Path(p) if p.path.get_ident().is_some() => p
                            .path
                            .get_ident()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        other => {
                            self.cx.error(other.span(), "expected an argument name");
                            continue;
                        }
                    };
                    if let Some(idx) = entry
                        .args
                        .iter()
                        .position(|x| x.positional && x.name == key)
                    {
                        // a positional argument written by name: accept it, but say how to write it
                        self.cx.error(a.left.span(), format!("`{key}` is a positional argument of `{fname}`; write it without `{key} =`: `{}`", entry.signature));
                        if bound[idx].is_none() {
                            let v = self.expr(&a.right, None);
                            bound[idx] = Some((v, a.right.span(), &a.right));
                            npos += 1;
                        }
                        continue;
                    }
                    let Some(idx) = entry
                        .args
                        .iter()
                        .position(|x| !x.positional && x.name == key)
                    else {
                        let names: Vec<&str> = entry
                            .args
                            .iter()
                            .filter(|x| !x.positional)
                            .map(|x| x.name)
                            .collect();
                        let expected = if names.is_empty() {
                            format!("`{fname}` takes no named arguments")
                        } else {
                            format!(
                                "expected one of {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        self.cx.error(
                            a.left.span(),
                            format!(
                                "unknown argument `{key}` for `{fname}`; {expected}{}",
                                did_you_mean(&key, names)
                            ),
                        );
                        continue;
                    };
                    if bound[idx].is_some() {
                        self.cx.error(
                            a.left.span(),
                            format!("argument `{key}` of `{fname}` is given twice"),
                        );
                        continue;
                    }
                    let v = self.expr(&a.right, None);
                    bound[idx] = Some((v, a.right.span(), &a.right));
                }
                other => {
                    if npos < positional.len() {
                        let idx = entry
                            .args
                            .iter()
                            .position(|x| std::ptr::eq(x, positional[npos]))
                            .unwrap_or(npos);
                        npos += 1;
                        let v = self.expr(other, None);
                        bound[idx] = Some((v, other.span(), other));
                        continue;
                    }
                    // shorthand: a bare flag-argument name, `momentum(g, mu, nesterov)`
                    if let Expr::Path(p) = other {
                        if let Some(id) = p.path.get_ident() {
                            let key = id.to_string();
                            if let Some(idx) = entry.args.iter().position(|x| {
                                !x.positional && x.role == Role::Flag && x.name == key
                            }) {
                                let is_flag_hyper =
                                    self.hypers.iter().any(|h| h.is_flag && h.name == key);
                                let v = if is_flag_hyper {
                                    self.ident(id)
                                } else {
                                    self.push(
                                        Op::Bool(true),
                                        Ty {
                                            level: Level::Flag,
                                            boolean: true,
                                        },
                                    )
                                };
                                bound[idx] = Some((v, id.span(), other));
                                continue;
                            }
                        }
                    }
                    self.cx.error(
                        other.span(),
                        format!(
                            "`{fname}` takes {} positional argument{}: `{}`",
                            positional.len(),
                            if positional.len() == 1 { "" } else { "s" },
                            entry.signature
                        ),
                    );
                }
            }
        }
        if npos < positional.len() {
            self.cx.error(
                c.span(),
                format!(
                    "`{fname}` takes {} positional argument{}, found {npos}: `{}`",
                    positional.len(),
                    if positional.len() == 1 { "" } else { "s" },
                    entry.signature
                ),
            );
            return self.num(0.0);
        }
        // role checks
        for (arg, b) in entry.args.iter().zip(&bound) {
            let Some((id, span, _)) = *b else { continue };
            let ty = self.ty(id);
            match arg.role {
                Role::Value | Role::Init => {
                    if ty.boolean {
                        self.cx.error(
                            span,
                            format!(
                                "`{}` of `{fname}` expects a number, found a condition",
                                arg.name
                            ),
                        );
                    }
                }
                Role::Scalar | Role::Beta | Role::Count => {
                    if ty.boolean {
                        self.cx.error(
                            span,
                            format!(
                                "`{}` of `{fname}` expects a number, found a condition",
                                arg.name
                            ),
                        );
                    } else if ty.level == Level::Elem {
                        self.cx.error(
                            span,
                            format!("`{}` of `{fname}` must be a per-step scalar (a hyperparameter, a literal, `step` or a shape scalar), found a per-element value", arg.name),
                        );
                    } else if matches!(arg.role, Role::Beta | Role::Count) {
                        let (domain, what) = if arg.role == Role::Beta {
                            (Domain::UnitOpen, "in [0, 1)")
                        } else {
                            (Domain::Count, "a whole number >= 1")
                        };
                        match (self.const_value(id), &self.nodes[id].op) {
                            (Some(v), _) if !domain.contains(v) => {
                                self.cx.error(
                                    span,
                                    format!(
                                        "`{}` of `{fname}` must be {what}, found {}",
                                        arg.name,
                                        fmt_num(v)
                                    ),
                                );
                            }
                            (_, Op::Hyper(h)) => {
                                let h = *h;
                                if matches!(self.domains[h], Domain::Finite | Domain::NonNegative) {
                                    self.domains[h] = domain;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Role::Flag => {
                    if !(ty.boolean && ty.level == Level::Flag) {
                        let what = match self.nodes[id].op {
                            Op::Hyper(h) => format!("`{}` is a number (it has a numeric default); declare it with `true` or `false` to use it as a flag", self.hypers[h].name),
                            _ if ty.boolean => "a per-step or per-element condition cannot choose code at compile time; use `select(cond, a, b)`".to_string(),
                            _ => "found a number".to_string(),
                        };
                        self.cx.error(span, format!("`{}` of `{fname}` expects a flag (`true`, `false` or a flag hyperparameter); {what}", arg.name));
                    }
                }
                Role::Cond => {
                    if !ty.boolean {
                        self.cx.error(span, format!("`{}` of `{fname}` expects a condition (a flag or a comparison), found a number", arg.name));
                    }
                }
            }
        }
        let arg = |i: usize| bound[i].map(|b| b.0);
        let x = arg(0).unwrap_or(0);
        let slot_name = |lw: &Self, word: &str| match name {
            Some(n) => n.to_string(),
            None => format!("{word}{}", lw.slots.len()),
        };
        let span = c.span();
        match entry.word {
            Word::Sqrt => self.func(Func::Sqrt, vec![x]),
            Word::Rsqrt => self.func(Func::Rsqrt, vec![x]),
            Word::Abs => self.func(Func::Abs, vec![x]),
            Word::Sign => self.func(Func::Sign, vec![x]),
            Word::Exp => self.func(Func::Exp, vec![x]),
            Word::Ln => self.func(Func::Ln, vec![x]),
            Word::Max => self.func(Func::Max, vec![x, arg(1).unwrap_or(x)]),
            Word::Min => self.func(Func::Min, vec![x, arg(1).unwrap_or(x)]),
            Word::Pow => self.func(Func::Pow, vec![x, arg(1).unwrap_or(x)]),
            Word::Clamp => self.func(
                Func::Clamp,
                vec![x, arg(1).unwrap_or(x), arg(2).unwrap_or(x)],
            ),
            Word::Lerp => self.lerp(x, arg(1).unwrap_or(x), arg(2).unwrap_or(x)),
            Word::Select => {
                let (a, b) = (arg(1).unwrap_or(x), arg(2).unwrap_or(x));
                self.select(x, a, b)
            }
            Word::Momentum => {
                let beta = arg(1).unwrap_or(x);
                let zero = self.num(0.0);
                let slot = self.new_slot(slot_name(self, "momentum"), Some(zero), span);
                let old = self.push(
                    Op::StateRead(slot),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                );
                let new = match arg(2) {
                    Some(d) => {
                        // heavy ball (PyTorch SGD): first step copies x, later beta*m + (1-d)*x
                        let first = self.push(
                            Op::First(slot),
                            Ty {
                                level: Level::Scalar,
                                boolean: true,
                            },
                        );
                        let coef_old = self.select(first, zero, beta);
                        let one = self.num(1.0);
                        let one_minus_d = self.one_minus(d);
                        let coef_x = self.select(first, one, one_minus_d);
                        let a = self.bin(BinOp::Mul, coef_old, old);
                        let b = self.bin(BinOp::Mul, coef_x, x);
                        self.bin(BinOp::Add, a, b)
                    }
                    None => {
                        let t = self.one_minus(beta);
                        let new = self.lerp(old, x, t);
                        self.ema_beta.insert(new, beta);
                        new
                    }
                };
                self.slots[slot].write = Some(new);
                match arg(3) {
                    None => new,
                    Some(flag) => {
                        let nest = if arg(2).is_some() {
                            let bm = self.bin(BinOp::Mul, beta, new);
                            self.bin(BinOp::Add, x, bm)
                        } else {
                            self.lerp(x, new, beta)
                        };
                        self.select(flag, nest, new)
                    }
                }
            }
            Word::Ema => {
                let beta = arg(1).unwrap_or(x);
                let (slot, old) = self.state_with_init(slot_name(self, "ema"), arg(2), span);
                let t = self.one_minus(beta);
                let new = self.lerp(old, x, t);
                self.slots[slot].write = Some(new);
                self.ema_beta.insert(new, beta);
                new
            }
            Word::SecondMoment => {
                let beta = arg(1).unwrap_or(x);
                let zero = self.num(0.0);
                let slot = self.new_slot(slot_name(self, "second_moment"), Some(zero), span);
                let old = self.push(
                    Op::StateRead(slot),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                );
                let a = self.bin(BinOp::Mul, beta, old);
                let omb = self.one_minus(beta);
                let xx = self.bin(BinOp::Mul, x, x);
                let b = self.bin(BinOp::Mul, omb, xx);
                let new = self.bin(BinOp::Add, a, b);
                self.slots[slot].write = Some(new);
                self.ema_beta.insert(new, beta);
                new
            }
            Word::Accumulate => {
                let (slot, old) = self.state_with_init(slot_name(self, "accumulate"), arg(1), span);
                let new = self.bin(BinOp::Add, old, x);
                self.slots[slot].write = Some(new);
                new
            }
            Word::RunningMax => {
                let zero = self.num(0.0);
                let slot = self.new_slot(slot_name(self, "running_max"), Some(zero), span);
                let old = self.push(
                    Op::StateRead(slot),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                );
                let decayed = match arg(1) {
                    Some(d) => self.bin(BinOp::Mul, d, old),
                    None => old,
                };
                let new = self.func(Func::Max, vec![decayed, x]);
                self.slots[slot].write = Some(new);
                new
            }
            Word::State => {
                if name.is_none() {
                    self.cx.error(span, "`state(...)` must be bound with `let name = state(init);` so that it can be assigned");
                }
                let (_, old) = self.state_with_init(slot_name(self, "state"), Some(x), span);
                old
            }
            Word::ScalarState => {
                if name.is_none() {
                    self.cx.error(span, "`scalar_state(...)` must be bound with `let name = scalar_state(init);` so that it can be assigned");
                }
                let init = match self.nodes[x].op {
                    Op::Num(v) => v,
                    _ => {
                        let s = bound[0].map_or(span, |b| b.1);
                        self.cx.error(
                            s,
                            "the initial value of `scalar_state` must be a number literal",
                        );
                        0.0
                    }
                };
                let k = self.scalar_slots.len();
                self.scalar_slots.push(ir::ScalarSlot {
                    name: slot_name(self, "scalar_state"),
                    init,
                    write: None,
                    span,
                });
                self.push(
                    Op::ScalarRead(k),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                )
            }
            Word::Cumprod => {
                let k = self.scalar_slots.len();
                self.scalar_slots.push(ir::ScalarSlot {
                    name: slot_name(self, "cumprod"),
                    init: 1.0,
                    write: None,
                    span,
                });
                let old = self.push(
                    Op::ScalarRead(k),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                );
                let new = self.bin(BinOp::Mul, old, x);
                self.scalar_slots[k].write = Some(new);
                new
            }
            Word::Norm => {
                let r = self.reduce(ir::RedKind::SumSq, x, false, span);
                self.func(Func::Sqrt, vec![r])
            }
            Word::Rms => {
                let r = self.reduce(ir::RedKind::SumSq, x, false, span);
                let n = self.push(
                    Op::Shape("numel"),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                );
                let ms = self.bin(BinOp::Div, r, n);
                self.func(Func::Sqrt, vec![ms])
            }
            Word::Sum => self.reduce(ir::RedKind::Sum, x, false, span),
            Word::Mean => {
                let r = self.reduce(ir::RedKind::Sum, x, false, span);
                let n = self.push(
                    Op::Shape("numel"),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                );
                self.bin(BinOp::Div, r, n)
            }
            Word::TrustRatio => {
                // LAMB (You et al., 2020): ||w|| / ||u||, and 1 when either norm is zero
                let u = arg(1).unwrap_or(x);
                let rw = self.reduce(ir::RedKind::SumSq, x, false, span);
                let ru = self.reduce(ir::RedKind::SumSq, u, false, span);
                let nw = self.func(Func::Sqrt, vec![rw]);
                let nu = self.func(Func::Sqrt, vec![ru]);
                let zero = self.num(0.0);
                let one = self.num(1.0);
                let pw = self.bin(BinOp::Gt, nw, zero);
                let pu = self.bin(BinOp::Gt, nu, zero);
                let both = self.bin(BinOp::And, pw, pu);
                let ratio = self.bin(BinOp::Div, nw, nu);
                self.select(both, ratio, one)
            }
            Word::GlobalNorm => {
                let r = self.reduce(ir::RedKind::SumSq, x, true, span);
                self.func(Func::Sqrt, vec![r])
            }
            Word::ClipGlobalNorm => {
                // torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm / (total + 1e-6))
                let max_norm = arg(1).unwrap_or(x);
                let r = self.reduce(ir::RedKind::SumSq, x, true, span);
                let total = self.func(Func::Sqrt, vec![r]);
                let tiny = self.num(1e-6);
                let den = self.bin(BinOp::Add, total, tiny);
                let q = self.bin(BinOp::Div, max_norm, den);
                let one = self.num(1.0);
                let coef = self.func(Func::Min, vec![one, q]);
                self.bin(BinOp::Mul, x, coef)
            }
            Word::ClipValue => {
                let c = arg(1).unwrap_or(x);
                let lo = self.push(
                    Op::Neg(c),
                    Ty {
                        level: self.ty(c).level,
                        boolean: false,
                    },
                );
                self.func(Func::Clamp, vec![x, lo, c])
            }
            Word::Orthogonalize => {
                if self.ty(x).level != Level::Elem {
                    self.cx
                        .error(span, "`orthogonalize` needs a per-element value");
                }
                let args = vec![Some(x), arg(1), arg(2), arg(3), arg(4), arg(5)];
                self.push(
                    Op::Mat(ir::MatOp::Orthogonalize, args, Vec::new()),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                )
            }
            Word::FactoredSecondMoment => {
                if self.ty(x).level != Level::Elem {
                    self.cx
                        .error(span, "`factored_second_moment` needs a per-element value");
                }
                let s = self.new_mat_slot(slot_name(self, "factored"));
                self.push(
                    Op::Mat(ir::MatOp::Factored, vec![Some(x), arg(1), arg(2)], vec![s]),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                )
            }
            Word::KronPrecondition => {
                if self.ty(x).level != Level::Elem {
                    self.cx
                        .error(span, "`kron_precondition` needs a per-element value");
                }
                let base = name.map_or_else(
                    || format!("kron{}", self.mat_slots.len()),
                    ToString::to_string,
                );
                let s1 = self.new_mat_slot(format!("{base}.stats"));
                let s2 = self.new_mat_slot(format!("{base}.roots"));
                let args = vec![Some(x), arg(1), arg(2), arg(3), arg(4), arg(5)];
                self.push(
                    Op::Mat(ir::MatOp::Kron, args, vec![s1, s2]),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                )
            }
            Word::Graft => {
                // direction with the per-tensor norm of `magnitude` (Agarwal et al., 2020):
                // u * ||d|| / ||u||, and 0 when ||u|| = 0
                let d = arg(1).unwrap_or(x);
                let ru = self.reduce(ir::RedKind::SumSq, x, false, span);
                let rd = self.reduce(ir::RedKind::SumSq, d, false, span);
                let nu = self.func(Func::Sqrt, vec![ru]);
                let nd = self.func(Func::Sqrt, vec![rd]);
                let zero = self.num(0.0);
                let pos = self.bin(BinOp::Gt, nu, zero);
                let ratio = self.bin(BinOp::Div, nd, nu);
                let coef = self.select(pos, ratio, zero);
                self.bin(BinOp::Mul, x, coef)
            }
            Word::KfacPrecondition => {
                if self.ty(x).level != Level::Elem {
                    self.cx
                        .error(span, "`kfac_precondition` needs a per-element value");
                }
                let s = self.new_mat_slot(
                    name.map_or_else(|| "kfac.inverses".to_string(), |n| format!("{n}.inverses")),
                );
                self.push(
                    Op::Mat(ir::MatOp::Kfac, vec![Some(x), arg(1)], vec![s]),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                )
            }
            Word::KronEigenbasis => {
                if !matches!(self.nodes[x].op, Op::Grad) {
                    let s = bound[0].map_or(span, |b| b.1);
                    self.cx.error(
                        s,
                        "`kron_eigenbasis` takes its statistics from the gradient; pass `grad`",
                    );
                }
                let base = name.map_or_else(
                    || format!("basis{}", self.mat_slots.len()),
                    ToString::to_string,
                );
                let s1 = self.new_mat_slot(format!("{base}.stats"));
                let s2 = self.new_mat_slot(format!("{base}.q"));
                self.push(
                    Op::Basis(vec![arg(1), arg(2), arg(3)], vec![s1, s2]),
                    Ty {
                        level: Level::Scalar,
                        boolean: false,
                    },
                )
            }
            Word::Rotate | Word::Unrotate => {
                let b = arg(1).unwrap_or(x);
                if !matches!(self.nodes[b].op, Op::Basis(..)) {
                    let s = bound[1].map_or(span, |b| b.1);
                    self.cx.error(
                        s,
                        format!(
                            "`{fname}` expects an eigenbasis made by `kron_eigenbasis(grad, beta)`"
                        ),
                    );
                }
                if self.ty(x).level != Level::Elem {
                    self.cx
                        .error(span, format!("`{fname}` needs a per-element value"));
                }
                let op = if entry.word == Word::Rotate {
                    ir::MatOp::Rotate
                } else {
                    ir::MatOp::Unrotate
                };
                self.push(
                    Op::Mat(op, vec![Some(x), Some(b)], Vec::new()),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                )
            }
            Word::Debias => match self.ema_beta.get(&x).copied() {
                Some(beta) => {
                    let step = self.push(
                        Op::Step,
                        Ty {
                            level: Level::Scalar,
                            boolean: false,
                        },
                    );
                    let bt = self.func(Func::Pow, vec![beta, step]);
                    let bc = self.one_minus(bt);
                    self.bin(BinOp::Div, x, bc)
                }
                None => {
                    let s = bound[0].map_or(span, |b| b.1);
                    self.cx.error(s, "`debias` expects the result of `momentum` (EMA form), `ema` or `second_moment`; write the correction explicitly otherwise, e.g. `x / (1 - pow(beta, step))`");
                    x
                }
            },
        }
    }

    /// The value of a compile-time numeric expression (literals and arithmetic on them).
    fn const_value(&self, id: NodeId) -> Option<f64> {
        match &self.nodes[id].op {
            Op::Num(v) => Some(*v),
            Op::Neg(a) => self.const_value(*a).map(|v| -v),
            Op::Bin(op, a, b) => {
                let (x, y) = (self.const_value(*a)?, self.const_value(*b)?);
                match op {
                    BinOp::Add => Some(x + y),
                    BinOp::Sub => Some(x - y),
                    BinOp::Mul => Some(x * y),
                    BinOp::Div => Some(x / y),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn new_slot(&mut self, name: String, init: Option<NodeId>, span: Span) -> usize {
        let mut unique = name.clone();
        let mut k = 1;
        while self.slots.iter().any(|s| s.name == unique) {
            k += 1;
            unique = format!("{name}{k}");
        }
        self.slots.push(ir::Slot {
            name: unique,
            init,
            write: None,
            span,
        });
        self.slots.len() - 1
    }

    /// A state slot with an optional initial value: per-step values fill the buffer when it is
    /// created; per-element values are selected in the kernel on the slot's first step.
    fn state_with_init(
        &mut self,
        name: String,
        init: Option<NodeId>,
        span: Span,
    ) -> (usize, NodeId) {
        let zero = self.num(0.0);
        let init = init.unwrap_or(zero);
        if self.ty(init).level == Level::Elem {
            let slot = self.new_slot(name, None, span);
            let raw = self.push(
                Op::StateRead(slot),
                Ty {
                    level: Level::Elem,
                    boolean: false,
                },
            );
            let first = self.push(
                Op::First(slot),
                Ty {
                    level: Level::Scalar,
                    boolean: true,
                },
            );
            (slot, self.select(first, init, raw))
        } else {
            let slot = self.new_slot(name, Some(init), span);
            (
                slot,
                self.push(
                    Op::StateRead(slot),
                    Ty {
                        level: Level::Elem,
                        boolean: false,
                    },
                ),
            )
        }
    }
}
