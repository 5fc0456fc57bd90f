//! The driver: parse → lower → (barrier) → check → (barrier) → plan + emit, or fallback.

use crate::errors::Errors;
use crate::{ast, check, emit, fallback, lower};
use proc_macro2::TokenStream;

/// Expands one `optimizer!` invocation. Never panics: every failure becomes `compile_error!`.
pub(crate) fn optimizer(input: TokenStream) -> TokenStream {
    let ast = match syn::parse2::<ast::Input>(input.clone()) {
        Ok(ast) => ast,
        Err(err) => return fallback::from_tokens(input, err),
    };
    match try_expand(&ast) {
        Ok(tokens) => tokens,
        Err(err) => fallback::expand(&ast, err),
    }
}

fn try_expand(ast: &ast::Input) -> syn::Result<TokenStream> {
    let cx = &mut Errors::default();
    let ir = lower::lower(cx, ast);
    cx.propagate()?;
    check::check(cx, &ir);
    cx.propagate()?;
    debug_assert!(cx.is_empty());
    Ok(emit::emit(&ir))
}
