//! The CUDA twin of every kernel mirrors the Rust loop: for every `optimizer!` block of the zoo
//! (read from `optim-dsl/src/zoo.rs`) and a few extra declarations, each stage's Rust `run` loop
//! and its CUDA `dsl_stage` loop are reduced to the same canonical statement list — loads,
//! `(op, operands)` computations, reductions, writes — which must be equal, in order.

use crate::emit_cuda::{kernels, CudaKernel};
use crate::errors::Errors;
use crate::plan::plan_rule;
use crate::{ast, check, emit, ir, lower};
use proc_macro2::TokenStream;
use quote::ToTokens;

/// One statement of a loop body, independent of the language.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stmt {
    Scalar(String, bool),
    Load(String, String),
    Let(String, String, Vec<String>),
    Reduce(usize, &'static str, String),
    Write(String, String),
}

/// Lowered declaration and its Rust expansion (pretty-printed).
fn pipeline(src: TokenStream) -> (Vec<CudaKernel>, syn::File) {
    let input: ast::Input = syn::parse2(src).expect("declaration parses");
    let cx = &mut Errors::default();
    let opt = lower::lower(cx, &input);
    check::check(cx, &opt);
    assert!(cx.is_empty(), "declaration has errors");
    let plans: Vec<_> = opt
        .rules
        .iter()
        .map(|r| match &r.body {
            ir::RuleBody::Fused(f) => Some(plan_rule(f)),
            ir::RuleBody::Reuse { .. } => None,
        })
        .collect();
    let file: syn::File = syn::parse2(emit::emit(&opt)).expect("expansion parses");
    (kernels(&opt, &plans), file)
}

fn atom(e: &syn::Expr) -> String {
    match e {
        syn::Expr::Paren(p) => atom(&p.expr),
        syn::Expr::Path(p) => p.path.to_token_stream().to_string(),
        syn::Expr::Lit(l) => l.lit.to_token_stream().to_string(),
        other => panic!("not an atom: {}", other.to_token_stream()),
    }
}

fn rust_op(e: &syn::Expr) -> (String, Vec<String>) {
    use syn::{BinOp as B, Expr, UnOp};
    match e {
        Expr::Paren(p) => rust_op(&p.expr),
        Expr::Binary(b) => {
            let op = match b.op {
                B::Add(_) => "add",
                B::Sub(_) => "sub",
                B::Mul(_) => "mul",
                B::Div(_) => "div",
                B::Lt(_) => "lt",
                B::Le(_) => "le",
                B::Gt(_) => "gt",
                B::Ge(_) => "ge",
                B::Eq(_) => "eq",
                B::Ne(_) => "ne",
                B::BitAnd(_) | B::And(_) => "and",
                B::BitOr(_) | B::Or(_) => "or",
                _ => panic!("operator {}", b.to_token_stream()),
            };
            (op.into(), vec![atom(&b.left), atom(&b.right)])
        }
        Expr::Unary(u) => {
            let op = match u.op {
                UnOp::Neg(_) => "neg",
                UnOp::Not(_) => "not",
                _ => panic!("operator {}", u.to_token_stream()),
            };
            (op.into(), vec![atom(&u.expr)])
        }
        Expr::Call(c) => {
            let Expr::Path(f) = &*c.func else {
                panic!("call {}", c.to_token_stream())
            };
            let name = f.path.segments.last().unwrap().ident.to_string();
            if name == "zero" {
                return ("zero".into(), Vec::new());
            }
            (name, c.args.iter().map(atom).collect())
        }
        Expr::If(i) => {
            let branch = |b: &syn::Block| match &b.stmts[..] {
                [syn::Stmt::Expr(e, None)] => atom(e),
                _ => panic!("select branch"),
            };
            let Some((_, els)) = &i.else_branch else {
                panic!("select without else")
            };
            let syn::Expr::Block(els) = &**els else {
                panic!("select else")
            };
            (
                "select".into(),
                vec![atom(&i.cond), branch(&i.then_branch), branch(&els.block)],
            )
        }
        other => ("?".into(), vec![other.to_token_stream().to_string()]),
    }
}

/// `buf[i]` → `buf`.
fn indexed(e: &syn::Expr) -> Option<String> {
    match e {
        syn::Expr::Index(ix) => Some(atom(&ix.expr)),
        _ => None,
    }
}

/// `<E as Float>::as_f64(x)` → `x`.
fn as_f64_arg(e: &syn::Expr) -> String {
    match e {
        syn::Expr::Call(c) => atom(&c.args[0]),
        other => panic!("reduction input {}", other.to_token_stream()),
    }
}

fn reduce_target(e: &syn::Expr) -> usize {
    atom(e).trim_start_matches('r').parse().unwrap()
}

fn rust_stmts(stmts: &[syn::Stmt], out: &mut Vec<Stmt>) {
    for s in stmts {
        match s {
            syn::Stmt::Local(l) => {
                let (name, ty) = match &l.pat {
                    syn::Pat::Ident(p) => (p.ident.to_string(), None),
                    syn::Pat::Type(t) => (
                        t.pat.to_token_stream().to_string(),
                        Some(t.ty.to_token_stream().to_string()),
                    ),
                    other => panic!("pattern {}", other.to_token_stream()),
                };
                let init = &l.init.as_ref().expect("initialised").expr;
                if name.starts_with('s') && ty.is_some() {
                    let boolean = ty.as_deref().unwrap().ends_with("Bool");
                    out.push(Stmt::Scalar(name, boolean));
                } else if let Some(buf) = indexed(init) {
                    out.push(Stmt::Load(name, buf));
                } else if name == "y" {
                    // `{ let y = as_f64(x); rJ += y * y; }`: handled by the block
                } else {
                    let (op, args) = rust_op(init);
                    out.push(Stmt::Let(name, op, args));
                }
            }
            syn::Stmt::Expr(syn::Expr::Block(b), _) => {
                // sum of squares
                let stmts = &b.block.stmts;
                let (syn::Stmt::Local(l), syn::Stmt::Expr(syn::Expr::Binary(acc), _)) =
                    (&stmts[0], &stmts[1])
                else {
                    panic!("reduction block {}", b.to_token_stream())
                };
                let x = as_f64_arg(&l.init.as_ref().unwrap().expr);
                out.push(Stmt::Reduce(reduce_target(&acc.left), "sumsq", x));
            }
            syn::Stmt::Expr(syn::Expr::Assign(a), _) => {
                out.push(Stmt::Write(indexed(&a.left).unwrap(), atom(&a.right)));
            }
            syn::Stmt::Expr(syn::Expr::Binary(b), _)
                if matches!(b.op, syn::BinOp::AddAssign(_)) =>
            {
                out.push(Stmt::Reduce(
                    reduce_target(&b.left),
                    "sum",
                    as_f64_arg(&b.right),
                ));
            }
            other => panic!("statement {}", other.to_token_stream()),
        }
    }
}

/// The Rust kernel `kname`'s scalar bindings and loop body.
fn rust_kernel(file: &syn::File, kname: &str) -> Vec<Stmt> {
    fn find<'a>(items: &'a [syn::Item], kname: &str) -> Option<&'a syn::ImplItemFn> {
        for item in items {
            match item {
                syn::Item::Impl(imp)
                    if imp.self_ty.to_token_stream().to_string() == kname
                        && imp.trait_.is_some() =>
                {
                    return imp.items.iter().find_map(|i| match i {
                        syn::ImplItem::Fn(f) if f.sig.ident == "run" => Some(f),
                        _ => None,
                    });
                }
                syn::Item::Const(c) => {
                    if let syn::Expr::Block(b) = &*c.expr {
                        let items: Vec<syn::Item> = b
                            .block
                            .stmts
                            .iter()
                            .filter_map(|s| match s {
                                syn::Stmt::Item(i) => Some(i.clone()),
                                _ => None,
                            })
                            .collect();
                        if let Some(f) = find(&items, kname) {
                            // leak: tests only, keeps the borrow simple
                            return Some(Box::leak(Box::new(f.clone())));
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
    let run = find(&file.items, kname).unwrap_or_else(|| panic!("no kernel {kname}"));
    let mut out = Vec::new();
    for s in &run.block.stmts {
        match s {
            syn::Stmt::Local(l) => {
                if let syn::Pat::Type(t) = &l.pat {
                    let name = t.pat.to_token_stream().to_string();
                    if name.starts_with('s') && name[1..].chars().all(|c| c.is_ascii_digit()) {
                        rust_stmts(std::slice::from_ref(s), &mut out);
                    }
                }
            }
            syn::Stmt::Expr(syn::Expr::ForLoop(f), _) => rust_stmts(&f.body.stmts, &mut out),
            _ => {}
        }
    }
    out
}

fn c_op(e: &str) -> (String, Vec<String>) {
    let e = e.trim();
    if e == "T(0)" {
        return ("zero".into(), Vec::new());
    }
    if let Some(rest) = e.strip_prefix("dsl_") {
        let open = rest.find('(').unwrap();
        let args = rest[open + 1..rest.len() - 1]
            .split(", ")
            .map(str::to_string)
            .collect();
        return (rest[..open].into(), args);
    }
    let inner = e
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("expression {e}"));
    if let Some(a) = inner.strip_prefix('-') {
        return ("neg".into(), vec![a.into()]);
    }
    if let Some(a) = inner.strip_prefix('!') {
        return ("not".into(), vec![a.into()]);
    }
    let parts: Vec<&str> = inner.split(' ').collect();
    match parts[..] {
        [c, "?", a, ":", b] => ("select".into(), vec![c.into(), a.into(), b.into()]),
        [a, op, b] => {
            let op = match op {
                "<" => "lt",
                "<=" => "le",
                ">" => "gt",
                ">=" => "ge",
                "==" => "eq",
                "!=" => "ne",
                "&&" => "and",
                "||" => "or",
                other => panic!("operator {other}"),
            };
            (op.into(), vec![a.into(), b.into()])
        }
        _ => panic!("expression {e}"),
    }
}

/// The CUDA kernel's scalar bindings and loop body (its `dsl_stage` function).
fn cuda_kernel(src: &str) -> Vec<Stmt> {
    let body = &src[src.find("void dsl_stage(").unwrap()..];
    let body = &body[..body.find("\n}\n").unwrap()];
    let mut out = Vec::new();
    for line in body.lines().map(str::trim) {
        let Some(line) = line.strip_suffix(';') else {
            continue;
        };
        if let Some(rest) = line
            .strip_prefix("const T ")
            .or_else(|| line.strip_prefix("const bool "))
        {
            let (name, e) = rest.split_once(" = ").unwrap();
            if let Some(buf) = e.strip_suffix("[i]") {
                out.push(Stmt::Load(name.into(), buf.into()));
            } else if e.starts_with("P->s[") {
                out.push(Stmt::Scalar(name.into(), line.starts_with("const bool")));
            } else {
                let (op, args) = c_op(e);
                out.push(Stmt::Let(name.into(), op, args));
            }
        } else if let Some(rest) = line.strip_prefix("acc[") {
            let j: usize = rest[..rest.find(']').unwrap()].parse().unwrap();
            let kind = if rest.contains("dsl_acc_sq(") {
                "sumsq"
            } else {
                "sum"
            };
            let x = &rest[rest.find("(double)").unwrap() + 8..rest.len() - 1];
            out.push(Stmt::Reduce(j, kind, x.into()));
        } else if let Some((dst, x)) = line.split_once("[i] = ") {
            out.push(Stmt::Write(dst.into(), x.into()));
        }
    }
    out
}

fn check_mirrors(src: TokenStream) -> usize {
    let (ks, file) = pipeline(src);
    for k in &ks {
        let kname = format!("__Kernel{}_{}_{}", k.rule, k.variant, k.stage);
        let rust = rust_kernel(&file, &kname);
        for cuda_src in [&k.source_f32, &k.source_f64] {
            let cuda = cuda_kernel(cuda_src);
            assert!(
                rust == cuda,
                "{}: the CUDA loop differs from the Rust loop\nrust: {rust:#?}\ncuda: {cuda:#?}\n{cuda_src}",
                k.name
            );
        }
        assert!(
            rust.iter()
                .any(|s| matches!(s, Stmt::Write(..) | Stmt::Reduce(..))),
            "{kname} has no effect"
        );
    }
    ks.len()
}

#[test]
fn every_zoo_kernel_has_a_cuda_twin_with_the_same_statements() {
    let zoo: syn::File =
        syn::parse_str(include_str!("../../optim-dsl/src/zoo.rs")).expect("zoo parses");
    let mut optimizers = 0;
    let mut total = 0;
    for item in &zoo.items {
        if let syn::Item::Macro(m) = item {
            if m.mac.path.is_ident("optimizer") {
                optimizers += 1;
                total += check_mirrors(m.mac.tokens.clone());
            }
        }
    }
    assert!(optimizers >= 18, "found {optimizers} optimizers");
    assert!(total >= 50, "only {total} kernels");
}

#[test]
fn selects_comparisons_and_every_function_mirror() {
    let src = r#"
        pub Exotic<lr = 1e-3, beta = 0.9, lo = -1.0, hi = 1.0, flip = false> {
            let m = momentum(grad, beta);
            let big = abs(m) > lo && grad != 0.0 || !(m < hi);
            let u = select(big, sign(m), clamp(m, lo, hi));
            let w = max(u, min(rsqrt(abs(grad) + 1.0), exp(ln(abs(m) + 1.0))));
            let z = lerp(w, pow(abs(u) + 1.0, lo), beta);
            param -= lr * select(flip, -z, z) / (sqrt(abs(param)) + 1.0);
        }
    "#;
    assert_eq!(check_mirrors(src.parse().unwrap()), 2);
}

#[test]
fn reductions_mirror() {
    let src = r#"
        pub Norms<lr = 1e-3> {
            let n = norm(grad);
            let s = sum(param);
            let c = clip_global_norm(grad, 1.0);
            param -= lr * c / (n + 1e-8) + lr * s * 1e-3;
        }
    "#;
    assert!(check_mirrors(src.parse().unwrap()) >= 2);
}

#[test]
fn cuda_names_are_c_identifiers() {
    let (ks, _) = pipeline(
        "pub r#Weird<lr = 1e-3> { param -= lr * grad; }"
            .parse()
            .unwrap(),
    );
    assert_eq!(ks.len(), 1);
    assert!(ks[0]
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_'));
}
