//! The optimizer's job enum: one variant per fused rule variant (its `__JobR_V`), one per reuse
//! rule (the reused optimizer's own job type) and `Empty` (a parameter routed to no rule), with
//! a `StagedJob` impl that forwards to the variant's job. `DslOptimizer::Job` names it, so a
//! step keeps its jobs in one list by value: no allocation per parameter (a boxed trait object
//! would cost one each step).

use crate::private::Private;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

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
