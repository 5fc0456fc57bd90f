//! Stage 1, parse: the optimizer declaration as written (`Input`). Syntax errors stop here (syn's
//! first-error behaviour); everything semantic is left to `lower`.
//!
//! ```text
//! input    := attr* vis IDENT ('<' hyper (',' hyper)* ','? '>')? '{' body '}'
//! hyper    := IDENT (':' DOMAIN)? '=' '-'? LIT          (float, int or bool literal)
//! body     := stmt*  |  rule+
//! rule     := pattern ('if' EXPR)? '=>' ('{' stmt* '}' ','? | reuse ','?)
//! pattern  := '_' | IDENT ('|' IDENT)*                 (matrix, vector, scalar, tensor)
//! reuse    := IDENT ('<' IDENT '=' value (',' ...)* '>')?
//! value    := '-'? LIT | IDENT | '(' EXPR ')'
//! stmt     := 'let' IDENT (':' IDENT)? '=' EXPR ';'  |  IDENT ('=' | '-=' | '+=' | '*=' | '/=') EXPR ';'
//! ```

use proc_macro2::Span;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{braced, Attribute, Expr, Ident, Lit, Token, Visibility};

/// The whole macro input.
pub(crate) struct Input {
    /// Outer attributes, doc comments included (carried to the generated type).
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub hypers: Vec<HyperDecl>,
    pub body: Body,
    /// Span of the body's braces, for errors about the body as a whole.
    pub body_span: Span,
}

/// `name = default` in the header.
pub(crate) struct HyperDecl {
    pub name: Ident,
    /// An explicit domain, `name: nonneg = 0.0` (otherwise inferred from the name and roles).
    pub domain: Option<Ident>,
    pub default: Literal,
}

/// A literal default value, with an optional leading minus.
#[derive(Clone)]
pub(crate) struct Literal {
    pub value: LitValue,
    pub span: Span,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum LitValue {
    Num(f64),
    Bool(bool),
}

pub(crate) enum Body {
    /// A single implicit catch-all rule.
    Block(Vec<Stmt>),
    Rules(Vec<Rule>),
}

pub(crate) struct Rule {
    pub pattern: Pattern,
    pub guard: Option<Expr>,
    pub target: RuleTarget,
    /// Span of the whole pattern (for "rule after the catch-all" and similar).
    pub span: Span,
}

pub(crate) enum Pattern {
    /// `_`
    Any(#[allow(dead_code)] Span),
    /// `matrix | vector`: alternatives.
    Kinds(Vec<Ident>),
}

pub(crate) enum RuleTarget {
    Block { stmts: Vec<Stmt>, span: Span },
    Reuse(Reuse),
}

/// `AdamW<lr = adam_lr, weight_decay = 0.0>`
pub(crate) struct Reuse {
    pub name: Ident,
    pub bindings: Vec<(Ident, Expr)>,
}

pub(crate) enum Stmt {
    Let {
        name: Ident,
        /// `let m: bf16 = ...`: the storage type of the state the expression creates.
        storage: Option<Ident>,
        expr: Expr,
    },
    Assign {
        target: Ident,
        op: AssignOp,
        op_span: Span,
        expr: Expr,
    },
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum AssignOp {
    Set,
    Sub,
    Add,
    Mul,
    Div,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        if input.peek(Token![struct]) {
            let kw: Token![struct] = input.parse()?;
            return Err(syn::Error::new(
                kw.span,
                "expected the optimizer's name; write `pub Name<...> { ... }` without `struct`",
            ));
        }
        let name: Ident = input.parse()?;
        let hypers = angle_list(input, |input| {
            let hname: Ident = input.parse()?;
            let domain = if input.peek(Token![:]) {
                input.parse::<Token![:]>()?;
                Some(input.parse::<Ident>()?)
            } else {
                None
            };
            input.parse::<Token![=]>()?;
            let default = parse_literal(input)?;
            Ok(HyperDecl {
                name: hname,
                domain,
                default,
            })
        })?;
        let content;
        let brace = braced!(content in input);
        let body = parse_body(&content)?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the optimizer body; declare one optimizer per `optimizer!`"));
        }
        Ok(Input {
            attrs,
            vis,
            name,
            hypers,
            body,
            body_span: brace.span.join(),
        })
    }
}

/// `<item, item, ...>` (a trailing comma allowed), or nothing when no `<` follows.
fn angle_list<T>(
    input: ParseStream,
    mut item: impl FnMut(ParseStream) -> syn::Result<T>,
) -> syn::Result<Vec<T>> {
    let mut out = Vec::new();
    if input.peek(Token![<]) {
        input.parse::<Token![<]>()?;
        while !input.peek(Token![>]) {
            out.push(item(input)?);
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
            } else {
                break;
            }
        }
        input.parse::<Token![>]>()?;
    }
    Ok(out)
}

/// An optional `-` and a literal; `msg` is the error where no literal follows.
fn signed_lit(input: ParseStream, msg: &str) -> syn::Result<(Option<Token![-]>, Lit)> {
    let neg: Option<Token![-]> = input.parse()?;
    let lit: Lit = input.parse().map_err(|e| syn::Error::new(e.span(), msg))?;
    Ok((neg, lit))
}

fn parse_literal(input: ParseStream) -> syn::Result<Literal> {
    let (neg, lit) = signed_lit(
        input,
        "expected a literal default value (a number, `true` or `false`)",
    )?;
    let span = neg.as_ref().map_or(lit.span(), |n| {
        n.span.join(lit.span()).unwrap_or(lit.span())
    });
    if let Lit::Float(_) | Lit::Int(_) = &lit {
        let v = match &lit {
            Lit::Float(f) => f.base10_parse::<f64>()?,
            Lit::Int(i) => i.base10_parse::<f64>()?,
            _ => 0.0,
        };
        if !v.is_finite() {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "number literal `{}` is not a finite `f64`",
                    lit.to_token_stream()
                ),
            ));
        }
    }
    let value = match &lit {
        Lit::Float(f) => LitValue::Num(f.base10_parse::<f64>()?),
        Lit::Int(i) => LitValue::Num(i.base10_parse::<f64>()?),
        Lit::Bool(b) => {
            if neg.is_some() {
                return Err(syn::Error::new(span, "a flag cannot be negated with `-`"));
            }
            LitValue::Bool(b.value)
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                "expected a number, `true` or `false`",
            ))
        }
    };
    let value = match (neg, value) {
        (Some(_), LitValue::Num(v)) => LitValue::Num(-v),
        (_, v) => v,
    };
    Ok(Literal { value, span })
}

/// Rules start with `_`, or with an identifier followed by `=>`, `if` or `|`.
fn starts_rule(input: ParseStream) -> bool {
    if input.peek(Token![_]) {
        return true;
    }
    let fork = input.fork();
    if fork.parse::<Ident>().is_err() {
        return false;
    }
    fork.peek(Token![=>])
        || fork.peek(Token![if])
        || (fork.peek(Token![|]) && !fork.peek(Token![|=]))
}

fn parse_body(input: ParseStream) -> syn::Result<Body> {
    if input.is_empty() || !starts_rule(input) {
        return Ok(Body::Block(parse_stmts(input)?));
    }
    let mut rules = Vec::new();
    while !input.is_empty() {
        rules.push(parse_rule(input)?);
    }
    Ok(Body::Rules(rules))
}

fn parse_rule(input: ParseStream) -> syn::Result<Rule> {
    let start = input.span();
    let pattern = if input.peek(Token![_]) {
        let u: Token![_] = input.parse()?;
        Pattern::Any(u.span)
    } else {
        let mut kinds = vec![input.parse::<Ident>()?];
        while input.peek(Token![|]) {
            input.parse::<Token![|]>()?;
            kinds.push(input.parse()?);
        }
        Pattern::Kinds(kinds)
    };
    let guard = if input.peek(Token![if]) {
        input.parse::<Token![if]>()?;
        Some(Expr::parse_without_eager_brace(input)?)
    } else {
        None
    };
    let span = start.join(input.span()).unwrap_or(start);
    input.parse::<Token![=>]>()?;
    let target = if input.peek(syn::token::Brace) {
        let content;
        let brace = braced!(content in input);
        RuleTarget::Block {
            stmts: parse_stmts(&content)?,
            span: brace.span.join(),
        }
    } else {
        let name: Ident = input.parse()?;
        let bindings = angle_list(input, |input| {
            let k: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            Ok((k, parse_binding_value(input)?))
        })?;
        RuleTarget::Reuse(Reuse { name, bindings })
    };
    if input.peek(Token![,]) {
        input.parse::<Token![,]>()?;
    }
    Ok(Rule {
        pattern,
        guard,
        target,
        span,
    })
}

/// Inside `<...>` a bare expression would swallow the closing `>`, so values are restricted to a
/// literal, a name, or a parenthesised expression.
fn parse_binding_value(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        return content.parse();
    }
    if input.peek(Ident) {
        let id: Ident = input.parse()?;
        return Ok(syn::parse_quote_spanned!(id.span()=> #id));
    }
    let (neg, lit) = signed_lit(
        input,
        "expected a literal, a hyperparameter name or a parenthesised expression",
    )?;
    Ok(match neg {
        Some(n) => syn::parse_quote_spanned!(n.span=> -#lit),
        None => syn::parse_quote_spanned!(lit.span()=> #lit),
    })
}

/// The right-hand side of a `let` or an update, after its `=` (or `-=`, ...): the expression
/// and the closing `;`.
fn parse_rhs(input: ParseStream) -> syn::Result<Expr> {
    let expr = input.parse()?;
    input.parse::<Token![;]>()?;
    Ok(expr)
}

fn parse_stmts(input: ParseStream) -> syn::Result<Vec<Stmt>> {
    let mut stmts = Vec::new();
    while !input.is_empty() {
        if input.peek(Token![let]) {
            input.parse::<Token![let]>()?;
            let name: Ident = input.parse()?;
            let storage = if input.peek(Token![:]) {
                input.parse::<Token![:]>()?;
                Some(input.parse::<Ident>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected a storage type after `:` (`bf16`, `f16`, `bf16_sr`, `f16_sr`, `q8`, `uq8`)",
                    )
                })?)
            } else {
                None
            };
            input.parse::<Token![=]>()?;
            let expr = parse_rhs(input)?;
            stmts.push(Stmt::Let {
                name,
                storage,
                expr,
            });
            continue;
        }
        let target: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a statement: `let name = ...;` or an update such as `param -= ...;`",
            )
        })?;
        let (op, op_span) = if input.peek(Token![-=]) {
            (AssignOp::Sub, input.parse::<Token![-=]>()?.span())
        } else if input.peek(Token![+=]) {
            (AssignOp::Add, input.parse::<Token![+=]>()?.span())
        } else if input.peek(Token![*=]) {
            (AssignOp::Mul, input.parse::<Token![*=]>()?.span())
        } else if input.peek(Token![/=]) {
            (AssignOp::Div, input.parse::<Token![/=]>()?.span())
        } else if input.peek(Token![=]) && !input.peek(Token![==]) {
            (AssignOp::Set, input.parse::<Token![=]>()?.span)
        } else if input.peek(syn::token::Paren) {
            return Err(input.error(format!(
                "a bare expression is not a statement; bind it with `let name = {target}(...);`"
            )));
        } else {
            return Err(input.error(format!(
                "expected `=`, `-=`, `+=`, `*=` or `/=` after `{target}`; statements are `let name = ...;` or updates such as `param -= ...;`"
            )));
        };
        let expr = parse_rhs(input)?;
        stmts.push(Stmt::Assign {
            target,
            op,
            op_span,
            expr,
        });
    }
    Ok(stmts)
}
