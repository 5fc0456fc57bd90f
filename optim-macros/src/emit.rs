//! Stage 5, emit: Rust code for a checked, planned optimizer. Generated code names only
//! `::optim_dsl::__private` (through `Private`) and `::core`.
//!
//! For `pub Name<...> { ... }` this emits:
//! - `NameConfig`: one `pub` field per hyperparameter (`Hyper` or `bool`), `Default` = header;
//! - `__NameValues`: the hyperparameters evaluated for one step (hidden, used by reuse rules);
//! - `Name<E = f32>`: the optimizer (config + state) with `new`, `set_*`, `with_*`;
//! - inside `const _: () = { ... }`: one kernel type and one `prepare` function per rule and
//!   flag combination, and the `DslOptimizer` impl that routes parameters to them.

use crate::ir::{self, BinOp, Func, Fused, NodeId, Op, RuleBody};
use crate::plan::{plan_rule, RulePlan, Variant};
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
            RuleBody::Fused(f) => Some(plan_rule(f, &|_| false)),
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
            let inner_cfg = format_ident!("{}Config", inner, span = inner.span());
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
            let sets = bindings.iter().map(|(k, id)| {
                let e = host_expr_tree(opt, nodes, *id, &|_| None);
                if nodes[*id].ty.boolean {
                    quote_spanned!(k.span()=> c.#k = #e;)
                } else {
                    quote_spanned!(k.span()=> c.#k = #p::Hyper::Const(#e);)
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
                    let reads = v.reads(f);
                    let writes = v.writes(f);
                    let ops = v.ops(f);
                    let state: Vec<&str> = v.slots.iter().map(|&s| f.slots[s].name.as_str()).collect();
                    let scalars: Vec<String> = v.kernel_scalars.iter().map(|&s| describe(opt, f, v, s)).collect();
                    quote! {
                        #pat => #p::RuleBody::Fused {
                            kernels: ::std::vec![#p::KernelPlan {
                                reads: ::std::vec![#(#reads),*],
                                writes: ::std::vec![#(#writes),*],
                                ops: #ops,
                            }],
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
                    let kname = format_ident!("__Kernel{}_{}", ri, vi);
                    let pname = format_ident!("__prepare_{}_{}", ri, vi);
                    items.push(emit_kernel(f, v, &kname));
                    items.push(emit_prepare(opt, f, v, &kname, &pname, &values));
                    let pat = flag_pattern(v);
                    arms.push(quote!(#pat => #pname(values, ps, info)));
                }
                let scrut = flag_scrutinee(opt, plan, quote!(values));
                prepare_arms.push(quote!(#ri => match #scrut { #(#arms,)* }));
            }
            (RuleBody::Reuse { name: inner, .. }, _) => {
                let field = format_ident!("__r{}", ri);
                prepare_arms.push(quote! {
                    #ri => {
                        let r = <#inner<E> as #p::DslOptimizer<E>>::route(info);
                        <#inner<E> as #p::DslOptimizer<E>>::prepare(&values.#field, r, ps, info)
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
                fn prepare<'a>(
                    values: &#values,
                    rule: #p::Usize,
                    ps: &'a mut #p::ParamState<E>,
                    info: &#p::ParamInfo<'_>,
                ) -> #p::Job<'a, E> {
                    match rule {
                        #(#prepare_arms,)*
                        _ => #p::Job::empty(),
                    }
                }
            }
        };
    }
}

fn domain_tokens(d: ir::Domain) -> TokenStream {
    let p = Private;
    match d {
        ir::Domain::Finite => quote!(#p::Domain::Finite),
        ir::Domain::NonNegative => quote!(#p::Domain::NonNegative),
        ir::Domain::Positive => quote!(#p::Domain::Positive),
        ir::Domain::UnitOpen => quote!(#p::Domain::UnitOpen),
    }
}

fn f64_lit(v: f64) -> TokenStream {
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
        Op::Param | Op::Grad | Op::StateRead(_) => quote!(0.0f64),
    }
}

/// Does node `id` (transitively, under `v`) depend on per-parameter state (`First`,
/// `ScalarRead`)? Such host nodes are computed after the state is created.
fn depends_on_state(f: &Fused, v: &Variant, id: NodeId, memo: &mut Vec<Option<bool>>) -> bool {
    if let Some(b) = memo[id] {
        return b;
    }
    let r = match &f.nodes[id].op {
        Op::First(_) | Op::ScalarRead(_) => true,
        Op::Neg(a) | Op::Not(a) => depends_on_state(f, v, v.repl[*a], memo),
        Op::Bin(_, a, b) => {
            depends_on_state(f, v, v.repl[*a], memo) || depends_on_state(f, v, v.repl[*b], memo)
        }
        Op::Func(_, args) => args
            .iter()
            .any(|a| depends_on_state(f, v, v.repl[*a], memo)),
        Op::Select(c, a, b) => [c, a, b]
            .iter()
            .any(|x| depends_on_state(f, v, v.repl[**x], memo)),
        _ => false,
    };
    memo[id] = Some(r);
    r
}

fn host_ref(v: &Variant, id: NodeId) -> TokenStream {
    let id = v.repl[id];
    if let Some(b) = v.konst[id] {
        return quote!(#b);
    }
    let l = format_ident!("h{}", id);
    quote!(#l)
}

/// The host expression of one node, referring to other host nodes by their `h{id}` locals.
fn host_node(opt: &ir::Optimizer, f: &Fused, v: &Variant, id: NodeId) -> TokenStream {
    let p = Private;
    if let Some(b) = v.konst[id] {
        return quote!(#b);
    }
    let r = |x: NodeId| host_ref(v, x);
    match &f.nodes[id].op {
        Op::Num(x) => f64_lit(*x),
        Op::Bool(b) => quote!(#b),
        Op::Hyper(h) | Op::Flag(h) => {
            let n = &opt.hypers[*h].name;
            quote!(values.#n)
        }
        Op::Step => quote!(t),
        Op::Shape(s) => {
            let m = format_ident!("{}", s);
            quote!((info.#m() as #p::F64))
        }
        Op::Neg(a) => {
            let a = r(*a);
            quote!((-#a))
        }
        Op::Not(a) => {
            let a = r(*a);
            quote!((!#a))
        }
        Op::Bin(op, a, b) => bin_tokens(*op, r(*a), r(*b), false),
        Op::Func(fun, args) => {
            let path = func_path(*fun);
            let args = args.iter().map(|a| r(*a));
            quote!(#path::<#p::F64>(#(#args),*))
        }
        Op::Select(c, a, b) => {
            let (c, a, b) = (r(*c), r(*a), r(*b));
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
        Op::Param | Op::Grad | Op::StateRead(_) => quote!(0.0f64),
    }
}

fn emit_prepare(
    opt: &ir::Optimizer,
    f: &Fused,
    v: &Variant,
    kname: &syn::Ident,
    pname: &syn::Ident,
    values: &syn::Ident,
) -> TokenStream {
    let p = Private;
    let mut memo = vec![None; f.nodes.len()];
    let mut before = Vec::new();
    let mut after = Vec::new();
    for &h in &v.host {
        let l = format_ident!("h{}", h);
        let e = host_node(opt, f, v, h);
        let ty = if f.nodes[h].ty.boolean {
            quote!(#p::Bool)
        } else {
            quote!(#p::F64)
        };
        let stmt = quote!(let #l: #ty = #e;);
        if depends_on_state(f, v, h, &mut memo) {
            after.push(stmt);
        } else {
            before.push(stmt);
        }
    }
    let ensure = v.slots.iter().map(|&k| {
        let first = format_ident!("first_{}", k);
        let init = match f.slots[k].init {
            Some(i) => host_ref(v, i),
            None => quote!(0.0f64),
        };
        quote!(let #first: #p::Bool = ps.ensure_buffer(#k, <E as #p::Float>::from_f64(#init));)
    });
    let sensure = v.scalar_slots.iter().map(|&k| {
        let read = format_ident!("sread_{}", k);
        let init = f64_lit(f.scalar_slots[k].init);
        quote! {
            ps.ensure_scalar(#k, #init);
            let #read: #p::F64 = ps.scalars[#k];
        }
    });
    let swrites = v.scalar_slots.iter().filter_map(|&k| {
        let w = f.scalar_slots[k].write?;
        let r = host_ref(v, w);
        Some(quote!(ps.scalars[#k] = #r;))
    });
    let pushes = v.kernel_scalars.iter().map(|&s| {
        let r = host_ref(v, s);
        if f.nodes[s].ty.boolean {
            quote!(scalars.push(if #r { E::one() } else { E::zero() });)
        } else {
            quote!(scalars.push(<E as #p::Float>::from_f64(#r));)
        }
    });
    let live_slots = &v.slots;
    quote! {
        #[allow(unused_variables, unused_mut, unused_parens, clippy::all)]
        #[inline(never)]
        fn #pname<'a, E: #p::Float>(values: &#values, ps: &'a mut #p::ParamState<E>, info: &#p::ParamInfo<'_>) -> #p::Job<'a, E> {
            ps.step += 1;
            let t: #p::F64 = ps.step as #p::F64;
            #(#before)*
            #(#ensure)*
            #(#sensure)*
            #(#after)*
            #(#swrites)*
            let mut scalars: #p::Scalars<E> = #p::Scalars::new();
            #(#pushes)*
            let mut states = #p::StateRefs::new();
            for (k, b) in ps.buffers.iter_mut().enumerate() {
                if [#(#live_slots),*].contains(&k) {
                    states.push(b.as_mut_slice());
                }
            }
            #p::Job { kernel: ::core::option::Option::Some(#p::dispatch::<E, #kname>), scalars, states }
        }
    }
}

fn emit_kernel(f: &Fused, v: &Variant, kname: &syn::Ident) -> TokenStream {
    let p = Private;
    let st_names: Vec<syn::Ident> = (0..v.slots.len())
        .map(|k| format_ident!("st{}", k))
        .collect();
    let nscal = v.kernel_scalars.len();
    let scal_loads = v.kernel_scalars.iter().enumerate().map(|(k, &s)| {
        let l = format_ident!("s{}", k);
        if f.nodes[s].ty.boolean {
            quote!(let #l: #p::Bool = s[#k] != E::zero();)
        } else {
            quote!(let #l: E = s[#k];)
        }
    });
    let sref = |x: NodeId| -> TokenStream {
        let x = v.repl[x];
        if let Some(b) = v.konst[x] {
            return quote!(#b);
        }
        if let Some(k) = v.kernel_scalars.iter().position(|&s| s == x) {
            let l = format_ident!("s{}", k);
            return quote!(#l);
        }
        let l = format_ident!("x{}", x);
        quote!(#l)
    };
    let body = v.kernel.iter().map(|&id| {
        let l = format_ident!("x{}", id);
        let e = match &f.nodes[id].op {
            Op::Param => quote!(p[i]),
            Op::Grad => quote!(g[i]),
            Op::StateRead(k) => {
                let pos = v.slots.iter().position(|s| s == k).unwrap_or(0);
                let st = &st_names[pos];
                quote!(#st[i])
            }
            Op::Neg(a) => {
                let a = sref(*a);
                quote!((-#a))
            }
            Op::Not(a) => {
                let a = sref(*a);
                quote!((!#a))
            }
            Op::Bin(op, a, b) => bin_tokens(*op, sref(*a), sref(*b), true),
            Op::Func(fun, args) => {
                let path = func_path(*fun);
                let args = args.iter().map(|a| sref(*a));
                quote!(#path::<E>(#(#args),*))
            }
            Op::Select(c, a, b) => {
                let (c, a, b) = (sref(*c), sref(*a), sref(*b));
                quote!((if #c { #a } else { #b }))
            }
            _ => quote!(E::zero()),
        };
        quote!(let #l = #e;)
    });
    let writes = v.slots.iter().enumerate().filter_map(|(pos, &k)| {
        let w = f.slots[k].write?;
        let st = &st_names[pos];
        let r = sref(w);
        Some(quote!(#st[i] = #r;))
    });
    let pw = sref(v.param_write);
    let uses_g = v.reads_grad;
    let g_bind = if uses_g {
        quote!(let g = &g[..n];)
    } else {
        quote!(let _ = g;)
    };
    quote! {
        struct #kname;
        impl<E: #p::Float> #p::Kernel<E> for #kname {
            #[inline(always)]
            #[allow(unused_variables, unused_parens, clippy::all)]
            fn run(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]]) {
                let [#(#st_names),*] = st else { return };
                if s.len() < #nscal { return; }
                let n = p.len();
                if g.len() < n { return; }
                #g_bind
                #(let #st_names: &mut [E] = &mut #st_names[..n];)*
                #(#scal_loads)*
                for i in 0..n {
                    #(#body)*
                    #(#writes)*
                    p[i] = #pw;
                }
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
    }
}
