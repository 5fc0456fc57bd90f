//! The host side of one rule variant: its `prepare` function (advance the parameter's step,
//! create missing state, compute hoisted scalars in `f64`) and its job type implementing the
//! runtime's `StagedJob` (hand out each stage's loop with its scalars and streams, receive
//! reduction totals, run the matrix primitives between loops through the runtime's one generic
//! path, write scalar states at the end). The loops themselves come from `rust_loop`.

use super::exprs::{depends_on_rotation, depends_on_state, f64_lit, hnum, host_assign};
use super::rust_loop;
use crate::ir::{self, Fused, MatNode, MatPhase, NodeId, Op};
use crate::plan::{MatCall, Stream, Variant};
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
    fn host_code(&self) -> HostCode {
        let (f, v) = (self.f, self.v);
        let nstages = v.stages.len();
        let mut memo = vec![None; f.nodes.len()];
        let mut code = HostCode {
            pre: Vec::new(),
            post: Vec::new(),
            later: vec![Vec::new(); nstages + 1],
        };
        for &x in &v.host {
            let Some(a) = host_assign(self.opt, f, v, x) else {
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
            quote! {
                let created = ps.ensure_buffer(#k, <E as #p::Float>::of_f64(#init));
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
        let ntemps = v.temps.len();
        let nbufs = f.slots.len() + f.mat_slots.len();
        quote! {
            #(#ensure)*
            #(#sensure)*
            for i in 0..#ntemps {
                ps.ensure_temp(i, ps.len);
            }
            if ps.buffers.len() < #nbufs {
                ps.buffers.resize_with(#nbufs, ::std::vec::Vec::new);
            }
        }
    }

    /// `let mut cfg = <P::Config>::default(); cfg.field = value; ...` for primitive `def`.
    fn config(&self, def: &ir::MatDef, args: &[(&'static str, NodeId)]) -> TokenStream {
        let p = Private;
        let ty = format_ident!("{}", def.runtime);
        let sets = args.iter().map(|&(name, x)| {
            let field = format_ident!("{}", name);
            let value = hnum(self.v, x);
            quote!(cfg.#field = #p::matrix::FromHost::from_host(#value);)
        });
        quote! {
            let mut cfg = <<#p::matrix::#ty as #p::matrix::MatrixWord>::Config as ::core::default::Default>::default();
            #(#sets)*
        }
    }

    /// One call through the runtime's generic matrix path.
    #[allow(clippy::too_many_arguments)]
    fn run_call(
        &self,
        def: &ir::MatDef,
        args: &[(&'static str, NodeId)],
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
        let cfg = self.config(def, args);
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
                #p::matrix::Call { input: #input, out: #out, state: &[#(#state),*], basis_q: #basis_q, rotated: &[#(#rotated),*] },
                ps,
                #param,
                #grad,
                info,
            )
        }}
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
            let call = self.run_call(
                m.def,
                &self.repl_args(m),
                "Finish",
                Stream::Grad,
                None,
                &self.mat_slots(m),
                None,
                &rotated,
                quote!(&**p),
                quote!(*g),
            );
            quote! {
                if h[#b] == 0.0f64 {
                    #call;
                }
            }
        });
        quote!(#(#calls)*)
    }

    fn repl_args(&self, m: &MatNode) -> Vec<(&'static str, NodeId)> {
        m.args.iter().map(|&(k, a)| (k, self.v.repl[a])).collect()
    }

    /// The matrix primitives after stage `k`.
    fn barrier_call(&self, c: &MatCall) -> TokenStream {
        self.run_call(
            c.def,
            &c.args,
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

    /// `kernel(k)`'s arm for stage `k`: host code, scalars, streams and the loop.
    fn kernel_arm(&self, k: usize, host_k: &[TokenStream], kname: &syn::Ident) -> TokenStream {
        let p = Private;
        let st = &self.v.stages[k];
        let pushes = st.scalars.iter().map(|&x| {
            let r = hnum(self.v, x);
            quote!(scalars.push(<E as #p::Float>::of_f64(#r));)
        });
        let slots: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| match s {
                Stream::Slot(k) => Some(*k),
                _ => None,
            })
            .collect();
        let temps: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| match s {
                Stream::Temp(t) => Some(*t),
                _ => None,
            })
            .collect();
        let nred = st.reductions.len();
        let globals = st
            .reductions
            .iter()
            .enumerate()
            .filter_map(|(j, r)| r.global.map(|g| quote!(globals_map.push((#j, #g));)));
        quote! {
            #k => {
                #(#host_k)*
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
                #p::KernelCall {
                    kernel: #p::dispatch::<E, #kname>,
                    scalars,
                    param: &mut **p,
                    grad: *g,
                    bufs,
                    reductions: #nred,
                    globals: globals_map,
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
        let swrites = v.scalar_slots.iter().filter_map(|&k| {
            let r = hnum(v, f.scalar_slots[k].write?);
            Some(quote!(ps.scalars[#k] = #r;))
        });
        let mut kernels = Vec::new();
        let mut kernel_arms = Vec::new();
        let mut reduced_arms = Vec::new();
        for (k, l) in v.loops.iter().enumerate() {
            let kname = format_ident!("__Kernel{}_{}", self.prefix, k);
            kernels.push(rust_loop::kernel(l, &kname));
            let host_k: &[TokenStream] = if k == 0 { &[] } else { &later[k] };
            kernel_arms.push(self.kernel_arm(k, host_k, &kname));
            let sets = v.stages[k]
                .reductions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.global.is_none())
                .map(|(j, r)| {
                    let node = r.node;
                    quote!(h[#node] = sums.get(#j).copied().unwrap_or(0.0f64);)
                });
            reduced_arms.push(quote!(#k => { #(#sets)* }));
        }
        let barrier_arms = v
            .barriers
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(k, calls)| {
                let calls = calls.iter().map(|c| self.barrier_call(c));
                quote!(#k => { #(#calls;)* })
            });
        let finish_host = &later[nstages];
        quote! {
            #(#kernels)*

            struct #job<'a, E: #p::Float> {
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
            ) -> #p::Job<'a, E> {
                ps.step += 1;
                let t: #p::F64 = ps.step as #p::F64;
                let mut h = [0.0f64; #nh];
                #(#pre)*
                #ensure
                #basis_init
                #(#post)*
                ::std::boxed::Box::new(#job { values, ps, p, g, info, h })
            }

            #[allow(unused_variables, unused_mut, unused_parens, unused_assignments, clippy::all)]
            impl<'a, E: #p::Float> #p::StagedJob<E> for #job<'a, E> {
                fn stages(&self) -> #p::Usize {
                    #nstages
                }
                fn kernel(&mut self, k: #p::Usize, globals: &[#p::F64]) -> #p::KernelCall<'_, E> {
                    let #job { values, ps, p, g, info, h } = self;
                    let (values, info) = (*values, *info);
                    let t: #p::F64 = ps.step as #p::F64;
                    match k {
                        #(#kernel_arms)*
                        _ => #p::KernelCall::noop(&mut **p, *g),
                    }
                }
                fn reduced(&mut self, k: #p::Usize, sums: &[#p::F64]) {
                    let h = &mut self.h;
                    match k {
                        #(#reduced_arms)*
                        _ => {}
                    }
                }
                fn barrier(&mut self, k: #p::Usize) {
                    let #job { values, ps, p, g, info, h } = self;
                    let (values, info) = (*values, *info);
                    match k {
                        #(#barrier_arms)*
                        _ => {}
                    }
                }
                fn finish(&mut self) {
                    let #job { values, ps, p, g, info, h } = self;
                    let (values, info) = (*values, *info);
                    let t: #p::F64 = ps.step as #p::F64;
                    let globals: &[#p::F64] = &[];
                    #(#finish_host)*
                    #basis_update
                    #(#swrites)*
                }
            }
        }
    }
}
