//! Parameter names for `Var`s: the optimizer keys its state, routes its rules and writes its
//! checkpoints by name, but `candle_nn::Optimizer::new` receives bare `Var`s.

use candle_core::Var;
use candle_nn::VarMap;
use optim_runtime::OptimError;

/// Where a [`CandleOptimizer`](crate::CandleOptimizer) takes the names of its `Var`s from.
///
/// Names matter: optimizer state is keyed by them (a checkpoint written by the slice or dfdx
/// path loads here when the names agree), and routing rules match them
/// (`matrix if !name.contains("embed") => …`).
#[derive(Clone, Default)]
pub enum VarNames {
    /// Each `Var` is looked up in this `VarMap` (by identity, `Var::id`) and takes its key there
    /// (`"layer1.weight"`, as `VarBuilder::pp` builds them). Every `Var` must be in it.
    VarMap(VarMap),
    /// `names[i]` names the `i`-th `Var` given to `new`; one name per `Var`.
    List(Vec<String>),
    /// The default: the `i`-th `Var` is called `"var{i}"`. Enough for optimizers whose rules
    /// do not look at names, but a checkpoint then depends on the order of the `Var`s.
    #[default]
    Positional,
}

impl std::fmt::Debug for VarNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarNames::VarMap(m) => {
                let n = m.data().lock().map(|d| d.len()).unwrap_or(0);
                write!(f, "VarNames::VarMap({n} vars)")
            }
            VarNames::List(l) => f.debug_tuple("VarNames::List").field(l).finish(),
            VarNames::Positional => write!(f, "VarNames::Positional"),
        }
    }
}

impl VarNames {
    /// The name of every `Var` of `vars`, in order.
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when a `Var` is missing from the `VarMap`, the list has
    /// another length than `vars`, or the `VarMap`'s lock is poisoned.
    pub fn resolve(&self, vars: &[Var]) -> Result<Vec<String>, OptimError> {
        match self {
            VarNames::Positional => Ok((0..vars.len()).map(|i| format!("var{i}")).collect()),
            VarNames::List(names) => {
                if names.len() != vars.len() {
                    return Err(OptimError::InvalidUse(format!(
                        "{} names for {} Vars",
                        names.len(),
                        vars.len()
                    )));
                }
                Ok(names.clone())
            }
            VarNames::VarMap(map) => {
                let by_id: std::collections::HashMap<_, String> = varmap_entries(map)?
                    .into_iter()
                    .map(|(n, v)| (v.id(), n))
                    .collect();
                vars.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        by_id.get(&v.id()).cloned().ok_or_else(|| {
                            OptimError::InvalidUse(format!(
                                "Var {i} (shape {:?}) is not in the VarMap given for names",
                                v.dims()
                            ))
                        })
                    })
                    .collect()
            }
        }
    }
}

/// Every `(name, Var)` of `map`, sorted by name (a `VarMap` is a `HashMap`: sorting makes the
/// order, and so the order of a step's parameters, reproducible).
///
/// # Errors
/// [`OptimError::InvalidUse`] when the `VarMap`'s lock is poisoned.
pub fn varmap_entries(map: &VarMap) -> Result<Vec<(String, Var)>, OptimError> {
    let data = map
        .data()
        .lock()
        .map_err(|_| OptimError::InvalidUse("the VarMap's lock is poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The module of the `Var` named `name`, as routing rules see it (`module` in a guard): the
/// name up to its last `.`, `""` for a name without one.
///
/// `"blocks.0.attn.q.weight"` → `"blocks.0.attn.q"`, `"fc.bias"` → `"fc"`, `"var0"` → `""`.
/// `VarBuilder::pp` builds names as `module path.tensor`, so this is the path of the module
/// that created the `Var`. It differs from the dfdx path, where `module` is the innermost
/// module's *type* (`"Linear"`): a `VarMap` records no types, so on candle route by path
/// (`module.ends_with("attn.q")`, `module.starts_with("blocks.")`), not by `module == "Linear"`.
pub fn module_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(module, _)| module)
}
