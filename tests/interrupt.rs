//! Interrupted and failed `open`s against a real SoftHSM2 vault and a generated 1 GiB
//! revision: SIGINT, SIGTERM and SIGKILL at random moments leave no plaintext anywhere, end
//! with the shell's exit codes, and are in the ledger as what they were; failed opens are
//! recorded as failed; the operator is the uid's user whatever `$USER` says. (`fetch`
//! through the real service is interrupted the same way in `tests/release.rs`.)

mod common;

use common::leak::{big_checkpoint, interrupt_rounds, PlainIndex};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn wv(root: &Path, vault: &Path) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("--vault")
        .arg(vault)
        .env("WEIGHTVAULT_STATE_DIR", root.join("state"))
        .env("TMPDIR", root.join("tmp"))
        .env_remove("WEIGHTVAULT_HSM_PIN");
    c
}

fn records(root: &Path, vault: &Path) -> Vec<serde_json::Value> {
    let o = wv(root, vault)
        .args(["audit", "show", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .collect()
}

/// 20 SIGINTs, 20 SIGTERMs and 20 SIGKILLs at random moments of `open` of a 1 GiB revision.
#[test]
fn interrupted_opens_leave_no_plaintext_and_are_recorded_as_interrupted() {
    common::require_softhsm();
    let tmp = common::scratch();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let src = root.join("src");
    big_checkpoint(&src, 1024, 7);
    let index = PlainIndex::build(&src);
    assert!(index.len() > 10_000_000, "{} windows", index.len());
    let vault = root.join("vault");
    let o = wv(&root, &vault).arg("init").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = wv(&root, &vault)
        .args([
            "seal",
            src.to_str().unwrap(),
            "--model",
            "big",
            "--revision",
            "r0",
        ])
        .args(["--eccn", "EAR99", "--training-ops", "1e20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outs = root.join("outs");
    std::fs::create_dir_all(&outs).unwrap();
    let want = common::tree_hashes(&src);
    // The index and the hashes are all the rest needs of the source: free its GiB.
    std::fs::remove_dir_all(&src).unwrap();
    // One whole open first: the reference, and how long one takes.
    let t = Instant::now();
    let full = outs.join("whole");
    let o = wv(&root, &vault)
        .args(["open", "big@r0", "--out", full.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let took = t.elapsed();
    assert_eq!(common::tree_hashes(&full), want);
    std::fs::remove_dir_all(&full).unwrap();
    let out = outs.join("model");
    let tmp = root.join("tmp");
    let t = interrupt_rounds(
        took,
        || {
            let mut c = wv(&root, &vault);
            c.env("USER", "someone-else")
                .args(["open", "big@r0", "--out", out.to_str().unwrap()]);
            c
        },
        &out,
        &want,
        &index,
        &[&outs, &tmp],
        |_| {},
    );
    let (caught, killed, finished, after_kill) = (t.caught, t.killed, t.finished, t.after_kill);
    // gc records what SIGKILL left unrecorded and removes the (empty) scratch directories;
    // then nothing is left, and nothing anywhere under the test's directory holds plaintext
    // but the source.
    let o = wv(&root, &vault).args(["gc", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = wv(&root, &vault).arg("gc").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "nothing left behind"
    );
    let leaks = index.scan(&[&root], &[&src]);
    assert!(leaks.is_empty(), "plaintext left: {leaks:?}");
    // The ledger: every open's start has exactly one end; none but the finished ones completed.
    let recs = records(&root, &vault);
    let starts: Vec<usize> = (0..recs.len())
        .filter(|&i| recs[i]["kind"] == "operator-open")
        .collect();
    for &s in &starts {
        assert_eq!(recs[s]["outcome"], "started");
        assert_eq!(recs[s]["requester"], "root", "the uid's user, not $USER");
        let ends: Vec<_> = recs
            .iter()
            .filter(|r| r["kind"] == "open-end" && r["follows"] == s as u64)
            .collect();
        assert_eq!(ends.len(), 1, "start {s}: {ends:?}");
    }
    let count = |outcome: &str| {
        recs.iter()
            .filter(|r| r["kind"] == "open-end" && r["outcome"] == outcome)
            .count()
    };
    // A kill between naming the output and recording the end leaves a whole output recorded
    // as interrupted (its reason says so).
    assert!(count("completed") <= 1 + finished && count("completed") + after_kill > finished);
    // An open stopped before its start record has no record at all: at most all of them.
    assert!(count("interrupted") <= caught + killed);
    assert!(
        count("interrupted") >= (caught + killed) * 3 / 4,
        "{recs:?}"
    );
    assert!(recs
        .iter()
        .filter(|r| r["kind"] == "open-end" && r["outcome"] == "interrupted")
        .all(|r| r["reason"]
            .as_str()
            .is_some_and(|w| w.contains("SIG") || w.contains("died"))));
    // A re-run succeeds and matches.
    let o = wv(&root, &vault)
        .args(["open", "big@r0", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(common::tree_hashes(&out), want);
}

/// Opens that fail are recorded as failed, with the reason, never as allowed or completed.
#[test]
fn failed_opens_are_recorded_as_failed() {
    common::require_softhsm();
    let tmp = common::scratch();
    let root = tmp.path().to_path_buf();
    let vault = root.join("vault");
    common::init(&vault);
    let ck = root.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    common::write_safetensors(
        &ck.join("model.safetensors"),
        &[(
            "w",
            safetensors::Dtype::F32,
            vec![16, 16],
            common::bytes(1, 1024),
        )],
    );
    common::seal_ok(&vault, &ck, "m@r1", &[]);
    let unwritable = PathBuf::from("/proc/weightvault-cannot-write-here/out");
    let rows: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tensor".into(),
                "no.such.tensor".into(),
                "--out".into(),
                root.join("t.safetensors").to_string_lossy().into(),
            ],
            "has no tensor named 'no.such.tensor'",
        ),
        (
            vec!["--out".into(), unwritable.to_string_lossy().into()],
            "/proc/weightvault-cannot-write-here",
        ),
    ];
    for (args, want) in &rows {
        let mut a = vec!["open", "m@r1"];
        a.extend(args.iter().map(String::as_str));
        let out = Command::new(common::bin())
            .arg("--vault")
            .arg(&vault)
            .env("USER", "mallory")
            .env("WEIGHTVAULT_STATE_DIR", root.join("state"))
            .args(&a)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
        let recs = records(&root, &vault);
        let end = recs.last().unwrap();
        let start = &recs[end["follows"].as_u64().unwrap() as usize];
        assert_eq!(start["kind"], "operator-open");
        assert_eq!(start["outcome"], "started");
        assert_eq!(start["requester"], "root", "the uid's user, not $USER");
        assert_eq!(end["kind"], "open-end");
        assert_eq!(end["outcome"], "failed", "{end}");
        assert!(end["reason"].as_str().unwrap().contains(want), "{end}");
    }
    assert!(!root.join("t.safetensors").exists());
    // Under sudo (root with SUDO_UID), the invoking user is named too.
    let out = Command::new(common::bin())
        .arg("--vault")
        .arg(&vault)
        .env("SUDO_UID", "65534")
        .env("WEIGHTVAULT_STATE_DIR", root.join("state"))
        .args(["open", "m@r1", "--out", root.join("o").to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_success(&out);
    let recs = records(&root, &vault);
    let who = recs.last().unwrap()["requester"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(who.starts_with("root (sudo from "), "{who}");
    // None of these is an `allowed` open.
    assert!(recs.iter().all(|r| r["outcome"] != "allowed"));
}

/// `gc` removes a scratch directory whose command died and never one whose command runs.
#[test]
fn gc_leaves_a_running_commands_scratch_alone() {
    let tmp = common::scratch();
    let d = tmp.path();
    // A scratch directory whose lock is held by a live process (this one).
    let target = d.join("model");
    let held = weightvault::store::output::Scratch::beside(&target, "partial", false).unwrap();
    std::fs::write(held.path().join("x"), b"live").unwrap();
    // One abandoned by a killed command: its lock file is there but nobody holds it.
    std::fs::create_dir(d.join(".model.weightvault-partial-dead")).unwrap();
    std::fs::write(d.join(".model.weightvault-partial-dead.lock"), b"").unwrap();
    let out = Command::new(common::bin())
        .args([
            "--vault",
            d.join("no-vault").to_str().unwrap(),
            "gc",
            "--json",
        ])
        .arg(d)
        .env("WEIGHTVAULT_STATE_DIR", d.join("state"))
        .output()
        .unwrap();
    common::assert_success(&out);
    let report: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(report[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(".model.weightvault-partial-dead"));
    assert_eq!(report[0]["kind"], "partial-output");
    assert!(held.path().join("x").exists());
    assert!(!d.join(".model.weightvault-partial-dead.lock").exists());
}
