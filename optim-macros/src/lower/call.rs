//! Binding a word's arguments (positional, then `name = value`, plus the bare-flag shorthand
//! `momentum(g, mu, nesterov)`) and checking their roles, shared by every word; then the word's
//! own lowering (`words::Entry::lower`) runs on the bound `Call`.

use super::{fmt_num, Lowerer};
use crate::errors::did_you_mean;
use crate::ir::{Domain, Level, NodeId, Op, Ty};
use crate::words::{self, Entry, Role};
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, Ident};

/// One bound argument: its node, its span, and its syntax (read by words with compile-time arguments, `Role::is_const`).
type Bound<'a> = Option<(NodeId, Span, &'a Expr)>;

/// A call of a word with its arguments bound (by the entry's argument order) and checked.
pub(crate) struct Call<'a> {
    pub entry: &'static Entry,
    bound: Vec<Bound<'a>>,
    /// The whole call.
    pub span: Span,
    /// The `let` name the call is bound to, if it is the whole right-hand side.
    pub binding: Option<&'a Ident>,
    /// Stands in for a missing argument (never reached: required arguments are checked).
    fallback: NodeId,
}

impl Call<'_> {
    fn index(&self, name: &str) -> Option<usize> {
        self.entry.args.iter().position(|a| a.name == name)
    }
    /// The value of argument `name`, if given.
    pub(crate) fn arg(&self, name: &str) -> Option<NodeId> {
        self.index(name).and_then(|i| self.bound[i]).map(|b| b.0)
    }
    /// The value of a required (positional) argument.
    pub(crate) fn req(&self, name: &str) -> NodeId {
        self.arg(name).unwrap_or(self.fallback)
    }
    /// The span of argument `name` as written (the call's span if absent).
    pub(crate) fn arg_span(&self, name: &str) -> Span {
        self.index(name)
            .and_then(|i| self.bound[i])
            .map_or(self.span, |b| b.1)
    }
    /// The syntax of argument `name` as written, if given (compile-time arguments, `Role::is_const`).
    pub(crate) fn raw(&self, name: &str) -> Option<&Expr> {
        self.index(name).and_then(|i| self.bound[i]).map(|b| b.2)
    }
    /// Every given argument except `skip` and compile-time constants, by name (a matrix
    /// primitive's config fields).
    pub(crate) fn args_except(&self, skip: &[&str]) -> Vec<(&'static str, NodeId)> {
        self.entry
            .args
            .iter()
            .zip(&self.bound)
            .filter(|(a, _)| !skip.contains(&a.name) && !a.role.is_const())
            .filter_map(|(a, b)| b.map(|b| (a.name, b.0)))
            .collect()
    }
    /// The binding's name, or `default`.
    pub(crate) fn binding_or(&self, default: String) -> String {
        self.binding.map_or(default, ToString::to_string)
    }
    /// The name of a state slot this call creates: the binding's name, or `word` followed by the
    /// number of element slots so far.
    pub(crate) fn slot_name(&self, lw: &Lowerer<'_, '_>, word: &str) -> String {
        self.binding_or(format!("{word}{}", lw.slots.len()))
    }
}

impl Lowerer<'_, '_> {
    pub(crate) fn call<'a>(&mut self, c: &'a syn::ExprCall, name: Option<&'a Ident>) -> NodeId {
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
        let Some(entry) = words::lookup(&fname) else {
            let hint = did_you_mean(&fname, words::all().map(|e| e.name));
            self.cx
                .error(fid.span(), format!("unknown primitive `{fname}`{hint}"));
            return self.num(0.0);
        };
        if self.hypers_only {
            self.cx.error(fid.span(), format!("`{fname}` cannot be used in a binding of a reused optimizer; bind hyperparameters or literals"));
            return self.num(0.0);
        }
        if entry.matrix_only && !self.matrix_rule {
            self.cx.error(
                fid.span(),
                format!("`{fname}` needs a matrix, but this rule can also receive vectors and scalars; move it into a `matrix => {{ ... }}` (or `tensor`) rule"),
            );
            return self.num(0.0);
        }
        let Some(bound) = self.bind_args(entry, c) else {
            return self.num(0.0);
        };
        self.check_roles(entry, &bound);

        // every positional argument is bound by now; a stand-in keeps `Call::req` total
        let fallback = match bound.iter().flatten().next() {
            Some(b) => b.0,
            None => self.num(0.0),
        };
        let call = Call {
            entry,
            bound,
            span: c.span(),
            binding: name,
            fallback,
        };
        let outer = std::mem::replace(&mut self.span, call.span);
        let id = (entry.lower)(self, &call);
        self.span = outer;
        id
    }

    /// Binds the call's arguments to the entry's (positional in order, then `name = value`,
    /// plus the bare-flag shorthand). `None` when a required argument is missing.
    fn bind_args<'e>(
        &mut self,
        entry: &'static Entry,
        c: &'e syn::ExprCall,
    ) -> Option<Vec<Bound<'e>>> {
        let fname = entry.name;
        let positional: Vec<&words::Arg> = entry.args.iter().filter(|a| a.positional).collect();
        let mut bound: Vec<Bound<'_>> = vec![None; entry.args.len()];
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
                        self.cx.error(a.left.span(), format!("`{key}` is a positional argument of `{fname}`; write it without `{key} =`: `{}`", entry.signature()));
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
                    let v = self.arg_value(entry.args[idx].role, &a.right);
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
                                    self.push(Op::Bool(true), Ty::cond(Level::Flag))
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
                            entry.signature()
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
                    entry.signature()
                ),
            );
            return None;
        }
        Some(bound)
    }

    /// The node of an argument: its expression, or a placeholder for a compile-time constant
    /// (`Role::is_const`), which its word reads from the syntax.
    fn arg_value(&mut self, role: Role, e: &Expr) -> NodeId {
        if role.is_const() {
            self.num(0.0)
        } else {
            self.expr(e, None)
        }
    }

    /// Checks every bound argument against its role (a number, a per-step scalar, a beta in
    /// [0, 1), a count, a flag or a condition), refining hyperparameter domains.
    fn check_roles(&mut self, entry: &'static Entry, bound: &[Bound<'_>]) {
        let fname = entry.name;
        for (arg, b) in entry.args.iter().zip(bound) {
            let Some((id, span, _)) = *b else { continue };
            let ty = self.ty(id);
            match arg.role {
                Role::Value | Role::Init | Role::Scalar | Role::Beta | Role::Count
                    if ty.boolean =>
                {
                    self.cx.error(
                        span,
                        format!(
                            "`{}` of `{fname}` expects a number, found a condition",
                            arg.name
                        ),
                    );
                }
                Role::Value | Role::Init | Role::Coeffs | Role::Batch => {}
                Role::Scalar | Role::Beta | Role::Count => {
                    if !ty.level.per_step() {
                        self.cx.error(
                            span,
                            format!("`{}` of `{fname}` must be a per-step scalar (a hyperparameter, a literal, `step` or a shape scalar), found {}", arg.name, ty.level.describe()),
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
    }
}
