//! The ledger's durable log: group commit under concurrency, torn tails recovered, alteration
//! detected, and a full disk refusing every append (fail closed).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use weightvault::ledger::log::{LogError, LogFile};
use weightvault::ledger::merkle;

fn entry(i: u64) -> Vec<u8> {
    format!(
        "{{\"decision\":{i},\"pad\":\"{}\"}}",
        "x".repeat((i % 50) as usize)
    )
    .into_bytes()
}

#[test]
fn concurrent_appends_are_all_durable_and_in_the_tree() {
    let tmp = common::scratch();
    let path = tmp.path().join("ledger.log");
    let (log, rec) = LogFile::open(&path).unwrap();
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
    let root = merkle::root(&log.leaves());
    drop(log);
    let (reopened, rec) = LogFile::open(&path).unwrap();
    assert_eq!(rec.entries, 3200);
    assert_eq!(rec.discarded_bytes, 0);
    assert_eq!(merkle::root(&reopened.leaves()), root);
    let entries = LogFile::entries(&path).unwrap();
    for (i, e) in &acked {
        assert_eq!(&entries[*i as usize], e, "entry {i}");
    }
}

#[test]
fn a_torn_tail_is_discarded_at_every_byte_and_said() {
    let tmp = common::scratch();
    let path = tmp.path().join("ledger.log");
    let (log, _) = LogFile::open(&path).unwrap();
    for i in 0..10 {
        log.append(&entry(i)).unwrap();
    }
    drop(log);
    let full = std::fs::read(&path).unwrap();
    let last_frame = 4 + entry(9).len() + 32;
    let start = full.len() - last_frame;
    for cut in start + 1..full.len() {
        let p = tmp.path().join("cut.log");
        std::fs::write(&p, &full[..cut]).unwrap();
        // A reader (the auditor) is told of the torn write rather than skipping it.
        assert!(
            matches!(LogFile::entries(&p), Err(LogError::Torn { index: 9, .. })),
            "cut at {cut}"
        );
        let (log, rec) = LogFile::open(&p).unwrap();
        assert_eq!(rec.entries, 9, "cut at {cut}");
        assert_eq!(rec.discarded_bytes, (cut - start) as u64);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), start as u64);
        // The log goes on from there.
        assert_eq!(log.append(b"after").unwrap(), 9);
    }
}

#[test]
fn an_altered_entry_inside_the_log_is_an_error_not_a_truncation() {
    let tmp = common::scratch();
    let path = tmp.path().join("ledger.log");
    let (log, _) = LogFile::open(&path).unwrap();
    let mut offsets = Vec::new();
    let mut off = 0;
    for i in 0..10 {
        offsets.push(off);
        off += 4 + entry(i).len() + 32;
        log.append(&entry(i)).unwrap();
    }
    drop(log);
    let good = std::fs::read(&path).unwrap();
    for (i, at) in [
        (3usize, offsets[3] + 6),
        (0, offsets[0] + 4),
        (8, offsets[8] + 4 + entry(8).len() + 3),
    ] {
        let mut b = good.clone();
        b[at] ^= 1;
        std::fs::write(&path, &b).unwrap();
        match LogFile::open(&path) {
            Err(LogError::Corrupt { index, .. }) => assert_eq!(index, i as u64),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("altered entry {i} accepted"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b,
            "the log was changed by a failed open"
        );
    }
}

struct Mount(std::path::PathBuf);
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
    let path = mnt.join("ledger.log");
    let (log, _) = LogFile::open(&path).unwrap();
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
    let (reopened, rec) = LogFile::open(&path).unwrap();
    assert_eq!(
        rec.entries,
        acked.len() as u64,
        "acknowledged entries lost or extra ones kept"
    );
    assert_eq!(reopened.leaves().len(), acked.len());
}
