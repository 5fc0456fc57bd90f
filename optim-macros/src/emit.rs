//! Stage 5, emit: Rust code for a checked, planned optimizer. Generated code names only
//! `::optim_dsl::__private` (through `Private`) and `::core`.
//!
//! For `pub Name<...> { ... }` this emits:
//! - `NameConfig`: one `pub` field per hyperparameter (`Hyper` or `bool`), `Default` = header;
//! - `__NameValues`: the hyperparameters evaluated for one step (hidden, used by reuse rules);
//! - `Name<E = f32>`: the optimizer (config + state) with `new`, `set_*`, `with_*`;
//! - inside `const _: () = { ... }`: one kernel type and one `prepare` function per rule and
//!   flag combination, and the `DslOptimizer` impl that routes parameters to them.

use crate::ir::{self, BinOp, Func, Fused, NodeId, Op, RedKind, RuleBody};
use crate::plan::{plan_rule, RulePlan, Stream, Variant};
use crate::private::Private;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};

pub(crate) fn emit(opt: &ir::Optimizer) -> TokenStream {
    let p = Private;
    let name = &opt.name;
    let vis = &opt.vis;
    let attrs = &opt.attrs;
    let config = format_ident!("{}Config", name);
    let values = format_ident!("__{}Values", name);
    let name_str = name.to_string();

    let plans: Vec<Option<RulePlan>> = opt
        .rules
        .iter()
        .map(|r| match &r.body {
            RuleBody::Fused(f) => Some(plan_rule(f)),
            RuleBody::Reuse { .. } => None,
        })
        .collect();

    // ---- config struct
    let config_fields = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let doc = match h.default {
            crate::ast::LitValue::Bool(b) => format!("Flag `{n}` (default `{b}`); flags are specialised at compile time, each combination has its own kernel."),
            crate::ast::LitValue::Num(v) => format!("Hyperparameter `{n}` (default `{v}`; must be {}); a constant or a schedule.", h.domain.describe()),
        };
        if h.is_flag {
            quote!(#[doc = #doc] pub #n: #p::Bool)
        } else {
            quote!(#[doc = #doc] pub #n: #p::Hyper)
        }
    });
    let config_defaults = opt.hypers.iter().map(|h| {
        let n = &h.name;
        match h.default {
            crate::ast::LitValue::Bool(b) => quote!(#n: #b),
            crate::ast::LitValue::Num(v) => {
                let lit = f64_lit(v);
                quote!(#n: #p::Hyper::Const(#lit))
            }
        }
    });
    let value_fields = opt.hypers.iter().map(|h| {
        let n = &h.name;
        if h.is_flag {
            quote!(pub #n: #p::Bool)
        } else {
            quote!(pub #n: #p::F64)
        }
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

    let field_gets = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let s = n.to_string();
        if h.is_flag {
            quote!((#s, #p::Field::Flag(self.#n)))
        } else {
            quote!((#s, #p::Field::Hyper(::core::clone::Clone::clone(&self.#n))))
        }
    });
    let field_sets = opt.hypers.iter().map(|h| {
        let n = &h.name;
        let s = n.to_string();
        if h.is_flag {
            quote!((#s, #p::Field::Flag(v)) => { self.#n = v; ::core::result::Result::Ok(()) })
        } else {
            quote!((#s, #p::Field::Hyper(v)) => { self.#n = v; ::core::result::Result::Ok(()) })
        }
    });

    // ---- reuse rules
    let mut reuse_fields = Vec::new();
    let mut reuse_inits = Vec::new();
    let mut reuse_fns = Vec::new();
    for (ri, rule) in opt.rules.iter().enumerate() {
        if let RuleBody::Reuse {
            name: inner,
            bindings,
            nodes,
        } = &rule.body
        {
            let field = format_ident!("__r{}", ri);
            let fname = format_ident!("__reuse_{}", ri);
            let inner_cfg =
                quote_spanned!(inner.span()=> <#inner as #p::DslOptimizer<#p::F32>>::Config);
            reuse_fields.push(
                quote!(#[doc(hidden)] pub #field: <#inner_cfg as #p::OptimizerConfig>::Values),
            );
            reuse_inits
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
            reuse_fns.push(quote! {
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
    }

    // ---- plans for explain
    let plan_rules = opt.rules.iter().zip(&plans).enumerate().map(|(ri, (rule, plan))| {
        let text = &rule.text;
        match (&rule.body, plan) {
            (RuleBody::Fused(f), Some(plan)) => {
                let arms = plan.variants.iter().map(|v| {
                    let pat = flag_pattern(v);
                    let kernels = (0..v.stages.len()).map(|k| {
                        let reads = v.reads(f, k);
                        let writes = v.writes(f, k);
                        let ops = v.ops(f, k);
                        quote!(#p::KernelPlan { reads: ::std::vec![#(#reads),*], writes: ::std::vec![#(#writes),*], ops: #ops })
                    });
                    let barriers: Vec<String> = v
                        .barriers
                        .iter()
                        .flatten()
                        .map(|b| format!("{:?}({})", b.op, v.stream_name(f, b.input)).to_lowercase())
                        .chain(v.stages.iter().flat_map(|st| st.reductions.iter()).map(|(kind, x, _, g)| {
                            format!("{}{:?}({})", if g.is_some() { "global " } else { "" }, kind, describe(opt, f, v, *x)).to_lowercase()
                        }))
                        .collect();
                    let mut state: Vec<&str> = v.slots.iter().map(|&s| f.slots[s].name.as_str()).collect();
                    for b in v.barriers.iter().flatten() {
                        for &s in &b.slots {
                            state.push(f.mat_slots[s - f.slots.len()].as_str());
                        }
                    }
                    let mut scalars: Vec<String> = Vec::new();
                    for st in &v.stages {
                        for &x in &st.scalars {
                            let d = describe(opt, f, v, x);
                            if !scalars.contains(&d) {
                                scalars.push(d);
                            }
                        }
                    }
                    quote! {
                        #pat => #p::RuleBody::Fused {
                            kernels: ::std::vec![#(#kernels),*],
                            barriers: ::std::vec![#(#barriers),*],
                            state: ::std::vec![#(#state),*],
                            scalars: ::std::vec![#(#scalars),*],
                        }
                    }
                });
                let scrut = flag_scrutinee(opt, plan, quote!(self));
                quote!(#p::RulePlan { pattern: #text, body: match #scrut { #(#arms,)* } })
            }
            _ => {
                let fname = format_ident!("__reuse_{}", ri);
                quote!(#p::RulePlan { pattern: #text, body: #p::RuleBody::Reuse { plan: ::std::boxed::Box::new(#p::OptimizerConfig::plan(&self.#fname(0))) } })
            }
        }
    });

    // ---- kernels and prepare functions
    let mut items = Vec::new();
    let mut prepare_arms = Vec::new();
    for (ri, (rule, plan)) in opt.rules.iter().zip(&plans).enumerate() {
        match (&rule.body, plan) {
            (RuleBody::Fused(f), Some(plan)) => {
                let mut arms = Vec::new();
                for (vi, v) in plan.variants.iter().enumerate() {
                    let prefix = format!("{ri}_{vi}");
                    items.push(emit_variant(opt, f, v, &prefix, &values));
                    let pname = format_ident!("__prepare_{}", prefix);
                    let pat = flag_pattern(v);
                    arms.push(quote!(#pat => #pname(values, ps, info, param, grad)));
                }
                let scrut = flag_scrutinee(opt, plan, quote!(values));
                prepare_arms.push(quote!(#ri => match #scrut { #(#arms,)* }));
            }
            (RuleBody::Reuse { name: inner, .. }, _) => {
                let field = format_ident!("__r{}", ri);
                prepare_arms.push(quote! {
                    #ri => {
                        let r = <#inner<E> as #p::DslOptimizer<E>>::route(&info);
                        <#inner<E> as #p::DslOptimizer<E>>::prepare(&values.#field, r, ps, info, param, grad)
                    }
                });
            }
            _ => {}
        }
    }
    let route_arms = opt
        .rules
        .iter()
        .enumerate()
        .map(|(ri, r)| match &r.condition {
            Some(c) => quote!(if #c { return #ri; }),
            None => quote!(return #ri;),
        });
    let rule_count = opt.rules.len();
    // CUDA C twins of the kernels (emit_cuda.rs)
    let cuda_sources = crate::emit_cuda::cuda_sources_fn(opt, &plans);
    let state_name_arms = opt.rules.iter().enumerate().map(|(ri, r)| match &r.body {
        RuleBody::Fused(f) => {
            let names: Vec<&str> = f
                .slots
                .iter()
                .map(|s| s.name.as_str())
                .chain(f.mat_slots.iter().map(String::as_str))
                .collect();
            quote!(#ri => &[#(#names),*],)
        }
        RuleBody::Reuse { name: inner, .. } => {
            quote!(#ri => <#inner<E> as #p::DslOptimizer<E>>::state_names(0),)
        }
    });

    let setters = opt.hypers.iter().map(|h| {
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
    });

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

        const _: () = {
            #(#items)*

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
                #cuda_sources
                fn state_names(rule: #p::Usize) -> &'static [&'static #p::Str] {
                    match rule {
                        #(#state_name_arms)*
                        _ => &[],
                    }
                }
                fn prepare<'a>(
                    values: &'a #values,
                    rule: #p::Usize,
                    ps: &'a mut #p::ParamState<E>,
                    info: #p::ParamInfo<'a>,
                    param: &'a mut [E],
                    grad: &'a [E],
                ) -> #p::Job<'a, E> {
                    match rule {
                        #(#prepare_arms,)*
                        _ => #p::empty_job(param, grad),
                    }
                }
            }
        };
    }
}

/// `tokens` with every token's span set to `span` (so rustc errors about a generated
/// expression land on the user's tokens).
fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                tt = proc_macro2::TokenTree::Group(ng);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn domain_tokens(d: ir::Domain) -> TokenStream {
    let p = Private;
    match d {
        ir::Domain::Finite => quote!(#p::Domain::Finite),
        ir::Domain::NonNegative => quote!(#p::Domain::NonNegative),
        ir::Domain::Positive => quote!(#p::Domain::Positive),
        ir::Domain::UnitOpen => quote!(#p::Domain::UnitOpen),
        ir::Domain::NonPositive => quote!(#p::Domain::NonPositive),
        ir::Domain::Count => quote!(#p::Domain::Count),
    }
}

fn f64_lit(v: f64) -> TokenStream {
    if !v.is_finite() {
        // lowering rejects non-finite literals; stay panic-free regardless
        let p = Private;
        return quote!(#p::F64::NAN);
    }
    let lit = Literal::f64_suffixed(v.abs());
    if v.is_sign_negative() {
        quote!((-#lit))
    } else {
        quote!(#lit)
    }
}

fn flag_scrutinee(opt: &ir::Optimizer, plan: &RulePlan, src: TokenStream) -> TokenStream {
    let fields = plan.flags.iter().map(|&h| {
        let n = &opt.hypers[h].name;
        quote!(#src.#n)
    });
    quote!((#(#fields,)*))
}

fn flag_pattern(v: &Variant) -> TokenStream {
    let vals = v.flags.iter().map(|(_, b)| b);
    quote!((#(#vals,)*))
}

fn func_path(f: Func) -> TokenStream {
    let p = Private;
    match f {
        Func::Sqrt => quote!(#p::ops::sqrt),
        Func::Rsqrt => quote!(#p::ops::rsqrt),
        Func::Abs => quote!(#p::ops::abs),
        Func::Sign => quote!(#p::ops::sign),
        Func::Exp => quote!(#p::ops::exp),
        Func::Ln => quote!(#p::ops::ln),
        Func::Max => quote!(#p::ops::max),
        Func::Min => quote!(#p::ops::min),
        Func::Clamp => quote!(#p::ops::clamp),
        Func::Pow => quote!(#p::ops::pow),
        Func::Lerp => quote!(#p::ops::lerp),
    }
}

fn bin_tokens(op: BinOp, a: TokenStream, b: TokenStream, elementwise: bool) -> TokenStream {
    match op {
        BinOp::Add => quote!((#a + #b)),
        BinOp::Sub => quote!((#a - #b)),
        BinOp::Mul => quote!((#a * #b)),
        BinOp::Div => quote!((#a / #b)),
        BinOp::Lt => quote!((#a < #b)),
        BinOp::Le => quote!((#a <= #b)),
        BinOp::Gt => quote!((#a > #b)),
        BinOp::Ge => quote!((#a >= #b)),
        BinOp::Eq => quote!((#a == #b)),
        BinOp::Ne => quote!((#a != #b)),
        // non-short-circuit forms vectorise
        BinOp::And if elementwise => quote!((#a & #b)),
        BinOp::Or if elementwise => quote!((#a | #b)),
        BinOp::And => quote!((#a && #b)),
        BinOp::Or => quote!((#a || #b)),
    }
}

/// A host (`f64`/`bool`) expression for node `id` as one tree (used for reuse bindings and
/// state initial values, which are small). `leaf` may override a node.
fn host_expr_tree(
    opt: &ir::Optimizer,
    nodes: &[ir::Node],
    id: NodeId,
    leaf: &dyn Fn(NodeId) -> Option<TokenStream>,
) -> TokenStream {
    let p = Private;
    if let Some(t) = leaf(id) {
        return t;
    }
    let sub = |x: NodeId| host_expr_tree(opt, nodes, x, leaf);
    match &nodes[id].op {
        Op::Num(v) => f64_lit(*v),
        Op::Bool(b) => quote!(#b),
        Op::Hyper(h) | Op::Flag(h) => {
            let l = format_ident!("h_{}", opt.hypers[*h].name);
            quote!(#l)
        }
        Op::Step => quote!(t),
        Op::Shape(s) => {
            let m = format_ident!("{}", s);
            quote!((info.#m() as #p::F64))
        }
        Op::Neg(a) => {
            let a = sub(*a);
            quote!((-#a))
        }
        Op::Not(a) => {
            let a = sub(*a);
            quote!((!#a))
        }
        Op::Bin(op, a, b) => bin_tokens(*op, sub(*a), sub(*b), false),
        Op::Func(f, args) => {
            let path = func_path(*f);
            let args = args.iter().map(|a| sub(*a));
            quote!(#path::<#p::F64>(#(#args),*))
        }
        Op::Select(c, a, b) => {
            let (c, a, b) = (sub(*c), sub(*a), sub(*b));
            quote!((if #c { #a } else { #b }))
        }
        Op::First(k) => {
            let l = format_ident!("first_{}", k);
            quote!(#l)
        }
        Op::ScalarRead(k) => {
            let l = format_ident!("sread_{}", k);
            quote!(#l)
        }
        Op::Param
        | Op::Grad
        | Op::StateRead(_)
        | Op::Reduce(..)
        | Op::Global(..)
        | Op::Mat(..)
        | Op::Basis(..) => {
            quote!(0.0f64)
        }
    }
}

/// The host value of node `x` as `f64` (booleans are `1.0` / `0.0`).
fn hnum(v: &Variant, x: NodeId) -> TokenStream {
    let x = v.repl[x];
    if let Some(b) = v.konst[x] {
        return if b { quote!(1.0f64) } else { quote!(0.0f64) };
    }
    quote!(h[#x])
}

/// The host value of boolean node `x`.
fn hbool(v: &Variant, x: NodeId) -> TokenStream {
    let x = v.repl[x];
    if let Some(b) = v.konst[x] {
        return quote!(#b);
    }
    quote!((h[#x] != 0.0f64))
}

fn b2f(t: TokenStream) -> TokenStream {
    quote!((if #t { 1.0f64 } else { 0.0f64 }))
}

/// The assignment computing host node `id`, or `None` for nodes set elsewhere (state flags,
/// scalar state reads, per-tensor reductions).
fn host_assign(opt: &ir::Optimizer, f: &Fused, v: &Variant, id: NodeId) -> Option<TokenStream> {
    let p = Private;
    let e = match &f.nodes[id].op {
        Op::Num(x) => f64_lit(*x),
        Op::Bool(b) => b2f(quote!(#b)),
        Op::Hyper(h) => {
            let n = &opt.hypers[*h].name;
            quote!(values.#n)
        }
        Op::Flag(h) => {
            let n = &opt.hypers[*h].name;
            b2f(quote!(values.#n))
        }
        Op::Step => quote!(t),
        Op::Shape(s) => {
            let m = format_ident!("{}", s);
            quote!((info.#m() as #p::F64))
        }
        Op::Neg(a) => {
            let a = hnum(v, *a);
            quote!((-#a))
        }
        Op::Not(a) => {
            let a = hbool(v, *a);
            b2f(quote!((!#a)))
        }
        Op::Bin(op, a, b) => match op {
            BinOp::And | BinOp::Or => b2f(bin_tokens(*op, hbool(v, *a), hbool(v, *b), false)),
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                bin_tokens(*op, hnum(v, *a), hnum(v, *b), false)
            }
            _ => b2f(bin_tokens(*op, hnum(v, *a), hnum(v, *b), false)),
        },
        Op::Func(fun, args) => {
            let path = func_path(*fun);
            let args = args.iter().map(|a| hnum(v, *a));
            quote!(#path::<#p::F64>(#(#args),*))
        }
        Op::Select(c, a, b) => {
            let (c, a, b) = (hbool(v, *c), hnum(v, *a), hnum(v, *b));
            quote!((if #c { #a } else { #b }))
        }
        Op::Global(_, _, g) => quote!(globals.get(#g).copied().unwrap_or(0.0f64)),
        Op::First(_)
        | Op::ScalarRead(_)
        | Op::Reduce(..)
        | Op::Param
        | Op::Grad
        | Op::StateRead(_)
        | Op::Mat(..)
        | Op::Basis(..) => return None,
    };
    Some(quote!(h[#id] = #e;))
}

/// Does host node `id` depend on per-parameter state (`First`, `ScalarRead`) or on a reduction?
fn depends_on_state(f: &Fused, v: &Variant, id: NodeId, memo: &mut Vec<Option<bool>>) -> bool {
    if let Some(b) = memo[id] {
        return b;
    }
    let r = match &f.nodes[id].op {
        Op::First(_) | Op::ScalarRead(_) | Op::Reduce(..) | Op::Global(..) | Op::Basis(..) => true,
        op => crate::plan::operands(op)
            .iter()
            .any(|&a| depends_on_state(f, v, v.repl[a], memo)),
    };
    memo[id] = Some(r);
    r
}

/// Does `x` depend (through element-wise operations) on a `rotate(_, basis)`?
fn depends_on_rotation(f: &Fused, v: &Variant, x: NodeId, basis: NodeId) -> bool {
    let mut seen = vec![false; f.nodes.len()];
    let mut work = vec![x];
    while let Some(n) = work.pop() {
        let n = v.repl[n];
        if std::mem::replace(&mut seen[n], true) {
            continue;
        }
        match &f.nodes[n].op {
            Op::Mat(ir::MatOp::Rotate, args, _)
                if args.get(1).copied().flatten().map(|b| v.repl[b]) == Some(basis) =>
            {
                return true
            }
            Op::Mat(..) | Op::StateRead(_) => {}
            op => work.extend(crate::plan::operands(op)),
        }
    }
    false
}

fn stream_slice(s: Stream, mutable: bool) -> TokenStream {
    match (s, mutable) {
        (Stream::Param, false) => quote!(&**p),
        (Stream::Param, true) => quote!(&mut **p),
        (Stream::Grad, _) => quote!(*g),
        (Stream::Slot(k), false) => quote!(&ps.buffers[#k][..]),
        (Stream::Slot(k), true) => quote!(&mut ps.buffers[#k][..]),
        (Stream::Temp(t), false) => quote!(&ps.temps[#t][..]),
        (Stream::Temp(t), true) => quote!(&mut ps.temps[#t][..]),
    }
}

/// Kernels, job type and `prepare` function of one rule variant.
fn emit_variant(
    opt: &ir::Optimizer,
    f: &Fused,
    v: &Variant,
    prefix: &str,
    values: &syn::Ident,
) -> TokenStream {
    let p = Private;
    let nh = f.nodes.len().max(1);
    let job = format_ident!("__Job{}", prefix);
    let pname = format_ident!("__prepare_{}", prefix);
    let nstages = v.stages.len();

    // host code per stage
    let mut memo = vec![None; f.nodes.len()];
    let mut pre = Vec::new();
    let mut post = Vec::new();
    let mut later: Vec<Vec<TokenStream>> = vec![Vec::new(); nstages + 1];
    for &x in &v.host {
        let Some(a) = host_assign(opt, f, v, x) else {
            continue;
        };
        let s = v.stage_of[x];
        if s == 0 {
            if depends_on_state(f, v, x, &mut memo) {
                post.push(a);
            } else {
                pre.push(a);
            }
        } else {
            later[s.min(nstages)].push(a);
        }
    }
    let ensure = v.slots.iter().map(|&k| {
        let init = f.slots[k].init.map_or(quote!(0.0f64), |i| hnum(v, i));
        let firsts = (0..f.nodes.len()).filter(|&i| {
            v.live[i] && v.repl[i] == i && matches!(f.nodes[i].op, Op::First(s) if s == k)
        });
        let sets = firsts.map(|i| quote!(h[#i] = if created { 1.0f64 } else { 0.0f64 };));
        quote! {
            let created = ps.ensure_buffer(#k, <E as #p::Float>::of_f64(#init));
            #(#sets)*
        }
    });
    let sensure = v.scalar_slots.iter().map(|&k| {
        let init = f64_lit(f.scalar_slots[k].init);
        let reads = (0..f.nodes.len()).filter(|&i| {
            v.live[i] && v.repl[i] == i && matches!(f.nodes[i].op, Op::ScalarRead(s) if s == k)
        });
        let sets = reads.map(|i| quote!(h[#i] = ps.scalars[#k];));
        quote! {
            ps.ensure_scalar(#k, #init);
            #(#sets)*
        }
    });
    let ntemps = v.temps.len();
    let nbufs = f.slots.len() + f.mat_slots.len();
    let bases: Vec<NodeId> = (0..f.nodes.len())
        .filter(|&i| v.live[i] && v.repl[i] == i && matches!(f.nodes[i].op, Op::Basis(..)))
        .collect();
    let basis_cfg = |b: NodeId| -> (TokenStream, usize, usize) {
        let Op::Basis(bargs, bslots) = &f.nodes[b].op else {
            return (quote!(()), 0, 0);
        };
        let arg = |i: usize, default: TokenStream| {
            bargs
                .get(i)
                .copied()
                .flatten()
                .map_or(default, |a| hnum(v, a))
        };
        let beta = arg(0, quote!(0.0f64));
        let freq = arg(1, quote!((#p::matrix::EIGENBASIS_UPDATE_FREQ as #p::F64)));
        let max_dim = arg(2, quote!((#p::matrix::EIGENBASIS_MAX_DIM as #p::F64)));
        (
            quote!(#p::matrix::EigenbasisConfig { beta: #beta, update_freq: (#freq).max(1.0) as #p::U64, max_dim: (#max_dim).max(0.0) as #p::Usize }),
            f.slots.len() + bslots[0],
            f.slots.len() + bslots[1],
        )
    };
    let basis_init = bases.iter().map(|&b| {
        let (cfg, s0, s1) = basis_cfg(b);
        quote! {
            {
                let mut gg = ::core::mem::take(&mut ps.buffers[#s0]);
                let mut q = ::core::mem::take(&mut ps.buffers[#s1]);
                let fresh = #p::matrix::eigenbasis_init::<E>(g, &mut gg, &mut q, info.rows(), info.cols(), info.rank() >= 2, #cfg);
                ps.buffers[#s0] = gg;
                ps.buffers[#s1] = q;
                h[#b] = if fresh { 1.0f64 } else { 0.0f64 };
            }
        }
    });
    let basis_update = bases.iter().map(|&b| {
        let (cfg, s0, s1) = basis_cfg(b);
        // states whose new value is computed from a rotation in this basis live in it
        let rotated: Vec<usize> = v
            .slots
            .iter()
            .copied()
            .filter(|&s| f.slots[s].write.is_some_and(|w| depends_on_rotation(f, v, v.repl[w], b)))
            .collect();
        quote! {
            if h[#b] == 0.0f64 {
                let mut gg = ::core::mem::take(&mut ps.buffers[#s0]);
                let mut q = ::core::mem::take(&mut ps.buffers[#s1]);
                let mut rotated: ::std::vec::Vec<::std::vec::Vec<E>> = ::std::vec::Vec::new();
                #(rotated.push(::core::mem::take(&mut ps.buffers[#rotated]));)*
                {
                    let mut refs: ::std::vec::Vec<&mut ::std::vec::Vec<E>> = rotated.iter_mut().collect();
                    #p::matrix::eigenbasis_update::<E>(g, &mut gg, &mut q, info.rows(), info.cols(), info.rank() >= 2, ps.step, #cfg, &mut refs);
                }
                let mut it = rotated.into_iter();
                #(if let ::core::option::Option::Some(b) = it.next() { ps.buffers[#rotated] = b; })*
                ps.buffers[#s0] = gg;
                ps.buffers[#s1] = q;
            }
        }
    });
    let swrites = v.scalar_slots.iter().filter_map(|&k| {
        let w = f.scalar_slots[k].write?;
        let r = hnum(v, w);
        Some(quote!(ps.scalars[#k] = #r;))
    });

    // kernels
    let mut kernels = Vec::new();
    let mut kernel_arms = Vec::new();
    let mut reduced_arms = Vec::new();
    for (k, st) in v.stages.iter().enumerate() {
        let kname = format_ident!("__Kernel{}_{}", prefix, k);
        kernels.push(emit_kernel(f, v, st, &kname, k + 1 == nstages));
        let host_k = if k == 0 { Vec::new() } else { later[k].clone() };
        let pushes = st.scalars.iter().map(|&x| {
            let r = hnum(v, x);
            quote!(scalars.push(<E as #p::Float>::of_f64(#r));)
        });
        let slots: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| {
                if let Stream::Slot(k) = s {
                    Some(*k)
                } else {
                    None
                }
            })
            .collect();
        let temps: Vec<usize> = st
            .bufs
            .iter()
            .filter_map(|s| {
                if let Stream::Temp(t) = s {
                    Some(*t)
                } else {
                    None
                }
            })
            .collect();
        let nred = st.reductions.len();
        let globals = st
            .reductions
            .iter()
            .enumerate()
            .filter_map(|(j, (_, _, _, g))| g.map(|g| quote!(globals_map.push((#j, #g));)));
        kernel_arms.push(quote! {
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
        });
        let sets = st
            .reductions
            .iter()
            .enumerate()
            .filter(|(_, (_, _, _, g))| g.is_none())
            .map(
                |(j, (_, _, node, _))| quote!(h[#node] = sums.get(#j).copied().unwrap_or(0.0f64);),
            );
        reduced_arms.push(quote!(#k => { #(#sets)* }));
    }
    let barrier_arms = v.barriers.iter().enumerate().filter(|(_, b)| !b.is_empty()).map(|(k, calls)| {
        let calls = calls.iter().map(|c| {
            let out = c.out;
            let input = stream_slice(c.input, false);
            match c.op {
                ir::MatOp::Orthogonalize => {
                    let arg = |i: usize, default: TokenStream| c.args.get(i).copied().flatten().map_or(default, |a| hnum(v, a));
                    let steps = arg(0, quote!((#p::matrix::NS_STEPS as #p::F64)));
                    let a = arg(1, quote!(#p::matrix::NS_COEFFS[0]));
                    let b = arg(2, quote!(#p::matrix::NS_COEFFS[1]));
                    let cc = arg(3, quote!(#p::matrix::NS_COEFFS[2]));
                    let eps = arg(4, quote!(#p::matrix::NS_EPS));
                    quote! {
                        let mut out = ::core::mem::take(&mut ps.temps[#out]);
                        let mut work = ::core::mem::take(&mut ps.work);
                        #p::matrix::orthogonalize_with::<E>(#input, &mut out, info.rows(), info.cols(), (#steps).max(0.0) as #p::Usize, [#a, #b, #cc], #eps, &mut work);
                        ps.work = work;
                        ps.temps[#out] = out;
                    }
                }
                ir::MatOp::Factored => {
                    let arg = |i: usize, default: TokenStream| c.args.get(i).copied().flatten().map_or(default, |a| hnum(v, a));
                    let beta = arg(0, quote!(0.0f64));
                    let eps = arg(1, quote!(#p::matrix::FACTORED_EPS));
                    let s0 = c.slots[0];
                    quote! {
                        let mut out = ::core::mem::take(&mut ps.temps[#out]);
                        let mut st = ::core::mem::take(&mut ps.buffers[#s0]);
                        #p::matrix::factored_second_moment::<E>(#input, &mut out, &mut st, info.rows(), info.cols(), info.rank() >= 2, #beta, #eps);
                        ps.buffers[#s0] = st;
                        ps.temps[#out] = out;
                    }
                }
                ir::MatOp::Rotate | ir::MatOp::Unrotate => {
                    let basis = c.args.first().copied().flatten().unwrap_or(0);
                    let (q_slot, max_dim) = match &f.nodes[basis].op {
                        Op::Basis(bargs, bslots) => (
                            f.slots.len() + bslots[1],
                            bargs.get(2).copied().flatten().map_or(quote!(#p::matrix::EIGENBASIS_MAX_DIM), |m| {
                                let m = hnum(v, m);
                                quote!(((#m).max(0.0) as #p::Usize))
                            }),
                        ),
                        _ => (0, quote!(0)),
                    };
                    let inverse = c.op == ir::MatOp::Unrotate;
                    quote! {
                        let mut out = ::core::mem::take(&mut ps.temps[#out]);
                        #p::matrix::rotate::<E>(#input, &mut out, &ps.buffers[#q_slot], info.rows(), info.cols(), info.rank() >= 2, #max_dim, #inverse);
                        ps.temps[#out] = out;
                    }
                }
                ir::MatOp::Kfac => {
                    let damping = c.args.first().copied().flatten().map_or(quote!(#p::matrix::KFAC_DAMPING), |a| hnum(v, a));
                    let s0 = c.slots[0];
                    quote! {
                        let mut out = ::core::mem::take(&mut ps.temps[#out]);
                        let mut inv = ::core::mem::take(&mut ps.buffers[#s0]);
                        let mut factors = ps.factors.take();
                        #p::matrix::kfac_precondition::<E>(#input, &mut out, factors.as_mut(), &mut inv, info.rows(), info.cols(), #damping);
                        ps.factors = factors;
                        ps.buffers[#s0] = inv;
                        ps.temps[#out] = out;
                    }
                }
                ir::MatOp::Kron => {
                    let opt_arg = |i: usize| c.args.get(i).copied().flatten().map(|a| hnum(v, a));
                    let beta = opt_arg(0).map_or(quote!(::core::option::Option::None), |b| quote!(::core::option::Option::Some(#b)));
                    let eps = opt_arg(1).map_or(quote!(#p::matrix::KRON_DEFAULT.eps), |e| e);
                    let freq = opt_arg(2).map_or(quote!(#p::matrix::KRON_DEFAULT.update_freq), |e| quote!(((#e).max(1.0) as #p::U64)));
                    let exponent = opt_arg(3).map_or(quote!(#p::matrix::KRON_DEFAULT.exponent), |e| quote!(::core::option::Option::Some(#e)));
                    let max_dim = opt_arg(4).map_or(quote!(#p::matrix::KRON_DEFAULT.max_dim), |e| quote!(((#e).max(0.0) as #p::Usize)));
                    let (s0, s1) = (c.slots[0], c.slots[1]);
                    quote! {
                        let mut out = ::core::mem::take(&mut ps.temps[#out]);
                        let mut stats = ::core::mem::take(&mut ps.buffers[#s0]);
                        let mut roots = ::core::mem::take(&mut ps.buffers[#s1]);
                        let cfg = #p::matrix::KronConfig { beta: #beta, eps: #eps, update_freq: #freq, exponent: #exponent, max_dim: #max_dim };
                        #p::matrix::kron_precondition::<E>(#input, &mut out, &mut stats, &mut roots, info.rows(), info.cols(), info.rank() >= 2, ps.step, cfg);
                        ps.buffers[#s0] = stats;
                        ps.buffers[#s1] = roots;
                        ps.temps[#out] = out;
                    }
                }
            }
        });
        quote!(#k => { #(#calls)* })
    });
    let finish_host = &later[nstages.min(later.len() - 1)];
    let finish_host = if nstages < later.len() {
        quote!(#(#finish_host)*)
    } else {
        quote!()
    };

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
            #(#ensure)*
            #(#sensure)*
            for i in 0..#ntemps {
                ps.ensure_temp(i, ps.len);
            }
            if ps.buffers.len() < #nbufs {
                ps.buffers.resize_with(#nbufs, ::std::vec::Vec::new);
            }
            #(#basis_init)*
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
                #finish_host
                #(#basis_update)*
                #(#swrites)*
            }
        }
    }
}

fn emit_kernel(
    f: &Fused,
    v: &Variant,
    st: &crate::plan::Stage,
    kname: &syn::Ident,
    last: bool,
) -> TokenStream {
    let p = Private;
    let bnames: Vec<syn::Ident> = (0..st.bufs.len())
        .map(|k| format_ident!("b{}", k))
        .collect();
    let nscal = st.scalars.len();
    let nred = st.reductions.len();
    let scal_loads = st.scalars.iter().enumerate().map(|(k, &s)| {
        let l = format_ident!("s{}", k);
        if f.nodes[s].ty.boolean {
            quote!(let #l: #p::Bool = s[#k] != E::zero();)
        } else {
            quote!(let #l: E = s[#k];)
        }
    });
    let kref = |x: NodeId| -> TokenStream {
        let x = v.repl[x];
        if let Some(b) = v.konst[x] {
            return quote!(#b);
        }
        if let Some(k) = st.scalars.iter().position(|&s| s == x) {
            let l = format_ident!("s{}", k);
            return quote!(#l);
        }
        let l = format_ident!("x{}", x);
        quote!(#l)
    };
    let buf_of = |s: Stream| -> TokenStream {
        match s {
            Stream::Param => quote!(p),
            Stream::Grad => quote!(g),
            other => {
                let pos = st.bufs.iter().position(|b| *b == other).unwrap_or(0);
                let b = &bnames[pos];
                quote!(#b)
            }
        }
    };
    let loads = st.loads.iter().map(|(x, s)| {
        let l = format_ident!("x{}", x);
        let b = buf_of(*s);
        quote!(let #l: E = #b[i];)
    });
    let body = st.nodes.iter().map(|&id| {
        let l = format_ident!("x{}", id);
        let e = match &f.nodes[id].op {
            Op::Neg(a) => {
                let a = kref(*a);
                quote!((-#a))
            }
            Op::Not(a) => {
                let a = kref(*a);
                quote!((!#a))
            }
            Op::Bin(op, a, b) => bin_tokens(*op, kref(*a), kref(*b), true),
            Op::Func(fun, args) => {
                let path = func_path(*fun);
                let args = args.iter().map(|a| kref(*a));
                quote!(#path::<E>(#(#args),*))
            }
            Op::Select(c, a, b) => {
                let (c, a, b) = (kref(*c), kref(*a), kref(*b));
                quote!((if #c { #a } else { #b }))
            }
            _ => quote!(E::zero()),
        };
        quote!(let #l = #e;)
    });
    let acc_names: Vec<syn::Ident> = (0..nred).map(|j| format_ident!("r{}", j)).collect();
    let red_idx: Vec<usize> = (0..nred).collect();
    let accs = st
        .reductions
        .iter()
        .zip(&acc_names)
        .map(|((kind, x, _, _), r)| {
            let x = kref(*x);
            match kind {
                RedKind::SumSq => quote!({ let y = <E as #p::Float>::as_f64(#x); #r += y * y; }),
                RedKind::Sum => quote!(#r += <E as #p::Float>::as_f64(#x);),
            }
        });
    let writes = st
        .writes
        .iter()
        .filter(|(s, _)| *s != Stream::Param)
        .map(|(s, x)| {
            let b = buf_of(*s);
            let r = kref(*x);
            quote!(#b[i] = #r;)
        });
    let pwrite = if last {
        let pw = kref(v.param_write);
        quote!(p[i] = #pw;)
    } else {
        quote!()
    };
    let reads_g = st.loads.iter().any(|(_, s)| *s == Stream::Grad);
    let g_bind = if reads_g {
        quote! {
            if g.len() < n { return; }
            let g = &g[..n];
        }
    } else {
        quote!(let _ = g;)
    };
    quote! {
        struct #kname;
        impl<E: #p::Float> #p::Kernel<E> for #kname {
            #[inline(always)]
            #[allow(unused_variables, unused_mut, unused_parens, clippy::all)]
            fn run(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]], red: &mut [#p::F64]) {
                let [#(#bnames),*] = st else { return };
                if s.len() < #nscal || red.len() < #nred { return; }
                let n = p.len();
                #g_bind
                #(if #bnames.len() < n { return; })*
                #(let #bnames: &mut [E] = &mut #bnames[..n];)*
                #(#scal_loads)*
                #(let mut #acc_names = 0.0f64;)*
                for i in 0..n {
                    #(#loads)*
                    #(#body)*
                    #(#accs)*
                    #(#writes)*
                    #pwrite
                }
                #(red[#red_idx] += #acc_names;)*
            }
        }
    }
}

/// A readable description of a hoisted scalar, for `explain` (`"(1 - beta1)"`).
fn describe(opt: &ir::Optimizer, f: &Fused, v: &Variant, id: NodeId) -> String {
    let id = v.repl[id];
    if let Some(b) = v.konst[id] {
        return b.to_string();
    }
    let d = |x: NodeId| describe(opt, f, v, x);
    match &f.nodes[id].op {
        Op::Num(x) => format!("{x}"),
        Op::Bool(b) => b.to_string(),
        Op::Hyper(h) | Op::Flag(h) => opt.hypers[*h].name.to_string(),
        Op::Step => "step".into(),
        Op::Shape(s) => (*s).into(),
        Op::Neg(a) => format!("-{}", d(*a)),
        Op::Not(a) => format!("!{}", d(*a)),
        Op::Bin(op, a, b) => {
            let o = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                BinOp::Lt => "<",
                BinOp::Le => "<=",
                BinOp::Gt => ">",
                BinOp::Ge => ">=",
                BinOp::Eq => "==",
                BinOp::Ne => "!=",
                BinOp::And => "&&",
                BinOp::Or => "||",
            };
            format!("({} {o} {})", d(*a), d(*b))
        }
        Op::Func(fun, args) => {
            let name = format!("{fun:?}").to_lowercase();
            format!(
                "{name}({})",
                args.iter().map(|a| d(*a)).collect::<Vec<_>>().join(", ")
            )
        }
        Op::Select(c, a, b) => format!("select({}, {}, {})", d(*c), d(*a), d(*b)),
        Op::First(k) => format!("first_step({})", f.slots[*k].name),
        Op::ScalarRead(k) => f.scalar_slots[*k].name.clone(),
        Op::Param => "param".into(),
        Op::Grad => "grad".into(),
        Op::StateRead(k) => f.slots[*k].name.clone(),
        Op::Reduce(kind, x) => format!("{}({})", format!("{kind:?}").to_lowercase(), d(*x)),
        Op::Global(kind, x, _) => {
            format!("global_{}({})", format!("{kind:?}").to_lowercase(), d(*x))
        }
        Op::Basis(..) => "eigenbasis".into(),
        Op::Mat(op, args, _) => format!(
            "{}({})",
            format!("{op:?}").to_lowercase(),
            args[0].map(d).unwrap_or_default()
        ),
    }
}
