//! Key lifecycle through the real CLI and a real SoftHSM2 token: KEK rotation, rewrap without
//! re-encryption (also interrupted by SIGKILL), retirement.

mod common;

use common::cli_ok;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fresh vault with one sealed revision `m@r1` of `files` small safetensors shards (and a
/// hidden file, sealed like any other). Returns (scratch, vault, source dir).
fn sealed_vault(files: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = common::scratch();
    let vault = t.path().join("vault");
    let src = sealed_vault_at(&t, &vault, files);
    (t, vault, src)
}

/// [`sealed_vault`] with the vault at `vault`; returns the source dir (in `t`).
fn sealed_vault_at(t: &tempfile::TempDir, vault: &Path, files: usize) -> PathBuf {
    common::require_softhsm();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        common::write_safetensors(
            &src.join(format!("model-{i:03}.safetensors")),
            &[(
                "w",
                safetensors::Dtype::F32,
                vec![64, 64],
                common::bytes(i as u64, 64 * 64 * 4),
            )],
        );
    }
    std::fs::write(src.join(".gitattributes"), "*.safetensors filter=lfs\n").unwrap();
    common::init(vault);
    common::seal_ok(vault, &src, "m@r1", FACTS);
    src
}

/// The export facts every revision here is sealed with.
const FACTS: &[&str] = &["--eccn", "EAR99", "--training-ops", "1e20"];

/// KEK version → number of objects it opens, and the versions on the token.
fn kek_use(vault: &Path) -> (Vec<(u32, usize)>, Vec<u32>) {
    let v: serde_json::Value =
        serde_json::from_str(&cli_ok(vault, &["kek", "list", "--json"])).unwrap();
    let by = v["by_version"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, objs)| (k.parse().unwrap(), objs.as_array().unwrap().len()))
        .collect();
    let on = v["on_token"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    (by, on)
}

/// Every object opens: the revision verifies chunk by chunk and opens to the original bytes.
fn assert_all_open(vault: &Path, src: &Path, out: &Path) {
    cli_ok(vault, &["verify", "m@r1"]);
    let _ = std::fs::remove_dir_all(out);
    cli_ok(vault, &["open", "m@r1", "--out", out.to_str().unwrap()]);
    assert_eq!(common::tree_hashes(out), common::tree_hashes(src));
}

fn sealed_bytes_except_slots(vault: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    // Everything of every sealed file but its two key slots (which a rewrap may change).
    let mut v = Vec::new();
    let mut stack = vec![vault.join("models")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sealed") {
                let mut b = std::fs::read(&p).unwrap();
                let sf = weightvault::store::sealed::SealedFile::open(&p).unwrap();
                let o = sf.head.layout.key_slots_offset as usize;
                b[o..o + 2 * weightvault::format::KEY_SLOT_LEN].fill(0);
                v.push((p, b));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn rotate_rewrap_retire_changes_only_key_slots_and_reads_with_the_new_kek_alone() {
    let (t, vault, src) = sealed_vault(6);
    let before = sealed_bytes_except_slots(&vault);
    let objects = before.len();
    assert_eq!(objects, 6 + 2, "6 shards, .gitattributes and the manifest");
    assert_eq!(kek_use(&vault), (vec![(1, objects)], vec![1]));
    // The newest version cannot be retired; nothing to rewrap yet.
    let (ok, _, err) = common::cli(&vault, &["kek", "retire", "1"]);
    assert!(!ok && err.contains("still opens 8 object(s)"), "{err}");
    let out = cli_ok(&vault, &["rewrap"]);
    assert!(out.contains("rewrapped 0 object(s)"), "{out}");
    cli_ok(&vault, &["kek", "rotate"]);
    assert_eq!(kek_use(&vault), (vec![(1, objects)], vec![1, 2]));
    // Reading works with both versions present, before the rewrap.
    assert_all_open(&vault, &src, &t.path().join("open0"));
    let (ok, _, err) = common::cli(&vault, &["kek", "retire", "1"]);
    assert!(
        !ok && err.contains("run `weightvault rewrap` first"),
        "{err}"
    );
    let out = cli_ok(&vault, &["rewrap", "m@r1"]);
    assert!(
        out.contains("rewrapped 8 object(s)") && out.contains("8 from v1"),
        "{out}"
    );
    assert_eq!(kek_use(&vault), (vec![(2, objects)], vec![1, 2]));
    // Only key slots changed: headers, tag tables and ciphertext are byte-identical.
    assert_eq!(sealed_bytes_except_slots(&vault), before);
    cli_ok(&vault, &["kek", "retire", "1"]);
    assert_eq!(kek_use(&vault), (vec![(2, objects)], vec![2]));
    assert_all_open(&vault, &src, &t.path().join("open1"));
    let (ok, _, err) = common::cli(&vault, &["kek", "retire", "2"]);
    assert!(!ok, "the only (newest) version cannot go: {err}");
    let (ok, _, err) = common::cli(&vault, &["kek", "retire", "9"]);
    assert!(!ok && err.contains("not on the token"), "{err}");
    // A second rotation flips back to the first slot, with the next generation.
    cli_ok(&vault, &["kek", "rotate"]);
    cli_ok(&vault, &["rewrap"]);
    cli_ok(&vault, &["kek", "retire", "2"]);
    assert_eq!(kek_use(&vault), (vec![(3, objects)], vec![3]));
    assert_all_open(&vault, &src, &t.path().join("open2"));
    assert_eq!(sealed_bytes_except_slots(&vault), before);
}

#[test]
fn a_rewrap_killed_at_random_points_leaves_every_object_openable() {
    let (t, vault, src) = sealed_vault(40);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut mixed = 0;
    let kills = 24;
    // How long a whole rewrap takes here (process start included): kills land within it.
    cli_ok(&vault, &["kek", "rotate"]);
    let t0 = std::time::Instant::now();
    cli_ok(&vault, &["rewrap"]);
    let whole = t0.elapsed();
    for round in 0..kills {
        // A new version each round, so that every rewrap has all objects to move.
        cli_ok(&vault, &["kek", "rotate"]);
        let mut child = Command::new(common::bin())
            .arg("--vault")
            .arg(&vault)
            .args(["--quiet", "rewrap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(whole.mul_f64(0.05 + 0.9 * (rng % 1000) as f64 / 1000.0));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let (by, _) = kek_use(&vault);
        if by.len() > 1 {
            mixed += 1; // killed in the middle: objects under two versions
        }
        assert_eq!(
            by.iter().map(|(_, n)| n).sum::<usize>(),
            42,
            "round {round} ({status}): {by:?}"
        );
        assert_all_open(&vault, &src, &t.path().join("open"));
    }
    assert!(
        mixed >= 5,
        "only {mixed} of {kills} kills landed mid-rewrap: the test did not interrupt it"
    );
    // Finish, retire every old version: everything opens with the newest KEK alone.
    cli_ok(&vault, &["rewrap"]);
    let (_, on) = kek_use(&vault);
    let newest = *on.last().unwrap();
    for v in &on[..on.len() - 1] {
        cli_ok(&vault, &["kek", "retire", &v.to_string()]);
    }
    assert_eq!(kek_use(&vault), (vec![(newest, 42)], vec![newest]));
    assert_all_open(&vault, &src, &t.path().join("open"));
    println!("{mixed} of {kills} SIGKILLs landed in the middle of a rewrap (one takes {whole:?})");
}

#[test]
fn shred_destroys_a_revision_for_good_and_leaves_the_others() {
    // The end opens the token in this process: the vault is where SOFTHSM2_CONF points.
    let t = common::scratch();
    let hsm = common::in_process_vault();
    let vault = hsm.join("vault");
    let src = sealed_vault_at(&t, &vault, 4);
    common::seal_ok(&vault, &src, "m@r2", FACTS);
    // A backup of r1 taken before the shred.
    let r1 = vault.join("models/m/r1");
    let backup = t.path().join("backup-r1");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&r1)
        .arg(&backup)
        .status()
        .unwrap()
        .success());
    let (ok, _, err) = common::cli(&vault, &["shred", "m@r1"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let out = cli_ok(&vault, &["shred", "m@r1", "--yes"]);
    assert!(out.contains("m@r1: SHREDDED"), "{out}");
    assert!(out.contains("Checked: none of the"), "{out}");
    // open, verify: a plain "shredded" error. Other revisions are unaffected.
    for args in [
        vec!["verify", "m@r1"],
        vec![
            "open",
            "m@r1",
            "--out",
            t.path().join("o1").to_str().unwrap(),
        ],
    ] {
        let (ok, _, err) = common::cli(&vault, &args);
        assert!(
            !ok && err.contains("m@r1 was crypto-shredded"),
            "{args:?}: {err}"
        );
    }
    assert!(!t.path().join("o1").exists());
    let o2 = t.path().join("o2");
    cli_ok(&vault, &["verify", "m@r2"]);
    cli_ok(&vault, &["open", "m@r2", "--out", o2.to_str().unwrap()]);
    assert_eq!(common::tree_hashes(&o2), common::tree_hashes(&src));
    assert!(cli_ok(&vault, &["list"]).contains("SHREDDED"));
    // The ledger says so.
    let shown = cli_ok(&vault, &["audit", "show", "--json"]);
    let shred: Vec<serde_json::Value> = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["record"]["kind"] == "shred" || r["kind"] == "shred")
        .collect();
    assert_eq!(shred.len(), 1, "{shown}");
    // The HSM holds no key that opens it: every secret key on the token is tried against every
    // wrapped data key of the backup, and every backup file fails to unlock.
    let v = weightvault::store::Vault::open(&vault).unwrap();
    let kw = v.key_wrap().unwrap();
    let mut stack = vec![backup.clone()];
    let mut tried = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "sealed") {
                continue;
            }
            let sf = weightvault::store::sealed::SealedFile::open(&p).unwrap();
            for slot in sf.head.slots.iter().flatten() {
                let (keys, opened) = kw.keys_that_unwrap(&slot.wrapped).unwrap();
                assert!(keys >= 1);
                assert!(opened.is_empty(), "{}: {opened:?}", p.display());
                tried += 1;
            }
            let err = sf.unlock(&kw, "backup").err().expect("must not open");
            assert!(err.to_string().contains("not on token"), "{err}");
        }
    }
    assert_eq!(
        tried,
        4 + 1 + 1,
        "4 shards, .gitattributes and the manifest, one slot each"
    );
}

#[test]
fn a_softhsm_token_file_torn_by_a_killed_login_is_restored() {
    // SoftHSM2 rewrites token.object in place at every login; a process killed then leaves it
    // empty and the token (with every key) unreadable. The vault keeps the last good copy.
    let (t, vault, src) = sealed_vault(2);
    kek_use(&vault);
    let tokens = vault.join("hsm/tokens");
    let dir = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(dir.join("token.object.good")).unwrap();
    assert!(!good.is_empty());
    std::fs::write(dir.join("token.object"), b"").unwrap();
    assert_all_open(&vault, &src, &t.path().join("open"));
    assert!(!std::fs::read(dir.join("token.object")).unwrap().is_empty());
}
