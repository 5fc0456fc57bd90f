//! Printer: a `LoopIr` as the Rust loop of a `Kernel` impl (`optim_runtime`'s fused-kernel
//! trait; `LowKernel` when state is stored in 16 or 8 bits), and, for a rule whose loops alone
//! read the parameter and gradient, the same loop over a `bf16` or `f16` parameter as a
//! `NarrowKernel` impl generic over which. Every typed stream (16/8-bit state, a 16-bit parameter or gradient)
//! is loaded and stored through one statement printer ([`stmt_in`]). The loop is
//! `#[inline(always)]` so that the runtime's `dispatch` compiles it once per SIMD level.

use super::exprs::{bin_tokens, neg_tokens, not_tokens, numbered_ident, select_tokens};
use crate::ir::{BinOp, RedKind};
use crate::loop_ir::{Elem, LExpr, LStmt, LStream, LoopIr, Storage, Val};
use crate::private::Private;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The Rust type of a stream's elements (16-bit types as their raw bits).
fn elem(e: Elem) -> TokenStream {
    let p = Private;
    match e {
        Elem::Param => quote!(E),
        Elem::Bf16 | Elem::F16 => quote!(#p::lowp::Bits),
        // not a slice type: 8-bit streams are bound as `Q8Mut`s (see `kernel`)
        Elem::Q8 | Elem::Uq8 => quote!(u8),
    }
}

fn val(v: Val) -> TokenStream {
    match v {
        Val::Var(x) => numbered_ident("x", x),
        Val::Scalar(k) => numbered_ident("s", k),
        Val::Bool(b) => quote!(#b),
    }
}

fn stream(s: LStream) -> TokenStream {
    match s {
        LStream::Param => quote!(p),
        LStream::Grad => quote!(g),
        LStream::Buf(j) => {
            let b = format_ident!("b{}", j);
            quote!(#b)
        }
    }
}

/// One element-wise operation.
pub(crate) fn expr(e: &LExpr) -> TokenStream {
    let p = Private;
    match e {
        LExpr::Neg(a) => neg_tokens(val(*a)),
        LExpr::Not(a) => not_tokens(val(*a)),
        // non-short-circuit `&` / `|` on conditions: they vectorise
        LExpr::Bin(op, a, b) => bin_tokens(*op, val(*a), val(*b), true),
        LExpr::Call(def, args) => {
            let f = format_ident!("{}", def.name);
            let args = args.iter().map(|a| val(*a));
            quote!(#p::ops::#f::<E>(#(#args),*))
        }
        LExpr::Select(c, a, b) => select_tokens(val(*c), val(*a), val(*b)),
    }
}

/// One statement of the loop body.
pub(crate) fn stmt(s: &LStmt) -> TokenStream {
    let p = Private;
    match s {
        LStmt::Load { var, from } => {
            let l = format_ident!("x{}", var);
            let b = stream(*from);
            quote!(let #l: E = #b[i];)
        }
        LStmt::Let { var, expr: e, .. } => {
            let l = format_ident!("x{}", var);
            let e = expr(e);
            quote!(let #l = #e;)
        }
        LStmt::Accumulate { acc, kind, value } => {
            let r = format_ident!("r{}", acc);
            let x = val(*value);
            match kind {
                RedKind::SumSq => quote!({ let y = <E as #p::Float>::as_f64(#x); #r += y * y; }),
                RedKind::Sum => quote!(#r += <E as #p::Float>::as_f64(#x);),
            }
        }
        LStmt::Store { to, value } => {
            let b = stream(*to);
            let x = val(*value);
            quote!(#b[i] = #x;)
        }
    }
}

/// Whether loads of a stream stored as `st` read a block staged on the stack (`d…`, see
/// [`element_loop`]): 8-bit streams (dequantised per block) and `f16` ones (widened per block,
/// by F16C where the CPU has it).
fn staged_load(st: Storage) -> bool {
    st.elem.is_q8() || st.elem == Elem::F16
}

/// Whether stores to a stream stored as `st` go to a block staged on the stack (`q…`),
/// converted after the block: 8-bit streams and round-to-nearest `f16` ones (stochastic stores
/// draw per element).
fn staged_store(st: Storage) -> bool {
    st.elem.is_q8() || (st.elem == Elem::F16 && !st.stochastic)
}

/// The name of stream `s`'s staged block: `{c}p`, `{c}g` or `{c}{j}` (`c` is `d` for loaded
/// values, `q` for stored ones).
fn staged(c: &str, s: LStream) -> syn::Ident {
    match s {
        LStream::Param => format_ident!("{}p", c),
        LStream::Grad => format_ident!("{}g", c),
        LStream::Buf(j) => format_ident!("{}{}", c, j),
    }
}

/// One statement of loop `l`'s body: as [`stmt`], with loads from and stores to streams stored
/// in 16 bits converted (`optim_runtime::lowp`; stochastic stores draw from the element's
/// counter, keyed by the stream key `k{j}` and the element's index in the parameter) and
/// staged streams (8-bit, `f16`: [`staged_load`], [`staged_store`]) read from the block's
/// converted values `d…` on load and written to the block's `q…` on store (converted after the
/// block, see [`element_loop`]). Every typed stream goes through here: state buffers, and the
/// parameter and gradient when [`LoopIr::param_elem`] is 16-bit. In a loop with staged
/// streams `i` counts within the block, which starts at element `i0`.
fn stmt_in(s: &LStmt, l: &LoopIr) -> TokenStream {
    let p = Private;
    let blocked = l.streams().any(|s| staged_load(l.storage(s)));
    let at = if blocked { quote!((i0 + i)) } else { quote!(i) };
    let low = |s: LStream| Some(l.storage(s)).filter(|st| st.elem != Elem::Param);
    match s {
        LStmt::Load { var, from } => match low(*from) {
            Some(st) => {
                let x = format_ident!("x{}", var);
                if staged_load(st) {
                    let d = staged("d", *from);
                    quote!(let #x: E = #d[i];)
                } else {
                    let b = stream(*from);
                    let f = format_ident!("load_{}", elem_name(st.elem));
                    quote!(let #x: E = #p::lowp::#f::<E>(#b[i]);)
                }
            }
            None => stmt(s),
        },
        LStmt::Store { to, value } => match low(*to) {
            Some(st) => {
                let x = val(*value);
                let b = stream(*to);
                if staged_store(st) {
                    let q = staged("q", *to);
                    quote!(#q[i] = #x;)
                } else if let (true, LStream::Buf(j)) = (st.stochastic, to) {
                    let f = format_ident!("store_{}_sr", elem_name(st.elem));
                    let kj = format_ident!("k{}", j);
                    quote!(#b[i] = #p::lowp::#f::<E>(#x, #p::lowp::counter_bits(#kj, at.base + #at as #p::U64));)
                } else {
                    let f = format_ident!("store_{}", elem_name(st.elem));
                    quote!(#b[i] = #p::lowp::#f::<E>(#x);)
                }
            }
            None => stmt(s),
        },
        _ => reciprocal_div(s).unwrap_or_else(|| stmt(s)),
    }
}

/// The hoisted scalars loop `l` divides an element-wise value by (`x / s`): in the
/// reciprocal instance of its kernel (`R = true`, the runtime's `Arithmetic::Reciprocal`) each
/// is replaced by a multiplication by `1 / s`, computed once before the loop.
pub(crate) fn scalar_divisors(l: &LoopIr) -> Vec<usize> {
    let mut out: Vec<usize> = l
        .body
        .iter()
        .filter_map(|s| match s {
            LStmt::Let {
                expr: LExpr::Bin(BinOp::Div, Val::Var(_), Val::Scalar(k)),
                ..
            } => Some(*k),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `let x = a / s;` as `a * (1 / s)` in the reciprocal instance (`R`), `a / s` otherwise (the
/// branch is on a const generic, so each instance has one form).
pub(crate) fn reciprocal_div(s: &LStmt) -> Option<TokenStream> {
    let LStmt::Let {
        var,
        expr: LExpr::Bin(BinOp::Div, a @ Val::Var(_), Val::Scalar(k)),
        ..
    } = s
    else {
        return None;
    };
    let l = format_ident!("x{}", var);
    let a = val(*a);
    let sk = format_ident!("s{}", k);
    let rk = format_ident!("inv_s{}", k);
    Some(quote!(let #l = if R { #a * #rk } else { #a / #sk };))
}

/// `bf16` / `f16` (the runtime's function suffixes).
fn elem_name(e: Elem) -> &'static str {
    match e {
        Elem::Bf16 => "bf16",
        _ => "f16",
    }
}

/// The element loop over `0..n` running `body`. With staged streams (8-bit or `f16`, see
/// [`staged_load`]) it runs block by block (`optim_runtime::lowp::q8::BLOCK` elements; the
/// executor hands each call whole blocks but the parameter's last): each loaded staged stream
/// `b{j}` is converted into `d{j}` before the block, on the stack in `E` (8-bit: codes and
/// block scale, whose table lookups do not vectorise; `f16`: `lowp::load_f16_block`, F16C's
/// `vcvtph2ps` where the CPU has it), so the conversions stay out of the arithmetic loop; each
/// stored one stages the block's new values in `q{j}` (on the stack, in `E`) and converts them
/// after it (8-bit: block absmax, then codes, so the per-block absmax is a block-local
/// reduction before the store; `f16`: `lowp::store_f16_block`). The fused loop still reads and
/// writes each stream once. The stack blocks are set up once per call (each block overwrites
/// the part it reads). Inside a block every stream is re-sliced to the block (`p`, `g`, the
/// other buffers, `d{j}`, `q{j}`), all of the block's length, so that the loop has no bounds
/// checks and vectorises.
fn element_loop(l: &LoopIr, body: &[TokenStream]) -> TokenStream {
    let p = Private;
    if !l.streams().any(|s| staged_load(l.storage(s))) {
        return quote! {
            for i in 0..n {
                #(#body)*
            }
        };
    }
    let touches = |t: LStream, store: bool| {
        l.body.iter().any(|s| match s {
            LStmt::Load { from, .. } => !store && *from == t,
            LStmt::Store { to, .. } => store && *to == t,
            _ => false,
        })
    };
    let pick = |f: &dyn Fn(Storage) -> bool, store: bool| -> Vec<LStream> {
        l.streams()
            .filter(|&s| f(l.storage(s)) && touches(s, store))
            .collect()
    };
    let names = |c: &str, ss: &[LStream]| ss.iter().map(|&s| staged(c, s)).collect::<Vec<_>>();
    let streams = |ss: &[LStream]| ss.iter().map(|&s| stream(s)).collect::<Vec<_>>();
    let loaded = pick(&|st| st.elem.is_q8(), false);
    let stored = pick(&|st| st.elem.is_q8(), true);
    let loaded16 = pick(&|st| st.elem == Elem::F16, false);
    let stored16 = pick(&|st| staged_store(st) && !st.elem.is_q8(), true);
    let ids = |c: &str, ss: &[LStream]| {
        ss.iter()
            .map(|s| match s {
                LStream::Buf(j) => format_ident!("{}{}", c, j),
                _ => format_ident!("{}", c),
            })
            .collect::<Vec<_>>()
    };
    let (lb, lm, ld) = (streams(&loaded), ids("m", &loaded), names("d", &loaded));
    let (sb, sq) = (streams(&stored), names("q", &stored));
    // an `f16` state buffer converts as `f16`; the parameter and gradient of a 16-bit twin
    // (`LoopIr::param_elem`) as the kernel's const `F16` says (`bf16` or `f16`)
    let conv = |dir: &str, ss: &[LStream]| -> Vec<TokenStream> {
        ss.iter()
            .map(|s| match s {
                LStream::Buf(_) => {
                    let f = format_ident!("{}_f16_block", dir);
                    quote!(#p::lowp::#f::<E>)
                }
                _ => {
                    let f = format_ident!("{}_half_block", dir);
                    quote!(#p::lowp::#f::<E, F16>)
                }
            })
            .collect()
    };
    let (hb, hd, hf) = (
        streams(&loaded16),
        names("d", &loaded16),
        conv("load", &loaded16),
    );
    let (tb, tq, tf) = (
        streams(&stored16),
        names("q", &stored16),
        conv("store", &stored16),
    );
    let (all_d, all_q) = (
        names("d", &[loaded, loaded16].concat()),
        names("q", &[stored, stored16].concat()),
    );
    let ob: Vec<syn::Ident> = (0..l.bufs.len())
        .filter(|&j| !l.bufs[j].elem.is_q8())
        .map(|j| format_ident!("b{}", j))
        .collect();
    let g_block = if l.reads_grad {
        quote!(let g = &g[i0..i1];)
    } else {
        quote!()
    };
    quote! {
        #(let #lm: &[f32; 256] = #lb.map.values();)*
        #(let mut #all_d = [<E as #p::Float>::of_f64(0.0); #p::lowp::q8::BLOCK];)*
        #(let mut #all_q = [<E as #p::Float>::of_f64(0.0); #p::lowp::q8::BLOCK];)*
        let mut i0 = 0usize;
        while i0 < n {
            let i1 = if n - i0 < #p::lowp::q8::BLOCK { n } else { i0 + #p::lowp::q8::BLOCK };
            let blk = i0 / #p::lowp::q8::BLOCK;
            let len = i1 - i0;
            #(#p::lowp::q8::load_block::<E>(#lm, &#lb.codes[i0..i1], #lb.scales[blk], &mut #ld[..len]);)*
            #(#hf(&#hb[i0..i1], &mut #hd[..len]);)*
            {
                let p = &mut p[i0..i1];
                #g_block
                #(let #ob = &mut #ob[i0..i1];)*
                #(let #all_d: &[E] = &#all_d[..len];)*
                #(let #all_q = &mut #all_q[..len];)*
                for i in 0..len {
                    #(#body)*
                }
            }
            #(#p::lowp::q8::store_block::<E>(#sb.map, &#sq[..len], &mut #sb.codes[i0..i1], &mut #sb.scales[blk]);)*
            #(#tf(&#tq[..len], &mut #tb[i0..i1]);)*
            i0 = i1;
        }
    }
}

/// `struct #kname<const R: bool>;` and its `Kernel` impl (`LowKernel` when a stream is stored
/// in 16 or 8 bits). `R`: divisions by hoisted scalars as multiplications by their reciprocals
/// (see [`scalar_divisors`]); the exact instance (`R = false`) is the rule as written.
///
/// With `narrow` (a rule whose loops alone read the parameter and gradient), the struct has a
/// second const parameter, `F16` (default `false`), and a `NarrowKernel` impl for
/// `#kname<R, F16>`: the same loop over a parameter and gradient stored in 16 bits, printed
/// from [`LoopIr::with_param_elem`] by the same statements, their blocks converted as `bf16`
/// or, with `F16`, as `f16` (`lowp::load_half_block`/`store_half_block`). One printed body
/// serves both storage types (the expansion grows by one loop per loop, not two); it is
/// compiled only where `DslOptimizer::narrow_kernels` names it.
pub(crate) fn kernel(l: &LoopIr, kname: &syn::Ident, narrow: bool) -> TokenStream {
    let main = kernel_impl(l, quote!(#kname<R>));
    if !narrow {
        return quote! {
            struct #kname<const R: ::core::primitive::bool>;
            #main
        };
    }
    let half = kernel_impl(&l.with_param_elem(Elem::F16), quote!(#kname<R, F16>));
    quote! {
        struct #kname<const R: ::core::primitive::bool, const F16: ::core::primitive::bool = false>;
        #main
        #half
    }
}

/// The kernel impl of loop `l` for `self_ty`: `NarrowKernel` when the parameter is stored in
/// 16 bits ([`LoopIr::param_elem`]), else `LowKernel` when a buffer is, else `Kernel`.
fn kernel_impl(l: &LoopIr, self_ty: TokenStream) -> TokenStream {
    let p = Private;
    let name = |j: usize| format_ident!("b{}", j);
    let pick = |f: &dyn Fn(Elem) -> bool| -> Vec<syn::Ident> {
        (0..l.bufs.len())
            .filter(|&j| f(l.bufs[j].elem))
            .map(name)
            .collect()
    };
    let full = pick(&|e| e == Elem::Param);
    let lows = pick(&|e| e.is_16());
    let qs = pick(&|e| e.is_q8());
    let slices: Vec<syn::Ident> = pick(&|e| !e.is_q8());
    let belems = l
        .bufs
        .iter()
        .filter(|b| !b.elem.is_q8())
        .map(|b| elem(b.elem));
    let nscal = l.scalars.len();
    let nred = l.reductions;
    let scal_loads = l.scalars.iter().enumerate().map(|(k, &boolean)| {
        let s = format_ident!("s{}", k);
        if boolean {
            quote!(let #s: #p::Bool = s[#k] != E::zero();)
        } else {
            quote!(let #s: E = s[#k];)
        }
    });
    let recips = scalar_divisors(l).into_iter().map(|k| {
        let s = format_ident!("s{}", k);
        let r = format_ident!("inv_s{}", k);
        quote!(let #r: E = if R { E::one() / #s } else { E::zero() };)
    });
    // each accumulator continues the running sum in `red[j]`, so that a chunk run as several
    // calls sums in the same order as one call
    let accs: Vec<syn::Ident> = (0..nred).map(|j| format_ident!("r{}", j)).collect();
    let red_idx: Vec<usize> = (0..nred).collect();
    let g_bind = if l.reads_grad {
        quote! {
            if g.len() < n { return; }
            let g = &g[..n];
        }
    } else {
        quote!(let _ = g;)
    };
    let body: Vec<TokenStream> = l.body.iter().map(|s| stmt_in(s, l)).collect();
    let looped = element_loop(l, &body);
    let keys = l
        .bufs
        .iter()
        .enumerate()
        .filter(|(_, b)| b.stochastic && b.elem.is_16())
        .map(|(j, b)| {
            let kj = format_ident!("k{}", j);
            let slot = b.slot.unwrap_or(j);
            quote!(let #kj: #p::U64 = #p::lowp::stream_key(at.key, #slot);)
        });
    let pe = elem(l.param_elem);
    let low_bind = quote! {
        let [#(#full),*] = st else { return };
        let [#(#lows),*] = lo else { return };
        let [#(#qs),*] = q else { return };
        #(#keys)*
    };
    let low_args = quote! {
        s: &[E], p: &mut [#pe], g: &[#pe], st: &mut [&mut [E]], lo: &mut [&mut [#p::lowp::Bits]], q: &mut [#p::lowp::q8::Q8Mut<'_>], at: #p::LowAt, red: &mut [#p::F64]
    };
    let f16_param = if l.param_elem == Elem::Param {
        quote!()
    } else {
        quote!(, const F16: ::core::primitive::bool)
    };
    let (tr, args, bind) = if l.param_elem != Elem::Param {
        (quote!(#p::NarrowKernel<E>), low_args, low_bind)
    } else if lows.is_empty() && qs.is_empty() {
        (
            quote!(#p::Kernel<E>),
            quote!(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]], red: &mut [#p::F64]),
            quote!(let [#(#full),*] = st else { return };),
        )
    } else {
        (quote!(#p::LowKernel<E>), low_args, low_bind)
    };
    quote! {
        impl<E: #p::Float, const R: ::core::primitive::bool #f16_param> #tr for #self_ty {
            #[inline(always)]
            #[allow(unused_variables, unused_mut, unused_parens, clippy::all)]
            fn run(#args) {
                #bind
                if s.len() < #nscal || red.len() < #nred { return; }
                let n = p.len();
                #g_bind
                #(if #slices.len() < n { return; })*
                #(if #qs.codes.len() < n || #qs.scales.len() < #p::lowp::q8::blocks(n) { return; })*
                #(let #slices: &mut [#belems] = &mut #slices[..n];)*
                #(#scal_loads)*
                #(#recips)*
                #(let mut #accs: #p::F64 = red[#red_idx];)*
                #looped
                #(red[#red_idx] = #accs;)*
            }
        }
    }
}
