//! Placement: which nodes hold the shards of a segment.
//!
//! Every node and every shard has a 256-bit key: sha2-256 of the peer id's bytes, and sha2-256 of the shard
//! CID's bytes. Shard i of a segment goes to the node whose key is closest to the shard's key by XOR distance,
//! skipping nodes already chosen for that segment, so no node holds two shards of one segment while there are
//! at least k+m nodes. With fewer nodes, shards wrap round and a node may hold several (the add says so).
//! A pure function of (shard CIDs, node set): any node recomputes where a shard should be.
//!
//! On a chain, nodes also have a **tier**: the periods they missed in the current and the previous epoch, as
//! the beacon's storage-node table reports them (0 for a node in good standing). Placement prefers lower
//! tiers: a shard goes to a faulty node only when every node of a better tier already holds a shard of the
//! segment, so a node that lost data gets no new shards while there are enough others, and gets them again
//! once it has proven for a whole epoch.

use sha2::{Digest, Sha256};

/// A 256-bit placement key.
pub type Key = [u8; 32];

pub fn key_of(bytes: &[u8]) -> Key {
    Sha256::digest(bytes).into()
}

fn distance(a: &Key, b: &Key) -> Key {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// Indices of `nodes` ordered by XOR distance from `target`, closest first.
pub fn closest(target: &Key, nodes: &[Key]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| distance(target, &nodes[i]));
    order
}

/// Indices of `nodes` ordered by tier (lower first; `tiers[i]` is node `i`'s), then by XOR distance from
/// `target`.
pub fn closest_ranked(target: &Key, nodes: &[Key], tiers: &[u32]) -> Vec<usize> {
    let mut order = closest(target, nodes);
    order.sort_by_key(|&i| tiers.get(i).copied().unwrap_or(0));
    order
}

/// For each shard of a segment, the nodes to try in order: the first is its placement, the rest are
/// fallbacks if it fails. The first choices are distinct while there are enough nodes, and of the best
/// tier (`tiers[i]` is node `i`'s) that has a node left.
pub fn place_segment(shards: &[Key], nodes: &[Key], tiers: &[u32]) -> Vec<Vec<usize>> {
    let mut used = vec![false; nodes.len()];
    shards
        .iter()
        .map(|s| {
            let order = closest_ranked(s, nodes, tiers);
            if used.iter().all(|&u| u) {
                used.iter_mut().for_each(|u| *u = false);
            }
            let (fresh, taken): (Vec<usize>, Vec<usize>) =
                order.into_iter().partition(|&i| !used[i]);
            if let Some(&first) = fresh.first() {
                used[first] = true;
            }
            fresh.into_iter().chain(taken).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize, salt: u8) -> Vec<Key> {
        (0..n).map(|i| key_of(&[salt, i as u8])).collect()
    }

    #[test]
    fn shards_of_a_segment_land_on_distinct_nodes() {
        let nodes = keys(8, 1);
        for seg in 0..50u8 {
            let shards: Vec<Key> = (0..6).map(|i| key_of(&[seg, i, 9])).collect();
            let p = place_segment(&shards, &nodes, &[0; 8]);
            let mut firsts: Vec<usize> = p.iter().map(|o| o[0]).collect();
            firsts.sort();
            firsts.dedup();
            assert_eq!(firsts.len(), 6);
            assert!(p.iter().all(|o| o.len() == nodes.len()));
        }
    }

    #[test]
    fn placement_is_a_pure_function_and_prefers_the_closest() {
        let nodes = keys(6, 2);
        let shards = keys(6, 3);
        assert_eq!(
            place_segment(&shards, &nodes, &[0; 6]),
            place_segment(&shards, &nodes, &[0; 6])
        );
        let p = place_segment(&shards[..1], &nodes, &[0; 6]);
        assert_eq!(p[0][0], closest(&shards[0], &nodes)[0]);
    }

    /// Issue 15 item 5: a node with missed periods gets a shard only when every node in good standing
    /// already holds one of the segment; of two faulty nodes, the one with fewer misses comes first.
    #[test]
    fn faulty_nodes_are_placed_last() {
        let nodes = keys(8, 6);
        let mut tiers = [0u32; 8];
        tiers[2] = 1;
        tiers[5] = 3;
        for seg in 0..50u8 {
            let shards: Vec<Key> = (0..6).map(|i| key_of(&[seg, i, 4])).collect();
            let firsts: Vec<usize> = place_segment(&shards, &nodes, &tiers)
                .iter()
                .map(|o| o[0])
                .collect();
            assert!(!firsts.contains(&2) && !firsts.contains(&5), "{firsts:?}");
            let shards: Vec<Key> = (0..7).map(|i| key_of(&[seg, i, 4])).collect();
            let p = place_segment(&shards, &nodes, &tiers);
            let firsts: Vec<usize> = p.iter().map(|o| o[0]).collect();
            assert!(firsts.contains(&2) && !firsts.contains(&5), "{firsts:?}");
        }
    }

    #[test]
    fn fewer_nodes_than_shards_wraps_round() {
        let nodes = keys(3, 4);
        let p = place_segment(&keys(6, 5), &nodes, &[0; 3]);
        let mut counts = [0; 3];
        p.iter().for_each(|o| counts[o[0]] += 1);
        assert_eq!(counts, [2, 2, 2]);
    }
}
