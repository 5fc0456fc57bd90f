//! The host side of one rule variant: its `prepare` function (advance the parameter's step,
//! create missing state, compute hoisted scalars in `f64`) and its job type implementing the
//! runtime's `StagedJob` (hand out each stage's loop with its scalars and streams, receive
//! reduction totals, run the matrix primitives between loops through the runtime's one generic
//! path, write scalar states at the end). The loops themselves come from `rust_loop`.

use super::exprs::{
    depends_on_rotation, depends_on_state, f64_lit, hnum, host_assign, step_dependent,
};
use super::rust_loop;
use crate::ir::{self, Fused, MatNode, MatPhase, NodeId, Op};
use crate::loop_ir::{Elem, Val};
use crate::plan::{AxisCall, Len, MatCall, Stream, Variant};
use crate::private::Private;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Emits kernels, job type and `prepare` function of one rule variant.
pub(crate) struct VariantEmitter<'a> {
    pub opt: &'a ir::Optimizer,
    pub f: &'a Fused,
    pub v: &'a Variant,
    /// `{rule}_{variant}`, for item names.
    pub prefix: String,
    /// The generated `__NameValues` type.
    pub values: &'a syn::Ident,
    /// Index of this variant's first stage in the generated `__OPTIM_CUDA_SOURCES` table.
    pub cuda_index: usize,
    /// Whether the rule's loops alone read the parameter and gradient (every variant of it):
    /// then each kernel gets its 16-bit-parameter impl (`optim_runtime::narrow`; the variant's
    /// pick function is `jobs::narrow_pick`'s).
    pub narrow: bool,
}

/// Host assignments of a variant by when they run.
struct HostCode {
    /// Before state is created (depend only on hyperparameters, step and shape).
    pre: Vec<TokenStream>,
    /// After state is created (read `First`, scalar states, an eigenbasis).
    post: Vec<TokenStream>,
    /// `later[k]`: before stage `k`'s loop (`k >= 1`), or in `finish` (`k == stages`).
    later: Vec<Vec<TokenStream>>,
}

/// The length of a buffer of `len`, in generated code.
fn len_tokens(len: Len) -> TokenStream {
    match len {
        Len::Elems => quote!(ps.len),
        Len::Rows => quote!(info.rows()),
        Len::Cols => quote!(info.cols()),
    }
}

/// A state slot holds one value per element, unless it is read as a per-row or per-column
/// value.
fn slot_len(f: &Fused, k: usize) -> Len {
    f.nodes
        .iter()
        .find(|n| matches!(n.op, Op::StateRead(s) if s == k))
        .map_or(Len::Elems, |n| Len::of(n.ty.level))
}

/// A source stream of a matrix primitive as the runtime names it.
fn src(s: Stream) -> TokenStream {
    let p = Private;
    match s {
        Stream::Param => quote!(#p::matrix::Src::Param),
        Stream::Grad => quote!(#p::matrix::Src::Grad),
        Stream::Slot(k) => quote!(#p::matrix::Src::Buf(#k)),
        Stream::Temp(t) => quote!(#p::matrix::Src::Temp(#t)),
    }
}

impl VariantEmitter<'_> {
    /// A stage's `kernel` and `low` (`KernelCall` fields): `dispatch::<E, K>` and `None`
    /// when no stream of stage `st` is stored in 16 or 8 bits; otherwise `no_kernel` and the
    /// `LowCall` with the 16-bit (`ParamState::low`) and 8-bit (`ParamState::q8`) streams in
    /// the kernel's order (its `bufs` order).
    fn low_call(
        &self,
        st: &crate::plan::Stage,
        kname: &syn::Ident,
        k: usize,
    ) -> (TokenStream, TokenStream) {
        let p = Private;
        // the reciprocal instance only where the loop divides by a hoisted scalar (otherwise
        // both instances are the same loop)
        let recip = !rust_loop::scalar_divisors(&self.v.loops[k]).is_empty();
        let inst = |f: TokenStream| {
            if recip {
                quote!(if ps.reciprocals { #f::<E, #kname<true>> } else { #f::<E, #kname<false>> })
            } else {
                quote!(#f::<E, #kname<false>>)
            }
        };
        let storage = |k: usize| self.f.slots.get(k).map(|s| s.storage.elem);
        let pick = |q: bool| -> Vec<usize> {
            st.bufs
                .iter()
                .filter_map(|s| match s {
                    Stream::Slot(k)
                        if storage(*k).is_some_and(|e| e != Elem::Param && e.is_q8() == q) =>
                    {
                        Some(*k)
                    }
                    _ => None,
                })
                .collect()
        };
        let (low_slots, q8_slots) = (pick(false), pick(true));
        if low_slots.is_empty() && q8_slots.is_empty() {
            return (
                inst(quote!(#p::dispatch)),
                quote!(::core::option::Option::None),
            );
        }
        let (nlow, nq8) = (low_slots.len(), q8_slots.len());
        let dispatch_low = inst(quote!(#p::dispatch_low));
        let low = quote! {{
            let mut lo: #p::LowRefs<'_> = #p::LowRefs::new();
            let ks: [usize; #nlow] = [#(#low_slots),*];
            for b in #p::pick_mut(&mut ps.low[..], ks).into_iter().flatten() {
                lo.push(&mut b.bits[..]);
            }
            let mut qs: #p::Q8Refs<'_> = #p::Q8Refs::new();
            let ks: [usize; #nq8] = [#(#q8_slots),*];
            for b in #p::pick_mut(&mut ps.q8[..], ks).into_iter().flatten() {
                qs.push(#p::lowp::q8::Q8Mut {
                    map: b.map,
                    codes: &mut b.codes[..],
                    scales: &mut b.scales[..],
                });
            }
            ::core::option::Option::Some(#p::LowCall {
                kernel: #dispatch_low,
                bufs: lo,
                q8: qs,
                key: #p::lowp::param_key(info.name, ps.step),
            })
        }};
        (quote!(#p::no_kernel::<E>), low)
    }

    fn host_code(&self) -> HostCode {
        let (f, v) = (self.f, self.v);
        let nstages = v.stages.len();
        let mut memo = vec![None; f.nodes.len()];
        let per_step = step_dependent(f, v);
        let mut code = HostCode {
            pre: Vec::new(),
            post: Vec::new(),
            later: vec![Vec::new(); nstages + 1],
        };
        for &x in &v.host {
            let Some(a) = host_assign(self.opt, f, v, x, &per_step) else {
                continue;
            };
            match v.stage_of[x] {
                0 if depends_on_state(f, v, x, &mut memo) => code.post.push(a),
                0 => code.pre.push(a),
                s => code.later[s.min(nstages)].push(a),
            }
        }
        code
    }

    /// Creates missing element and scalar state, and records first steps and scalar reads.
    fn ensure_state(&self) -> TokenStream {
        let p = Private;
        let (f, v) = (self.f, self.v);
        let ensure = v.slots.iter().map(|&k| {
            let init = f.slots[k].init.map_or(quote!(0.0f64), |i| hnum(v, i));
            let sets = v
                .live_nodes()
                .filter(|&i| matches!(f.nodes[i].op, Op::First(s) if s == k))
                .map(|i| quote!(h[#i] = if created { 1.0f64 } else { 0.0f64 };));
            // element-wise state through `ensure_buffer`, which a device step redirects to the
            // device; per-row and per-column state stays on the host; 16-bit state in `low`
            let ensure = match (f.slots[k].storage.elem, slot_len(f, k)) {
                (Elem::Param, Len::Elems) => {
                    quote!(ps.ensure_buffer(#k, <E as #p::Float>::of_f64(#init)))
                }
                (Elem::Param, l) => {
                    let len = len_tokens(l);
                    quote!(ps.ensure_buffer_len(#k, #len, <E as #p::Float>::of_f64(#init)))
                }
                (Elem::Bf16, l) => {
                    let len = len_tokens(l);
                    quote!(ps.ensure_low(#k, #len, #p::lowp::StateDtype::Bf16, #init))
                }
                (Elem::F16, l) => {
                    let len = len_tokens(l);
                    quote!(ps.ensure_low(#k, #len, #p::lowp::StateDtype::F16, #init))
                }
                (Elem::Q8, l) => {
                    let len = len_tokens(l);
                    quote!(ps.ensure_q8(#k, #len, #p::lowp::q8::Q8Map::Signed, #init))
                }
                (Elem::Uq8, l) => {
                    let len = len_tokens(l);
                    quote!(ps.ensure_q8(#k, #len, #p::lowp::q8::Q8Map::Unsigned, #init))
                }
            };
            quote! {
                let created = #ensure;
                #(#sets)*
            }
        });
        let sensure = v.scalar_slots.iter().map(|&k| {
            let init = f64_lit(f.scalar_slots[k].init);
            let sets = v
                .live_nodes()
                .filter(|&i| matches!(f.nodes[i].op, Op::ScalarRead(s) if s == k))
                .map(|i| quote!(h[#i] = ps.scalars[#k];));
            quote! {
                ps.ensure_scalar(#k, #init);
                #(#sets)*
            }
        });
        let temps = v.temp_lens.iter().enumerate().map(|(i, &l)| match l {
            Len::Elems => quote!(ps.ensure_elem_temp(#i);),
            l => {
                let len = len_tokens(l);
                quote!(ps.ensure_temp(#i, #len);)
            }
        });
        let nbufs = f.slots.len() + f.mat_slots.len();
        quote! {
            #(#ensure)*
            #(#sensure)*
            #(#temps)*
            if ps.buffers.len() < #nbufs {
                ps.buffers.resize_with(#nbufs, ::std::vec::Vec::new);
            }
        }
    }

    /// `let mut cfg = <P::Config>::default(); cfg.field = value; ...` for primitive `def`, the
    /// values from the step's host scalars.
    fn config(
        &self,
        def: &ir::MatDef,
        args: &[(&'static str, NodeId)],
        consts: &[(&'static str, ir::MatConst)],
    ) -> TokenStream {
        let sets: Vec<_> = args.iter().map(|&(k, x)| (k, hnum(self.v, x))).collect();
        config_tokens(def, &sets, consts)
    }

    /// One call through the runtime's generic matrix path.
    #[allow(clippy::too_many_arguments)]
    fn run_call(
        &self,
        def: &ir::MatDef,
        args: &[(&'static str, NodeId)],
        consts: &[(&'static str, ir::MatConst)],
        phase: &str,
        input: Stream,
        out: Option<usize>,
        state: &[usize],
        basis_q: Option<usize>,
        rotated: &[usize],
        param: TokenStream,
        grad: TokenStream,
    ) -> TokenStream {
        let p = Private;
        let ty = format_ident!("{}", def.runtime);
        let cfg = self.config(def, args, consts);
        let batch = ir::batch_axes(consts);
        let phase = format_ident!("{}", phase);
        let input = src(input);
        let out = match out {
            Some(t) => quote!(::core::option::Option::Some(#t)),
            None => quote!(::core::option::Option::None),
        };
        let basis_q = match basis_q {
            Some(q) => quote!(::core::option::Option::Some(#q)),
            None => quote!(::core::option::Option::None),
        };
        quote! {{
            #cfg
            #p::matrix::run::<E, #p::matrix::#ty>(
                &cfg,
                #p::matrix::Phase::#phase,
                #p::matrix::Call { input: #input, out: #out, state: &[#(#state),*], basis_q: #basis_q, rotated: &[#(#rotated),*], batch: #batch },
                ps,
                #param,
                #grad,
                info,
            )
        }}
    }

    /// A primitive's call after the step (`Phase::Finish`), on the gradient, with its state
    /// buffers `state` and the states `rotated` with an eigenbasis.
    fn finish_call(
        &self,
        def: &ir::MatDef,
        args: &[(&'static str, NodeId)],
        consts: &[(&'static str, ir::MatConst)],
        state: &[usize],
        rotated: &[usize],
    ) -> TokenStream {
        self.run_call(
            def,
            args,
            consts,
            "Finish",
            Stream::Grad,
            None,
            state,
            None,
            rotated,
            quote!(&**p),
            quote!(*g),
        )
    }

    /// The live eigenbases of the variant.
    fn bases(&self) -> Vec<(NodeId, &MatNode)> {
        self.v
            .live_nodes()
            .filter_map(|i| match &self.f.nodes[i].op {
                Op::Mat(m) if m.def.phase == MatPhase::Basis => Some((i, m)),
                _ => None,
            })
            .collect()
    }

    fn mat_slots(&self, m: &MatNode) -> Vec<usize> {
        m.slots.iter().map(|s| self.f.slots.len() + s).collect()
    }

    /// Each eigenbasis is initialised before the first loop; `h[basis]` records whether it was
    /// created this step.
    fn basis_init(&self) -> TokenStream {
        let calls = self.bases().into_iter().map(|(b, m)| {
            let call = self.run_call(
                m.def,
                &self.repl_args(m),
                &m.consts,
                "Init",
                Stream::Grad,
                None,
                &self.mat_slots(m),
                None,
                &[],
                quote!(&*p),
                quote!(g),
            );
            quote! {
                let report = #call;
                h[#b] = if report.initialised { 1.0f64 } else { 0.0f64 };
            }
        });
        quote!(#(#calls)*)
    }

    /// After the step, each eigenbasis not created this step takes the gradient's statistics and
    /// may refresh; the states computed from rotations in it (they live in the basis) are
    /// permuted with it.
    fn basis_update(&self) -> TokenStream {
        let (f, v) = (self.f, self.v);
        let calls = self.bases().into_iter().map(|(b, m)| {
            let rotated: Vec<usize> = v
                .slots
                .iter()
                .copied()
                .filter(|&s| {
                    f.slots[s]
                        .write
                        .is_some_and(|w| depends_on_rotation(f, v, v.repl[w], b))
                })
                .collect();
            let call = self.finish_call(
                m.def,
                &self.repl_args(m),
                &m.consts,
                &self.mat_slots(m),
                &rotated,
            );
            quote! {
                if h[#b] == 0.0f64 {
                    #call;
                }
            }
        });
        quote!(#(#calls)*)
    }

    /// After the step, the barriers that also take the gradient (`MatDef::grad_after_step`)
    /// are called again on it, with their state.
    fn grad_after_step(&self) -> TokenStream {
        let v = self.v;
        let calls = v
            .pre_barriers
            .iter()
            .chain(v.barriers.iter().flatten())
            .filter(|c| c.def.grad_after_step)
            .map(|c| self.finish_call(c.def, &c.args, &c.consts, &c.slots, &[]));
        quote!(#(#calls;)*)
    }

    fn repl_args(&self, m: &MatNode) -> Vec<(&'static str, NodeId)> {
        m.args.iter().map(|&(k, a)| (k, self.v.repl[a])).collect()
    }

    /// The matrix primitives after stage `k`.
    fn barrier_call(&self, c: &MatCall) -> TokenStream {
        self.run_call(
            c.def,
            &c.args,
            &c.consts,
            "Barrier",
            c.input,
            Some(c.out),
            &c.slots,
            c.basis_q,
            &[],
            quote!(&**p),
            quote!(*g),
        )
    }

    /// An axis reduction through the runtime's generic path: the input's sums, sums of squares or
    /// maxima along each row or column into the node's row- or column-sized scratch buffer.
    fn axis_call(&self, c: &AxisCall) -> TokenStream {
        let p = Private;
        let ty = format_ident!(
            "{}{}",
            match c.axis {
                ir::Axis::Row => "Row",
                ir::Axis::Col => "Col",
            },
            match c.kind {
                ir::AxisKind::Sum => "Sum",
                ir::AxisKind::SumSq => "SumSq",
                ir::AxisKind::Max => "Max",
            }
        );
        let input = src(c.input);
        let out = c.out;
        quote! {
            #p::matrix::run::<E, #p::matrix::#ty>(
                &::core::default::Default::default(),
                #p::matrix::Phase::Barrier,
                #p::matrix::Call { input: #input, out: ::core::option::Option::Some(#out), state: &[], basis_q: ::core::option::Option::None, rotated: &[], batch: 0 },
                ps,
                &**p,
                *g,
                info,
            );
        }
    }

    /// The per-row and per-column values of stage `k` (one small host loop each, in the
    /// parameter's type, reading hoisted scalars and other such values and writing per-row
    /// states), then the broadcast of those that element-wise loops read.
    fn axis_code(&self, k: usize) -> TokenStream {
        let p = Private;
        let (f, v) = (self.f, self.v);
        let Some(nodes) = v.axis_nodes.get(k) else {
            return TokenStream::new();
        };
        let loops = nodes.iter().map(|&x| {
            let len = len_tokens(Len::of(f.nodes[x].ty.level));
            let t = v.axis_temp[x].unwrap_or(0);
            let var = format_ident!("x{}", x);
            let (loads, value) = self.axis_value(x);
            let writes = v
                .slots
                .iter()
                .filter(|&&s| f.slots[s].write.map(|w| v.repl[w]) == Some(x))
                .map(|s| quote!(ps.buffers[#s][r] = #var;));
            let stored = if f.nodes[x].ty.boolean {
                quote!(if #var { <E as #p::Float>::one() } else { <E as #p::Float>::zero() })
            } else {
                quote!(#var)
            };
            quote! {
                for r in 0..#len {
                    #(#loads)*
                    let #var = #value;
                    ps.temps[#t][r] = #stored;
                    #(#writes)*
                }
            }
        });
        let bcasts = v
            .live_nodes()
            .filter(|&x| v.stage_of[x] == k)
            .filter_map(|x| {
                let bt = v.bcast[x]?;
                let t = v.axis_temp[x]?;
                let row = f.nodes[x].ty.level == ir::Level::Row;
                Some(quote! {
                    #p::matrix::broadcast_temp::<E>(ps, #t, #bt, #row, info.cols());
                })
            });
        quote!(#(#loops)* #(#bcasts)*)
    }

    /// The operand loads and the expression of per-row or per-column node `x` at index `r`.
    fn axis_value(&self, x: NodeId) -> (Vec<TokenStream>, TokenStream) {
        let p = Private;
        let (f, v) = (self.f, self.v);
        if let Op::StateRead(s) = f.nodes[x].op {
            return (Vec::new(), quote!(ps.buffers[#s][r]));
        }
        let mut loads = Vec::new();
        let mut val = |o: NodeId| -> Val {
            let o = v.repl[o];
            if let Some(b) = v.konst[o] {
                return Val::Bool(b);
            }
            let var = format_ident!("x{}", o);
            let boolean = f.nodes[o].ty.boolean;
            loads.push(match (v.axis_temp[o], boolean) {
                (Some(t), false) => quote!(let #var: E = ps.temps[#t][r];),
                (Some(t), true) => {
                    quote!(let #var: #p::Bool = ps.temps[#t][r] != <E as #p::Float>::zero();)
                }
                (None, false) => {
                    let h = hnum(v, o);
                    quote!(let #var: E = <E as #p::Float>::of_f64(#h);)
                }
                (None, true) => {
                    let h = crate::emit::exprs::hbool(v, o);
                    quote!(let #var: #p::Bool = #h;)
                }
            });
            Val::Var(o)
        };
        let Some(e) = crate::loop_ir::elementwise(&f.nodes[x].op, &mut val) else {
            return (loads, quote!(<E as #p::Float>::zero()));
        };
        loads.dedup_by(|a, b| a.to_string() == b.to_string());
        (loads, rust_loop::expr(&e))
    }

    /// `kernel(k)`'s arm for stage `k`: host code, scalars, streams and the loop.
    fn kernel_arm(&self, k: usize, host_k: &[TokenStream], kname: &syn::Ident) -> TokenStream {
        let p = Private;
        let st = &self.v.stages[k];
        let axis = self.axis_code(k);
        let pushes = st.scalars.iter().map(|&x| {
            let r = hnum(self.v, x);
            quote!(scalars.push(<E as #p::Float>::of_f64(#r));)
        });
        let is_low = |k: usize| self.f.slots.get(k).is_some_and(|s| s.storage.is_low());
        let slots: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| match s {
                Stream::Slot(k) if !is_low(*k) => Some(*k),
                _ => None,
            })
            .collect();
        let (kernel, low) = self.low_call(st, kname, k);
        let temps: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| match s {
                Stream::Temp(t) => Some(*t),
                _ => None,
            })
            .collect();
        let nred = st.reductions.len();
        let cuda = if crate::loop_ir::has_low_state(&self.v.loops) {
            quote!(::core::option::Option::None)
        } else {
            let i = self.cuda_index + k;
            quote!(::core::option::Option::Some(&__OPTIM_CUDA_SOURCES[#i]))
        };
        let globals = st
            .reductions
            .iter()
            .enumerate()
            .filter_map(|(j, r)| r.global.map(|g| quote!(globals_map.push((#j, #g));)));
        quote! {
            #k => {
                #(#host_k)*
                #axis
                let mut scalars: #p::Scalars<E> = #p::Scalars::new();
                #(#pushes)*
                let mut bufs: #p::StateRefs<'_, E> = #p::StateRefs::new();
                for (i, b) in ps.buffers.iter_mut().enumerate() {
                    if [#(#slots),*].contains(&i) { bufs.push(&mut b[..]); }
                }
                for (i, b) in ps.temps.iter_mut().enumerate() {
                    if [#(#temps),*].contains(&i) { bufs.push(&mut b[..]); }
                }
                let mut globals_map = #p::GlobalMap::new();
                #(#globals)*
                let low = #low;
                #p::KernelCall {
                    kernel: #kernel,
                    scalars,
                    param: &mut **p,
                    grad: *g,
                    bufs,
                    reductions: #nred,
                    globals: globals_map,
                    cuda: #cuda,
                    low,
                }
            }
        }
    }

    /// Kernels, job type and `prepare` function.
    pub(crate) fn emit(&self) -> TokenStream {
        let p = Private;
        let (f, v) = (self.f, self.v);
        let values = self.values;
        let nh = f.nodes.len().max(1);
        let job = format_ident!("__Job{}", self.prefix);
        let pname = format_ident!("__prepare_{}", self.prefix);
        let nstages = v.stages.len();
        let HostCode { pre, post, later } = self.host_code();
        let ensure = self.ensure_state();
        let basis_init = self.basis_init();
        let basis_update = self.basis_update();
        let grad_after_step = self.grad_after_step();
        let swrites = v.scalar_slots.iter().filter_map(|&k| {
            let r = hnum(v, f.scalar_slots[k].write?);
            Some(quote!(ps.scalars[#k] = #r;))
        });
        let mut kernels = Vec::new();
        let mut kernel_arms = Vec::new();
        let mut reduced_arms = Vec::new();
        for (k, l) in v.loops.iter().enumerate() {
            let kname = format_ident!("__Kernel{}_{}", self.prefix, k);
            kernels.push(rust_loop::kernel(l, &kname, self.narrow));
            let host_k: &[TokenStream] = if k == 0 { &[] } else { &later[k] };
            kernel_arms.push(self.kernel_arm(k, host_k, &kname));
            let sets: Vec<TokenStream> = v.stages[k]
                .reductions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.global.is_none())
                .map(|(j, r)| {
                    let node = r.node;
                    quote!(h[#node] = sums.get(#j).copied().unwrap_or(0.0f64);)
                })
                .collect();
            if !sets.is_empty() {
                reduced_arms.push(quote!(#k => { #(#sets)* }));
            }
        }
        let barrier_arms: Vec<TokenStream> = (0..nstages.saturating_sub(1))
            .filter_map(|k| {
                let mats = &v.barriers[k];
                let axes = v.axis_calls.get(k).map_or(&[][..], Vec::as_slice);
                if mats.is_empty() && axes.is_empty() {
                    return None;
                }
                let mats = mats.iter().map(|c| self.barrier_call(c));
                let axes = axes.iter().map(|c| self.axis_call(c));
                Some(quote!(#k => { #(#mats;)* #(#axes)* }))
            })
            .collect();
        let pre_barriers: Vec<TokenStream> = v
            .pre_barriers
            .iter()
            .map(|c| self.barrier_call(c))
            .collect();
        let finish_host = &later[nstages];
        // axis reductions of the last loop's values, and per-row values after it
        let finish_axes = v
            .axis_calls
            .get(nstages.saturating_sub(1))
            .into_iter()
            .flatten()
            .map(|c| self.axis_call(c));
        let finish_axis_code = self.axis_code(nstages);
        let finish = quote! {
            #(#finish_host)*
            #(#finish_axes)*
            #finish_axis_code
            #basis_update
            #grad_after_step
            #(#swrites)*
        };
        let job_impl = self.job_impl(JobParts {
            kernel_arms,
            reduced_arms,
            pre_barriers,
            barrier_arms,
            finish,
        });
        quote! {
            #(#kernels)*

            #[doc(hidden)]
            #[allow(missing_docs)]
            pub struct #job<'a, E: #p::Float> {
                values: &'a #values,
                ps: &'a mut #p::ParamState<E>,
                p: &'a mut [E],
                g: &'a [E],
                info: #p::ParamInfo<'a>,
                h: [#p::F64; #nh],
            }

            #[allow(unused_variables, unused_mut, unused_parens, unused_assignments, clippy::all)]
            fn #pname<'a, E: #p::Float>(
                values: &'a #values,
                ps: &'a mut #p::ParamState<E>,
                info: #p::ParamInfo<'a>,
                p: &'a mut [E],
                g: &'a [E],
            ) -> #job<'a, E> {
                ps.step += 1;
                let t: #p::F64 = ps.step as #p::F64;
                let mut h = [0.0f64; #nh];
                #(#pre)*
                #ensure
                #basis_init
                #(#post)*
                #job { values, ps, p, g, info, h }
            }

            #job_impl
        }
    }

    /// The `StagedJob` impl of the variant's job type. Only the stages, barriers and end-of-step
    /// work the variant has are generated: a method with nothing to do has an empty body, and
    /// the pre-barrier methods keep the trait's defaults when there is no pre-barrier.
    fn job_impl(&self, parts: JobParts) -> TokenStream {
        let p = Private;
        let job = format_ident!("__Job{}", self.prefix);
        let nstages = self.v.stages.len();
        let JobParts {
            kernel_arms,
            reduced_arms,
            pre_barriers,
            barrier_arms,
            finish,
        } = parts;
        let bind = quote! {
            let #job { values, ps, p, g, info, h } = self;
            let (values, info) = (*values, *info);
        };
        let reduced = if reduced_arms.is_empty() {
            quote!(fn reduced(&mut self, _: #p::Usize, _: &[#p::F64]) {})
        } else {
            quote! {
                fn reduced(&mut self, k: #p::Usize, sums: &[#p::F64]) {
                    let h = &mut self.h;
                    match k {
                        #(#reduced_arms)*
                        _ => {}
                    }
                }
            }
        };
        let pre_barrier = if pre_barriers.is_empty() {
            TokenStream::new()
        } else {
            quote! {
                fn has_pre_barrier(&self) -> ::core::primitive::bool {
                    true
                }
                fn pre_barrier(&mut self) {
                    #bind
                    #(#pre_barriers;)*
                }
            }
        };
        let barrier = if barrier_arms.is_empty() {
            quote!(fn barrier(&mut self, _: #p::Usize) {})
        } else {
            quote! {
                fn barrier(&mut self, k: #p::Usize) {
                    #bind
                    match k {
                        #(#barrier_arms)*
                        _ => {}
                    }
                }
            }
        };
        let finish = if finish.is_empty() {
            quote!(
                fn finish(&mut self) {}
            )
        } else {
            quote! {
                fn finish(&mut self) {
                    #bind
                    let t: #p::F64 = ps.step as #p::F64;
                    let globals: &[#p::F64] = &[];
                    #finish
                }
            }
        };
        quote! {
            #[allow(unused_variables, unused_mut, unused_parens, unused_assignments, clippy::all)]
            impl<'a, E: #p::Float> #p::StagedJob<E> for #job<'a, E> {
                fn stages(&self) -> #p::Usize {
                    #nstages
                }
                fn kernel(&mut self, k: #p::Usize, globals: &[#p::F64]) -> #p::KernelCall<'_, E> {
                    #bind
                    let t: #p::F64 = ps.step as #p::F64;
                    match k {
                        #(#kernel_arms)*
                        _ => #p::KernelCall::noop(&mut **p, *g),
                    }
                }
                #reduced
                #pre_barrier
                #barrier
                #finish
            }
        }
    }
}

/// The generated pieces of a variant's `StagedJob` impl (see `VariantEmitter::job_impl`).
struct JobParts {
    /// `k => KernelCall`, one per stage.
    kernel_arms: Vec<TokenStream>,
    /// `k => { h[..] = sums[..]; }` for the stages with per-tensor reductions.
    reduced_arms: Vec<TokenStream>,
    /// The matrix primitives before stage 0.
    pre_barriers: Vec<TokenStream>,
    /// `k => { ... }` for the barriers with work.
    barrier_arms: Vec<TokenStream>,
    /// The end-of-step work (may be empty).
    finish: TokenStream,
}

/// `let mut cfg = <P::Config>::default(); cfg.field = value; ...` for primitive `def`: each
/// `(field, f64 expression)` of `sets` through `FromHost`, then the compile-time constants. The
/// step (`Host::config`) and `check_param` build the config the same way.
pub(crate) fn config_tokens(
    def: &ir::MatDef,
    sets: &[(&'static str, TokenStream)],
    consts: &[(&'static str, ir::MatConst)],
) -> TokenStream {
    let p = Private;
    let ty = format_ident!("{}", def.runtime);
    let sets = sets.iter().map(|(name, value)| {
        let field = format_ident!("{}", name);
        quote!(cfg.#field = #p::matrix::FromHost::from_host(#value);)
    });
    let consts = consts.iter().filter_map(|(name, k)| {
        let field = format_ident!("{}", name);
        let value = match k {
            // The batch axes are not a config field: the call passes them (`Call::batch`).
            ir::MatConst::Batch(_) => return None,
            ir::MatConst::Preset(c) => {
                let c = format_ident!("{}", c);
                quote!(#p::matrix::#c)
            }
            ir::MatConst::Triples(t) => {
                let t = t.iter().map(|r| {
                    let r = r.map(proc_macro2::Literal::f64_suffixed);
                    quote!([#(#r),*])
                });
                quote!({
                    const COEFFS: &[[f64; 3]] = &[#(#t),*];
                    COEFFS
                })
            }
        };
        Some(quote!(cfg.#field = ::core::option::Option::Some(#value);))
    });
    quote! {
        let mut cfg = <<#p::matrix::#ty as #p::matrix::MatrixWord>::Config as ::core::default::Default>::default();
        #(#sets)*
        #(#consts)*
    }
}
