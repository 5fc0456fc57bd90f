//! Compile-cost measurement (ignored by default): expands every `optimizer!` block of the zoo
//! with the real pipeline and prints, per optimizer and in total, the generated token count by
//! generated item, the kernel instances the runtime will monomorphise (per element type and
//! arithmetic mode) and the expansion time of this (test-profile) build of the macro.
//!
//! `ZOO=<file>[:<file>...] cargo test -p optim-macros --lib expand_cost -- --ignored --nocapture`
//! (default: the zoo of `optim-dsl/src`); `DUMP=<dir>` also writes each expansion there (to
//! diff two builds of the macro token for token), `ONLY=A,B` prints only those optimizers. The same file, with `crate::driver` renamed, measures
//! an older tree's macro, so the numbers compare like for like.

use crate::driver::optimizer;
use proc_macro2::{TokenStream, TokenTree};
use std::collections::BTreeMap;

/// Leaf tokens (identifiers, punctuation, literals) of `ts`, groups counted by their contents.
fn count(ts: &TokenStream) -> usize {
    ts.clone()
        .into_iter()
        .map(|t| match t {
            TokenTree::Group(g) => count(&g.stream()) + 1,
            _ => 1,
        })
        .sum()
}

fn tokens<T: quote::ToTokens>(x: &T) -> usize {
    count(&x.to_token_stream())
}

/// The category of a generated item, from its name.
fn category(name: &str) -> &'static str {
    if name.starts_with("__Kernel") {
        "kernel structs+impls"
    } else if name.starts_with("__Job") {
        "job type + StagedJob impl"
    } else if name.starts_with("__prepare") {
        "prepare fns"
    } else if name.contains("CUDA") {
        "CUDA source table"
    } else if name.starts_with("__optim_unused") {
        "unused check"
    } else {
        "other"
    }
}

fn impl_name(i: &syn::ItemImpl) -> String {
    let ty = quote::ToTokens::to_token_stream(&i.self_ty).to_string();
    let tr = i
        .trait_
        .as_ref()
        .map(|t| quote::ToTokens::to_token_stream(&t.1).to_string())
        .unwrap_or_default();
    format!("{tr} for {ty}")
}

/// Adds the tokens of `item` to `out` under its category; trait impls of the optimizer are
/// split by method.
fn add(item: &syn::Item, out: &mut BTreeMap<String, usize>) {
    let mut put = |k: &str, n: usize| *out.entry(k.to_string()).or_default() += n;
    match item {
        syn::Item::Const(c) if c.ident == "_" => {
            if let syn::Expr::Block(b) = &*c.expr {
                for s in &b.block.stmts {
                    match s {
                        syn::Stmt::Item(i) => add(i, out),
                        other => {
                            *out.entry("const-block stmts".into()).or_default() += tokens(other)
                        }
                    }
                }
            } else {
                put("const assertions", tokens(item));
            }
        }
        syn::Item::Const(c) => put(category(&c.ident.to_string()), tokens(item)),
        syn::Item::Static(c) => put(category(&c.ident.to_string()), tokens(item)),
        syn::Item::Fn(f) => put(category(&f.sig.ident.to_string()), tokens(item)),
        syn::Item::Struct(s) => {
            let n = s.ident.to_string();
            let c = category(&n);
            put(
                if c == "other" {
                    "config/optimizer structs"
                } else {
                    c
                },
                tokens(item),
            )
        }
        syn::Item::Impl(i) => {
            let name = impl_name(i);
            let ty = quote::ToTokens::to_token_stream(&i.self_ty).to_string();
            let c = category(&ty);
            if c != "other" {
                return put(c, tokens(item));
            }
            if name.contains("OptimizerConfig") || name.contains("DslOptimizer") {
                let which = if name.contains("OptimizerConfig") {
                    "OptimizerConfig::"
                } else {
                    "DslOptimizer::"
                };
                for it in &i.items {
                    match it {
                        syn::ImplItem::Fn(f) => put(&format!("{which}{}", f.sig.ident), tokens(it)),
                        other => put(&format!("{which}(types)"), tokens(other)),
                    }
                }
            } else if i.trait_.is_none() {
                put("inherent impls (setters, reuse)", tokens(item));
            } else {
                put("derive-like impls (Default, Debug)", tokens(item));
            }
        }
        other => put("other", tokens(other)),
    }
}

/// Instantiation sites `path::<...>` of the runtime's generic entry points in `s` (the
/// pretty-printed expansion, without spaces).
fn instances(flat: &str) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for (k, pat) in [
        (
            "dispatch<E,K> (kernel instances, both modes)",
            "dispatch::<E,__Kernel",
        ),
        ("dispatch_low<E,K> (16/8-bit)", "dispatch_low::<E,__Kernel"),
        ("matrix::run<E,P>", "matrix::run::<E,"),
        ("matrix::check_call<P>", "check_call::<"),
    ] {
        out.insert(k, flat.matches(pat).count());
    }
    // the reciprocal instances: `K<true>` at a dispatch site
    out.insert(
        "dispatch<E,K> of which K<true> (reciprocal)",
        flat.matches("<true>>").count(),
    );
    out
}

fn zoo_blocks() -> Vec<(String, TokenStream)> {
    let files = std::env::var("ZOO").unwrap_or_else(|_| {
        let d = concat!(env!("CARGO_MANIFEST_DIR"), "/../optim-dsl/src");
        format!("{d}/zoo.rs:{d}/zoo/lowp.rs:{d}/zoo/matrix2026.rs:{d}/zoo/muon2026.rs:{d}/zoo/adam2026.rs")
    });
    let mut out = Vec::new();
    for f in files
        .split(':')
        .filter(|f| std::path::Path::new(f).exists())
    {
        let src = std::fs::read_to_string(f).unwrap();
        let file = syn::parse_file(&src).unwrap();
        for item in file.items {
            if let syn::Item::Macro(m) = item {
                if m.mac.path.is_ident("optimizer") {
                    let ts = m.mac.tokens.clone();
                    let name = ts
                        .clone()
                        .into_iter()
                        .find_map(|t| match t {
                            TokenTree::Ident(i) if i != "pub" && i != "doc" => Some(i.to_string()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    out.push((name, ts));
                }
            }
        }
    }
    out
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn expand_cost() {
    let blocks = zoo_blocks();
    assert!(!blocks.is_empty(), "no optimizer! blocks found");
    let only: Option<Vec<String>> = std::env::var("ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut inst_total: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut grand = 0usize;
    let t0 = std::time::Instant::now();
    for (name, ts) in &blocks {
        let t = std::time::Instant::now();
        let out = optimizer(ts.clone());
        let dt = t.elapsed();
        let s = out.to_string();
        if let Ok(dir) = std::env::var("DUMP") {
            std::fs::write(format!("{dir}/{name}.rs"), &s).unwrap();
        }
        assert!(!s.contains("compile_error"), "{name} expands with an error");
        let file: syn::File = syn::parse2(out.clone()).expect("expansion parses");
        let mut by = BTreeMap::new();
        for it in &file.items {
            add(it, &mut by);
        }
        let flat: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let inst = instances(&flat);
        let n = count(&out);
        grand += n;
        for (k, v) in &by {
            *total.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &inst {
            *inst_total.entry(k).or_default() += v;
        }
        if only.as_ref().is_none_or(|o| o.contains(name)) {
            println!(
                "== {name}: {n} tokens, expanded in {:.1} ms",
                dt.as_secs_f64() * 1e3
            );
            for (k, v) in &by {
                println!("   {v:>7}  {k}");
            }
            for (k, v) in &inst {
                println!("   {v:>7}  sites {k}");
            }
        }
    }
    println!(
        "== TOTAL {} optimizers: {grand} tokens, expansion {:.0} ms (test profile)",
        blocks.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut v: Vec<_> = total.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, n) in v {
        println!("   {n:>8}  {:>5.1}%  {k}", 100.0 * n as f64 / grand as f64);
    }
    for (k, n) in inst_total {
        println!("   {n:>8}  sites {k}");
    }
}
