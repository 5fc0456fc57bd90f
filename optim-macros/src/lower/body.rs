//! The `Lowerer` of one rule body: statements, expressions, names, and the node builders that
//! words (`crate::words`) use to expand themselves.

use crate::errors::{did_you_mean, Errors};
use crate::ir::{self, BinOp, Domain, FuncDef, Level, MatPhase, Node, NodeId, Op, Ty};
use crate::parse::{AssignOp, Stmt};
use crate::words::{self, math::LERP};
use proc_macro2::Span;
use quote::ToTokens;
use std::collections::HashMap;
use syn::spanned::Spanned;
use syn::{Expr, Ident};

/// What a `let` name stands for.
#[derive(Clone, Copy)]
pub(crate) enum Binding {
    Value(NodeId),
    /// An explicit `state(...)` binding: its slot and current value.
    State(usize, NodeId),
    /// An explicit `scalar_state(...)` binding: its scalar slot and current value.
    ScalarState(usize, NodeId),
}

/// Lowers one rule body (or one reuse rule's bindings). Words build their nodes through its
/// `pub(crate)` methods and fields.
pub(crate) struct Lowerer<'c, 'h> {
    pub(crate) cx: &'c mut Errors,
    pub(crate) hypers: &'h [ir::Hyper],
    pub(crate) domains: &'h mut [Domain],
    /// Inside reuse bindings only hyperparameters and literals exist.
    pub(crate) hypers_only: bool,
    pub(crate) nodes: Vec<Node>,
    pub(crate) env: HashMap<String, Binding>,
    pub(crate) slots: Vec<ir::Slot>,
    pub(crate) scalar_slots: Vec<ir::ScalarSlot>,
    pub(crate) param_write: Option<NodeId>,
    pub(crate) param_cur: Option<NodeId>,
    pub(crate) grad: Option<NodeId>,
    /// EMA results and their coefficient, for `debias`.
    pub(crate) ema_beta: HashMap<NodeId, NodeId>,
    /// Whether the rule matches only matrices (so matrix primitives are allowed).
    pub(crate) matrix_rule: bool,
    /// Global reductions declared so far in this rule.
    pub(crate) globals: usize,
    /// Matrix-primitive state buffers.
    pub(crate) mat_slots: Vec<String>,
    /// Span of the expression being lowered (recorded on the nodes it creates).
    pub(crate) span: Span,
    /// Set by a word that creates an assignable binding (`state`, `scalar_state`).
    pending: Option<Binding>,
    /// Every `let` of the rule, in order, with whether it was read.
    pub(crate) lets: Vec<ir::Let>,
    /// The `let` each name currently stands for (an index into `lets`).
    let_of: HashMap<String, usize>,
    /// Names bound by a `let` anywhere in the rule (to report a use before its definition).
    pub(crate) declared: Vec<String>,
}

const NUM: Ty = Ty::num(Level::Flag);

impl<'c, 'h> Lowerer<'c, 'h> {
    pub(crate) fn new(
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
            span: Span::call_site(),
            pending: None,
            lets: Vec::new(),
            let_of: HashMap::new(),
            declared: Vec::new(),
        }
    }

    /// Whether `id` is an eigenbasis (`kron_eigenbasis`), which is not a number.
    pub(crate) fn is_basis(&self, id: NodeId) -> bool {
        matches!(&self.nodes[id].op, Op::Mat(m) if m.def.phase == MatPhase::Basis)
    }

    /// Makes the `let` being lowered an assignable binding (`state`, `scalar_state`).
    pub(crate) fn bind_next(&mut self, binding: Binding) {
        self.pending = Some(binding);
    }

    /// A new scalar state slot.
    pub(crate) fn new_scalar_slot(&mut self, name: String, init: f64, span: Span) -> usize {
        self.scalar_slots.push(ir::ScalarSlot {
            name,
            init,
            write: None,
            span,
        });
        self.scalar_slots.len() - 1
    }

    pub(crate) fn new_mat_slot(&mut self, name: String) -> usize {
        self.mat_slots.push(name);
        self.mat_slots.len() - 1
    }

    /// A reduction of an element-wise value along each row or column.
    pub(crate) fn axis_reduce(
        &mut self,
        axis: ir::Axis,
        kind: ir::AxisKind,
        x: NodeId,
        span: Span,
    ) -> NodeId {
        if self.ty(x).level != Level::Elem {
            self.cx.error(
                span,
                "an axis reduction needs a per-element value; this value is already a per-step, per-row or per-column value",
            );
        }
        self.push(Op::Axis(axis, kind, x), Ty::num(axis.level()))
    }

    /// A per-tensor or global reduction of an element-wise value.
    pub(crate) fn reduce(
        &mut self,
        kind: ir::RedKind,
        x: NodeId,
        global: bool,
        span: Span,
    ) -> NodeId {
        if self.ty(x).level != Level::Elem {
            self.cx.error(
                span,
                "a reduction needs a per-element value; this value is already a per-step, per-row or per-column value",
            );
        }
        let op = if global {
            self.globals += 1;
            Op::Global(kind, x, self.globals - 1)
        } else {
            Op::Reduce(kind, x)
        };
        self.push(op, Ty::num(Level::Scalar))
    }

    pub(crate) fn push(&mut self, op: Op, ty: Ty) -> NodeId {
        self.nodes.push(Node {
            op,
            ty,
            span: self.span,
        });
        self.nodes.len() - 1
    }

    pub(crate) fn ty(&self, id: NodeId) -> Ty {
        self.nodes[id].ty
    }

    pub(crate) fn num(&mut self, v: f64) -> NodeId {
        self.push(Op::Num(v), NUM)
    }

    /// Numeric binary node; level is the max of the operands.
    pub(crate) fn bin(&mut self, op: BinOp, a: NodeId, b: NodeId) -> NodeId {
        let level = self.ty(a).level.join(self.ty(b).level);
        let boolean = !op.is_arith();
        self.push(Op::Bin(op, a, b), Ty { level, boolean })
    }

    /// An element-wise function of `args`; level is the max of the arguments'.
    pub(crate) fn func(&mut self, f: &'static FuncDef, args: Vec<NodeId>) -> NodeId {
        let level = args
            .iter()
            .map(|&a| self.ty(a).level)
            .fold(Level::Flag, Level::join);
        self.push(Op::Func(f, args), Ty::num(level))
    }

    pub(crate) fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> NodeId {
        let level = self
            .ty(c)
            .level
            .join(self.ty(a).level)
            .join(self.ty(b).level);
        let boolean = self.ty(a).boolean;
        self.push(Op::Select(c, a, b), Ty { level, boolean })
    }

    /// `old + t * (new - old)`, PyTorch's `lerp_` form.
    pub(crate) fn lerp(&mut self, a: NodeId, b: NodeId, t: NodeId) -> NodeId {
        self.func(&LERP, vec![a, b, t])
    }

    pub(crate) fn one_minus(&mut self, x: NodeId) -> NodeId {
        let one = self.num(1.0);
        self.bin(BinOp::Sub, one, x)
    }

    pub(crate) fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let {
                name,
                storage,
                expr,
            } => {
                self.pending = None;
                let first_slot = self.slots.len();
                let id = self.expr(expr, Some(name));
                if let Some(ty) = storage {
                    self.set_storage(name, ty, first_slot);
                }
                let pending = self.pending.take();
                let key = name.to_string();
                if words::BUILTINS.contains(&key.as_str()) {
                    self.cx.error(
                        name.span(),
                        format!("`{key}` is a builtin name and cannot be rebound"),
                    );
                    return;
                }
                // `state(...)` and `scalar_state(...)` bound directly are assignable
                let binding = match pending {
                    Some(b @ (Binding::State(_, n) | Binding::ScalarState(_, n))) if n == id => b,
                    _ => Binding::Value(id),
                };
                self.let_of.insert(key.clone(), self.lets.len());
                self.lets.push(ir::Let {
                    ident: name.clone(),
                    node: id,
                    read: false,
                });
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
                    if !self.ty(new).level.per_step() {
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
                    } else if words::BUILTINS.contains(&key.as_str()) {
                        self.cx.error(target.span(), format!("cannot assign to `{key}`"));
                    } else {
                        let _ = op_span;
                        self.unknown_name(target);
                    }
                }
            },
        }
    }

    /// The parameter's value (before this rule's update).
    pub(crate) fn param_node(&mut self) -> NodeId {
        if let Some(p) = self.param_cur {
            return p;
        }
        let p = self.push(Op::Param, Ty::num(Level::Elem));
        self.param_cur = Some(p);
        p
    }

    fn names_in_scope(&self) -> Vec<String> {
        let mut v: Vec<String> = self.env.keys().cloned().collect();
        v.extend(self.hypers.iter().map(|h| h.name.to_string()));
        if !self.hypers_only {
            v.extend(words::BUILTINS.iter().map(|s| s.to_string()));
        }
        v
    }

    fn unknown_name(&mut self, id: &Ident) {
        let name = id.to_string();
        if self.declared.contains(&name) {
            self.cx.error(
                id.span(),
                format!("`{name}` is used before its definition: `let {name} = ...;` comes later in this rule; move it before this use"),
            );
            return;
        }
        let names = self.names_in_scope();
        let hint = did_you_mean(&name, names.iter().map(String::as_str));
        let extra = if words::lookup(&name).is_some() {
            format!("; `{name}` is a primitive: call it as `{name}(...)`")
        } else {
            String::new()
        };
        self.cx.error(
            id.span(),
            format!("cannot find `{name}` in this optimizer{hint}{extra}"),
        );
    }

    pub(crate) fn ident(&mut self, id: &Ident) -> NodeId {
        let name = id.to_string();
        if let Some(&k) = self.let_of.get(&name) {
            self.lets[k].read = true;
        }
        if let Some(b) = self.env.get(&name) {
            return match *b {
                Binding::Value(n) | Binding::State(_, n) | Binding::ScalarState(_, n) => n,
            };
        }
        if let Some(i) = self.hypers.iter().position(|h| h.name == name) {
            return if self.hypers[i].is_flag {
                self.push(Op::Flag(i), Ty::cond(Level::Flag))
            } else {
                self.push(Op::Hyper(i), Ty::num(Level::Scalar))
            };
        }
        if !self.hypers_only {
            match name.as_str() {
                "grad" => {
                    if let Some(g) = self.grad {
                        return g;
                    }
                    let g = self.push(Op::Grad, Ty::num(Level::Elem));
                    self.grad = Some(g);
                    return g;
                }
                "param" => return self.param_node(),
                "step" => return self.push(Op::Step, Ty::num(Level::Scalar)),
                "rows" | "cols" | "numel" | "fan_in" | "fan_out" => {
                    let s: &'static str = words::BUILTINS
                        .iter()
                        .find(|b| **b == name)
                        .copied()
                        .unwrap_or("numel");
                    return self.push(Op::Shape(s), Ty::num(Level::Scalar));
                }
                _ => {}
            }
        }
        self.unknown_name(id);
        self.num(0.0)
    }

    /// Lowers an expression. `name` is the `let` binding it is the right-hand side of (used to
    /// name state slots).
    pub(crate) fn expr(&mut self, e: &Expr, name: Option<&Ident>) -> NodeId {
        let outer = std::mem::replace(&mut self.span, e.span());
        let id = self.expr_at(e, name);
        self.span = outer;
        id
    }

    /// A number literal's node; a parse error or a non-finite value is reported.
    fn number(
        &mut self,
        parsed: syn::Result<f64>,
        span: Span,
        lit: &dyn std::fmt::Display,
    ) -> NodeId {
        match parsed {
            Ok(v) if v.is_finite() => self.num(v),
            Ok(_) => {
                self.cx.error(
                    span,
                    format!("number literal `{lit}` is not a finite `f64`"),
                );
                self.num(0.0)
            }
            Err(err) => {
                self.cx.push(err);
                self.num(0.0)
            }
        }
    }

    fn expr_at(&mut self, e: &Expr, name: Option<&Ident>) -> NodeId {
        match e {
            Expr::Lit(l) => match &l.lit {
                syn::Lit::Float(f) => self.number(f.base10_parse::<f64>(), f.span(), f),
                syn::Lit::Int(i) => self.number(i.base10_parse::<f64>(), i.span(), i),
                syn::Lit::Bool(b) => self.push(Op::Bool(b.value), Ty::cond(Level::Flag)),
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
                        let ty = Ty::num(self.ty(a).level);
                        self.push(Op::Neg(a), ty)
                    }
                    syn::UnOp::Not(_) => {
                        if !self.ty(a).boolean {
                            self.cx.error(
                                u.expr.span(),
                                "`!` expects a condition (a flag or a comparison)",
                            );
                        }
                        let ty = Ty::cond(self.ty(a).level);
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
                let hint = if words::lookup(&method).is_some() {
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
            if self.is_basis(id) {
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

    /// The value of a compile-time numeric expression (literals and arithmetic on them).
    pub(crate) fn const_value(&self, id: NodeId) -> Option<f64> {
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

    /// `let name: ty = ...`: the state slots from `first` on (those the expression created) are
    /// stored as `ty`. Only per-element states can be: a per-row or per-column state is read on
    /// the host and a `let` that creates no state has nothing to store.
    fn set_storage(&mut self, name: &Ident, ty: &Ident, first: usize) {
        let Some(storage) = crate::loop_ir::Storage::parse(&ty.to_string()) else {
            self.cx.error(
                ty.span(),
                format!("unknown storage type `{ty}`; expected `bf16`, `f16`, `bf16_sr`, `f16_sr` (`_sr`: stochastic rounding), `q8` or `uq8` (8-bit block-quantised, signed or non-negative)"),
            );
            return;
        };
        if first == self.slots.len() {
            self.cx.error(
                ty.span(),
                format!("`{name}: {ty}` declares how a state is stored, but `{name}` creates no state; use it on a stateful word such as `momentum(...)` or `state(...)`"),
            );
            return;
        }
        for k in first..self.slots.len() {
            let per_elem = self
                .nodes
                .iter()
                .all(|n| !matches!(n.op, Op::StateRead(s) if s == k) || n.ty.level == Level::Elem);
            if !per_elem {
                self.cx.error(
                    ty.span(),
                    format!("state `{}` holds one value per row or column, which cannot be stored as `{ty}`; only per-element states can", self.slots[k].name),
                );
                continue;
            }
            self.slots[k].storage = storage;
        }
    }

    pub(crate) fn new_slot(&mut self, name: String, init: Option<NodeId>, span: Span) -> usize {
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
            output: false,
            storage: crate::loop_ir::Storage::default(),
        });
        self.slots.len() - 1
    }

    /// A state slot starting at zero, and its stored value: per row or column when `like` is
    /// (so a moment of a row value keeps one value per row), else per element.
    pub(crate) fn zero_state(&mut self, name: String, like: NodeId, span: Span) -> (usize, NodeId) {
        let zero = self.num(0.0);
        let slot = self.new_slot(name, Some(zero), span);
        let level = self.state_level(like);
        (slot, self.push(Op::StateRead(slot), Ty::num(level)))
    }

    /// The level of a state holding values like `x`'s: per row, per column or per element.
    pub(crate) fn state_level(&self, x: NodeId) -> Level {
        match self.ty(x).level {
            l @ (Level::Row | Level::Col) => l,
            _ => Level::Elem,
        }
    }

    /// A state slot with an optional initial value: per-step values fill the buffer when it is
    /// created; per-element values are selected in the kernel on the slot's first step.
    pub(crate) fn state_with_init(
        &mut self,
        name: String,
        init: Option<NodeId>,
        like: NodeId,
        span: Span,
    ) -> (usize, NodeId) {
        let zero = self.num(0.0);
        let init = init.unwrap_or(zero);
        // a per-step initial value fills any buffer; a per-row or per-element one shapes it
        let level = if self.ty(init).level.per_step() {
            self.state_level(like)
        } else {
            self.state_level(like).join(self.state_level(init))
        };
        if !self.ty(init).level.per_step() {
            let slot = self.new_slot(name, None, span);
            let raw = self.push(Op::StateRead(slot), Ty::num(level));
            let first = self.push(Op::First(slot), Ty::cond(Level::Scalar));
            (slot, self.select(first, init, raw))
        } else {
            let slot = self.new_slot(name, Some(init), span);
            (slot, self.push(Op::StateRead(slot), Ty::num(level)))
        }
    }
}
