//! The printers against the loop IR. Both backends print the same `LoopIr`: every kernel of the
//! zoo must contain exactly the IR's statements, in the IR's order, each printed by its
//! statement printer (nothing added, nothing dropped, nothing reordered), and each operation
//! must print with the semantics the runtime's `ops.rs` defines (checked against hand-written
//! expected text for every operator and function word).

use crate::emit::cuda::{self, kernels, CudaKernel};
use crate::errors::Errors;
use crate::ir::{self, BinOp, RedKind};
use crate::loop_ir::{LExpr, LStmt, LStream, LoopIr, Val};
use crate::{check, lower, parse, plan, words};
use proc_macro2::TokenStream;
use quote::ToTokens;

/// The planned loops of a declaration and their CUDA kernels.
fn pipeline(src: TokenStream) -> (Vec<LoopIr>, Vec<CudaKernel>) {
    let input: parse::Input = syn::parse2(src).expect("declaration parses");
    let cx = &mut Errors::default();
    let opt = lower::lower(cx, &input);
    check::check(cx, &opt);
    let p = plan::plan(cx, &opt);
    assert!(cx.is_empty(), "declaration has errors");
    let loops = p
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.variants.iter())
        .flat_map(|v| v.loops.iter().cloned())
        .collect();
    (loops, kernels(&opt, &p))
}

fn norm(t: TokenStream) -> String {
    t.to_string().split_whitespace().collect()
}

/// The statements of the `for i in 0..n` loop of a printed Rust kernel.
fn rust_loop_body(kernel: TokenStream) -> Vec<String> {
    let file: syn::File = syn::parse2(kernel).expect("kernel parses");
    for item in &file.items {
        let syn::Item::Impl(imp) = item else { continue };
        for it in &imp.items {
            let syn::ImplItem::Fn(f) = it else { continue };
            for s in &f.block.stmts {
                if let syn::Stmt::Expr(syn::Expr::ForLoop(l), _) = s {
                    return l
                        .body
                        .stmts
                        .iter()
                        .map(|s| norm(s.to_token_stream()))
                        .collect();
                }
            }
        }
    }
    panic!("no loop in the kernel")
}

/// The lines of the `for` loop of `dsl_stage` in a CUDA source.
fn cuda_loop_body(src: &str) -> Vec<String> {
    let start = src
        .find("    for (unsigned long long i = i0;")
        .expect("loop");
    src[start..]
        .lines()
        .skip(1)
        .take_while(|l| *l != "    }")
        .map(|l| l.trim().to_string())
        .collect()
}

fn check_printers(src: TokenStream) -> usize {
    let (loops, ks) = pipeline(src);
    assert_eq!(loops.len(), ks.len());
    for (l, k) in loops.iter().zip(&ks) {
        let name = syn::Ident::new("K", proc_macro2::Span::call_site());
        let rust = rust_loop_body(crate::emit::rust_kernel_for_tests(l, &name));
        let want_rust: Vec<String> = l
            .body
            .iter()
            .map(|s| norm(crate::emit::rust_stmt_for_tests(s)))
            .collect();
        assert_eq!(rust, want_rust, "{}: Rust loop", k.name);
        let want_c: Vec<String> = l.body.iter().map(cuda::stmt).collect();
        for s in [&k.source_f32, &k.source_f64] {
            assert_eq!(cuda_loop_body(s), want_c, "{}: CUDA loop", k.name);
        }
        assert!(
            l.body
                .iter()
                .any(|s| matches!(s, LStmt::Store { .. } | LStmt::Accumulate { .. })),
            "{} has no effect",
            k.name
        );
    }
    ks.len()
}

#[test]
fn every_zoo_loop_prints_the_ir_statements_in_order_on_both_backends() {
    let files = [
        include_str!("../../optim-dsl/src/zoo.rs"),
        include_str!("../../optim-dsl/src/zoo/muon2026.rs"),
        include_str!("../../optim-dsl/src/zoo/adam2026.rs"),
    ];
    let mut optimizers = 0;
    let mut total = 0;
    let items = files
        .iter()
        .flat_map(|f| syn::parse_str::<syn::File>(f).expect("zoo parses").items);
    for item in &items.collect::<Vec<_>>() {
        if let syn::Item::Macro(m) = item {
            if m.mac.path.is_ident("optimizer") {
                optimizers += 1;
                total += check_printers(m.mac.tokens.clone());
            }
        }
    }
    assert!(optimizers >= 18, "found {optimizers} optimizers");
    assert!(total >= 50, "only {total} kernels");
}

#[test]
fn selects_comparisons_functions_and_reductions_print_on_both_backends() {
    let src = r#"
        pub Exotic<lr = 1e-3, beta = 0.9, lo = -1.0, hi = 1.0, flip = false> {
            let m = momentum(grad, beta);
            let big = abs(m) > lo && grad != 0.0 || !(m < hi);
            let u = select(big, sign(m), clamp(m, lo, hi));
            let w = max(u, min(rsqrt(abs(grad) + 1.0), exp(ln(abs(m) + 1.0))));
            let z = lerp(w, pow(abs(u) + 1.0, lo), beta);
            let n = norm(grad) + sum(param);
            let c = clip_global_norm(grad, 1.0);
            param -= lr * select(flip, -z, z) / (sqrt(abs(param)) + n) + c;
        }
    "#;
    assert!(check_printers(src.parse().unwrap()) >= 4);
}

/// Every operator and every function word prints with the intended semantics: IEEE-rounded
/// C intrinsics (`dsl_*`) on CUDA, the runtime's `ops::*` on the CPU, non-short-circuit `&`/`|`
/// on per-element conditions in Rust loops.
#[test]
fn each_operation_prints_its_semantics() {
    let (a, b) = (Val::Var(3), Val::Scalar(1));
    let bins = [
        (BinOp::Add, "(x3 + s1)", "dsl_add(x3, s1)"),
        (BinOp::Sub, "(x3 - s1)", "dsl_sub(x3, s1)"),
        (BinOp::Mul, "(x3 * s1)", "dsl_mul(x3, s1)"),
        (BinOp::Div, "(x3 / s1)", "dsl_div(x3, s1)"),
        (BinOp::Lt, "(x3 < s1)", "(x3 < s1)"),
        (BinOp::Le, "(x3 <= s1)", "(x3 <= s1)"),
        (BinOp::Gt, "(x3 > s1)", "(x3 > s1)"),
        (BinOp::Ge, "(x3 >= s1)", "(x3 >= s1)"),
        (BinOp::Eq, "(x3 == s1)", "(x3 == s1)"),
        (BinOp::Ne, "(x3 != s1)", "(x3 != s1)"),
        (BinOp::And, "(x3 & s1)", "(x3 && s1)"),
        (BinOp::Or, "(x3 | s1)", "(x3 || s1)"),
    ];
    for (op, rust, c) in bins {
        let e = LExpr::Bin(op, a, b);
        assert_eq!(
            norm(crate::emit::rust_expr_for_tests(&e)),
            norm(rust.parse().unwrap()),
            "{op:?}"
        );
        assert_eq!(cuda::expr(&e), c, "{op:?}");
    }
    for f in words::funcs() {
        let e = LExpr::Call(f, vec![a, b]);
        let rust = format!("::optim_dsl::__private::ops::{}::<E>(x3, s1)", f.name);
        assert_eq!(
            norm(crate::emit::rust_expr_for_tests(&e)),
            norm(rust.parse().unwrap())
        );
        assert_eq!(cuda::expr(&e), format!("{}(x3, s1)", f.cuda));
        assert!(
            f.cuda_src.contains(&format!(" {}(", f.cuda)),
            "{} defines {}",
            f.name,
            f.cuda
        );
    }
    assert_eq!(cuda::expr(&LExpr::Neg(a)), "(-x3)");
    assert_eq!(cuda::expr(&LExpr::Not(Val::Bool(true))), "(!true)");
    assert_eq!(
        cuda::expr(&LExpr::Select(Val::Var(1), a, b)),
        "(x1 ? x3 : s1)"
    );
    assert_eq!(
        cuda::stmt(&LStmt::Accumulate {
            acc: 2,
            kind: RedKind::SumSq,
            value: a
        }),
        "acc[2] = dsl_acc_sq(acc[2], (double)x3);"
    );
    assert_eq!(
        cuda::stmt(&LStmt::Store {
            to: LStream::Buf(0),
            value: b
        }),
        "b0[i] = s1;"
    );
    assert_eq!(
        norm(crate::emit::rust_stmt_for_tests(&LStmt::Load {
            var: 7,
            from: LStream::Grad
        })),
        norm("let x7: E = g[i];".parse().unwrap())
    );
    let _ = ir::Level::Elem;
}

#[test]
fn cuda_names_are_c_identifiers() {
    let (_, ks) = pipeline(
        "pub r#Weird<lr = 1e-3> { param -= lr * grad; }"
            .parse()
            .unwrap(),
    );
    assert_eq!(ks.len(), 1);
    assert!(ks[0]
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    assert_eq!(cuda::c_ident("a-b.c"), "a_b_c");
}
