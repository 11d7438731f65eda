//! Multisets of values (value → how many rows hold it), for `min`, `max` and `count_distinct`
//! with exact retraction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decimal::Dec;
use super::scalar::Scalar;
use super::Output;

/// A multiset of values (value → how many rows hold it), in value order.
///
/// Small ones — most groups — are a sorted vector: a binary search over one contiguous block
/// touches a few cache lines where a tree's nodes are scattered. While every value is an integer
/// or a decimal of one scale that fits 64 bits (an id, a price column), the vector holds just
/// those mantissas: 16 bytes a value instead of 40. Past [`Counts::SMALL`] distinct values it
/// becomes a B-tree, so an insert stays O(log n).
#[derive(Debug, Clone)]
pub enum Counts {
    Nums { scale: u32, pairs: Vec<(i64, u64)> },
    Sorted(Vec<(Scalar, u64)>),
    Tree(BTreeMap<Scalar, u64>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Sorted(Vec::new())
    }
}

impl PartialEq for Counts {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut c = Counts::default();
        for (v, n) in Vec::<(Scalar, u64)>::deserialize(d)? {
            c.add(&v, n as i64);
        }
        Ok(c)
    }
}

/// Add `n` (negative: take back) to the count of the value at `found` (a binary search's
/// answer), inserting or removing it; `false` when the value is new but the vector is full.
fn add_sorted<K>(pairs: &mut Vec<(K, u64)>, found: Result<usize, usize>, n: i64, key: impl FnOnce() -> K) -> bool {
    match found {
        Ok(at) => {
            let c = (pairs[at].1 as i64).saturating_add(n);
            if c <= 0 {
                pairs.remove(at);
            } else {
                pairs[at].1 = c as u64;
            }
            true
        }
        Err(at) if n > 0 => {
            if pairs.len() >= Counts::SMALL {
                return false;
            }
            pairs.insert(at, (key(), n as u64));
            true
        }
        Err(_) => true,
    }
}

impl Counts {
    /// Distinct values a sorted vector holds before it becomes a tree.
    const SMALL: usize = 64;

    /// Add `n` rows holding `v` (`n < 0` takes them back).
    pub(super) fn add(&mut self, v: &Scalar, n: i64) {
        if self.is_empty() {
            // An empty multiset takes the most compact form its next value fits.
            let fits = match v {
                Scalar::Num(d) if i64::try_from(d.mant()).is_ok() => Some(d.scale),
                _ => None,
            };
            match (fits, &*self) {
                (Some(s), Counts::Nums { scale, .. }) if *scale == s => {}
                (Some(s), _) => *self = Counts::Nums { scale: s, pairs: Vec::new() },
                (None, Counts::Sorted(_)) => {}
                (None, _) => *self = Counts::Sorted(Vec::new()),
            }
        }
        let done = match self {
            Counts::Nums { scale, pairs } => match v {
                Scalar::Num(d) if d.scale == *scale && i64::try_from(d.mant()).is_ok() => {
                    let m = d.mant() as i64;
                    add_sorted(pairs, pairs.binary_search_by(|(k, _)| k.cmp(&m)), n, || m)
                }
                _ => false,
            },
            Counts::Sorted(pairs) => add_sorted(pairs, pairs.binary_search_by(|(k, _)| k.cmp(v)), n, || v.clone()),
            Counts::Tree(tree) => {
                if n > 0 {
                    *tree.entry(v.clone()).or_insert(0) += n as u64;
                } else if let Some(c) = tree.get_mut(v) {
                    let left = (*c as i64).saturating_add(n);
                    if left <= 0 {
                        tree.remove(v);
                    } else {
                        *c = left as u64;
                    }
                }
                true
            }
        };
        if !done {
            // A value the compact form cannot hold, or a full vector: the next form up.
            let pairs: Vec<(Scalar, u64)> = self.iter().collect();
            *self = match self {
                Counts::Nums { .. } if pairs.len() < Counts::SMALL => Counts::Sorted(pairs),
                _ => Counts::Tree(pairs.into_iter().collect()),
            };
            self.add(v, n);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Counts::Nums { pairs, .. } => pairs.len(),
            Counts::Sorted(p) => p.len(),
            Counts::Tree(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values with their counts, in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (Scalar, u64)> + '_> {
        match self {
            Counts::Nums { scale, pairs } => {
                Box::new(pairs.iter().map(|(m, n)| (Scalar::Num(Dec::new(*m as i128, *scale)), *n)))
            }
            Counts::Sorted(p) => Box::new(p.iter().map(|(k, n)| (k.clone(), *n))),
            Counts::Tree(t) => Box::new(t.iter().map(|(k, n)| (k.clone(), *n))),
        }
    }

    /// The smallest value, or the largest (`last`).
    pub(super) fn extreme(&self, last: bool) -> Output {
        let pick = |len: usize| if last { len.checked_sub(1) } else { (len > 0).then_some(0) };
        match self {
            Counts::Nums { scale, pairs } => {
                pick(pairs.len()).map_or(Output::Null, |i| Output::Num(Dec::new(pairs[i].0 as i128, *scale)))
            }
            Counts::Sorted(p) => pick(p.len()).map_or(Output::Null, |i| Output::Value(p[i].0.clone())),
            Counts::Tree(t) => {
                let k = if last { t.keys().next_back() } else { t.keys().next() };
                k.map_or(Output::Null, |v| Output::Value(v.clone()))
            }
        }
    }
}
