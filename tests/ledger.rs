//! The ledger's durable log: group commit under concurrency, write-once segments, torn tails
//! recovered, alteration detected, a full disk refusing every append (fail closed), and a
//! writer killed with SIGKILL at random moments losing nothing it acknowledged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weightvault::ledger::log::{Log, LogError, LogReader};
use weightvault::ledger::{merkle, Ledger};

fn entry(i: u64) -> Vec<u8> {
    format!(
        "{{\"decision\":{i},\"pad\":\"{}\"}}",
        "x".repeat((i % 50) as usize)
    )
    .into_bytes()
}

/// Every entry of the log in `dir` (frame hashes checked).
fn read_all(dir: &Path) -> Result<Vec<Vec<u8>>, LogError> {
    let mut v = Vec::new();
    LogReader::read(dir, true, &mut |_, e| {
        v.push(e.to_vec());
        Ok(())
    })?;
    Ok(v)
}

fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.log"))
}

/// [`Log::open_with`], waiting out a lock that this process's own dropped handle still holds
/// in a child that another test is forking: `fork` copies every descriptor, the lock's
/// included, until the child's `exec` closes it (`O_CLOEXEC`), so for a moment after a drop
/// the lock can look held by another process. (`one_process_appends_at_a_time` checks the
/// refusal of a real second appender with `Log::open` directly.)
fn open_with(
    dir: &std::path::Path,
    bits: u32,
) -> Result<(Log, weightvault::ledger::log::Recovery), LogError> {
    let t = std::time::Instant::now();
    loop {
        match Log::open_with(dir, bits) {
            Err(LogError::Busy(_)) if t.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

#[test]
fn concurrent_appends_are_all_durable_and_in_the_tree() {
    let tmp = common::scratch();
    let dir = tmp.path().join("log");
    // 64 entries per segment: the 3,200 appends close 50 segments, batches crossing them.
    let (log, rec) = open_with(&dir, 6).unwrap();
    assert_eq!(rec.entries, 0);
    let log = Arc::new(log);
    let mut handles = Vec::new();
    for t in 0..16u64 {
        let log = log.clone();
        handles.push(std::thread::spawn(move || {
            (0..200u64)
                .map(|k| {
                    let e = entry(t * 1000 + k);
                    (log.append(&e).unwrap(), e)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut acked: Vec<(u64, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort();
    let idx: BTreeSet<u64> = acked.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx.len(), 3200);
    assert_eq!(*idx.iter().next_back().unwrap(), 3199);
    let (size, root) = log.tree_head().unwrap();
    assert_eq!(size, 3200);
    let entries = read_all(&dir).unwrap();
    let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    assert_eq!(merkle::root(&leaves), root, "segmented tree head");
    for (i, e) in &acked {
        assert_eq!(&entries[*i as usize], e, "entry {i}");
    }
    // Proofs from the live log (closed segments loaded from their files) match the slice ones.
    for (i, n) in [
        (0, 3200),
        (63, 64),
        (64, 3200),
        (1000, 1234),
        (3199, 3200),
        (5, 70),
    ] {
        assert_eq!(
            log.inclusion_proof(i, n).unwrap(),
            merkle::inclusion_proof(&leaves[..n as usize], i),
            "inclusion {i}/{n}"
        );
        assert_eq!(
            log.consistency_proof(i, n).unwrap(),
            merkle::consistency_proof(&leaves[..n as usize], i),
            "consistency {i}->{n}"
        );
    }
    drop(log);
    let (reopened, rec) = open_with(&dir, 6).unwrap();
    assert_eq!(
        (rec.entries, rec.closed_segments, rec.discarded_bytes),
        (3200, 50, 0)
    );
    assert_eq!(reopened.tree_head().unwrap(), (3200, root));
    drop(reopened);
    // Opening with another segment size is refused rather than misread.
    assert!(matches!(open_with(&dir, 7), Err(LogError::Segments { .. })));
}

#[test]
fn closed_segments_are_read_only_and_never_change() {
    let tmp = common::scratch();
    let dir = tmp.path().join("log");
    let (log, _) = open_with(&dir, 2).unwrap();
    for i in 0..4 {
        log.append(&entry(i)).unwrap();
    }
    let first = std::fs::read(segment(&dir, 0)).unwrap();
    let mode = std::fs::metadata(segment(&dir, 0))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "a closed segment is read-only");
    for i in 4..11 {
        log.append(&entry(i)).unwrap();
    }
    assert_eq!(std::fs::read(segment(&dir, 0)).unwrap(), first);
    // Its root is a node of the tree: the tree of 8 entries is node(segment 0, segment 1).
    let r = LogReader::read(&dir, true, &mut |_, _| Ok(())).unwrap();
    let segs = r.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(
        merkle::node_hash(&segs[0].2, &segs[1].2),
        r.root(8).unwrap()
    );
    drop(log);
    // A crash after filling a segment but before starting the next: reopening closes it.
    let (log, _) = open_with(&dir, 2).unwrap();
    log.append(&entry(11)).unwrap();
    drop(log);
    std::fs::remove_file(segment(&dir, 12)).unwrap();
    std::fs::set_permissions(segment(&dir, 8), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (log, rec) = open_with(&dir, 2).unwrap();
    assert_eq!((rec.entries, rec.closed_segments), (12, 3));
    assert_eq!(log.append(b"next").unwrap(), 12);
    assert!(segment(&dir, 12).exists());
}

#[test]
fn a_torn_tail_is_discarded_at_every_byte_and_said() {
    let tmp = common::scratch();
    let dir = tmp.path().join("log");
    // Two closed segments of 4 and an open one holding entries 8 and 9.
    let (log, _) = open_with(&dir, 2).unwrap();
    for i in 0..10 {
        log.append(&entry(i)).unwrap();
    }
    drop(log);
    let open = segment(&dir, 8);
    let full = std::fs::read(&open).unwrap();
    let last_frame = 4 + entry(9).len() + 32;
    let start = full.len() - last_frame;
    for cut in start + 1..full.len() {
        std::fs::write(&open, &full[..cut]).unwrap();
        // A reader (the auditor) is told of the torn write rather than skipping it.
        assert!(
            matches!(read_all(&dir), Err(LogError::Torn { index: 9, .. })),
            "cut at {cut}"
        );
        let (log, rec) = open_with(&dir, 2).unwrap();
        assert_eq!(rec.entries, 9, "cut at {cut}");
        assert_eq!(rec.discarded_bytes, (cut - start) as u64);
        assert_eq!(std::fs::metadata(&open).unwrap().len(), start as u64);
        // The log goes on from there.
        assert_eq!(log.append(&entry(9)).unwrap(), 9);
        drop(log);
        assert_eq!(std::fs::read(&open).unwrap(), full);
    }
}

#[test]
fn an_altered_entry_inside_the_log_is_an_error_not_a_truncation() {
    let tmp = common::scratch();
    let dir = tmp.path().join("log");
    let (log, _) = open_with(&dir, 3).unwrap();
    let mut at = BTreeMap::new();
    for i in 0..12 {
        let seg = i / 8 * 8;
        let off = at
            .range(seg..)
            .map(|(_, (_, o, l))| o + l)
            .next_back()
            .unwrap_or(0);
        at.insert(i, (seg, off, 4 + entry(i).len() + 32));
        log.append(&entry(i)).unwrap();
    }
    drop(log);
    for (i, delta) in [(3u64, 6usize), (0, 4), (7, 40), (9, 5)] {
        let (seg, off, _) = at[&i];
        let path = segment(&dir, seg);
        let good = std::fs::read(&path).unwrap();
        let mut b = good.clone();
        b[off + delta] ^= 1;
        std::fs::write(&path, &b).unwrap();
        match open_with(&dir, 3) {
            Err(LogError::Corrupt { index, .. }) => assert_eq!(index, i),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("altered entry {i} accepted"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b,
            "the log was changed by a failed open"
        );
        std::fs::write(&path, &good).unwrap();
    }
    open_with(&dir, 3).unwrap();
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_every_append_and_the_log_still_verifies() {
    let tmp = common::scratch();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mounting a small tmpfs failed (tests run as root)"
    );
    let _m = Mount(mnt.clone());
    let dir = mnt.join("log");
    let (log, _) = open_with(&dir, 4).unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let e = vec![b'r'; 1000];
        match log.append(&e) {
            Ok(i) => acked.push(i),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "the disk never filled");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("No space left") && msg.contains("releases are refused"),
        "{msg}"
    );
    // Every later append is refused, even a tiny one that would fit.
    assert!(matches!(log.append(b"x"), Err(LogError::FailedClosed(..))));
    drop(log);
    let (reopened, rec) = open_with(&dir, 4).unwrap();
    assert_eq!(
        rec.entries,
        acked.len() as u64,
        "acknowledged entries lost or extra ones kept"
    );
    assert_eq!(reopened.len(), acked.len() as u64);
    assert_eq!(read_all(&dir).unwrap().len(), acked.len());
}

const CRASH_DIR: &str = "WEIGHTVAULT_CRASH_CHILD_DIR";
const CRASH_ORIGIN: &str = "weightvault.test/crash";

fn crash_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// Not a test: the child process of `sigkill_at_random_moments_loses_no_acknowledged_entry`
/// (run only when that test starts it, with the ledger directory in the environment). It
/// appends from 4 threads forever, printing "INDEX REQUESTER" after each acknowledged append,
/// and signs a checkpoint (with a software key) after every 8th append of its first thread.
#[test]
#[ignore = "child process of the SIGKILL crash test"]
fn crash_child() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let (l, _) = Ledger::open_with(Path::new(&dir), CRASH_ORIGIN, 3).unwrap();
    let l = Arc::new(l);
    let key = crash_key();
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let (l, key) = (l.clone(), key.clone());
            std::thread::spawn(move || {
                for k in 0..100_000u64 {
                    let mut r = common::record(k);
                    r.requester = format!("t{t}-{k}-{}", std::process::id());
                    let i = l.append(&r).unwrap();
                    writeln!(std::io::stdout().lock(), "{i} {}", r.requester).unwrap();
                    if t == 0 && k % 8 == 7 {
                        l.checkpoint(CRASH_ORIGIN, &key).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_entry() {
    let tmp = common::scratch();
    let dir = tmp.path().join("ledger");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut torn_tails = 0;
    for round in 0..60 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env(CRASH_DIR, &dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (first, appending) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if lines.is_empty() {
                    let _ = first.send(());
                }
                lines.push(line);
            }
            lines
        });
        // xorshift: a kill somewhere in 0..200 ms of appending, closing segments and
        // signing checkpoints; every fifth round during the opening (recovery) instead, at
        // 0..20 ms. The rest wait for the first acknowledgement, so a loaded machine, where
        // starting the child can take longer than the whole window, still tests appends.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = if round % 5 == 0 {
            seed % 20
        } else {
            let _ = appending.recv_timeout(std::time::Duration::from_secs(60));
            seed % 200
        };
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // The last line may be cut by the kill: it was not fully reported, so not counted.
            let Some((i, who)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(i), true) = (i.parse::<u64>(), who.matches('-').count() == 2) else {
                continue;
            };
            assert!(
                acked.insert(i, who.to_string()).is_none(),
                "index {i} acknowledged twice"
            );
        }
        let (l, rec) = Ledger::open_with(&dir, CRASH_ORIGIN, 3).unwrap();
        torn_tails += (rec.discarded_bytes > 0) as u32;
        drop(l);
        let mut found = BTreeMap::new();
        Ledger::entries(&dir, &mut |i, e| {
            let r = weightvault::ledger::record::Record::parse(e)?;
            found.insert(i, r.requester);
            Ok(())
        })
        .unwrap();
        for (i, who) in &acked {
            assert_eq!(
                found.get(i),
                Some(who),
                "round {round}: acknowledged entry {i} lost or changed"
            );
        }
    }
    let public = crash_key().verifying_key().to_bytes();
    let rep = Ledger::verify(&dir, CRASH_ORIGIN, &public).unwrap();
    eprintln!(
        "60 kills: {} acknowledged of {} entries, {} closed segments, {} checkpoints, {torn_tails} torn tails discarded",
        acked.len(),
        rep.entries,
        rep.closed_segments,
        rep.checkpoints
    );
    assert!(acked.len() > 1000, "the child hardly ran: {}", acked.len());
    assert!(rep.checkpoints > 10);
}

/// A witness's view: consistency proofs from every older size to the latest checkpoint verify
/// with the old root and the public key alone, and fail for a wrong old root or another key.
#[test]
fn witnesses_check_consistency_offline() {
    let tmp = common::scratch();
    let dir = tmp.path().join("ledger");
    let key = crash_key();
    let public = key.verifying_key().to_bytes();
    let (l, _) = Ledger::open_with(&dir, CRASH_ORIGIN, 2).unwrap();
    for i in 0..23 {
        l.append(&common::record(i)).unwrap();
    }
    l.checkpoint(CRASH_ORIGIN, &key).unwrap();
    let leaves: Vec<merkle::Hash> = read_all(&dir.join("segments"))
        .unwrap()
        .iter()
        .map(|e| merkle::leaf_hash(e))
        .collect();
    for old in 1..=23u64 {
        let p = Ledger::prove_consistency(&dir, old).unwrap();
        let old_root = merkle::root(&leaves[..old as usize]);
        let cp = p.verify(&old_root, CRASH_ORIGIN, &public).unwrap();
        assert_eq!(cp.size, 23);
        if old < 23 {
            let mut bad = old_root;
            bad[0] ^= 1;
            assert!(p.verify(&bad, CRASH_ORIGIN, &public).is_err(), "{old}");
        }
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        assert!(p
            .verify(&old_root, CRASH_ORIGIN, &other.verifying_key().to_bytes())
            .is_err());
    }
    assert!(Ledger::prove_consistency(&dir, 24).is_err());
}

#[test]
fn one_process_appends_at_a_time() {
    let tmp = common::scratch();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir).unwrap();
    log.append(b"a").unwrap();
    match Log::open(&dir) {
        Err(e @ LogError::Busy(_)) => {
            assert!(e
                .to_string()
                .contains("in use by another weightvault process"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second appender was let in"),
    }
    // Readers are not held up.
    assert_eq!(read_all(&dir).unwrap(), vec![b"a".to_vec()]);
    drop(log);
    open_with(&dir, weightvault::ledger::log::DEFAULT_SEGMENT_BITS).unwrap();
}

/// A record made while another process holds the ledger waits in the spool, whole, and the
/// holder appends it; with the ledger free it is appended at once, after what the spool holds.
/// A file in the spool that is not a canonical record is set aside, never appended.
#[test]
fn records_made_beside_the_holder_are_spooled_then_appended_in_order() {
    use weightvault::ledger::spool::{record as record_to, Recorded};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (holder, _) = Ledger::open(&dir, "test/spool").unwrap();
    holder.append(&common::record(0)).unwrap();
    let mut spooled = Vec::new();
    for i in 1..=3 {
        match record_to(&dir, "test/spool", &common::record(i)).unwrap() {
            Recorded::Spooled(p) => spooled.push(p),
            other => panic!("appended beside the holder: {other:?}"),
        }
    }
    assert!(spooled.iter().all(|p| p.exists()));
    assert_eq!(holder.len(), 1, "nothing appended by another process");
    std::fs::write(dir.join("spool").join("0-junk.json"), b"{\"kind\":1}").unwrap();
    let got = holder.ingest_spool().unwrap();
    assert_eq!(
        got.iter().map(|(i, r)| (*i, r.clone())).collect::<Vec<_>>(),
        (1..=3).map(|i| (i, common::record(i))).collect::<Vec<_>>()
    );
    assert!(spooled.iter().all(|p| !p.exists()), "spooled files removed");
    assert!(dir.join("spool").join("0-junk.json.bad").exists());
    assert!(
        holder.ingest_spool().unwrap().is_empty(),
        "each appended once"
    );
    // Another spooled record, then the holder stops: the next writer appends the spool first.
    assert!(matches!(
        record_to(&dir, "test/spool", &common::record(4)).unwrap(),
        Recorded::Spooled(_)
    ));
    drop(holder);
    assert_eq!(
        record_to(&dir, "test/spool", &common::record(5)).unwrap(),
        Recorded::Appended(5)
    );
    let mut all = Vec::new();
    Ledger::entries(&dir, &mut |_, e| {
        all.push(weightvault::ledger::record::Record::parse(e).unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(all, (0..=5).map(common::record).collect::<Vec<_>>());
}

/// A record longer than an entry may be (65,535 bytes, what a bundle of the published tiles
/// holds) is refused before it has an index, tiles configured or not; a policy reload that
/// withdrew more than one record lists is recorded in parts, chained by `follows`, that read
/// back whole whatever other writers appended between them.
#[test]
fn a_record_too_long_for_a_tile_is_refused_and_a_long_reload_is_recorded_in_parts() {
    use weightvault::actions::reload::first_reload;
    use weightvault::ledger::record::{Record, MAX_ENTRY_LEN};
    use weightvault::ledger::words::Kind;
    use weightvault::ledger::LedgerError;
    use weightvault::vault_ledger::LedgerReader;
    let tmp = common::scratch();
    let dir = tmp.path().join("ledger");
    let (l, _) = Ledger::open_with(&dir, CRASH_ORIGIN, 4).unwrap();
    l.append(&common::record(0)).unwrap();
    // The longest withdrawals there are (20-digit indices).
    let withdrawn: Vec<u64> = (0..4000).map(|i| u64::MAX - i).collect();
    let time = "2026-12-02T00:00:00Z";
    let whole = Record::policy_reload(time, &withdrawn, None);
    assert!(whole.canonical().len() > MAX_ENTRY_LEN);
    match l.append(&whole) {
        Err(LedgerError::TooLong(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("`policy-reload` record of"), "{msg}");
            assert!(msg.contains("(65535 bytes"), "{msg}");
        }
        other => panic!("a record of 130 KB was taken: {other:?}"),
    }
    assert_eq!(l.len(), 1, "the refused record has no index");
    let parts = Record::policy_reload_parts(time, &withdrawn, None);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].kind, Kind::Withdrawal);
    assert_eq!(parts[2].kind, Kind::PolicyReload);
    let mut prev = None;
    for (k, p) in parts.into_iter().enumerate() {
        assert!(p.entry().is_ok());
        prev = Some(l.append(&p.chained_to(prev)).unwrap());
        // Another writer's records between the parts.
        l.append(&common::record(10 + k as u64)).unwrap();
    }
    let reader = LedgerReader::Local(dir.clone());
    let (r, got) = first_reload(&reader, 1).unwrap().expect("the reload");
    assert_eq!(r.kind, Kind::PolicyReload);
    assert_eq!(r.follows, Some(3), "the head follows the second part");
    assert_eq!(got, withdrawn, "every withdrawal, in order");
    // A short reload is one record, as before.
    let one = Record::policy_reload_parts(time, &[7, 9], None);
    assert_eq!(one, vec![Record::policy_reload(time, &[7, 9], None)]);
}
