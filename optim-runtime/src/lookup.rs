//! Finding the state of a step's parameters without a hash or tree lookup per parameter.
//!
//! A step's parameters arrive as a list of names; their state lives in
//! [`OptState::params`](crate::OptState::params), a map ordered by name. The step driver sorts
//! the step's names once ([`NameOrder`], which also finds a name given twice) and then finds
//! every parameter's state in one ordered walk over the map ([`states`], [`states_mut`]): one
//! string comparison per parameter instead of a lookup each. The sorted order is kept between
//! steps and reused while the step's names stay the same (every training step of a fixed
//! model), so a steady-state step sorts nothing and allocates nothing for it.

use crate::state::ParamState;
use std::collections::BTreeMap;
use std::ops::Bound;

/// The order of a step's parameter names, kept between steps (a cache, not optimizer state:
/// it is not saved, two caches always compare equal, and `Debug` shows no contents, so that a
/// state's `Debug` and `==` only see what a step may change).
#[derive(Clone, Default)]
pub(crate) struct NameOrder {
    /// The names of the step this order was computed for, in the step's order.
    names: Vec<String>,
    /// Indices into `names`, sorted by name.
    order: Vec<usize>,
}

impl PartialEq for NameOrder {
    fn eq(&self, _: &Self) -> bool {
        true // a cache of derived data, never part of what a state is
    }
}

impl std::fmt::Debug for NameOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameOrder(cache)")
    }
}

impl NameOrder {
    /// The indices of `names` (`n` of them, `name(i)` the `i`-th) sorted by name: reused when
    /// the names are the ones of the last call, computed otherwise. `name` is a trait object:
    /// one copy of this (and of the sort) serves every caller, whatever its closure.
    ///
    /// # Errors
    /// The first name (in sorted order) given twice; the cache is then emptied.
    pub(crate) fn order<'n>(
        &mut self,
        n: usize,
        name: &dyn Fn(usize) -> &'n str,
    ) -> Result<&[usize], &'n str> {
        let same = self.names.len() == n && (0..n).all(|i| self.names[i] == name(i));
        if !same {
            self.names.clear();
            self.names.extend((0..n).map(|i| name(i).to_string()));
            self.order.clear();
            self.order.extend(0..n);
            let names = &self.names;
            self.order
                .sort_unstable_by(|&a, &b| names[a].cmp(&names[b]));
            let dup = self.order.windows(2).find(|w| names[w[0]] == names[w[1]]);
            if let Some(w) = dup {
                let dup = name(w[0]);
                self.names.clear();
                self.order.clear();
                return Err(dup);
            }
        }
        Ok(&self.order)
    }
}

/// The names `order` lists first and last (the range of the map a walk has to cover).
fn span<'n>(order: &[usize], name: &dyn Fn(usize) -> &'n str) -> Option<(&'n str, &'n str)> {
    Some((name(*order.first()?), name(*order.last()?)))
}

/// Calls `found(i, value)` for every index `i` of `order` (sorted by `name`) whose name is a key
/// of the ordered walk `it` (entries in key order), in one pass over both.
fn merge<'k, 'n, V>(
    mut it: impl Iterator<Item = (&'k str, V)>,
    order: &[usize],
    name: &dyn Fn(usize) -> &'n str,
    mut found: impl FnMut(usize, V),
) {
    let mut cur = it.next();
    for &i in order {
        let want = name(i);
        while cur.as_ref().is_some_and(|(k, _)| *k < want) {
            cur = it.next();
        }
        if cur.as_ref().is_some_and(|(k, _)| *k == want) {
            if let Some((_, v)) = cur.take() {
                found(i, v);
            }
            cur = it.next();
        }
    }
}

/// The state of each of the step's parameters (`None` where it has none yet), indexed like
/// the step's names; `order` from [`NameOrder::order`]. The list is `out`, emptied first (a
/// list whose memory is reused, see `crate::scratch`).
pub(crate) fn states<'s, 'n, E>(
    params: &'s BTreeMap<String, ParamState<E>>,
    order: &[usize],
    name: &dyn Fn(usize) -> &'n str,
    mut out: Vec<Option<&'s ParamState<E>>>,
) -> Vec<Option<&'s ParamState<E>>> {
    out.clear();
    out.resize(order.len(), None);
    if let Some((lo, hi)) = span(order, name) {
        let range = params.range::<str, _>((Bound::Included(lo), Bound::Included(hi)));
        merge(range.map(|(k, v)| (k.as_str(), v)), order, name, |i, v| {
            out[i] = Some(v)
        });
    }
    out
}

/// [`states`] with mutable access: every parameter's state at once (they are disjoint).
pub(crate) fn states_mut<'s, 'n, E>(
    params: &'s mut BTreeMap<String, ParamState<E>>,
    order: &[usize],
    name: &dyn Fn(usize) -> &'n str,
    mut out: Vec<Option<&'s mut ParamState<E>>>,
) -> Vec<Option<&'s mut ParamState<E>>> {
    out.clear();
    out.resize_with(order.len(), || None);
    if let Some((lo, hi)) = span(order, name) {
        let range = params.range_mut::<str, _>((Bound::Included(lo), Bound::Included(hi)));
        merge(range.map(|(k, v)| (k.as_str(), v)), order, name, |i, v| {
            out[i] = Some(v)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> BTreeMap<String, ParamState<f32>> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), ParamState::new(0, i + 1)))
            .collect()
    }

    #[test]
    fn finds_each_name_in_the_steps_order() {
        let params = map(&["a", "b.w", "b.x", "c", "z"]);
        let names = ["c", "q", "a", "z", "b.x"];
        let mut cache = NameOrder::default();
        let order = cache.order(names.len(), &|i| names[i]).unwrap().to_vec();
        assert_eq!(order, vec![2, 4, 0, 1, 3]);
        let lens: Vec<Option<usize>> = states(&params, &order, &|i| names[i], Vec::new())
            .iter()
            .map(|s| s.map(|s| s.len))
            .collect();
        assert_eq!(lens, vec![Some(4), None, Some(1), Some(5), Some(3)]);
        let mut params = params;
        for s in states_mut(&mut params, &order, &|i| names[i], Vec::new())
            .into_iter()
            .flatten()
        {
            s.step += 7;
        }
        let steps: Vec<u64> = params.values().map(|p| p.step).collect();
        assert_eq!(steps, vec![7, 0, 7, 7, 7]); // "b.w" is not in the step
    }

    #[test]
    fn reports_a_duplicate_and_recomputes_after_a_change() {
        let mut cache = NameOrder::default();
        let dup = ["x", "y", "x"];
        assert_eq!(cache.order(3, &|i| dup[i]), Err("x"));
        let first = ["b", "a"];
        assert_eq!(cache.order(2, &|i| first[i]).unwrap(), &[1, 0]);
        assert_eq!(cache.order(2, &|i| first[i]).unwrap(), &[1, 0]);
        let second = ["a", "b", "c"];
        assert_eq!(cache.order(3, &|i| second[i]).unwrap(), &[0, 1, 2]);
        assert!(states::<f32>(&BTreeMap::new(), &[], &|_| "", vec![None]).is_empty());
    }
}
