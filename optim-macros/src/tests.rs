//! Expansion tests: expand declarations with the real pipeline, re-parse the output as a Rust
//! file and check its shape (kernel count, streams, errors) on the pretty-printed text.

use crate::driver::optimizer;

fn pretty(tokens: proc_macro2::TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("expansion parses as a Rust file");
    prettyplease::unparse(&file)
}

/// The text without whitespace, so assertions do not depend on line breaking.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

const ADAMW: &str = r#"
    pub AdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
        let m = momentum(grad, beta1);
        let v = second_moment(grad, beta2);
        param -= lr * (debias(m) / (sqrt(debias(v)) + eps) + weight_decay * param);
    }
"#;

#[test]
fn adamw_expands_to_one_kernel_over_param_grad_and_two_states() {
    let out = pretty(optimizer(ADAMW.parse().unwrap()));
    let flat = squash(&out);
    assert_eq!(
        flat.matches("::optim_dsl::__private::Kernel<E>for__Kernel")
            .count(),
        1,
        "{out}"
    );
    // one loop, reading four streams and writing three (printed for `E` and once more for a
    // 16-bit parameter, whose staged blocks run `for i in 0..len`)
    assert_eq!(out.matches("for i in 0..n").count(), 1);
    assert!(out.contains("p[i]"));
    assert!(out.contains("g[i]"));
    assert!(out.contains("b0[i] ="));
    assert!(out.contains("b1[i] ="));
    assert!(
        flat.contains(r#"reads:::std::vec!["param","grad","m","v"]"#),
        "{out}"
    );
    assert!(
        flat.contains(r#"writes:::std::vec!["param","m","v"]"#),
        "{out}"
    );
    // bias corrections are hoisted: no `pow` inside the kernel
    let kernel = &out[out.find("fn run(").unwrap()..];
    let kernel = &kernel[..kernel.find("fn __prepare").unwrap_or(kernel.len())];
    assert!(
        !kernel.contains("ops::pow"),
        "pow must be hoisted out of the loop:\n{kernel}"
    );
}

/// A rule that reads the parameter and gradient only in its loops gets, per loop, one 16-bit
/// parameter entry point printed from the same statements, generic over `bf16`/`f16` (const
/// `F16`): the parameter's and gradient's blocks staged and converted by `load_half_block`,
/// the parameter's stored back rounded by `store_half_block`; and the optimizer's
/// `narrow_kernels` names its instances (nothing else does).
#[test]
fn a_loops_only_rule_gets_16_bit_parameter_kernels() {
    let out = pretty(optimizer(ADAMW.parse().unwrap()));
    // without the printer's trailing commas in generic and argument lists
    let flat = squash(&out).replace(",>", ">").replace(",)", ")");
    let p = "::optim_dsl::__private::";
    let head = format!("{p}NarrowKernel<E>for__Kernel0_0_0<R,F16>");
    assert_eq!(flat.matches(&head).count(), 1, "{head}\n{out}");
    assert_eq!(
        flat.matches(&format!("{p}NarrowKernel<E>")).count(),
        1,
        "{out}"
    );
    let at = |head: &str| {
        let i = flat.find(head).unwrap();
        let rest = &flat[i + head.len()..];
        rest[..rest.find("impl<E").unwrap_or(rest.len())].to_string()
    };
    let half = at(&head);
    assert!(
        half.contains("p:&mut[::optim_dsl::__private::lowp::Bits]"),
        "{half}"
    );
    for (conv, what) in [
        ("load_half_block::<E,F16>", "(&p[i0..i1],&mutdp[..len])"),
        ("load_half_block::<E,F16>", "(&g[i0..i1],&mutdg[..len])"),
        ("store_half_block::<E,F16>", "(&qp[..len],&mutp[i0..i1])"),
    ] {
        assert!(
            half.contains(&format!("{p}lowp::{conv}{what}")),
            "{conv}{what}\n{half}"
        );
    }
    assert!(
        half.contains(":E=dp[i];") && half.contains("qp[i]="),
        "{half}"
    );
    assert!(
        !half.contains("=p[i]") && !half.contains(";p[i]="),
        "{half}"
    );
    // the `E` kernel is untouched: plain loads and stores
    let e = at(&format!("{p}Kernel<E>for__Kernel0_0_0<R>"));
    assert!(e.contains(":E=p[i];") && !e.contains("lowp"), "{e}");
    // named only by the pick function `narrow_kernels` returns: (bf16, f16) × (exact,
    // reciprocal: AdamW divides by a hoisted scalar)
    assert_eq!(
        flat.matches(&format!("{p}dispatch_narrow::<")).count(),
        4,
        "{out}"
    );
    for inst in [
        "<false,false>",
        "<false,true>",
        "<true,false>",
        "<true,true>",
    ] {
        let k = format!("{p}dispatch_narrow::<E,__Kernel0_0_0{inst}>");
        assert!(flat.contains(&k), "{k}\n{out}");
    }
    assert!(flat.contains("fnnarrow_kernels("), "{out}");
}

#[test]
fn flags_specialise_and_drop_dead_state() {
    let src = r#"
        pub A<lr = 1e-3, beta2 = 0.999, amsgrad = false> {
            let v = second_moment(grad, beta2);
            let vmax = running_max(v);
            param -= lr * grad / sqrt(select(amsgrad, vmax, v));
        }
    "#;
    let out = squash(&pretty(optimizer(src.parse().unwrap())));
    assert_eq!(
        out.matches("::optim_dsl::__private::Kernel<E>for__Kernel")
            .count(),
        2,
        "one kernel per flag value"
    );
    assert!(
        out.contains(r#"state:::std::vec!["v"]"#),
        "amsgrad off keeps only v:\n{out}"
    );
    assert!(
        out.contains(r#"state:::std::vec!["v","vmax"]"#),
        "amsgrad on keeps v and vmax:\n{out}"
    );
}

/// The expansion of `src`, which must be a `compile_error!` (the assertion names `src`).
#[track_caller]
fn expand_error(src: &str) -> String {
    let out = optimizer(src.parse().unwrap()).to_string();
    assert!(out.contains("compile_error"), "{src:?} gave {out}");
    out
}

#[test]
fn errors_expand_to_compile_error_and_a_stub() {
    let src = "pub Bad<lr = 1e-3> { let m = momentun(grad, 0.9); param -= lr * m; }";
    let out = expand_error(src);
    assert!(out.contains("did you mean `momentum`?"), "{out}");
    assert!(
        out.contains("struct Bad"),
        "the stub keeps the type defined: {out}"
    );
}

#[test]
fn garbage_input_never_panics() {
    for src in [
        "",
        "pub",
        "pub X<",
        "pub X<lr = > {}",
        "pub X { param -= ; }",
        "X { _ => }",
        "pub X<a = 1> { matrix => Y<, _ => { param = 1.0; } }",
    ] {
        expand_error(src);
    }
}

/// `let m: bf16 = ...`: the loop loads and stores the state through the runtime's 16-bit
/// conversions, in a `LowKernel`; a stochastic store draws from the element's counter.
#[test]
fn storage_types_make_a_low_precision_kernel() {
    let src = r#"
        pub A<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8> {
            let m: bf16 = momentum(grad, beta1);
            let v: f16_sr = second_moment(grad, beta2);
            param -= lr * debias(m) / (sqrt(debias(v)) + eps);
        }
    "#;
    let out = squash(&pretty(optimizer(src.parse().unwrap())));
    assert_eq!(out.matches("LowKernel<E>for__Kernel").count(), 1, "{out}");
    assert!(out.contains("lowp::load_bf16::<E>(b0[i])"), "{out}");
    // f16 streams are widened per block (F16C where present) and read from the block
    assert!(
        out.contains("lowp::load_f16_block::<E,>(&b1[i0..i1],&mutd1[..len])"),
        "{out}"
    );
    assert!(out.contains(":E=d1[i];"), "{out}");
    assert!(
        out.contains("b0[i]=::optim_dsl::__private::lowp::store_bf16::<E>("),
        "{out}"
    );
    assert!(out.contains("lowp::store_f16_sr::<E,>(x"), "{out}");
    assert!(
        out.contains("lowp::counter_bits(k1,at.base+(i0+i)as::optim_dsl::__private::U64"),
        "{out}"
    );
    assert!(
        out.contains("ensure_low(0usize,ps.len,::optim_dsl::__private::lowp::StateDtype::Bf16"),
        "{out}"
    );
    assert!(out.contains(r#"low:::std::vec!["m","v"]"#), "{out}");
}

#[test]
fn storage_type_errors() {
    for (src, want) in [
        (
            "pub A<lr = 1e-3> { let m: bf8 = momentum(grad, 0.9); param -= lr * m; }",
            "unknown storage type `bf8`",
        ),
        (
            "pub A<lr = 1e-3> { let m: bf16 = 2.0 * grad; param -= lr * m; }",
            "`m` creates no state",
        ),
        (
            "pub A<lr = 1e-3> { matrix => { let m: bf16 = momentum(grad, 0.9); param -= lr * orthogonalize(m); } _ => { param -= lr * grad; } }",
            "state `m` is stored in 16 bits, but a whole-tensor primitive",
        ),
    ] {
        let out = expand_error(src);
        assert!(out.contains(want), "{src}: {out}");
    }
}
