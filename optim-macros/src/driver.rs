//! The driver: calls every stage in order — parse → lower → check → plan → emit — and
//! `fallback` when a stage reported errors. No stage calls another; each is a function of the
//! previous stage's output. Errors accumulate in `cx` and stop the pipeline at the next barrier.

use crate::errors::Errors;
use crate::{check, emit, fallback, lower, parse, plan};
use proc_macro2::TokenStream;

/// Expands one `optimizer!` invocation. Never panics: every failure becomes `compile_error!`.
pub(crate) fn optimizer(input: TokenStream) -> TokenStream {
    let ast = match syn::parse2::<parse::Input>(input.clone()) {
        Ok(ast) => ast,
        Err(err) => return fallback::from_tokens(input, err),
    };
    match stages(&ast) {
        Ok(tokens) => tokens,
        Err(err) => fallback::expand(&ast, err),
    }
}

/// lower → check → plan → emit, stopping at the first stage that reported errors.
fn stages(ast: &parse::Input) -> syn::Result<TokenStream> {
    let cx = &mut Errors::default();
    let ir = lower::lower(cx, ast);
    cx.propagate()?;
    check::check(cx, &ir);
    cx.propagate()?;
    let plan = plan::plan(cx, &ir);
    cx.propagate()?;
    check::check_plan(cx, &ir, &plan);
    cx.propagate()?;
    Ok(emit::emit(&ir, &plan))
}
