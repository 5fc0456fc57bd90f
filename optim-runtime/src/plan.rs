//! Descriptions of what a generated optimizer does per step: the `explain` API.

use std::fmt;

/// The execution plan of an optimizer for its current flag values: one entry per routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name of the optimizer type.
    pub optimizer: &'static str,
    /// Rules in routing order (first match wins).
    pub rules: Vec<RulePlan>,
}

/// The plan of one routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePlan {
    /// The rule's pattern and guard as written (`"matrix if name.contains(\"embed\")"`, `"_"`).
    pub pattern: &'static str,
    /// What the rule runs.
    pub body: RuleBody,
}

/// The body of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleBody {
    /// A fused rule written in the DSL.
    Fused {
        /// Generated loops, in execution order; barriers separate them.
        kernels: Vec<KernelPlan>,
        /// Barriers: matrix primitives and reductions on the streams or `let` names they read
        /// (`"orthogonalize(buf)"`, `"global sumsq(grad)"`, `"sumsq(u)"`).
        barriers: Vec<&'static str>,
        /// Element-wise state buffers this rule keeps per parameter, by slot.
        state: Vec<&'static str>,
        /// Hoisted scalars (computed in `f64` once per step and parameter), each as
        /// `name = expression` when the rule binds it with `let`, else as its expression; values
        /// bound by a `let` appear by name inside.
        scalars: Vec<&'static str>,
    },
    /// The rule delegates to another DSL optimizer.
    Reuse {
        /// That optimizer's plan.
        plan: Box<Plan>,
    },
}

/// One generated loop.
#[derive(Clone, PartialEq)]
pub struct KernelPlan {
    /// Element streams read once per element (`"param"`, `"grad"`, state names).
    pub reads: Vec<&'static str>,
    /// Element streams written once per element (`"param"`, state names).
    pub writes: Vec<&'static str>,
    /// Arithmetic operations per element.
    pub ops: usize,
    /// The state streams among `reads` and `writes` stored in 16 bits (`bf16`/`f16`, see
    /// [`crate::lowp`]); they move 2 bytes per element each way.
    pub low: Vec<&'static str>,
    /// The state streams among `reads` and `writes` stored 8-bit block-quantised (`q8`/`uq8`,
    /// see [`crate::lowp::q8`]): 1 byte per element each way, plus one `f32` scale per 256
    /// elements.
    pub q8: Vec<&'static str>,
}

/// As derived, leaving `low` out when empty (so plans without 16-bit state print as before).
impl fmt::Debug for KernelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("KernelPlan");
        d.field("reads", &self.reads)
            .field("writes", &self.writes)
            .field("ops", &self.ops);
        if !self.low.is_empty() {
            d.field("low", &self.low);
        }
        if !self.q8.is_empty() {
            d.field("q8", &self.q8);
        }
        d.finish()
    }
}

impl KernelPlan {
    /// Bytes moved per parameter element on the slice path: `elem_bytes` per stream read or
    /// written, 2 for a 16-bit one. AdamW in `f32`: (4 + 3) × 4 = 28; with both moments in
    /// `bf16`: reads 4 + 4 + 2 + 2, writes 4 + 2 + 2, 20 in all. An 8-bit (`q8`/`uq8`) stream
    /// counts its 1-byte codes only: AdamW with `q8`/`uq8` moments gives 16; the block scales
    /// add `4/256` per 8-bit stream read or written ([`bytes_per_param_exact`]).
    ///
    /// [`bytes_per_param_exact`]: Self::bytes_per_param_exact
    pub fn bytes_per_param(&self, elem_bytes: usize) -> usize {
        self.reads
            .iter()
            .chain(&self.writes)
            .map(|s| {
                if self.low.contains(s) {
                    crate::lowp::StateDtype::BYTES
                } else if self.q8.contains(s) {
                    1
                } else {
                    elem_bytes
                }
            })
            .sum()
    }

    /// [`bytes_per_param`](Self::bytes_per_param) with the block scales of 8-bit streams:
    /// `4 / 256` bytes per parameter element for each 8-bit stream read or written. AdamW with
    /// `q8`/`uq8` moments and `f32` parameters: reads 4 + 4 + 1 + 1, writes 4 + 1 + 1, plus 4
    /// scale accesses of 4/256: `16 + 1/16 = 16.0625`.
    pub fn bytes_per_param_exact(&self, elem_bytes: usize) -> f64 {
        let scales = self
            .reads
            .iter()
            .chain(&self.writes)
            .filter(|s| self.q8.contains(s))
            .count();
        self.bytes_per_param(elem_bytes) as f64
            + scales as f64 * 4.0 / crate::lowp::q8::BLOCK as f64
    }
}

impl Plan {
    /// Total kernels over all fused rules.
    pub fn kernel_count(&self) -> usize {
        self.rules
            .iter()
            .map(|r| match &r.body {
                RuleBody::Fused { kernels, .. } => kernels.len(),
                RuleBody::Reuse { plan } => plan.kernel_count(),
            })
            .sum()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_indented(f, 0)
    }
}

impl Plan {
    fn write_indented(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        writeln!(f, "{pad}optimizer {}", self.optimizer)?;
        for rule in &self.rules {
            writeln!(f, "{pad}  rule {} =>", rule.pattern)?;
            match &rule.body {
                RuleBody::Fused {
                    kernels,
                    barriers,
                    state,
                    scalars,
                } => {
                    writeln!(f, "{pad}    state: [{}]", state.join(", "))?;
                    if !barriers.is_empty() {
                        writeln!(f, "{pad}    barriers: [{}]", barriers.join(", "))?;
                    }
                    writeln!(f, "{pad}    hoisted scalars: [{}]", scalars.join(", "))?;
                    for (i, k) in kernels.iter().enumerate() {
                        let mut low = if k.low.is_empty() {
                            String::new()
                        } else {
                            format!(" (16-bit: {})", k.low.join(", "))
                        };
                        if !k.q8.is_empty() {
                            low.push_str(&format!(" (8-bit: {})", k.q8.join(", ")));
                        }
                        writeln!(
                            f,
                            "{pad}    kernel {i}: reads [{}], writes [{}]{low}, {} ops/elem, {} B/param (f32 slices), {} B/param (f32 dfdx)",
                            k.reads.join(", "),
                            k.writes.join(", "),
                            k.ops,
                            k.bytes_per_param(4),
                            k.bytes_per_param(4) + 16
                        )?;
                    }
                }
                RuleBody::Reuse { plan } => plan.write_indented(f, depth + 2)?,
            }
        }
        Ok(())
    }
}
