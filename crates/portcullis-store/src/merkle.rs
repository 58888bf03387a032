//! RFC 6962 (RFC 9162 §2.1) Merkle trees over the audit chain.
//!
//! Leaf `i` is audit event `seq = i + 1`; its data is the 32 bytes of the event's chain hash
//! (which covers the event, its sequence number, time and every event before it). Leaf
//! hashes are `SHA-256(0x00 || data)`, interior nodes `SHA-256(0x01 || left || right)`, the
//! empty tree's root `SHA-256("")`.

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of a leaf holding `data`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree.
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf data of an audit event: its chain hash (64 hex digits) as bytes.
#[must_use]
pub fn leaf_of_chain_hash(chain_hash_hex: &str) -> Option<Hash> {
    let bytes = hex::decode(chain_hash_hex).ok()?;
    let data: [u8; 32] = bytes.try_into().ok()?;
    Some(leaf_hash(&data))
}

/// A tree grown one leaf at a time, keeping only the roots of its perfect subtrees (one
/// per set bit of the size): constant memory per leaf, `O(log n)` in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    stack: Vec<Hash>,
}

impl Frontier {
    /// Leaves so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing 1 bit of the old size is a subtree the new leaf completes.
        let mut size = self.size;
        while size & 1 == 1 {
            if let Some(left) = self.stack.pop() {
                node = node_hash(&left, &node);
            }
            size >>= 1;
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The root of the tree so far.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut subtrees = self.stack.iter().rev();
        let Some(last) = subtrees.next() else {
            return empty_root();
        };
        subtrees.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root of `leaves` (leaf hashes), by the definition.
#[must_use]
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree of `leaves` (RFC 9162 §2.1.3.1), nearest
/// sibling first. `None` when `index` is out of range.
#[must_use]
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0, leaves.len(), index);
    // Walk down from the root, collecting the sibling subtree at each level; the proof
    // lists them from the leaf up, so reverse at the end.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(root_of(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(root_of(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Whether `proof` shows the leaf `leaf` at `index` in a tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
#[must_use]
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn the_frontier_root_is_the_defined_root_at_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.size(), i as u64 + 1);
            assert_eq!(frontier.root(), root_of(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn rfc6962_shapes_are_followed() {
        let l = leaves(3);
        // Three leaves: ((0, 1), 2).
        assert_eq!(root_of(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        let digest = |data: &[u8]| -> Hash { Sha256::digest(data).into() };
        assert_eq!(empty_root(), digest(b""));
        assert_ne!(leaf_hash(b"x"), digest(b"x"), "leaves are domain-separated");
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        for n in 1..=33 {
            let all = leaves(n);
            let root = root_of(&all);
            for (i, leaf) in all.iter().enumerate() {
                let proof = inclusion_proof(&all, i).unwrap_or_default();
                assert!(verify_inclusion(leaf, i as u64, n as u64, &proof, &root), "{i} of {n}");
                let other = leaf_hash(b"not in the tree");
                assert!(!verify_inclusion(&other, i as u64, n as u64, &proof, &root));
                if n > 1 {
                    assert!(!verify_inclusion(leaf, ((i + 1) % n) as u64, n as u64, &proof, &root));
                }
                // The size and root are signed together; a proof against another root fails.
                assert!(!verify_inclusion(leaf, i as u64, n as u64, &proof, &empty_root()));
            }
            assert!(inclusion_proof(&all, n).is_none());
        }
    }
}
