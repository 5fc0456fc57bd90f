//! The one place the runtime path used by generated code is spelled.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};

/// Expands to `::optim_dsl::__private`.
#[derive(Clone, Copy)]
pub(crate) struct Private;

impl ToTokens for Private {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(quote!(::optim_dsl::__private));
    }
}
