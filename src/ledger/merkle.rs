//! RFC 6962 / RFC 9162 Merkle trees over SHA-256: tree heads, inclusion proofs and consistency
//! proofs, and their verification. Pure; the log's storage keeps the leaf hashes.
//!
//! leaf = H(0x00 || entry), node = H(0x01 || left || right); the tree of n leaves splits at
//! the largest power of two smaller than n.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Hash of a leaf entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// Hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of an empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH over leaf hashes (RFC 6962 §2.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Inclusion proof (audit path) of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    if index >= leaves.len() as u64 {
        return None;
    }
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n as u64) as usize;
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root(&leaves[k..]));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(leaves, index as usize, &mut out);
    Some(out)
}

/// Consistency proof between the first `old` leaves and all of `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], old: u64) -> Option<Vec<Hash>> {
    let n = leaves.len() as u64;
    if old > n {
        return None;
    }
    if old == 0 || old == n {
        return Some(vec![]);
    }
    fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n as u64) as usize;
        if m <= k {
            subproof(m, &leaves[..k], complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(m - k, &leaves[k..], false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    subproof(old as usize, leaves, true, &mut out);
    Some(out)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
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

/// Verifies a consistency proof from (`old`, `old_root`) to (`new`, `new_root`) (RFC 9162
/// §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    fr == *old_root && sr == *new_root && s_n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of the RFC 6962 reference tests (Certificate Transparency's merkle_tree_test).
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    #[test]
    fn known_roots() {
        let want = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let l = ct_leaves();
        for (n, w) in want.iter().enumerate() {
            assert_eq!(hex::encode(root(&l[..n + 1])), *w, "size {}", n + 1);
        }
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_proof_verifies_and_every_mutation_fails() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() as u64 {
            let t = &leaves[..n as usize];
            let r = root(t);
            for i in 0..n {
                let p = inclusion_proof(t, i).unwrap();
                assert!(
                    verify_inclusion(i, n, &t[i as usize], &p, &r),
                    "incl {i}/{n}"
                );
                // A different size fails whenever it changes the proof's shape. (Where the shape
                // is the same, the hashes are too: a proof never authenticates the size by
                // itself, which is why checkpoints sign size and root together.)
                for n2 in [n + 1, n.saturating_sub(1), 2 * n, n + 7] {
                    if n2 > i && n2 as usize <= leaves.len() && n2 != n {
                        let same_shape =
                            inclusion_proof(&leaves[..n2 as usize], i).unwrap().len() == p.len();
                        if !same_shape {
                            assert!(
                                !verify_inclusion(i, n2, &t[i as usize], &p, &r),
                                "size {n2} for {i}/{n}"
                            );
                        }
                    }
                }
                if n > 1 {
                    assert!(
                        !verify_inclusion((i + 1) % n, n, &t[i as usize], &p, &r),
                        "index {i}/{n}"
                    );
                }
                let mut bad = r;
                bad[0] ^= 1;
                assert!(!verify_inclusion(i, n, &t[i as usize], &p, &bad));
                for k in 0..p.len() {
                    let mut q = p.clone();
                    q[k][31] ^= 1;
                    assert!(
                        !verify_inclusion(i, n, &t[i as usize], &q, &r),
                        "node {k} of {i}/{n}"
                    );
                }
                let mut longer = p.clone();
                longer.push(r);
                assert!(!verify_inclusion(i, n, &t[i as usize], &longer, &r));
            }
            for m in 0..=n {
                let p = consistency_proof(t, m).unwrap();
                let old = root(&t[..m as usize]);
                assert!(verify_consistency(m, n, &old, &r, &p), "cons {m}->{n}");
                if m > 0 && m < n {
                    for k in 0..p.len() {
                        let mut q = p.clone();
                        q[k][0] ^= 0x80;
                        assert!(
                            !verify_consistency(m, n, &old, &r, &q),
                            "node {k} of {m}->{n}"
                        );
                    }
                    if consistency_proof(t, m + 1).unwrap().len() != p.len() {
                        assert!(
                            !verify_consistency(m + 1, n, &old, &r, &p),
                            "size {m}+1->{n}"
                        );
                    }
                    let mut bad = old;
                    bad[5] ^= 1;
                    assert!(!verify_consistency(m, n, &bad, &r, &p));
                    if (n as usize) < leaves.len()
                        && consistency_proof(&leaves[..n as usize + 1], m)
                            .unwrap()
                            .len()
                            != p.len()
                    {
                        assert!(!verify_consistency(m, n + 1, &old, &r, &p), "{m}->{n}+1");
                    }
                }
            }
        }
    }
}
