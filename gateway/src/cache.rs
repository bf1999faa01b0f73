//! A small least-recently-used map with a cap on entries and on the bytes its values weigh.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub struct Lru<K, V> {
    map: HashMap<K, (V, u64, u64)>,
    tick: u64,
    entries_max: usize,
    weight_max: u64,
    weight: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(entries_max: usize, weight_max: u64) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            entries_max,
            weight_max,
            weight: 0,
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|e| {
            e.1 = tick;
            &e.0
        })
    }

    /// Inserts `value` weighing `weight`; returns what was evicted (dropped by the caller, outside any lock
    /// it cares about). A value heavier than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V, weight: u64) -> Vec<V> {
        let mut evicted = Vec::new();
        if weight > self.weight_max {
            return evicted;
        }
        self.tick += 1;
        if let Some((old, _, w)) = self.map.insert(key, (value, self.tick, weight)) {
            self.weight -= w;
            evicted.push(old);
        }
        self.weight += weight;
        while self.map.len() > self.entries_max || self.weight > self.weight_max {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.1)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((v, _, w)) = self.map.remove(&oldest) {
                self.weight -= w;
                evicted.push(v);
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recent_within_both_caps() {
        let mut c = Lru::new(2, 10);
        assert!(c.insert("a", 1, 4).is_empty());
        assert!(c.insert("b", 2, 4).is_empty());
        assert_eq!(c.get(&"a"), Some(&1));
        assert_eq!(c.insert("c", 3, 1), vec![2]);
        assert_eq!(c.get(&"b"), None);
        // Over both caps: the least recent ("a") goes, which brings both within bounds.
        assert_eq!(c.insert("d", 4, 9), vec![1]);
        assert_eq!(c.get(&"c"), Some(&3));
        assert!(c.insert("huge", 5, 11).is_empty());
        assert_eq!(c.get(&"huge"), None);
        assert_eq!(c.get(&"d"), Some(&4));
    }
}
