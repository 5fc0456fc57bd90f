//! On error: the errors, plus stub items with the declared names, so that code using the
//! optimizer (`Name::default()`, `NameConfig { lr: ..., ..Default::default() }`,
//! `opt.update(...)`) does not add follow-on errors to the real one.

use crate::ast;
use crate::private::Private;
use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote};

/// Errors plus stubs for an input that parsed.
pub(crate) fn expand(ast: &ast::Input, err: syn::Error) -> TokenStream {
    let errors = err.into_compile_error();
    let fields: Vec<(syn::Ident, bool)> = ast
        .hypers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                matches!(h.default.value, ast::LitValue::Bool(_)),
            )
        })
        .collect();
    let stub = stub(&ast.vis, &ast.name, &fields);
    quote!(#errors #stub)
}

/// Errors plus a stub for an input that did not parse: if the name can be found (first
/// identifier after an optional `pub`/attributes), a field-less stub is emitted.
pub(crate) fn from_tokens(input: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.into_compile_error();
    let mut vis: syn::Visibility = syn::Visibility::Inherited;
    let mut name = None;
    let mut iter = input.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                iter.next(); // the attribute's brackets
            }
            TokenTree::Ident(id) if id == "pub" => {
                if let Some(TokenTree::Group(_)) = iter.peek() {
                    iter.next();
                }
                vis = syn::parse_quote!(pub);
            }
            TokenTree::Ident(id) if id != "struct" => {
                name = Some(id);
                break;
            }
            _ => {}
        }
    }
    match name {
        Some(n) => {
            let stub = stub(&vis, &n, &[]);
            quote!(#errors #stub)
        }
        None => errors,
    }
}

fn stub(vis: &syn::Visibility, name: &syn::Ident, fields: &[(syn::Ident, bool)]) -> TokenStream {
    let p = Private;
    let config = format_ident!("{}Config", name);
    let values = format_ident!("__{}Values", name);
    let decls = fields.iter().map(|(n, flag)| {
        if *flag {
            quote!(pub #n: #p::Bool)
        } else {
            quote!(pub #n: #p::Hyper)
        }
    });
    let defaults = fields.iter().map(|(n, flag)| {
        if *flag {
            quote!(#n: false)
        } else {
            quote!(#n: #p::Hyper::Const(0.0))
        }
    });
    quote! {
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::cmp::PartialEq)]
        #[allow(missing_docs)]
        #vis struct #config { #(#decls,)* }
        impl ::core::default::Default for #config {
            fn default() -> Self { #config { #(#defaults,)* } }
        }
        #[doc(hidden)]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #values;
        impl #p::OptimizerConfig for #config {
            type Values = #values;
            const NAME: &'static #p::Str = "";
            fn values(&self, _: #p::U64) -> ::core::result::Result<#values, #p::OptimError> { ::core::unreachable!() }
            fn plan(&self) -> #p::Plan { ::core::unreachable!() }
            fn fields(&self) -> ::std::vec::Vec<(&'static #p::Str, #p::Field)> { ::core::unreachable!() }
            fn set_field(&mut self, _: &#p::Str, _: #p::Field) -> ::core::result::Result<(), #p::OptimError> { ::core::unreachable!() }
        }
        #[allow(missing_docs)]
        #[derive(::core::default::Default)]
        #vis struct #name<E: #p::Float = #p::F32> { state: #p::OptState<E>, config: #config }
        impl<E: #p::Float> #name<E> {
            #[allow(missing_docs)]
            pub fn new(_: #config) -> ::core::result::Result<Self, #p::OptimError> { ::core::unreachable!() }
        }
        impl<E: #p::Float> #p::DslOptimizer<E> for #name<E> {
            type Config = #config;
            fn config(&self) -> &#config { &self.config }
            fn opt_state(&self) -> &#p::OptState<E> { &self.state }
            fn opt_state_mut(&mut self) -> &mut #p::OptState<E> { &mut self.state }
            fn route(_: &#p::ParamInfo<'_>) -> #p::Usize { 0 }
            fn rule_count() -> #p::Usize { 0 }
            fn prepare<'a>(_: &'a #values, _: #p::Usize, _: &'a mut #p::ParamState<E>, _: #p::ParamInfo<'a>, param: &'a mut [E], grad: &'a [E]) -> #p::Job<'a, E> { #p::empty_job(param, grad) }
        }
    }
}
