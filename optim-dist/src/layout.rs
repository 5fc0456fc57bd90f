//! Who owns what: the ZeRO-1 partition of parameters (and so of optimizer state and update
//! work) over ranks.
//!
//! Computed identically on every rank from the parameters' names and shapes, the rule each one
//! is routed to ([`DslOptimizer::route`]) and that rule's plan ([`DslOptimizer::explain`]), so
//! no communication is needed to agree on it.
//!
//! # Cost model (in estimated floating-point operations per step)
//!
//! A rule is classified by the barriers of its plan ([`WorkKind`]):
//! - every rule pays `numel × Σ ops/element` for its loops (at least `numel`);
//! - `orthogonalize` (Newton–Schulz, 5 iterations of the quintic): `5 (4 m² n + 2 m³)` for the
//!   `rows × cols` matrix view with `m = min`, `n = max`;
//! - `kron`, `kfac`, `rotate`/`unrotate` (Kronecker preconditioners, SOAP's eigenbasis):
//!   statistics and application `4 (r² c + r c²)`, plus `10 (r³ + c³)` for the roots or
//!   eigendecompositions (charged every step: an upper bound when `update_freq > 1`);
//! - `factored` (Adafactor) and per-tensor reductions: `4 × numel`.
//!
//! # Partition
//!
//! Longest processing time first: parameters in decreasing cost (ties: earlier parameter
//! first) each go to the rank with the least cost so far (ties: lower rank). A parameter whose
//! cost exceeds a rank's fair share (`total / ranks`) is split into row blocks first, but only
//! when it is safe: its rule is purely element-wise (no barrier of any kind, so no per-tensor or
//! global reduction), routing the blocks gives the same rule, the rule's hoisted scalars use
//! no shape word (`rows`, `cols`, `numel`, `fan_in`, `fan_out`), and each block keeps at least
//! [`ShardOptions::min_split_elems`] elements. Newton–Schulz and Kronecker rules always stay
//! whole on one rank.

use optim_runtime::{DslOptimizer, Float, ParamInfo, Plan, RuleBody};

/// What kind of work a rule does, from the barriers of its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// Loops only: may be split into row blocks across ranks.
    ElementWise,
    /// Per-tensor reductions (`norm`, `rms`, `trust_ratio`, `graft`), `factored_second_moment`,
    /// or barriers this crate does not know: whole tensor on one rank.
    WholeTensor,
    /// A global reduction (`global_norm`, `clip_global_norm`): whole tensor on one rank, and
    /// the step needs cross-rank sums (see [`crate::sync`]).
    Global,
    /// `orthogonalize` (Newton–Schulz).
    NewtonSchulz,
    /// `kron_precondition`, `kfac_precondition`, `rotate`/`unrotate` (Shampoo, K-FAC, SOAP).
    Kronecker,
}

/// What the cost model needs to know about a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleWork {
    /// The heaviest kind of work among the rule's barriers.
    pub kind: WorkKind,
    /// Whether a global reduction is among them.
    pub global: bool,
    /// Arithmetic operations per element over all of the rule's loops.
    pub ops_per_elem: u64,
    /// Whether a hoisted scalar uses the parameter's shape.
    pub uses_shape: bool,
}

/// Options of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOptions {
    /// Smallest row block, in elements, that a split parameter may be cut into (default
    /// `65_536`: below that, communication and per-call overhead dominate and balance does not
    /// need it).
    pub min_split_elems: usize,
    /// Whether element-wise parameters may be split at all (default `true`).
    pub allow_split: bool,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            min_split_elems: 1 << 16,
            allow_split: true,
        }
    }
}

/// A contiguous row block of one parameter, owned by one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Index of the parameter in the step's parameter list (the canonical order).
    pub param: usize,
    /// First element (row-major flat index) of the block.
    pub start: usize,
    /// One past the last element.
    pub end: usize,
    /// Logical shape of the block (`[rows of the block, d1, d2, …]`; the parameter's own shape
    /// when it is whole).
    pub shape: Vec<usize>,
    /// The owning rank.
    pub owner: usize,
}

impl Piece {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// Whether the block has no elements (a parameter with a zero dimension).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One parameter of the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// Name (the optimizer state key).
    pub name: String,
    /// Full logical shape.
    pub shape: Vec<usize>,
    /// Rule index from [`DslOptimizer::route`].
    pub rule: usize,
    /// The rule's work kind.
    pub kind: WorkKind,
    /// Estimated cost per step (see the module docs).
    pub cost: u64,
}

/// The partition of one parameter list over `world` ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Number of ranks.
    pub world: usize,
    /// Parameters in the canonical order (the order given to the step).
    pub params: Vec<ParamEntry>,
    /// Pieces sorted by `(param, start)`: the canonical order of reductions and messages.
    pub pieces: Vec<Piece>,
    /// For each rank, its pieces (indices into `pieces`, increasing).
    pub by_rank: Vec<Vec<usize>>,
    /// For each rank, the total number of elements it owns.
    pub counts: Vec<usize>,
    /// For each rank, its estimated cost per step.
    pub loads: Vec<u64>,
    /// Whether some rule needs cross-rank global sums.
    pub has_global: bool,
}

/// Classifies rule `rule` of `plan` (a reuse rule: the reused optimizer's first rule, as
/// [`DslOptimizer::state_names`] does).
pub fn rule_work(plan: &Plan, rule: usize) -> RuleWork {
    let Some(r) = plan.rules.get(rule) else {
        return RuleWork {
            kind: WorkKind::WholeTensor,
            global: false,
            ops_per_elem: 1,
            uses_shape: true,
        };
    };
    match &r.body {
        RuleBody::Reuse { plan } => rule_work(plan, 0),
        RuleBody::Fused {
            kernels,
            barriers,
            scalars,
            ..
        } => {
            let mut kind = WorkKind::ElementWise;
            let mut global = false;
            for b in barriers {
                let k = classify_barrier(b);
                global |= k == WorkKind::Global;
                kind = heavier(kind, k);
            }
            let ops: u64 = kernels.iter().map(|k| k.ops as u64).sum();
            let uses_shape = scalars.iter().any(|s| {
                s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| matches!(w, "rows" | "cols" | "numel" | "fan_in" | "fan_out"))
            });
            RuleWork {
                kind,
                global,
                ops_per_elem: ops.max(1),
                uses_shape,
            }
        }
    }
}

/// The kind of one barrier of a plan (`"orthogonalize(tmp0)"`, `"global sumsq(grad)"`, …).
pub fn classify_barrier(b: &str) -> WorkKind {
    let head = b.split('(').next().unwrap_or("").trim();
    if head.starts_with("global") {
        WorkKind::Global
    } else if head == "orthogonalize" {
        WorkKind::NewtonSchulz
    } else if matches!(head, "kron" | "kfac" | "rotate" | "unrotate") {
        WorkKind::Kronecker
    } else {
        WorkKind::WholeTensor
    }
}

fn rank_of(k: WorkKind) -> u8 {
    match k {
        WorkKind::ElementWise => 0,
        WorkKind::WholeTensor => 1,
        WorkKind::Global => 2,
        WorkKind::NewtonSchulz => 3,
        WorkKind::Kronecker => 4,
    }
}

fn heavier(a: WorkKind, b: WorkKind) -> WorkKind {
    if rank_of(b) > rank_of(a) {
        b
    } else {
        a
    }
}

/// Estimated cost per step of a `shape` parameter under a rule of kind `w`.
pub fn cost(shape: &[usize], w: &RuleWork) -> u64 {
    let info = ParamInfo::new("", shape);
    let (r, c, n) = (info.rows() as u64, info.cols() as u64, info.numel() as u64);
    let elem = n.saturating_mul(w.ops_per_elem).max(n);
    let (lo, hi) = (r.min(c), r.max(c));
    let cube = |x: u64| x.saturating_mul(x).saturating_mul(x);
    let extra = match w.kind {
        WorkKind::ElementWise => 0,
        WorkKind::WholeTensor | WorkKind::Global => n.saturating_mul(4),
        WorkKind::NewtonSchulz => lo
            .saturating_mul(lo)
            .saturating_mul(hi)
            .saturating_mul(4)
            .saturating_add(cube(lo).saturating_mul(2))
            .saturating_mul(5),
        WorkKind::Kronecker => r
            .saturating_mul(r)
            .saturating_mul(c)
            .saturating_add(r.saturating_mul(c).saturating_mul(c))
            .saturating_mul(4)
            .saturating_add(cube(r).saturating_add(cube(c)).saturating_mul(10)),
    };
    elem.saturating_add(extra)
}

impl Layout {
    /// The partition of `params` (names and shapes, in the step's order) over `world` ranks
    /// for optimizer `O` with plan `plan`.
    pub fn compute<E: Float, O: DslOptimizer<E>>(
        plan: &Plan,
        params: &[(&str, &[usize])],
        world: usize,
        opts: ShardOptions,
    ) -> Layout {
        let world = world.max(1);
        let mut entries = Vec::with_capacity(params.len());
        let mut works = Vec::with_capacity(params.len());
        for &(name, shape) in params {
            let rule = O::route(&ParamInfo::new(name, shape));
            let w = rule_work(plan, rule);
            entries.push(ParamEntry {
                name: name.to_string(),
                shape: shape.to_vec(),
                rule,
                kind: w.kind,
                cost: cost(shape, &w),
            });
            works.push(w);
        }
        let total: u64 = entries.iter().map(|e| e.cost).fold(0, u64::saturating_add);
        let fair = (total / world as u64).max(1);

        // Candidate pieces (unassigned), in canonical order.
        let mut pieces: Vec<Piece> = Vec::with_capacity(entries.len());
        let mut piece_cost: Vec<u64> = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let numel: usize = e.shape.iter().product();
            let blocks = split_blocks::<E, O>(e, &works[i], fair, world, opts);
            match blocks {
                Some(rows) => {
                    let row_len = numel / e.shape[0];
                    let mut r0 = 0;
                    for rk in rows {
                        let mut shape = e.shape.clone();
                        shape[0] = rk;
                        pieces.push(Piece {
                            param: i,
                            start: r0 * row_len,
                            end: (r0 + rk) * row_len,
                            shape,
                            owner: 0,
                        });
                        piece_cost.push(cost_share(e.cost, rk * row_len, numel));
                        r0 += rk;
                    }
                }
                None => {
                    pieces.push(Piece {
                        param: i,
                        start: 0,
                        end: numel,
                        shape: e.shape.clone(),
                        owner: 0,
                    });
                    piece_cost.push(e.cost);
                }
            }
        }

        // Longest processing time first.
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by(|&a, &b| piece_cost[b].cmp(&piece_cost[a]).then(a.cmp(&b)));
        let mut loads = vec![0u64; world];
        let mut counts = vec![0usize; world];
        // Blocks of one parameter go to distinct ranks (a rank's optimizer keys state by name).
        let mut holds = std::collections::HashSet::new();
        for p in order {
            let param = pieces[p].param;
            let owner = (0..world)
                .filter(|&r| !holds.contains(&(param, r)))
                .min_by_key(|&r| (loads[r], r))
                .unwrap_or(0);
            holds.insert((param, owner));
            pieces[p].owner = owner;
            loads[owner] = loads[owner].saturating_add(piece_cost[p]);
            counts[owner] += pieces[p].len();
        }
        let mut by_rank = vec![Vec::new(); world];
        for (i, p) in pieces.iter().enumerate() {
            by_rank[p.owner].push(i);
        }
        let has_global = works.iter().any(|w| w.global);
        Layout {
            world,
            params: entries,
            pieces,
            by_rank,
            counts,
            loads,
            has_global,
        }
    }

    /// The pieces of rank `r`, in canonical order.
    pub fn pieces_of(&self, r: usize) -> impl Iterator<Item = &Piece> + '_ {
        self.by_rank
            .get(r)
            .into_iter()
            .flatten()
            .map(move |&i| &self.pieces[i])
    }

    /// Estimated imbalance: the largest rank cost over the mean (1.0 is perfect).
    pub fn imbalance(&self) -> f64 {
        let max = self.loads.iter().copied().max().unwrap_or(0) as f64;
        let mean = self.loads.iter().map(|&l| l as f64).sum::<f64>() / self.world as f64;
        if mean > 0.0 {
            max / mean
        } else {
            1.0
        }
    }
}

fn cost_share(cost: u64, part: usize, whole: usize) -> u64 {
    if whole == 0 {
        return 0;
    }
    ((cost as u128 * part as u128) / whole as u128) as u64
}

/// Row counts of the blocks a parameter is split into, or `None` to keep it whole.
fn split_blocks<E: Float, O: DslOptimizer<E>>(
    e: &ParamEntry,
    w: &RuleWork,
    fair: u64,
    world: usize,
    opts: ShardOptions,
) -> Option<Vec<usize>> {
    if !opts.allow_split || world < 2 || w.kind != WorkKind::ElementWise || w.uses_shape {
        return None;
    }
    if e.cost <= fair || e.shape.is_empty() {
        return None;
    }
    let rows = e.shape[0];
    let numel: usize = e.shape.iter().product();
    if rows < 2 || numel == 0 {
        return None;
    }
    let row_len = numel / rows;
    let want = e.cost.div_ceil(fair) as usize;
    let by_size = numel / opts.min_split_elems.max(1);
    let k = want.min(world).min(rows).min(by_size);
    if k < 2 {
        return None;
    }
    let blocks: Vec<usize> = (0..k)
        .map(|i| rows / k + usize::from(i < rows % k))
        .collect();
    // Every block must route to the parameter's own rule (guards may test shapes).
    let same_rule = blocks.iter().all(|&rk| {
        let mut shape = e.shape.clone();
        shape[0] = rk;
        O::route(&ParamInfo::new(&e.name, &shape)) == e.rule
    });
    (same_rule && row_len > 0).then_some(blocks)
}
