//! On error: the errors, plus stub items with the declared names, so that code using the
//! optimizer (`Name::default()`, `NameConfig { lr: ..., ..Default::default() }`,
//! `opt.set_lr(...)`, `opt.update(...)`) does not add follow-on errors to the real one.

use crate::parse as ast;
use crate::private::Private;
use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};

/// Errors plus stubs for an input that parsed.
pub(crate) fn expand(ast: &ast::Input, err: syn::Error) -> TokenStream {
    let errors = err.into_compile_error();
    let fields = dedup(ast.hypers.iter().map(|h| {
        (
            h.name.clone(),
            matches!(h.default.value, ast::LitValue::Bool(_)),
        )
    }));
    let stub = stub(&ast.vis, &ast.name, &fields);
    quote!(#errors #stub)
}

fn dedup(fields: impl Iterator<Item = (syn::Ident, bool)>) -> Vec<(syn::Ident, bool)> {
    let mut out: Vec<(syn::Ident, bool)> = Vec::new();
    for (n, flag) in fields {
        // reserved names would clash with the stub's own items
        if crate::words::reserved_hyper(&n.to_string()).is_some() {
            continue;
        }
        if !out.iter().any(|(m, _)| *m == n) {
            out.push((n, flag));
        }
    }
    out
}

/// The header of a declaration whose body did not parse: name and hyperparameter names.
struct Header {
    vis: syn::Visibility,
    name: syn::Ident,
    fields: Vec<(syn::Ident, bool)>,
}

impl Parse for Header {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.call(syn::Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        let name: syn::Ident = input.parse()?;
        let mut fields = Vec::new();
        if input.peek(syn::Token![<]) {
            input.parse::<syn::Token![<]>()?;
            while !input.peek(syn::Token![>]) && !input.is_empty() {
                let n: syn::Ident = input.parse()?;
                input.parse::<syn::Token![=]>()?;
                input.parse::<Option<syn::Token![-]>>()?;
                let lit: syn::Lit = input.parse()?;
                fields.push((n, matches!(lit, syn::Lit::Bool(_))));
                if input.peek(syn::Token![,]) {
                    input.parse::<syn::Token![,]>()?;
                } else {
                    break;
                }
            }
        }
        // the rest (the body that failed to parse) is ignored
        input.step(|cursor| {
            let mut rest = *cursor;
            while let Some((_, next)) = rest.token_tree() {
                rest = next;
            }
            Ok(((), rest))
        })?;
        Ok(Header { vis, name, fields })
    }
}

/// Errors plus a stub for an input that did not parse: the header is recovered when it
/// parses on its own; otherwise the first identifier after attributes and `pub` names a
/// field-less stub.
pub(crate) fn from_tokens(input: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.into_compile_error();
    if let Ok(h) = syn::parse2::<Header>(input.clone()) {
        let fields = dedup(h.fields.into_iter());
        let stub = stub(&h.vis, &h.name, &fields);
        return quote!(#errors #stub);
    }
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
    if name == "E" {
        // `struct E<E>` would add an error of its own; the real error names the problem
        return TokenStream::new();
    }
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
    let setters = fields.iter().map(|(n, flag)| {
        let set = format_ident!("set_{}", n);
        let with = format_ident!("with_{}", n);
        if *flag {
            quote! {
                pub fn #set(&mut self, _: #p::Bool) { ::core::unreachable!() }
                pub fn #with(self, _: #p::Bool) -> Self { ::core::unreachable!() }
            }
        } else {
            quote! {
                pub fn #set(&mut self, _: impl ::core::convert::Into<#p::Hyper>) -> ::core::result::Result<(), #p::OptimError> { ::core::unreachable!() }
                pub fn #with(self, _: impl ::core::convert::Into<#p::Hyper>) -> ::core::result::Result<Self, #p::OptimError> { ::core::unreachable!() }
            }
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
        #[derive(::core::default::Default, ::core::fmt::Debug)]
        #vis struct #name<E: #p::Float = #p::F32> { state: #p::OptState<E>, config: #config }
        #[allow(missing_docs, clippy::all)]
        impl<E: #p::Float> #name<E> {
            pub fn new(_: #config) -> ::core::result::Result<Self, #p::OptimError> { ::core::unreachable!() }
            pub fn config(&self) -> &#config { &self.config }
            pub fn set_config(&mut self, _: #config) -> ::core::result::Result<(), #p::OptimError> { ::core::unreachable!() }
            pub fn state(&self) -> &#p::OptState<E> { &self.state }
            #(#setters)*
        }
        impl<E: #p::Float> #p::DslOptimizer<E> for #name<E> {
            type Config = #config;
            fn config(&self) -> &#config { &self.config }
            fn config_mut(&mut self) -> ::core::option::Option<&mut #config> { ::core::option::Option::Some(&mut self.config) }
            fn opt_state(&self) -> &#p::OptState<E> { &self.state }
            fn opt_state_mut(&mut self) -> &mut #p::OptState<E> { &mut self.state }
            fn route(_: &#p::ParamInfo<'_>) -> #p::Usize { 0 }
            fn rule_count() -> #p::Usize { 0 }
            type Job<'a> = #p::EmptyJob;
            fn prepare<'a>(_: &'a #values, _: #p::Usize, _: &'a mut #p::ParamState<E>, _: #p::ParamInfo<'a>, _: &'a mut [E], _: &'a [E]) -> #p::EmptyJob { #p::EmptyJob }
        }
    }
}
