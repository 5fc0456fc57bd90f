//! The optimizer's job enum: one variant per fused rule variant (its `__JobR_V`), one per reuse
//! rule (the reused optimizer's own job type) and `Empty` (a parameter routed to no rule), with
//! a `StagedJob` impl that forwards to the variant's job. `DslOptimizer::Job` names it, so a
//! step keeps its jobs in one list by value: no allocation per parameter (a boxed trait object
//! would cost one each step). Also each variant's 16-bit-parameter pick function and
//! `DslOptimizer::narrow_kernels`' arms (`optim_runtime::narrow`).

use super::exprs::{flag_pattern, flag_scrutinee};
use super::rust_loop;
use crate::ir::{self, RuleBody};
use crate::plan::{Plan, Variant};
use crate::private::Private;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

/// Every variant's items (kernels, job type, `prepare` function), `DslOptimizer::prepare`'s
/// match arm per rule, and the job enum over all of them.
pub(crate) struct RuleJobs {
    pub items: Vec<TokenStream>,
    pub prepare_arms: Vec<TokenStream>,
    /// `DslOptimizer::narrow_kernels`' match arm per rule whose loops alone read the
    /// parameter and gradient.
    pub narrow_arms: Vec<TokenStream>,
    pub job_enum: TokenStream,
}

/// The [`RuleJobs`] of `opt` under `plan`; `values` is the optimizer's `__NameValues` type.
pub(crate) fn rule_jobs(opt: &ir::Optimizer, plan: &Plan, values: &Ident) -> RuleJobs {
    let p = Private;
    let mut items = Vec::new();
    let mut prepare_arms = Vec::new();
    let mut narrow_arms = Vec::new();
    let jobs = enum_name();
    let mut job_variants = Vec::new();
    // index of the next stage in `__OPTIM_CUDA_SOURCES` (rule, variant, stage order)
    let mut cuda_index = 0;
    for (ri, (rule, rule_plan)) in opt.rules.iter().zip(&plan.rules).enumerate() {
        match (&rule.body, rule_plan) {
            (RuleBody::Fused(f), Some(rp)) => {
                let mut arms = Vec::new();
                let mut picks = Vec::new();
                let narrow = super::rule_loops_only(f, rp);
                for (vi, v) in rp.variants.iter().enumerate() {
                    let emitter = super::host::VariantEmitter {
                        opt,
                        f,
                        v,
                        prefix: format!("{ri}_{vi}"),
                        values,
                        cuda_index,
                        narrow,
                    };
                    if !crate::loop_ir::has_low_state(&v.loops) {
                        cuda_index += v.loops.len();
                    }
                    items.push(emitter.emit());
                    if narrow {
                        items.push(narrow_pick(v, &format!("{ri}_{vi}")));
                    }
                    let pname = format_ident!("__prepare_{}_{}", ri, vi);
                    let jname = format_ident!("__Job{}_{}", ri, vi);
                    let variant = fused_variant(ri, vi);
                    job_variants.push((variant.clone(), quote!(#jname<'a, E>)));
                    let pat = flag_pattern(v);
                    let nname = format_ident!("__narrow_{}_{}", ri, vi);
                    picks.push(quote!(#pat => #nname::<E>));
                    arms.push(
                        quote!(#pat => #jobs::#variant(#pname(values, ps, info, param, grad))),
                    );
                }
                let scrut = flag_scrutinee(opt, rp, quote!(values));
                prepare_arms.push(quote!(#ri => match #scrut { #(#arms,)* }));
                if narrow {
                    narrow_arms.push(quote!(#ri => match #scrut { #(#picks,)* }));
                }
            }
            (RuleBody::Reuse { name: inner, .. }, _) => {
                let field = format_ident!("__r{}", ri);
                let variant = reuse_variant(ri);
                let ty = quote!(<#inner<E> as #p::DslOptimizer<E>>::Job<'a>);
                job_variants.push((variant.clone(), ty));
                prepare_arms.push(quote! {
                    #ri => {
                        let r = <#inner<E> as #p::DslOptimizer<E>>::route(&info);
                        #jobs::#variant(<#inner<E> as #p::DslOptimizer<E>>::prepare(&values.#field, r, ps, info, param, grad))
                    }
                });
                narrow_arms.push(quote! {
                    #ri => {
                        let r = <#inner<E> as #p::DslOptimizer<E>>::route(info);
                        <#inner<E> as #p::DslOptimizer<E>>::narrow_kernels(&values.#field, r, info)
                    }
                });
            }
            _ => {}
        }
    }
    RuleJobs {
        items,
        prepare_arms,
        narrow_arms,
        job_enum: job_enum(&job_variants),
    }
}

/// Name of the job enum (inside the optimizer's `const _` block, so one per optimizer).
pub(crate) fn enum_name() -> Ident {
    format_ident!("__Jobs")
}

/// The variant of fused rule `ri`, flag combination `vi`.
pub(crate) fn fused_variant(ri: usize, vi: usize) -> Ident {
    format_ident!("V{}_{}", ri, vi)
}

/// The variant of reuse rule `ri`.
pub(crate) fn reuse_variant(ri: usize) -> Ident {
    format_ident!("R{}", ri)
}

/// The enum over `variants` (`(variant, job type)`), `Empty` added (which also carries the
/// enum's parameters, for an optimizer whose variants name neither), and its `StagedJob` impl.
pub(crate) fn job_enum(variants: &[(Ident, TokenStream)]) -> TokenStream {
    let p = Private;
    let name = enum_name();
    let decls = variants.iter().map(|(v, ty)| quote!(#v(#ty)));
    let names: Vec<&Ident> = variants.iter().map(|(v, _)| v).collect();
    // `match self { Self::V(j) => StagedJob::<E>::method(j, args), ... }`
    let forward = |call: TokenStream| {
        quote! {
            match self {
                #(#name::#names(j) => #p::StagedJob::<E>::#call,)*
                #name::Empty(j, _) => #p::StagedJob::<E>::#call,
            }
        }
    };
    let stages = forward(quote!(stages(j)));
    let kernel = forward(quote!(kernel(j, k, globals)));
    let reduced = forward(quote!(reduced(j, k, sums)));
    let has_pre = forward(quote!(has_pre_barrier(j)));
    let pre = forward(quote!(pre_barrier(j)));
    let barrier = forward(quote!(barrier(j, k)));
    let finish = forward(quote!(finish(j)));
    quote! {
        #[doc(hidden)]
        #[allow(missing_docs, non_camel_case_types, clippy::large_enum_variant)]
        pub enum #name<'a, E: #p::Float> {
            #(#decls,)*
            Empty(#p::EmptyJob, ::core::marker::PhantomData<(&'a (), fn() -> E)>),
        }

        impl<'a, E: #p::Float> #p::StagedJob<E> for #name<'a, E> {
            fn stages(&self) -> #p::Usize {
                #stages
            }
            fn kernel(&mut self, k: #p::Usize, globals: &[#p::F64]) -> #p::KernelCall<'_, E> {
                #kernel
            }
            fn reduced(&mut self, k: #p::Usize, sums: &[#p::F64]) {
                #reduced
            }
            fn has_pre_barrier(&self) -> ::core::primitive::bool {
                #has_pre
            }
            fn pre_barrier(&mut self) {
                #pre
            }
            fn barrier(&mut self, k: #p::Usize) {
                #barrier
            }
            fn finish(&mut self) {
                #finish
            }
        }
    }
}

/// The `NarrowPick` of variant `v` (`__narrow_{prefix}`): loop `k`'s 16-bit-parameter entry
/// point, `dispatch_narrow` of its kernel's `bf16` or `f16` instance, exact or reciprocal (as
/// `host::VariantEmitter::low_call` picks the `E` instance). For the variants of rules whose
/// loops alone read the parameter and gradient; `DslOptimizer::narrow_kernels` names it.
fn narrow_pick(v: &Variant, prefix: &str) -> TokenStream {
    let p = Private;
    let fname = format_ident!("__narrow_{}", prefix);
    let arms = v.loops.iter().enumerate().map(|(k, l)| {
        let kname = format_ident!("__Kernel{}_{}", prefix, k);
        let inst = |f16: bool| {
            if rust_loop::scalar_divisors(l).is_empty() {
                quote!(#p::dispatch_narrow::<E, #kname<false, #f16>>)
            } else {
                quote! {
                    if reciprocal {
                        #p::dispatch_narrow::<E, #kname<true, #f16>>
                    } else {
                        #p::dispatch_narrow::<E, #kname<false, #f16>>
                    }
                }
            }
        };
        let (bf16, f16) = (inst(false), inst(true));
        quote! {
            #k => ::core::option::Option::Some(match dtype {
                #p::lowp::StateDtype::Bf16 => #bf16,
                #p::lowp::StateDtype::F16 => #f16,
            }),
        }
    });
    quote! {
        #[allow(unused_variables, clippy::all)]
        fn #fname<E: #p::Float>(
            k: #p::Usize,
            dtype: #p::lowp::StateDtype,
            reciprocal: #p::Bool,
        ) -> ::core::option::Option<#p::NarrowKernelFn<E>> {
            match k {
                #(#arms)*
                _ => ::core::option::Option::None,
            }
        }
    }
}
