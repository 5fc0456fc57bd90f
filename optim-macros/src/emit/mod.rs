//! Stage 5, emit: Rust code for a checked, planned optimizer. Generated code names only
//! `::optim_dsl::__private` (through `Private`) and `::core`/`::std`.
//!
//! For `pub Name<...> { ... }` this emits:
//! - `NameConfig`: one `pub` field per hyperparameter (`Hyper` or `bool`), `Default` = header;
//! - `__NameValues`: the hyperparameters evaluated for one step (hidden, used by reuse rules);
//! - `Name<E = f32>`: the optimizer (config + state) with `new`, `set_*`, `with_*`;
//! - inside `const _: () = { ... }`: per rule and flag combination, the loops (printed from the
//!   loop IR by `rust_loop`), the job and `prepare` function (`host`), the enum of those jobs
//!   (`jobs`, the impl's `Job` type), and the `DslOptimizer` impl that routes parameters to
//!   them, with the CUDA twins (`cuda`) and `explain` (`explain`).
//!
//! Files: `mod.rs` (the optimizer's items), `host.rs`, `jobs.rs`, `rust_loop.rs`, `cuda.rs`,
//! `explain.rs`, `exprs.rs` (shared token helpers).

pub(crate) mod cuda;
mod explain;
mod exprs;
mod host;
mod jobs;
mod rust_loop;

use crate::ir::{self, RuleBody};
use crate::parse::LitValue;
use crate::plan::Plan;
use crate::private::Private;
use exprs::{
    domain_tokens, f64_lit, flag_pattern, flag_scrutinee, guard_tokens, host_expr_tree, respan,
};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};

pub(crate) fn emit(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let config = config_items(opt, plan);
    let optimizer = optimizer_items(opt);
    let dsl = dsl_impl(opt, plan);
    quote! {
        #config
        #optimizer
        const _: () = {
            #dsl
        };
    }
}

/// `NameConfig`, its `Default`, `__NameValues`, the reuse helpers and `OptimizerConfig`.
fn config_items(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let p = Private;
    let name = &opt.name;
    let vis = &opt.vis;
    let config = format_ident!("{}Config", name);
    let values = format_ident!("__{}Values", name);
    let name_str = name.to_string();
    let config_fields = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let doc = match h.default {
            LitValue::Bool(b) => format!("Flag `{n}` (default `{b}`); flags are specialised at compile time, each combination has its own kernel."),
            LitValue::Num(v) => format!("Hyperparameter `{n}` (default `{v}`; must be {}); a constant or a schedule.", h.domain.describe()),
        };
        let ty = if h.is_flag { quote!(#p::Bool) } else { quote!(#p::Hyper) };
        quote!(#[doc = #doc] pub #n: #ty)
    });
    let config_defaults = opt.hypers.iter().map(|h| {
        let n = &h.name;
        match h.default {
            LitValue::Bool(b) => quote!(#n: #b),
            LitValue::Num(v) => {
                let lit = f64_lit(v);
                quote!(#n: #p::Hyper::Const(#lit))
            }
        }
    });
    let value_fields = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let ty = if h.is_flag {
            quote!(#p::Bool)
        } else {
            quote!(#p::F64)
        };
        quote!(pub #n: #ty)
    });
    let value_inits = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let s = n.to_string();
        if h.is_flag {
            quote!(#n: self.#n)
        } else {
            let d = domain_tokens(h.domain);
            quote!(#n: #p::eval_hyper(#name_str, #s, &self.#n, #d, step)?)
        }
    });
    let (eta_fields, eta_inits) = eta_parts(opt);
    let (field_gets, field_sets) = field_access(opt);
    let Reuse {
        fields: reuse_fields,
        inits: reuse_inits,
        fns: reuse_fns,
    } = reuse_parts(opt);
    let plan_rules = explain::plan_rules(opt, plan);
    let config_doc = format!("Hyperparameters of [`{name}`]. `Default` gives the values declared in its `optimizer!` header.");
    let values_doc =
        format!("Hyperparameters of [`{name}`] evaluated for one step. Used by generated code.");
    quote! {
        #[doc = #config_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::cmp::PartialEq)]
        #vis struct #config {
            #(#config_fields,)*
        }

        impl ::core::default::Default for #config {
            fn default() -> Self {
                #config { #(#config_defaults,)* }
            }
        }

        #[doc = #values_doc]
        #[doc(hidden)]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #values {
            #(#value_fields,)*
            #(#eta_fields,)*
            #(#reuse_fields,)*
        }

        impl #config {
            #(#reuse_fns)*
        }

        impl #p::OptimizerConfig for #config {
            type Values = #values;
            const NAME: &'static #p::Str = #name_str;
            fn values(&self, step: #p::U64) -> ::core::result::Result<#values, #p::OptimError> {
                ::core::result::Result::Ok(#values {
                    #(#value_inits,)*
                    #(#eta_inits,)*
                    #(#reuse_inits,)*
                })
            }
            fn fields(&self) -> ::std::vec::Vec<(&'static #p::Str, #p::Field)> {
                ::std::vec![#(#field_gets),*]
            }
            fn set_field(&mut self, name: &#p::Str, value: #p::Field) -> ::core::result::Result<(), #p::OptimError> {
                match (name, value) {
                    #(#field_sets)*
                    (name, #p::Field::Flag(_)) => ::core::result::Result::Err(#p::OptimError::UnknownField { optimizer: #name_str, name: name.into(), kind: "flag" }),
                    (name, #p::Field::Hyper(_)) => ::core::result::Result::Err(#p::OptimError::UnknownField { optimizer: #name_str, name: name.into(), kind: "hyperparameter" }),
                }
            }
            fn plan(&self) -> #p::Plan {
                #p::Plan { optimizer: #name_str, rules: ::std::vec![#(#plan_rules),*] }
            }
        }
    }
}

/// The values' `__eta_<name>` fields and their initialisers: the schedule multiplier
/// `eta_t = name_t / peak(name)` of each hyperparameter a `scheduled_decay` reads, computed once
/// per step (after the hyperparameter's own value, so that its domain error comes first).
fn eta_parts(opt: &ir::Optimizer) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let p = Private;
    let name_str = opt.name.to_string();
    let mut used = vec![false; opt.hypers.len()];
    for rule in &opt.rules {
        if let RuleBody::Fused(f) = &rule.body {
            for n in &f.nodes {
                if let ir::Op::Eta(h) = n.op {
                    used[h] = true;
                }
            }
        }
    }
    opt.hypers
        .iter()
        .zip(used)
        .filter(|(_, u)| *u)
        .map(|(h, _)| {
            let (n, s) = (&h.name, h.name.to_string());
            let field = format_ident!("__eta_{}", n);
            (
                quote!(#[doc(hidden)] pub #field: #p::F64),
                quote!(#field: #p::eval_schedule_multiplier(#name_str, #s, &self.#n, #p::Hyper::value_at(&self.#n, step), step)?),
            )
        })
        .unzip()
}

/// `OptimizerConfig::fields` entries and `set_field` arms.
fn field_access(opt: &ir::Optimizer) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let p = Private;
    opt.hypers
        .iter()
        .map(|h| {
            let n = &h.name;
            let s = n.to_string();
            let (kind, value) = if h.is_flag {
                (quote!(Flag), quote!(self.#n))
            } else {
                (quote!(Hyper), quote!(::core::clone::Clone::clone(&self.#n)))
            };
            (
                quote!((#s, #p::Field::#kind(#value))),
                quote!((#s, #p::Field::#kind(v)) => { self.#n = v; ::core::result::Result::Ok(()) }),
            )
        })
        .unzip()
}

/// What a reuse rule (`_ => Other<name = value>`) adds to the config and its values.
struct Reuse {
    fields: Vec<TokenStream>,
    inits: Vec<TokenStream>,
    fns: Vec<TokenStream>,
}

fn reuse_parts(opt: &ir::Optimizer) -> Reuse {
    let p = Private;
    let mut out = Reuse {
        fields: Vec::new(),
        inits: Vec::new(),
        fns: Vec::new(),
    };
    for (ri, rule) in opt.rules.iter().enumerate() {
        let RuleBody::Reuse {
            name: inner,
            bindings,
            nodes,
        } = &rule.body
        else {
            continue;
        };
        let field = format_ident!("__r{}", ri);
        let fname = format_ident!("__reuse_{}", ri);
        let inner_cfg =
            quote_spanned!(inner.span()=> <#inner as #p::DslOptimizer<#p::F32>>::Config);
        out.fields
            .push(quote!(#[doc(hidden)] pub #field: <#inner_cfg as #p::OptimizerConfig>::Values));
        out.inits
            .push(quote!(#field: #p::OptimizerConfig::values(&self.#fname(step), step)?));
        let locals = opt.hypers.iter().map(|h| {
            let n = &h.name;
            let l = format_ident!("h_{}", n);
            if h.is_flag {
                quote!(let #l: #p::Bool = self.#n;)
            } else {
                quote!(let #l: #p::F64 = self.#n.value_at(step);)
            }
        });
        let sets = bindings.iter().map(|(k, id, vspan)| {
            let e = respan(host_expr_tree(opt, nodes, *id, &|_| None), *vspan);
            if nodes[*id].ty.boolean {
                quote_spanned!(k.span()=> c.#k = #e;)
            } else {
                let wrapped = respan(quote!(#p::Hyper::Const(#e)), *vspan);
                quote_spanned!(k.span()=> c.#k = #wrapped;)
            }
        });
        out.fns.push(quote! {
            #[doc(hidden)]
            #[allow(unused_variables, clippy::all)]
            pub fn #fname(&self, step: #p::U64) -> #inner_cfg {
                #(#locals)*
                let mut c = <#inner_cfg as ::core::default::Default>::default();
                #(#sets)*
                c
            }
        });
    }
    out
}

/// The optimizer struct, its `Default`/`Debug`, and its inherent methods.
fn optimizer_items(opt: &ir::Optimizer) -> TokenStream {
    let p = Private;
    let name = &opt.name;
    let vis = &opt.vis;
    let attrs = &opt.attrs;
    let config = format_ident!("{}Config", name);
    let name_str = name.to_string();
    let setters = setters(opt);
    quote! {
        #(#attrs)*
        #vis struct #name<E: #p::Float = #p::F32> {
            config: #config,
            state: #p::OptState<E>,
        }

        impl<E: #p::Float> ::core::default::Default for #name<E> {
            fn default() -> Self {
                #name { config: ::core::default::Default::default(), state: ::core::default::Default::default() }
            }
        }

        impl<E: #p::Float> ::core::fmt::Debug for #name<E> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name_str).field("config", &self.config).field("step", &self.state.step).finish_non_exhaustive()
            }
        }

        impl<E: #p::Float> #name<E> {
            /// Builds the optimizer from `config`, validating every hyperparameter at step 0.
            ///
            /// # Errors
            /// `OptimError::InvalidHyperparameter` naming the first invalid hyperparameter.
            pub fn new(config: #config) -> ::core::result::Result<Self, #p::OptimError> {
                #p::OptimizerConfig::values(&config, 0)?;
                ::core::result::Result::Ok(#name { config, state: ::core::default::Default::default() })
            }
            /// The current hyperparameters.
            pub fn config(&self) -> &#config {
                &self.config
            }
            /// Replaces all hyperparameters, validated at the current step.
            ///
            /// # Errors
            /// `OptimError::InvalidHyperparameter`; the old config is kept.
            pub fn set_config(&mut self, config: #config) -> ::core::result::Result<(), #p::OptimError> {
                #p::OptimizerConfig::values(&config, self.state.step)?;
                self.config = config;
                ::core::result::Result::Ok(())
            }
            /// The optimizer state: global step and per-parameter buffers keyed by name.
            pub fn state(&self) -> &#p::OptState<E> {
                &self.state
            }
            #(#setters)*
        }
    }
}

/// `set_*` / `with_*` for every hyperparameter and flag.
fn setters(opt: &ir::Optimizer) -> Vec<TokenStream> {
    let p = Private;
    let name = &opt.name;
    opt.hypers.iter().map(|h| {
        let n = &h.name;
        let set = format_ident!("set_{}", n);
        let with = format_ident!("with_{}", n);
        if h.is_flag {
            let doc = format!("Sets flag `{n}` (takes effect at the next step).");
            let wdoc = format!("Builder form of [`{}::{set}`].", name);
            quote! {
                #[doc = #doc]
                pub fn #set(&mut self, value: #p::Bool) { self.config.#n = value; }
                #[doc = #wdoc]
                pub fn #with(mut self, value: #p::Bool) -> Self { self.config.#n = value; self }
            }
        } else {
            let doc = format!(
                "Sets `{n}` to a constant or a schedule, validated at the current step (must be {}); takes effect at the next step.\n\n# Errors\n[`OptimError::InvalidHyperparameter`]({p_path}::OptimError) if the value (at the current step) is outside the domain; the old value is kept.",
                h.domain.describe(),
                p_path = "optim_dsl"
            );
            let wdoc = format!("Builder form of [`{}::{set}`].\n\n# Errors\nAs `{set}`.", name);
            quote! {
                #[doc = #doc]
                pub fn #set(&mut self, value: impl ::core::convert::Into<#p::Hyper>) -> ::core::result::Result<(), #p::OptimError> {
                    let mut next = ::core::clone::Clone::clone(&self.config);
                    next.#n = value.into();
                    #p::OptimizerConfig::values(&next, self.state.step)?;
                    self.config = next;
                    ::core::result::Result::Ok(())
                }
                #[doc = #wdoc]
                pub fn #with(mut self, value: impl ::core::convert::Into<#p::Hyper>) -> ::core::result::Result<Self, #p::OptimError> {
                    self.#set(value)?;
                    ::core::result::Result::Ok(self)
                }
            }
        }
    }).collect()
}

/// Every variant's items and the `DslOptimizer` impl (routing, state names, `prepare`, CUDA
/// sources), plus the compile-time checks of the runtime contract.
fn dsl_impl(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let p = Private;
    let name = &opt.name;
    let config = format_ident!("{}Config", name);
    let values = format_ident!("__{}Values", name);
    let jobs = jobs::enum_name();
    let jobs::RuleJobs {
        items,
        prepare_arms,
        narrow_arms,
        job_enum,
    } = jobs::rule_jobs(opt, plan, &values);
    let narrow_kernels = if narrow_arms.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            fn narrow_kernels(
                values: &#values,
                rule: #p::Usize,
                info: &#p::ParamInfo<'_>,
            ) -> #p::NarrowPick<E> {
                match rule {
                    #(#narrow_arms,)*
                    _ => #p::no_narrow::<E>,
                }
            }
        }
    };
    let route_arms = opt
        .rules
        .iter()
        .enumerate()
        .map(|(ri, r)| match &r.condition {
            Some(c) => {
                let c = guard_tokens(c);
                quote!(if #c { return #ri; })
            }
            None => quote!(return #ri;),
        });
    let rule_count = opt.rules.len();
    let fused_stages = plan
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.variants.iter())
        .map(|v| v.stages.len())
        .max()
        .unwrap_or(0);
    let reused_stages = opt.rules.iter().filter_map(|r| match &r.body {
        RuleBody::Reuse { name: inner, .. } => {
            Some(quote!(m = m.max(<#inner<E> as #p::DslOptimizer<E>>::max_stages());))
        }
        RuleBody::Fused(_) => None,
    });
    let cuda_table = cuda::cuda_sources_fn(opt, plan);
    let cuda_sources = cuda::cuda_sources_method();
    let state_name_arms = opt.rules.iter().enumerate().map(|(ri, r)| match &r.body {
        RuleBody::Fused(f) => {
            let names = f.buffer_names();
            quote!(#ri => &[#(#names),*],)
        }
        RuleBody::Reuse { name: inner, .. } => {
            quote!(#ri => <#inner<E> as #p::DslOptimizer<E>>::state_names(0),)
        }
    });
    let contracts = state_contracts(opt);
    let unused = unused_check(opt, plan);
    let check_param = check_param(opt, plan, &values);
    let loops_only = loops_only(opt, plan);
    quote! {
        #(#contracts)*
        #unused
        #cuda_table
        #(#items)*
        #job_enum

        impl<E: #p::Float> #p::DslOptimizer<E> for #name<E> {
            type Config = #config;
            fn config(&self) -> &#config {
                &self.config
            }
            fn config_mut(&mut self) -> ::core::option::Option<&mut #config> {
                ::core::option::Option::Some(&mut self.config)
            }
            fn opt_state(&self) -> &#p::OptState<E> {
                &self.state
            }
            fn opt_state_mut(&mut self) -> &mut #p::OptState<E> {
                &mut self.state
            }
            #[allow(unreachable_code, clippy::all)]
            fn route(info: &#p::ParamInfo<'_>) -> #p::Usize {
                #(#route_arms)*
            }
            fn rule_count() -> #p::Usize {
                #rule_count
            }
            #[allow(unused_mut)]
            fn max_stages() -> #p::Usize {
                let mut m: #p::Usize = #fused_stages;
                #(#reused_stages)*
                m
            }
            #cuda_sources
            fn state_names(rule: #p::Usize) -> &'static [&'static #p::Str] {
                match rule {
                    #(#state_name_arms)*
                    _ => &[],
                }
            }
            #check_param
            #loops_only
            #narrow_kernels
            type Job<'a> = #jobs<'a, E>;
            fn prepare<'a>(
                values: &'a #values,
                rule: #p::Usize,
                ps: &'a mut #p::ParamState<E>,
                info: #p::ParamInfo<'a>,
                param: &'a mut [E],
                grad: &'a [E],
            ) -> #jobs<'a, E> {
                match rule {
                    #(#prepare_arms,)*
                    _ => #jobs::Empty(#p::EmptyJob, ::core::marker::PhantomData),
                }
            }
        }
    }
}

/// For every matrix primitive the optimizer uses, a `const` assertion that the runtime type's
/// state buffers are the ones the macro names (`ir::MatDef::state` against `MatrixWord::STATE`).
fn state_contracts(opt: &ir::Optimizer) -> Vec<TokenStream> {
    let p = Private;
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for rule in &opt.rules {
        let RuleBody::Fused(f) = &rule.body else {
            continue;
        };
        for node in &f.nodes {
            let ir::Op::Mat(m) = &node.op else {
                continue;
            };
            if seen.contains(&m.def.runtime) {
                continue;
            }
            seen.push(m.def.runtime);
            let ty = format_ident!("{}", m.def.runtime);
            let names = m.def.state;
            out.push(quote! {
                const _: () = ::core::assert!(
                    #p::matrix::same_names(<#p::matrix::#ty as #p::matrix::MatrixWord>::STATE, &[#(#names),*]),
                    "optim-dsl: the macro and the runtime disagree on a matrix primitive's state buffers"
                );
            });
        }
    }
    out
}

#[cfg(test)]
pub(crate) fn rust_kernel_for_tests(l: &crate::loop_ir::LoopIr, name: &syn::Ident) -> TokenStream {
    rust_loop::kernel(l, name, false)
}
#[cfg(test)]
pub(crate) fn rust_stmt_for_tests(s: &crate::loop_ir::LStmt) -> TokenStream {
    // as the kernel prints it: a division by a hoisted scalar in its two-mode form
    rust_loop::reciprocal_div(s).unwrap_or_else(|| rust_loop::stmt(s))
}
#[cfg(test)]
pub(crate) fn rust_expr_for_tests(e: &crate::loop_ir::LExpr) -> TokenStream {
    rust_loop::expr(e)
}

/// A function binding every unused `let` and hyperparameter to `()` with the user's span, so
/// that rustc's own `unused_variables` lint reports it on the user's token (a proc macro cannot
/// warn on stable). "Used" means read and live under at least one flag combination; names
/// starting with `_` are exempt, as in Rust.
fn unused_check(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let mut unused: Vec<&syn::Ident> = Vec::new();
    let mut hyper_used = vec![false; opt.hypers.len()];
    for (rule, rule_plan) in opt.rules.iter().zip(&plan.rules) {
        match (&rule.body, rule_plan) {
            (RuleBody::Fused(f), Some(rp)) => {
                let live_somewhere = |x: usize| rp.variants.iter().any(|v| v.live[v.repl[x]]);
                for l in &f.lets {
                    let exempt = l.ident.to_string().starts_with('_');
                    if !(exempt || l.read && live_somewhere(l.node)) {
                        unused.push(&l.ident);
                    }
                }
                for (i, n) in f.nodes.iter().enumerate() {
                    match n.op {
                        ir::Op::Flag(h) => hyper_used[h] = true,
                        ir::Op::Hyper(h) | ir::Op::Eta(h) if live_somewhere(i) => {
                            hyper_used[h] = true
                        }
                        _ => {}
                    }
                }
            }
            (RuleBody::Reuse { nodes, .. }, _) => {
                for n in nodes {
                    if let ir::Op::Hyper(h) | ir::Op::Flag(h) = n.op {
                        hyper_used[h] = true;
                    }
                }
            }
            _ => {}
        }
    }
    for (h, used) in opt.hypers.iter().zip(hyper_used) {
        if !used && !h.name.to_string().starts_with('_') {
            unused.push(&h.name);
        }
    }
    if unused.is_empty() {
        return TokenStream::new();
    }
    quote! {
        #[allow(dead_code)]
        fn __optim_unused_check() {
            #(let #unused = ();)*
        }
    }
}

/// One primitive's `MatrixWord::check` with the config the step will build (see `check_arms`).
fn mat_check(
    opt: &ir::Optimizer,
    f: &ir::Fused,
    v: &crate::plan::Variant,
    m: &ir::MatNode,
) -> TokenStream {
    let p = Private;
    let sets: Vec<(&'static str, TokenStream)> = m
        .args
        .iter()
        .filter(|&&(_, x)| step_invariant(f, v, v.repl[x]))
        .map(|&(k, x)| {
            let x = v.repl[x];
            let e = host_expr_tree(opt, &f.nodes, x, &|n| check_leaf(opt, f, v, n));
            let e = if f.nodes[x].ty.boolean {
                quote!((if #e { 1.0f64 } else { 0.0f64 }))
            } else {
                e
            };
            (k, e)
        })
        .collect();
    let cfg = host::config_tokens(m.def, &sets, &m.consts);
    let ty = format_ident!("{}", m.def.runtime);
    let batch = ir::batch_axes(&m.consts);
    quote!({
        #cfg
        #p::matrix::check_call::<#p::matrix::#ty>(&cfg, #batch, info)?;
    })
}

/// `check_param`'s leaves: hyperparameters, flags and multipliers from the step's `values`,
/// nodes replaced under the variant's flags by their stand-ins.
fn check_leaf(
    opt: &ir::Optimizer,
    f: &ir::Fused,
    v: &crate::plan::Variant,
    n: ir::NodeId,
) -> Option<TokenStream> {
    let r = v.repl[n];
    if let Some(b) = v.konst[r] {
        return Some(quote!(#b));
    }
    if r != n {
        return Some(host_expr_tree(opt, &f.nodes, r, &|m| {
            check_leaf(opt, f, v, m)
        }));
    }
    match &f.nodes[n].op {
        ir::Op::Hyper(h) | ir::Op::Flag(h) => {
            let name = &opt.hypers[*h].name;
            Some(quote!(values.#name))
        }
        ir::Op::Eta(h) => {
            let name = format_ident!("__eta_{}", opt.hypers[*h].name);
            Some(quote!(values.#name))
        }
        _ => None,
    }
}

/// Whether host node `x` is known before the step: built from literals, hyperparameters, flags
/// and shape scalars only (not `step`, state or reductions).
fn step_invariant(f: &ir::Fused, v: &crate::plan::Variant, x: ir::NodeId) -> bool {
    if v.konst[x].is_some() {
        return true;
    }
    match &f.nodes[x].op {
        ir::Op::Num(_)
        | ir::Op::Bool(_)
        | ir::Op::Hyper(_)
        | ir::Op::Flag(_)
        | ir::Op::Eta(_)
        | ir::Op::Shape(_) => true,
        ir::Op::Neg(_)
        | ir::Op::Not(_)
        | ir::Op::Bin(..)
        | ir::Op::Func(..)
        | ir::Op::Select(..) => crate::plan::operands(&f.nodes[x].op)
            .iter()
            .all(|&o| step_invariant(f, v, v.repl[o])),
        _ => false,
    }
}

/// The `DslOptimizer::check_param` override, from [`check_arms`]; nothing (the trait's default,
/// `Ok(())`) when no rule has a check.
fn check_param(opt: &ir::Optimizer, plan: &Plan, values: &syn::Ident) -> TokenStream {
    let p = Private;
    let check_arms = check_arms(opt, plan);
    if check_arms.is_empty() {
        return TokenStream::new();
    }
    quote! {
        #[allow(unused_variables, unreachable_patterns, clippy::all)]
        fn check_param(values: &#values, rule: #p::Usize, info: #p::ParamInfo<'_>) -> ::core::result::Result<(), ::std::string::String> {
            match rule {
                #(#check_arms)*
                _ => ::core::result::Result::Ok(()),
            }
        }
    }
}

/// `check_param`'s arms: for each rule, under the step's flags, each whole-tensor primitive's
/// own check of the parameter and of its configuration (`MatrixWord::check`: no dimension of
/// size 0, `beta` in `[0, 1]`, ...), so that the step is refused before anything is written;
/// reuse rules ask the reused optimizer. The configuration is built as the step builds it, from
/// the step's hyperparameter values; an argument that depends on per-parameter state (`step`,
/// a state read, a reduction) is not known before the step and keeps its default here.
fn check_arms(opt: &ir::Optimizer, plan: &Plan) -> Vec<TokenStream> {
    let p = Private;
    opt.rules
        .iter()
        .zip(&plan.rules)
        .enumerate()
        .filter_map(|(ri, (rule, rule_plan))| match (&rule.body, rule_plan) {
            (RuleBody::Fused(f), Some(rp)) => {
                let checks: Vec<Vec<TokenStream>> = rp
                    .variants
                    .iter()
                    .map(|v| {
                        v.live_nodes()
                            .filter_map(|i| match &f.nodes[i].op {
                                ir::Op::Mat(m) => Some(mat_check(opt, f, v, m)),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect();
                // a rule without whole-tensor primitives has nothing to check (the catch-all
                // arm's `Ok(())`)
                if checks.iter().all(Vec::is_empty) {
                    return None;
                }
                let arms = rp.variants.iter().zip(checks).map(|(v, checks)| {
                    let pat = flag_pattern(v);
                    quote!(#pat => { #(#checks)* ::core::result::Result::Ok(()) })
                });
                let scrut = flag_scrutinee(opt, rp, quote!(values));
                Some(quote!(#ri => match #scrut { #(#arms,)* },))
            }
            (RuleBody::Reuse { name: inner, .. }, _) => {
                let field = format_ident!("__r{}", ri);
                Some(quote! {
                    #ri => {
                        let r = <#inner<#p::F32> as #p::DslOptimizer<#p::F32>>::route(&info);
                        <#inner<#p::F32> as #p::DslOptimizer<#p::F32>>::check_param(&values.#field, r, info)
                    }
                })
            }
            _ => None,
        })
        .collect()
}

/// Whether variant `v` reads the parameter and the gradient only inside its loops: no matrix
/// primitive or axis reduction takes either as its input, and no eigenbasis or
/// after-the-step primitive reads the gradient.
fn variant_loops_only(f: &ir::Fused, v: &crate::plan::Variant) -> bool {
    use crate::plan::Stream;
    let raw = |s: Stream| matches!(s, Stream::Param | Stream::Grad);
    let mats = v.pre_barriers.iter().chain(v.barriers.iter().flatten());
    let bases = v
        .live_nodes()
        .any(|i| matches!(&f.nodes[i].op, ir::Op::Mat(m) if m.def.phase == ir::MatPhase::Basis));
    !bases
        && !mats.clone().any(|c| raw(c.input) || c.def.grad_after_step)
        && !v.axis_calls.iter().flatten().any(|c| raw(c.input))
}

/// Whether every variant of a fused rule reads the parameter and gradient only inside its
/// loops ([`variant_loops_only`]): then a 16-bit parameter can run through the loops' 16-bit
/// entry points.
pub(crate) fn rule_loops_only(f: &ir::Fused, rp: &crate::plan::RulePlan) -> bool {
    rp.variants.iter().all(|v| variant_loops_only(f, v))
}

/// The `DslOptimizer::param_in_loops_only` override: `true` for the fused rules all of whose
/// variants read the parameter and gradient only inside loops ([`variant_loops_only`]), the
/// reused optimizer's answer for a reuse rule; nothing (the default, `false`) when no rule
/// qualifies.
fn loops_only(opt: &ir::Optimizer, plan: &Plan) -> TokenStream {
    let p = Private;
    let arms: Vec<TokenStream> = opt
        .rules
        .iter()
        .zip(&plan.rules)
        .enumerate()
        .filter_map(|(ri, (rule, rule_plan))| match (&rule.body, rule_plan) {
            (RuleBody::Fused(f), Some(rp)) => rule_loops_only(f, rp).then(|| quote!(#ri => true,)),
            (RuleBody::Reuse { name: inner, .. }, _) => Some(quote! {
                #ri => {
                    let r = <#inner<E> as #p::DslOptimizer<E>>::route(info);
                    <#inner<E> as #p::DslOptimizer<E>>::param_in_loops_only(r, info)
                }
            }),
            _ => None,
        })
        .collect();
    if arms.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn param_in_loops_only(rule: #p::Usize, info: &#p::ParamInfo<'_>) -> #p::Bool {
            match rule {
                #(#arms)*
                _ => false,
            }
        }
    }
}
