//! An authenticated sparse Merkle tree over 256-bit keys, with proofs of presence and of absence.
//!
//! The tree is the conceptual full binary tree of depth 256 in which leaf `k` sits at the path given by the
//! bits of `k` (most significant first). It is kept compact and canonical by one rule: the hash of a subtree
//! is
//! - `EMPTY` if it holds no key,
//! - `leaf(key, value_hash)` if it holds exactly one key (however deep that key would sit),
//! - `inner(left, right)` otherwise.
//!
//! Three distinct one-byte domain tags keep leaf, inner and empty hashes apart, so a proof can never pass an
//! inner node off as a leaf or the reverse. The root of a set of (key, value) pairs is therefore unique, and
//! a proof is the list of sibling hashes from the root down to the subtree where the key's path ends, plus
//! what is found there: nothing (absence), the key's own leaf (presence), or another key's leaf sharing the
//! path so far (absence). [`verify`] checks a proof against a root with no access to the tree.
//!
//! Hashing is recursive over the key bits, so recursion depth is bounded by 256 whatever the keys are.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Hash;
use std::sync::{Arc, OnceLock};

const TAG_LEAF: u8 = 0;
const TAG_INNER: u8 = 1;
const TAG_EMPTY: u8 = 2;
pub const DEPTH: usize = 256;

pub fn empty_hash() -> Hash {
    *blake3::hash(&[TAG_EMPTY]).as_bytes()
}

pub fn leaf_hash(key: &Hash, value_hash: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_LEAF]).update(key).update(value_hash);
    *h.finalize().as_bytes()
}

pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_INNER]).update(left).update(right);
    *h.finalize().as_bytes()
}

/// Bit `i` of `key`, most significant bit of byte 0 first.
fn bit(key: &Hash, i: usize) -> bool {
    key[i / 8] & (0x80 >> (i % 8)) != 0
}

/// What a proof finds at the end of the key's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    Empty,
    Leaf { key: Hash, value_hash: Hash },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes from the root downwards; at most [`DEPTH`].
    pub siblings: Vec<Hash>,
    pub terminal: Terminal,
}

impl Proof {
    /// `count:u32 sibling:[32]* terminal:u8 (0 empty | 1 key:[32] value_hash:[32])`
    pub fn encode_into(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.siblings.len()).expect("at most DEPTH siblings"));
        for s in &self.siblings {
            w.fixed(s);
        }
        match &self.terminal {
            Terminal::Empty => w.u8(0),
            Terminal::Leaf { key, value_hash } => w.u8(1).fixed(key).fixed(value_hash),
        };
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.count("state proof siblings", DEPTH, 32)?;
        let siblings = (0..n).map(|_| r.array()).collect::<Result<_, _>>()?;
        let terminal = match r.u8()? {
            0 => Terminal::Empty,
            1 => Terminal::Leaf {
                key: r.array()?,
                value_hash: r.array()?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "state proof terminal",
                    tag,
                });
            }
        };
        Ok(Proof { siblings, terminal })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof has {0} siblings, more than the tree depth 256")]
    TooDeep(usize),
    #[error("proof ends at a leaf whose key is not on the path of the key asked about")]
    LeafOffPath,
    #[error("proof does not hash to the root")]
    RootMismatch,
}

/// Checks `proof` for `key` against `root`. Returns `Some(value_hash)` if it proves presence and `None` if it
/// proves absence.
pub fn verify(root: &Hash, key: &Hash, proof: &Proof) -> Result<Option<Hash>, ProofError> {
    let depth = proof.siblings.len();
    if depth > DEPTH {
        return Err(ProofError::TooDeep(depth));
    }
    let (mut h, found) = match &proof.terminal {
        Terminal::Empty => (empty_hash(), None),
        Terminal::Leaf {
            key: leaf_key,
            value_hash,
        } => {
            if (0..depth).any(|i| bit(leaf_key, i) != bit(key, i)) {
                return Err(ProofError::LeafOffPath);
            }
            let found = (leaf_key == key).then_some(*value_hash);
            (leaf_hash(leaf_key, value_hash), found)
        }
    };
    for (i, sibling) in proof.siblings.iter().enumerate().rev() {
        h = if bit(key, i) {
            inner_hash(sibling, &h)
        } else {
            inner_hash(&h, sibling)
        };
    }
    if h == *root {
        Ok(found)
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// A node of the tree as kept in memory: a leaf, or two or more leaves that share the key bits `0..split` and
/// differ at bit `split`. Nodes are immutable and shared (`Arc`): an insert or remove copies only the path
/// from the root to the key, so cloning the tree costs nothing and the hashes of every untouched subtree
/// stay computed. An inner node's hash (as seen from depth `split`) is computed when first needed.
#[derive(Debug)]
enum Node {
    Leaf {
        key: Hash,
        value_hash: Hash,
    },
    Inner {
        split: u16,
        left: Arc<Node>,
        right: Arc<Node>,
        /// A key below this node: the bits `0..split` every key below shares.
        prefix: Hash,
        hash: OnceLock<Hash>,
    },
}

/// The first bit at which `a` and `b` differ (256 if they are equal).
fn first_difference(a: &Hash, b: &Hash) -> usize {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = x ^ y;
        if d != 0 {
            return i * 8 + d.leading_zeros() as usize;
        }
    }
    DEPTH
}

fn empty() -> Hash {
    static EMPTY: OnceLock<Hash> = OnceLock::new();
    *EMPTY.get_or_init(empty_hash)
}

impl Node {
    fn key(&self) -> &Hash {
        match self {
            Node::Leaf { key, .. } => key,
            Node::Inner { prefix, .. } => prefix,
        }
    }

    /// Two subtrees whose keys first differ at bit `split`, as one node.
    fn join(split: usize, a: Arc<Node>, b: Arc<Node>) -> Arc<Node> {
        let (left, right) = if bit(a.key(), split) { (b, a) } else { (a, b) };
        Arc::new(Node::Inner {
            split: u16::try_from(split).expect("a bit index is below 256"),
            prefix: *left.key(),
            left,
            right,
            hash: OnceLock::new(),
        })
    }

    /// The hash of the subtree holding exactly this node's keys, rooted at depth `from` (at most the node's
    /// split): above the split, each level pairs the subtree with an empty sibling.
    fn hash_from(&self, from: usize) -> Hash {
        match self {
            Node::Leaf { key, value_hash } => leaf_hash(key, value_hash),
            Node::Inner {
                split,
                left,
                right,
                prefix,
                hash,
            } => {
                let split = usize::from(*split);
                let mut h = *hash.get_or_init(|| {
                    inner_hash(&left.hash_from(split + 1), &right.hash_from(split + 1))
                });
                for i in (from..split).rev() {
                    h = if bit(prefix, i) {
                        inner_hash(&empty(), &h)
                    } else {
                        inner_hash(&h, &empty())
                    };
                }
                h
            }
        }
    }

    fn get(&self, key: &Hash) -> Option<&Hash> {
        match self {
            Node::Leaf { key: k, value_hash } => (k == key).then_some(value_hash),
            Node::Inner {
                split, left, right, ..
            } => {
                if bit(key, usize::from(*split)) {
                    right.get(key)
                } else {
                    left.get(key)
                }
            }
        }
    }

    /// This subtree with `key` set; `added` says whether the key is new.
    fn insert(node: &Arc<Node>, key: Hash, value_hash: Hash, added: &mut bool) -> Arc<Node> {
        let leaf = || Arc::new(Node::Leaf { key, value_hash });
        match &**node {
            Node::Leaf { key: k, .. } if *k == key => leaf(),
            Node::Leaf { key: k, .. } => {
                *added = true;
                Node::join(first_difference(k, &key), node.clone(), leaf())
            }
            Node::Inner {
                split,
                left,
                right,
                prefix,
                ..
            } => {
                let split = usize::from(*split);
                let d = first_difference(prefix, &key);
                if d < split {
                    *added = true;
                    return Node::join(d, node.clone(), leaf());
                }
                let (left, right) = if bit(&key, split) {
                    (left.clone(), Node::insert(right, key, value_hash, added))
                } else {
                    (Node::insert(left, key, value_hash, added), right.clone())
                };
                Arc::new(Node::Inner {
                    split: u16::try_from(split).expect("below 256"),
                    left,
                    right,
                    prefix: *prefix,
                    hash: OnceLock::new(),
                })
            }
        }
    }

    /// This subtree without `key` (`None` if nothing is left); the same node if the key is not in it.
    fn remove(node: &Arc<Node>, key: &Hash, removed: &mut bool) -> Option<Arc<Node>> {
        match &**node {
            Node::Leaf { key: k, .. } => {
                if k == key {
                    *removed = true;
                    None
                } else {
                    Some(node.clone())
                }
            }
            Node::Inner {
                split,
                left,
                right,
                prefix,
                ..
            } => {
                let split_at = usize::from(*split);
                if first_difference(prefix, key) < split_at {
                    return Some(node.clone());
                }
                let go_right = bit(key, split_at);
                let (child, other) = if go_right {
                    (right, left)
                } else {
                    (left, right)
                };
                let Some(kept) = Node::remove(child, key, removed) else {
                    return Some(other.clone());
                };
                if Arc::ptr_eq(&kept, child) {
                    return Some(node.clone());
                }
                let (left, right) = if go_right {
                    (left.clone(), kept)
                } else {
                    (kept, right.clone())
                };
                Some(Arc::new(Node::Inner {
                    split: *split,
                    left,
                    right,
                    prefix: *prefix,
                    hash: OnceLock::new(),
                }))
            }
        }
    }
}

/// The tree: a persistent binary trie of the keys, compressed to the bits where keys part, each subtree's
/// hash computed once and kept (see [`Node`]). Inserting, removing and proving touch one path; the root
/// recomputes only what changed since it was last asked for.
#[derive(Debug, Clone, Default)]
pub struct SparseMerkleTree {
    root: Option<Arc<Node>>,
    len: usize,
}

impl SparseMerkleTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &Hash) -> Option<&Hash> {
        self.root.as_ref()?.get(key)
    }

    pub fn insert(&mut self, key: Hash, value_hash: Hash) {
        let mut added = false;
        self.root = Some(match &self.root {
            None => {
                added = true;
                Arc::new(Node::Leaf { key, value_hash })
            }
            Some(root) => Node::insert(root, key, value_hash, &mut added),
        });
        self.len += usize::from(added);
    }

    pub fn remove(&mut self, key: &Hash) {
        let Some(root) = &self.root else {
            return;
        };
        let mut removed = false;
        self.root = Node::remove(root, key, &mut removed);
        self.len -= usize::from(removed);
    }

    pub fn root(&mut self) -> Hash {
        self.root.as_ref().map_or_else(empty, |r| r.hash_from(0))
    }

    pub fn prove(&self, key: &Hash) -> Proof {
        let mut siblings = Vec::new();
        let mut node = match &self.root {
            None => {
                return Proof {
                    siblings,
                    terminal: Terminal::Empty,
                };
            }
            Some(root) => root,
        };
        let mut depth = 0;
        loop {
            match &**node {
                Node::Leaf { key, value_hash } => {
                    return Proof {
                        siblings,
                        terminal: Terminal::Leaf {
                            key: *key,
                            value_hash: *value_hash,
                        },
                    };
                }
                Node::Inner {
                    split,
                    left,
                    right,
                    prefix,
                    ..
                } => {
                    let split = usize::from(*split);
                    // Above the split every key here goes one way: the sibling there is empty, unless the
                    // asked key parts from them, where its path ends empty beside the whole subtree.
                    for i in depth..split {
                        if bit(key, i) != bit(prefix, i) {
                            siblings.push(node.hash_from(i + 1));
                            return Proof {
                                siblings,
                                terminal: Terminal::Empty,
                            };
                        }
                        siblings.push(empty());
                    }
                    if bit(key, split) {
                        siblings.push(left.hash_from(split + 1));
                        node = right;
                    } else {
                        siblings.push(right.hash_from(split + 1));
                        node = left;
                    }
                    depth = split + 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The definition, computed directly from the sorted leaves: what the trie must agree with.
    fn reference_root(leaves: &[(Hash, Hash)], depth: usize) -> Hash {
        match leaves {
            [] => empty_hash(),
            [(k, v)] => leaf_hash(k, v),
            _ => {
                let at = leaves.partition_point(|(k, _)| !bit(k, depth));
                let (left, right) = leaves.split_at(at);
                inner_hash(
                    &reference_root(left, depth + 1),
                    &reference_root(right, depth + 1),
                )
            }
        }
    }

    fn h(i: u32) -> Hash {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn empty_and_single_leaf_roots() {
        let mut t = SparseMerkleTree::new();
        assert_eq!(t.root(), empty_hash());
        t.insert(h(1), h(100));
        assert_eq!(t.root(), leaf_hash(&h(1), &h(100)));
        t.remove(&h(1));
        assert_eq!(t.root(), empty_hash());
    }

    #[test]
    fn root_depends_on_contents_not_insertion_order() {
        let mut a = SparseMerkleTree::new();
        let mut b = SparseMerkleTree::new();
        for i in 0..50 {
            a.insert(h(i), h(i + 1000));
            b.insert(h(49 - i), h(49 - i + 1000));
        }
        assert_eq!(a.root(), b.root());
        b.insert(h(7), h(0));
        assert_ne!(a.root(), b.root());
    }

    #[test]
    fn presence_and_absence_proofs_verify() {
        let mut t = SparseMerkleTree::new();
        for i in 0..64 {
            t.insert(h(i), h(i + 1000));
        }
        let root = t.root();
        for i in 0..64 {
            assert_eq!(verify(&root, &h(i), &t.prove(&h(i))), Ok(Some(h(i + 1000))));
        }
        for i in 64..128 {
            assert_eq!(verify(&root, &h(i), &t.prove(&h(i))), Ok(None));
        }
    }

    #[test]
    fn forged_proofs_are_rejected() {
        let mut t = SparseMerkleTree::new();
        for i in 0..16 {
            t.insert(h(i), h(i + 1000));
        }
        let root = t.root();
        let present = t.prove(&h(3));

        // Claim another value for a present key.
        let mut wrong_value = present.clone();
        wrong_value.terminal = Terminal::Leaf {
            key: h(3),
            value_hash: h(0),
        };
        assert_eq!(
            verify(&root, &h(3), &wrong_value),
            Err(ProofError::RootMismatch)
        );

        // Claim absence of a present key by showing its path ends empty.
        let mut claim_empty = present.clone();
        claim_empty.terminal = Terminal::Empty;
        assert_eq!(
            verify(&root, &h(3), &claim_empty),
            Err(ProofError::RootMismatch)
        );

        // Use another key's presence proof as an absence proof for a key off its path.
        let other = t.prove(&h(5));
        let result = verify(&root, &h(3), &other);
        assert!(
            matches!(
                result,
                Err(ProofError::LeafOffPath | ProofError::RootMismatch)
            ),
            "{result:?}"
        );

        // Too deep.
        let deep = Proof {
            siblings: vec![[0; 32]; 257],
            terminal: Terminal::Empty,
        };
        assert_eq!(verify(&root, &h(3), &deep), Err(ProofError::TooDeep(257)));
    }

    #[test]
    fn keys_sharing_long_prefixes() {
        // Keys that differ only in the last bit force a path all the way down.
        let mut t = SparseMerkleTree::new();
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[31] = 1;
        t.insert(a, h(1));
        t.insert(b, h(2));
        let root = t.root();
        let p = t.prove(&a);
        assert_eq!(p.siblings.len(), 256);
        assert_eq!(verify(&root, &a, &p), Ok(Some(h(1))));
        let mut c = [0u8; 32];
        c[0] = 0x80;
        assert_eq!(verify(&root, &c, &t.prove(&c)), Ok(None));
    }

    proptest! {
        #[test]
        fn proofs_match_a_model(
            ops in proptest::collection::vec((0u32..40, proptest::option::of(0u32..5)), 0..80),
            probe in 0u32..40,
        ) {
            let mut t = SparseMerkleTree::new();
            let mut model = BTreeMap::new();
            for (k, v) in ops {
                match v {
                    Some(v) => { t.insert(h(k), h(v)); model.insert(k, v); }
                    None => { t.remove(&h(k)); model.remove(&k); }
                }
            }
            let root = t.root();
            let expected = model.get(&probe).map(|v| h(*v));
            prop_assert_eq!(verify(&root, &h(probe), &t.prove(&h(probe))), Ok(expected));
            let leaves: Vec<(Hash, Hash)> = model.iter().map(|(k, v)| (h(*k), h(*v))).collect::<BTreeMap<_, _>>().into_iter().collect();
            prop_assert_eq!(root, reference_root(&leaves, 0));
            prop_assert_eq!(t.len(), model.len());
        }

        /// Keys crowded into a few long shared prefixes (only the low bits of the last byte and one high bit
        /// vary), changed step by step on clones: every version keeps its own root, equal to the definition's.
        #[test]
        fn clones_keep_their_roots_and_match_the_definition(
            ops in proptest::collection::vec((0u8..16, any::<bool>(), proptest::option::of(0u32..5)), 0..60),
        ) {
            let key = |k: u8, high: bool| {
                let mut key = [0u8; 32];
                key[0] = if high { 0x80 } else { 0 };
                key[31] = k;
                key
            };
            let mut t = SparseMerkleTree::new();
            let mut model: BTreeMap<Hash, Hash> = BTreeMap::new();
            let mut versions = Vec::new();
            for (k, high, v) in ops {
                match v {
                    Some(v) => { t.insert(key(k, high), h(v)); model.insert(key(k, high), h(v)); }
                    None => { t.remove(&key(k, high)); model.remove(&key(k, high)); }
                }
                let leaves: Vec<(Hash, Hash)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(t.clone().root(), reference_root(&leaves, 0));
                versions.push((t.clone(), reference_root(&leaves, 0)));
                for probe in [key(k, high), key(k ^ 1, !high)] {
                    let root = t.root();
                    prop_assert_eq!(verify(&root, &probe, &t.prove(&probe)), Ok(model.get(&probe).copied()));
                }
            }
            for (mut v, root) in versions {
                prop_assert_eq!(v.root(), root);
            }
        }
    }
}

const TAG_LIST_LEAF: u8 = 3;
const TAG_LIST_NODE: u8 = 4;
const TAG_LIST_EMPTY: u8 = 5;

/// The root of an ordered list of hashes (transactions, receipts): a binary Merkle tree where an odd node
/// out is carried up unchanged, with its own domain tags and the list length mixed into the root so lists
/// of different lengths never share a root.
pub fn list_root(items: &[Hash]) -> Hash {
    if items.is_empty() {
        return *blake3::hash(&[TAG_LIST_EMPTY]).as_bytes();
    }
    let mut level: Vec<Hash> = items
        .iter()
        .map(|item| {
            let mut h = blake3::Hasher::new();
            h.update(&[TAG_LIST_LEAF]).update(item);
            *h.finalize().as_bytes()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => {
                    let mut h = blake3::Hasher::new();
                    h.update(&[TAG_LIST_NODE]).update(l).update(r);
                    *h.finalize().as_bytes()
                }
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_LIST_NODE])
        .update(&(items.len() as u64).to_be_bytes())
        .update(&level[0]);
    *h.finalize().as_bytes()
}

fn list_leaf(item: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_LIST_LEAF]).update(item);
    *h.finalize().as_bytes()
}

fn list_node(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_LIST_NODE]).update(left).update(right);
    *h.finalize().as_bytes()
}

/// The most siblings a list proof can need: lists hold fewer than 2^32 items.
pub const LIST_PROOF_SIBLINGS_MAX: usize = 32;

/// That an item sits at `index` in a list of `len` items: the sibling hashes on its way up to the root, for
/// the levels where it has one (an odd node out is carried up unchanged and has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListProof {
    pub index: u64,
    pub len: u64,
    pub siblings: Vec<Hash>,
}

impl ListProof {
    /// `index:u64 len:u64 count:u32 sibling:[32]*`, as proof files and deal sign requests carry it.
    pub fn encode_into(&self, w: &mut Writer) {
        w.u64(self.index)
            .u64(self.len)
            .u32(self.siblings.len() as u32);
        for s in &self.siblings {
            w.fixed(s);
        }
    }

    /// Decodes what [`ListProof::encode_into`] wrote, with at most [`LIST_PROOF_SIBLINGS_MAX`] siblings.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let index = r.u64()?;
        let len = r.u64()?;
        let n = r.count("list proof siblings", LIST_PROOF_SIBLINGS_MAX, 32)?;
        let siblings = (0..n).map(|_| r.array()).collect::<Result<_, _>>()?;
        Ok(ListProof {
            index,
            len,
            siblings,
        })
    }
}

/// The proof that `items[index]` is in the list whose root is [`list_root`]`(items)`. Panics if `index` is out of
/// range (a caller bug).
pub fn list_prove(items: &[Hash], index: usize) -> ListProof {
    assert!(
        index < items.len(),
        "index {index} of {} items",
        items.len()
    );
    let mut level: Vec<Hash> = items.iter().map(list_leaf).collect();
    let mut i = index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            siblings.push(level[sibling]);
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => list_node(l, r),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
        i /= 2;
    }
    ListProof {
        index: index as u64,
        len: items.len() as u64,
        siblings,
    }
}

/// Whether `proof` shows `item` at its index in the list whose root is `root`.
pub fn list_verify(root: &Hash, item: &Hash, proof: &ListProof) -> bool {
    if proof.index >= proof.len || proof.siblings.len() > LIST_PROOF_SIBLINGS_MAX {
        return false;
    }
    let (mut h, mut i, mut n) = (list_leaf(item), proof.index, proof.len);
    let mut siblings = proof.siblings.iter();
    while n > 1 {
        if i % 2 == 1 {
            let Some(s) = siblings.next() else {
                return false;
            };
            h = list_node(s, &h);
        } else if i + 1 < n {
            let Some(s) = siblings.next() else {
                return false;
            };
            h = list_node(&h, s);
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    if siblings.next().is_some() {
        return false;
    }
    let mut top = blake3::Hasher::new();
    top.update(&[TAG_LIST_NODE])
        .update(&proof.len.to_be_bytes())
        .update(&h);
    top.finalize().as_bytes() == root
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[test]
    fn every_item_of_every_list_length_proves_and_nothing_else_does() {
        for len in 1..=33usize {
            let items: Vec<Hash> = (0..len).map(|i| [i as u8 + 1; 32]).collect();
            let root = list_root(&items);
            for (i, item) in items.iter().enumerate() {
                let p = list_prove(&items, i);
                assert!(list_verify(&root, item, &p), "len {len} index {i}");
                assert!(
                    !list_verify(&root, &[0xEE; 32], &p),
                    "wrong item, len {len} index {i}"
                );
                let mut moved = p.clone();
                moved.index = (moved.index + 1) % len as u64;
                assert!(
                    len == 1 || !list_verify(&root, item, &moved),
                    "moved, len {len} index {i}"
                );
                let mut longer = p.clone();
                longer.len += 1;
                assert!(
                    !list_verify(&root, item, &longer),
                    "length, len {len} index {i}"
                );
                let mut extra = p.clone();
                extra.siblings.push([0; 32]);
                assert!(
                    !list_verify(&root, item, &extra),
                    "extra sibling, len {len} index {i}"
                );
            }
        }
    }

    #[test]
    fn list_roots_separate_order_and_length() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(list_root(&[a, b]), list_root(&[b, a]));
        assert_ne!(list_root(&[a]), list_root(&[a, a]));
        assert_ne!(list_root(&[]), list_root(&[[0; 32]]));
        assert_eq!(list_root(&[a, b, a]), list_root(&[a, b, a]));
    }
}
