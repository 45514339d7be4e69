//! The tiled ledger against two independent references: this crate's Merkle code over all the
//! leaves (`merkle::Levels`), and the `tlog_tiles` crate (Cloudflare's port of Go's
//! `sumdb/tlog`), whose tile arithmetic at height 8 is tlog-tiles' and whose tile reader
//! authenticates every tile it reads against the tree's root before it answers.
//!
//! Sizes: the boundaries of tiles and levels (1, 255, 256, 257, 65,535, 65,536, 65,537, two
//! segments and a bit), then random sizes, each reached from the nearest checkpointed size
//! below it by one integration.

use proptest::prelude::*;
use std::sync::OnceLock;
use weightvault_ledger::merkle::{self, Hash, Levels, Subtrees};
use weightvault_ledger::record::Record;
use weightvault_ledger::tiles::{
    self, integrate, BundleId, TileError, TileId, TileReader, TileSet, TlogPath, TreeHead,
    MAX_ENTRY_LEN,
};

const MAX: u64 = 2 * 65_536 + 300;
const CHECKPOINTS: &[u64] = &[1, 255, 256, 257, 65_535, 65_536, 65_537, MAX];

fn entry(i: u64) -> Vec<u8> {
    format!("{{\"kind\":\"test\",\"index\":{i}}}").into_bytes()
}

/// A bucket grown through every size of [`CHECKPOINTS`] (each keeps its partial tiles), the
/// heads, and every complete subtree of all `MAX` leaves.
struct Fixture {
    bucket: TileSet,
    heads: Vec<TreeHead>,
    levels: Levels,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut bucket = TileSet::new();
        let mut head = TreeHead::empty();
        let mut heads = vec![];
        for &to in CHECKPOINTS {
            let batch: Vec<Vec<u8>> = (head.size..to).map(entry).collect();
            let i = integrate(head, &bucket, &batch).unwrap();
            bucket.apply(&i).unwrap();
            head = i.new;
            heads.push(head);
        }
        let mut levels = Levels::default();
        (0..MAX).for_each(|i| levels.push(merkle::leaf_hash(&entry(i))));
        Fixture {
            bucket,
            heads,
            levels,
        }
    })
}

/// The fixture's bucket grown to `size` by one integration from the checkpoint below it.
fn bucket_at(size: u64) -> (TileSet, TreeHead) {
    let f = fixture();
    let below = f
        .heads
        .iter()
        .rev()
        .find(|h| h.size <= size)
        .copied()
        .unwrap_or_else(TreeHead::empty);
    let mut bucket = f.bucket.clone();
    let batch: Vec<Vec<u8>> = (below.size..size).map(entry).collect();
    let i = integrate(below, &bucket, &batch).unwrap();
    bucket.apply(&i).unwrap();
    (bucket, i.new)
}

fn their_tile(t: TileId) -> tlog_tiles::Tile {
    tlog_tiles::Tile::new(8, t.level(), t.index(), t.width() as u32, false)
}

/// `tlog_tiles`' tile reader over a bucket: its sumdb paths `tile/8/<L>/<N>` are tlog-tiles'
/// `tile/<L>/<N>` with the height, so each is read through this crate's path parser.
struct Theirs<'a>(&'a TileSet);

impl tlog_tiles::TileReader for Theirs<'_> {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let path: TlogPath = t.path().replacen("tile/8/", "tile/", 1).parse().unwrap();
                let TlogPath::Tile(id) = path else {
                    unreachable!()
                };
                // A partial tile that is not there is the prefix of the full one.
                let bytes = self
                    .0
                    .read(path)
                    .unwrap()
                    .or_else(|| self.0.read(id.full().path()).unwrap())
                    .ok_or(tlog_tiles::Error::InvalidTile)?;
                Ok(bytes[..32 * id.width() as usize].to_vec())
            })
            .collect()
    }

    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

fn theirs(p: Vec<tlog_tiles::Hash>) -> Vec<Hash> {
    p.into_iter().map(|h| h.0).collect()
}

/// Everything computed from the tiles of the tree `head` agrees with both references.
fn check_tree(bucket: &TileSet, head: TreeHead, indices: &[u64], olds: &[u64]) {
    let f = fixture();
    let n = head.size;
    assert_eq!(head.root, f.levels_root(n), "root of {n}");
    assert_eq!(tiles::tree_root(n, bucket).unwrap(), head.root);
    let reader = Theirs(bucket);
    let thr = tlog_tiles::TileHashReader::new(n, tlog_tiles::Hash(head.root), &reader);
    assert_eq!(tlog_tiles::tree_hash(n, &thr).unwrap().0, head.root);
    for &i in indices.iter().filter(|&&i| i < n) {
        let ours = tiles::inclusion_proof(i, n, bucket).unwrap();
        assert_eq!(
            Some(&ours),
            merkle::inclusion_proof_in(&f.levels, i, n).as_ref(),
            "inclusion {i}/{n}"
        );
        assert_eq!(ours, theirs(tlog_tiles::prove_record(n, i, &thr).unwrap()));
        assert!(merkle::verify_inclusion(
            i,
            n,
            &merkle::leaf_hash(&entry(i)),
            &ours,
            &head.root
        ));
        assert_eq!(tiles::read_entry(i, n, bucket).unwrap(), entry(i));
    }
    for &m in olds.iter().filter(|&&m| m <= n) {
        let ours = tiles::consistency_proof(m, n, bucket).unwrap();
        assert_eq!(
            Some(&ours),
            merkle::consistency_proof_in(&f.levels, m, n).as_ref(),
            "consistency {m}->{n}"
        );
        if m > 0 {
            assert_eq!(ours, theirs(tlog_tiles::prove_tree(n, m, &thr).unwrap()));
        }
        assert!(merkle::verify_consistency(
            m,
            n,
            &f.levels_root(m),
            &head.root,
            &ours
        ));
    }
}

impl Fixture {
    fn levels_root(&self, n: u64) -> Hash {
        merkle::range_root(&self.levels, 0, n)
    }
}

/// Indices at the edges of tiles and levels, and the ends of the tree.
fn edges(n: u64) -> Vec<u64> {
    let mut v = vec![0, 1, 2, 127, 128, 254, 255, 256, 257, 511, 512];
    v.extend([
        65_279, 65_280, 65_534, 65_535, 65_536, 65_537, 131_071, 131_072,
    ]);
    v.extend([
        n / 2,
        n.saturating_sub(257),
        n.saturating_sub(2),
        n.saturating_sub(1),
    ]);
    v
}

#[test]
fn proofs_at_tile_and_level_boundaries() {
    let f = fixture();
    for &head in &f.heads {
        let olds: Vec<u64> = edges(head.size)
            .into_iter()
            .chain(CHECKPOINTS.iter().copied())
            .collect();
        check_tree(&f.bucket, head, &edges(head.size), &olds);
    }
}

#[test]
fn integration_writes_the_tiles_tlog_tiles_says_under_its_paths() {
    let f = fixture();
    let mut from = TreeHead::empty();
    for &head in &f.heads {
        let batch: Vec<Vec<u8>> = (from.size..head.size).map(entry).collect();
        let i = integrate(from, &f.bucket, &batch).unwrap();
        assert_eq!(i.new, head);
        let ours: Vec<tlog_tiles::Tile> = i.tiles.iter().map(|(t, _)| their_tile(*t)).collect();
        let mut want = tlog_tiles::Tile::new_tiles(8, from.size, head.size);
        want.sort_by_key(|t| (t.level(), t.level_index()));
        assert_eq!(ours, want, "{} -> {}", from.size, head.size);
        for (t, _) in &i.tiles {
            assert_eq!(
                t.path().to_string(),
                their_tile(*t).path().replacen("tile/8/", "tile/", 1)
            );
        }
        // One entry bundle per level-0 tile, the same places.
        let bundles: Vec<BundleId> = i.bundles.iter().map(|(b, _)| *b).collect();
        let level0: Vec<BundleId> = i
            .tiles
            .iter()
            .filter(|(t, _)| t.level() == 0)
            .map(|(t, _)| BundleId::of_tile(*t))
            .collect();
        assert_eq!(bundles, level0);
        from = head;
    }
}

#[test]
fn a_segment_of_2_16_entries_is_one_full_level_1_tile() {
    let f = fixture();
    for segment in 0..2u64 {
        let tile = TileId::new(1, segment, 256).unwrap();
        let bytes = f.bucket.get(&tile.path()).expect("full level-1 tile");
        let hashes = tiles::decode_tile(bytes, 256).unwrap();
        let first = segment << 16;
        let leaves: Vec<Hash> = (first..first + 65_536)
            .map(|i| merkle::leaf_hash(&entry(i)))
            .collect();
        assert_eq!(merkle::root(&hashes), merkle::root(&leaves));
        assert_eq!(merkle::root(&hashes), f.levels.subtree(16, segment));
        // ... and exactly 256 full entry bundles, 256·segment to 256·segment + 255.
        for b in 0..256 {
            let id = BundleId::new(256 * segment + b, 256).unwrap();
            assert!(f.bucket.get(&id.path()).is_some());
        }
    }
}

#[test]
fn the_full_audit_passes_on_the_fixture() {
    let f = fixture();
    let head = *f.heads.last().unwrap();
    let mut next = 0;
    let r = tiles::audit(head, &f.bucket, |i, e| {
        if i != next {
            return Err(format!("entry {i} out of order"));
        }
        next += 1;
        (e == entry(i))
            .then_some(())
            .ok_or_else(|| format!("entry {i} differs"))
    })
    .unwrap();
    assert_eq!(r.entries, MAX);
    assert_eq!(r.bundles, MAX.div_ceil(256));
    assert_eq!(r.tiles, tiles::tiles_of(MAX).count() as u64);
}

/// The largest records the ledger writes list things; a `policy-reload` lists every decision
/// it withdrew. Where it crosses 65,535 bytes, integration refuses it (and says which entry).
#[test]
fn records_over_65535_bytes_are_refused_and_where_that_starts() {
    let time = "2026-01-01T00:00:00Z";
    let len = |n: u64| {
        let withdrawn: Vec<u64> = (0..n).map(|k| 1_000_000 + k).collect();
        Record::policy_reload(time, &withdrawn, None)
            .canonical()
            .len()
    };
    let (mut lo, mut hi) = (1, 10_000);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if len(mid) > MAX_ENTRY_LEN {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // 7-digit indices: 20 bytes per withdrawal in the record.
    assert!((3_200..3_400).contains(&lo), "{lo}");
    let withdrawn: Vec<u64> = (0..lo).map(|k| 1_000_000 + k).collect();
    let too_long = Record::policy_reload(time, &withdrawn, None).canonical();
    let fits = Record::policy_reload(time, &withdrawn[1..], None).canonical();
    let r = integrate(
        TreeHead::empty(),
        &TileSet::new(),
        &[fits.clone(), too_long],
    );
    assert!(matches!(r, Err(TileError::EntryTooLong { index: 1, .. })));
    assert!(integrate(TreeHead::empty(), &TileSet::new(), &[fits]).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn proofs_at_random_sizes(n in 1..=MAX, picks in prop::collection::vec(any::<u64>(), 6)) {
        let (bucket, head) = bucket_at(n);
        let indices: Vec<u64> = picks.iter().map(|p| p % n).collect();
        let olds: Vec<u64> = picks.iter().map(|p| p % (n + 1)).collect();
        check_tree(&bucket, head, &indices, &olds);
    }

    /// A root reads the right edge, exactly: the partial tile of each level.
    #[test]
    fn a_root_reads_exactly_the_partial_tiles(n in any::<u64>()) {
        let partial: Vec<TileId> = (0..=tiles::MAX_LEVEL)
            .filter_map(|l| TileId::in_tree(l, (n >> (8 * u32::from(l))) / 256, n))
            .filter(|t| !t.is_full())
            .collect();
        prop_assert_eq!(tiles::tiles_for_root(n), partial);
    }

    /// Batches of any sizes build the same bucket as one batch.
    #[test]
    fn batches_do_not_matter(cuts in prop::collection::vec(0..3_000u64, 1..6)) {
        let end = 3_000;
        let mut sizes: Vec<u64> = cuts;
        sizes.push(end);
        sizes.sort_unstable();
        let (mut b, mut head) = (TileSet::new(), TreeHead::empty());
        for s in sizes {
            let batch: Vec<Vec<u8>> = (head.size..s).map(entry).collect();
            let i = integrate(head, &b, &batch).unwrap();
            b.apply(&i).unwrap();
            head = i.new;
        }
        let (one, h) = bucket_at(end);
        prop_assert_eq!(head, h);
        for p in b.paths().filter(|p| p.is_immutable()) {
            prop_assert_eq!(b.get(p), one.get(p));
        }
        prop_assert!(tiles::audit(head, &b, |_, _| Ok::<_, String>(())).is_ok());
    }
}

/// The whole round as the integrator and an auditor would run it against a bucket: the
/// integrator writes the objects, then signs and publishes `checkpoint`; the auditor has the
/// bucket and the public key, nothing else, and keeps the last checkpoint it verified.
#[test]
fn an_auditor_with_the_bucket_and_the_public_key_alone() {
    use weightvault_ledger::checkpoint::{Checkpoint, LedgerSigner};
    use weightvault_ledger::words::{Kind, Outcome};
    let origin = "weightvault.test/ledger";
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let public = key.public_key().unwrap();
    let record = |i: u64| {
        Record::action(
            "2026-11-22T12:00:00Z",
            Kind::Seal,
            "alice",
            &format!("model-{i}"),
            Some("r1"),
            vec!["model.safetensors".into()],
            Outcome::Sealed,
        )
        .canonical()
    };
    let mut bucket = TileSet::new();
    let mut head = TreeHead::empty();
    let mut publish = |bucket: &mut TileSet, to: u64, time: u64| {
        let batch: Vec<Vec<u8>> = (head.size..to).map(record).collect();
        let i = integrate(head, &*bucket, &batch).unwrap();
        bucket.apply(&i).unwrap();
        let cp = i.checkpoint(origin, time);
        let sig = key.sign(cp.body().as_bytes()).unwrap();
        let note = cp.signed_note(origin, &public, &sig);
        bucket.insert(TlogPath::Checkpoint, note.clone().into_bytes());
        head = i.new;
        note
    };
    let read_note = |bucket: &TileSet| {
        String::from_utf8(bucket.get(&TlogPath::Checkpoint).unwrap().to_vec()).unwrap()
    };

    let first = publish(&mut bucket, 300, 1_000);
    // First visit: verify, audit every record, keep the checkpoint.
    let note = read_note(&bucket);
    let kept = tiles::verify_checkpoint(&note, origin, &public, &bucket).unwrap();
    let parsed = |_: u64, e: &[u8]| Record::parse(e).map(|_| ());
    let r = tiles::audit(TreeHead::from(&kept), &bucket, parsed).unwrap();
    assert_eq!(r.entries, 300);

    let old_bucket = bucket.clone();
    publish(&mut bucket, 70_000, 2_000);
    // Second visit: the new checkpoint, consistent with the kept one; a proof for any entry.
    let note = read_note(&bucket);
    let now = tiles::verify_checkpoint(&note, origin, &public, &bucket).unwrap();
    let c = tiles::prove_consistency(&note, origin, &public, kept.size, &bucket).unwrap();
    assert_eq!(c.verify(&kept.root, origin, &public).unwrap(), now);
    let p = tiles::prove_inclusion(&note, origin, &public, 65_537, &bucket).unwrap();
    assert_eq!(p.verify(origin, &public).unwrap(), now);
    assert_eq!(
        Record::parse(p.entry.as_bytes()).unwrap().model,
        "model-65537"
    );
    tiles::audit(TreeHead::from(&now), &bucket, parsed).unwrap();

    // A rollback to the older bucket, checkpoint and all, verifies on its own but is not a
    // successor of what the auditor kept.
    let rolled = read_note(&old_bucket);
    let back = tiles::verify_checkpoint(&rolled, origin, &public, &old_bucket).unwrap();
    assert!(matches!(
        tiles::prove_consistency(&rolled, origin, &public, now.size, &old_bucket),
        Err(TileError::SizeOrder { .. })
    ));
    assert_eq!(back, Checkpoint::verify(&first, origin, &public).unwrap());
    // A record rewritten in the bucket, its bundle and leaf tile made to agree: the audit
    // names the level-0 tile that no longer hashes to its place in the tile above.
    let mut forged = bucket.clone();
    let bundle = BundleId::new(0, 256).unwrap();
    let bytes = forged.get(&bundle.path()).unwrap().to_vec();
    let mut entries: Vec<Vec<u8>> = tiles::decode_bundle(&bytes, 256)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    entries[7] = record(9_999);
    let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    forged.insert(bundle.path(), tiles::encode_bundle(&entries).unwrap());
    forged.insert(bundle.tile().path(), tiles::encode_tile(&leaves));
    match tiles::audit(TreeHead::from(&now), &forged, parsed) {
        Err(TileError::TileAltered { tile, .. }) => assert_eq!(tile, bundle.tile().path()),
        other => panic!("{other:?}"),
    }
    // The whole history rebuilt around that record and re-signed with the ledger key (an
    // integrator gone rogue): everything in the bucket agrees, but not with what the auditor
    // kept.
    let mut history: Vec<Vec<u8>> = (0..70_000).map(record).collect();
    history[7] = record(9_999);
    let mut rogue = TileSet::new();
    let i = integrate(TreeHead::empty(), &rogue, &history).unwrap();
    rogue.apply(&i).unwrap();
    let cp = i.checkpoint(origin, 3_000);
    let note = cp.signed_note(origin, &public, &key.sign(cp.body().as_bytes()).unwrap());
    tiles::verify_checkpoint(&note, origin, &public, &rogue).unwrap();
    tiles::audit(i.new, &rogue, parsed).unwrap();
    let c = tiles::prove_consistency(&note, origin, &public, kept.size, &rogue).unwrap();
    assert!(c.verify(&kept.root, origin, &public).is_err());
}
