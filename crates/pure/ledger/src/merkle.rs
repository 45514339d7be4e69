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

/// Where the hashes of complete, aligned subtrees come from: level `k`, index `j` is the root
/// of leaves `j·2^k .. (j+1)·2^k`. A slice of leaves computes them; [`Levels`] and the
/// segmented log look them up, which makes every tree head and proof O(log² n).
pub trait Subtrees {
    /// The root of complete subtree `index` at `level`; only asked for subtrees that exist.
    fn subtree(&self, level: u32, index: u64) -> Hash;
}

impl Subtrees for [Hash] {
    fn subtree(&self, level: u32, index: u64) -> Hash {
        let a = (index << level) as usize;
        root_of(&self[a..a + (1usize << level)])
    }
}

fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// MTH of leaves `a..b` (RFC 6962 §2.1). Every left part of a split is a complete aligned
/// subtree, so this costs O(log n) lookups.
pub fn range_root<S: Subtrees + ?Sized>(s: &S, a: u64, b: u64) -> Hash {
    let n = b - a;
    if n == 0 {
        return empty_root();
    }
    if n.is_power_of_two() && a.is_multiple_of(n) {
        return s.subtree(n.trailing_zeros(), a >> n.trailing_zeros());
    }
    let k = split(n);
    node_hash(&range_root(s, a, a + k), &range_root(s, a + k, b))
}

/// MTH over leaf hashes (RFC 6962 §2.1).
pub fn root(leaves: &[Hash]) -> Hash {
    root_of(leaves)
}

/// Inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves of `s`
/// (RFC 6962 §2.1.1).
pub fn inclusion_proof_in<S: Subtrees + ?Sized>(s: &S, index: u64, size: u64) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    let (mut a, mut b) = (0, size);
    // Walk down, collecting siblings top first, then reverse to leaf-first order.
    while b - a > 1 {
        let k = split(b - a);
        if index < a + k {
            out.push(range_root(s, a + k, b));
            b = a + k;
        } else {
            out.push(range_root(s, a, a + k));
            a += k;
        }
    }
    out.reverse();
    Some(out)
}

/// Inclusion proof (audit path) of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    inclusion_proof_in(leaves, index, leaves.len() as u64)
}

/// Consistency proof between the trees of the first `old` and the first `size` leaves of `s`
/// (RFC 6962 §2.1.2).
pub fn consistency_proof_in<S: Subtrees + ?Sized>(s: &S, old: u64, size: u64) -> Option<Vec<Hash>> {
    if old > size {
        return None;
    }
    if old == 0 || old == size {
        return Some(vec![]);
    }
    let mut out = Vec::new();
    let (mut a, mut b, mut complete) = (0, size, true);
    let m = old;
    loop {
        if m == b {
            if !complete {
                out.push(range_root(s, a, b));
            }
            break;
        }
        let k = split(b - a);
        if m <= a + k {
            out.push(range_root(s, a + k, b));
            b = a + k;
        } else {
            out.push(range_root(s, a, a + k));
            a += k;
            complete = false;
        }
    }
    // Collected top-down; the RFC lists them bottom-up.
    out.reverse();
    Some(out)
}

/// Consistency proof between the first `old` leaves and all of `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], old: u64) -> Option<Vec<Hash>> {
    consistency_proof_in(leaves, old, leaves.len() as u64)
}

/// Hashes of complete, aligned subtrees, kept as leaves arrive: level 0 holds the leaves,
/// level `k` the root of every complete run of `2^k` of them (about 2n hashes in all).
#[derive(Debug, Default, Clone)]
pub struct Levels {
    levels: Vec<Vec<Hash>>,
}

impl Levels {
    /// Adds the next leaf, completing any subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let h = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(h);
            k += 1;
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether there is no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root of all leaves.
    pub fn root(&self) -> Hash {
        range_root(self, 0, self.len())
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], |l| l)
    }
}

impl Subtrees for Levels {
    fn subtree(&self, level: u32, index: u64) -> Hash {
        self.levels[level as usize][index as usize]
    }
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

    /// Known answers of transparency-dev/merkle (proof/verify_test.go), from Certificate
    /// Transparency's reference tests: (1-based leaf or old size, tree size, expected proof).
    const KNOWN_INCLUSION: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            3,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            2,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    const KNOWN_CONSISTENCY: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    #[test]
    fn known_inclusion_and_consistency_proofs() {
        let l = ct_leaves();
        let mut lv = Levels::default();
        l.iter().for_each(|h| lv.push(*h));
        let hexes = |p: Vec<Hash>| p.iter().map(hex::encode).collect::<Vec<_>>();
        for (leaf, size, want) in KNOWN_INCLUSION {
            let (i, n) = (leaf - 1, *size);
            let t = &l[..n as usize];
            let p = inclusion_proof(t, i).unwrap();
            assert_eq!(hexes(p.clone()), *want, "inclusion {leaf}/{size}");
            assert_eq!(inclusion_proof_in(&lv, i, n).unwrap(), p);
            assert!(verify_inclusion(i, n, &l[i as usize], &p, &root(t)));
        }
        for (old, size, want) in KNOWN_CONSISTENCY {
            let t = &l[..*size as usize];
            let p = consistency_proof(t, *old).unwrap();
            assert_eq!(hexes(p.clone()), *want, "consistency {old}->{size}");
            assert_eq!(consistency_proof_in(&lv, *old, *size).unwrap(), p);
            assert!(verify_consistency(
                *old,
                *size,
                &root(&l[..*old as usize]),
                &root(t),
                &p
            ));
        }
    }

    #[test]
    fn cached_subtrees_give_the_same_heads_and_proofs() {
        let leaves: Vec<Hash> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut lv = Levels::default();
        for (n, l) in leaves.iter().enumerate() {
            lv.push(*l);
            let n = n as u64 + 1;
            assert_eq!(lv.root(), root(&leaves[..n as usize]), "root {n}");
            for i in (0..n).step_by(7) {
                assert_eq!(
                    inclusion_proof_in(&lv, i, n),
                    inclusion_proof(&leaves[..n as usize], i)
                );
                assert_eq!(
                    consistency_proof_in(&lv, i, n),
                    consistency_proof(&leaves[..n as usize], i)
                );
            }
        }
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
