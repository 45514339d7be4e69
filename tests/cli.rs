//! The command line as a person uses it: one-line errors, exit codes, several processes at
//! once against one token, a full disk, a killed seal. Each test has its own vault and runs the
//! real binary, so each has its own SoftHSM2 configuration.

mod common;

use common::*;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn small_checkpoint(dir: &Path, seed: u64, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("model.safetensors");
    write_safetensors(&p, &[("w", Dtype::F32, vec![n], bytes(seed, n * 4))]);
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    dir.to_path_buf()
}

/// A failing command: exit non-zero, exactly one line on stderr that names the problem.
fn assert_fails(r: (bool, String, String), want: &str) {
    let (ok, out, err) = r;
    assert!(!ok, "succeeded but should fail with '{want}': {out}");
    assert_eq!(err.lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("weightvault: error: "), "{err}");
    assert!(err.contains(want), "stderr '{}' lacks '{want}'", err.trim());
}

#[test]
fn errors_are_one_line_and_actionable() {
    let tmp = scratch();
    let v = tmp.path().join("vault");
    assert_fails(cli(&v, &["list"]), "no vault at");
    init(&v);
    // init is idempotent and keeps the token.
    let (ok, out, _) = cli(&v, &["init"]);
    assert!(ok && out.contains("versions [1]"), "{out}");
    assert_fails(
        cli(&v, &["policy", "reload"]),
        "no `weightvault serve` runs",
    );
    // A pid file left by a killed service, naming a process that is not one.
    std::fs::write(v.join("serve.pid"), format!("{}\n", std::process::id())).unwrap();
    assert_fails(cli(&v, &["policy", "reload"]), "a stale file");
    std::fs::remove_file(v.join("serve.pid")).unwrap();
    let ck = small_checkpoint(&tmp.path().join("ck"), 1, 1000);
    let s = ck.to_str().unwrap();
    assert_fails(seal(&v, "/nonexistent", "m@r", &[]), "/nonexistent");
    let txt = tmp.path().join("notes.safetensors");
    std::fs::write(&txt, b"hello world, not tensors").unwrap();
    assert_fails(seal(&v, &txt, "m@r", &[]), "not a valid safetensors file");
    assert_fails(
        seal(&v, s, "m/x/y@r", &[]),
        "model name 'm/x/y' is not allowed",
    );
    let (ok, out, err) = seal(&v, s, "m@r1", &[]);
    assert!(ok, "{out}{err}");
    assert_fails(seal(&v, s, "m@r1", &[]), "already sealed");
    assert_fails(cli(&v, &["verify", "m@r9"]), "no revision m@r9");
    assert_fails(cli(&v, &["verify", "nomodel@r1"]), "no model 'nomodel'");
    let out_dir = tmp.path().join("nonempty");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("x"), b"x").unwrap();
    assert_fails(
        cli(&v, &["open", "m@r1", "--out", out_dir.to_str().unwrap()]),
        "is not an empty directory",
    );
    // Wrong PIN.
    let out = Command::new(bin())
        .args(["--vault", v.to_str().unwrap(), "verify", "m@r1"])
        .env("WEIGHTVAULT_HSM_PIN", "not-the-pin")
        .output()
        .unwrap();
    assert_fails(
        (
            out.status.success(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into(),
        ),
        "wrong PIN",
    );
    // Token missing, module missing: edit the config.
    let cfg = std::fs::read_to_string(v.join("vault.toml")).unwrap();
    std::fs::write(
        v.join("vault.toml"),
        cfg.replace("token_label = \"weightvault\"", "token_label = \"gone\""),
    )
    .unwrap();
    assert_fails(cli(&v, &["verify", "m@r1"]), "no HSM token labelled 'gone'");
    std::fs::write(
        v.join("vault.toml"),
        cfg.replace("libsofthsm2.so", "libnothere.so"),
    )
    .unwrap();
    assert_fails(cli(&v, &["verify", "m@r1"]), "cannot load PKCS#11 module");
    std::fs::write(
        v.join("vault.toml"),
        cfg.replace("[seal]", "[seal]\nbogus = 1"),
    )
    .unwrap();
    assert_fails(cli(&v, &["list"]), "vault.toml");
    std::fs::write(v.join("vault.toml"), &cfg).unwrap();
    let (ok, out, err) = cli(&v, &["verify", "m@r1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("authentic"), "{out}");
}

#[test]
fn a_revision_under_another_kek_does_not_open() {
    let tmp = scratch();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a);
    init(&b);
    let ck = small_checkpoint(&tmp.path().join("ck"), 2, 5000);
    let (ok, _, err) = seal(&a, &ck, "m@r1", &[]);
    assert!(ok, "{err}");
    // Copy the sealed revision into vault b, whose token has a different KEK of the same label.
    let st = Command::new("cp")
        .args([
            "-r",
            a.join("models").to_str().unwrap(),
            b.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_fails(
        cli(&b, &["verify", "m@r1"]),
        "could not unwrap the data key",
    );
    let out = tmp.path().join("out");
    assert_fails(
        cli(&b, &["open", "m@r1", "--out", out.to_str().unwrap()]),
        "could not unwrap",
    );
    assert!(!out.exists());
    // The CLI round trip in the right vault is byte-identical.
    let (ok, _, err) = cli(&a, &["open", "m@r1", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(tree_hashes(&out), tree_hashes(&ck));
}

#[test]
fn many_processes_share_one_token() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 3, 300_000);
    let (ok, _, err) = seal(&v, &ck, "m@base", &[]);
    assert!(ok, "{err}");
    // 3 rounds of 6 processes at once: 3 sealing new revisions, 3 verifying, all logging in.
    for round in 0..3 {
        let mut children = Vec::new();
        for i in 0..6 {
            let mut c = Command::new(bin());
            c.args(["--vault", v.to_str().unwrap(), "--quiet"]);
            if i % 2 == 0 {
                c.args(["seal", ck.to_str().unwrap(), "--model", "m", "--revision"])
                    .arg(format!("r{round}-{i}"));
            } else {
                c.args(["verify", "m@base"]);
            }
            children.push(
                c.stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let (ok, out, _) = cli(&v, &["list"]);
    assert!(ok);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("m ")).count(),
        10,
        "{out}"
    );
}

/// A killed seal leaves nothing that `list` shows and no plaintext; the revision can be sealed
/// again afterwards.
#[test]
fn a_killed_seal_leaves_nothing_visible() {
    let (tmp, v) = common::fresh_vault();
    // 256 MiB, so that the seal is still running when it is killed.
    let ck = small_checkpoint(&tmp.path().join("ck"), 4, 64 << 20);
    let model_dir = v.join("models/big");
    let mut killed_mid_seal = false;
    for _attempt in 0..5 {
        let mut child = Command::new(bin())
            .args([
                "--vault",
                v.to_str().unwrap(),
                "--quiet",
                "seal",
                ck.to_str().unwrap(),
            ])
            .args(["--model", "big", "--revision", "r1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        // Wait until a sealed file is being written, then kill.
        let staged = loop {
            let found = std::fs::read_dir(&model_dir).ok().and_then(|rd| {
                rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".r1.weightvault-staging-")
                        && p.join("revision/files").exists()
                })
            });
            if found.is_some() || t.elapsed() > Duration::from_secs(20) {
                break found;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.success() {
            // Finished before the kill: not the case under test; start again.
            std::fs::remove_dir_all(model_dir.join("r1")).unwrap();
            continue;
        }
        let staged = staged.expect("a staging directory appeared");
        killed_mid_seal = true;
        let (ok, out, _) = cli(&v, &["list"]);
        assert!(ok);
        assert!(!out.contains("big"), "a killed seal is listed: {out}");
        // What was left is ciphertext only.
        for e in walk(&staged) {
            assert!(
                e.to_string_lossy().ends_with(".sealed"),
                "non-sealed file left: {}",
                e.display()
            );
        }
        break;
    }
    assert!(
        killed_mid_seal,
        "could not kill a seal mid-way in 5 attempts"
    );
    let (ok, _, err) = seal(&v, &ck, "big@r1", &[]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&v, &["list"]);
    assert!(ok && out.contains("big"), "{out}");
    // The new seal swept the killed one's staging.
    let left: Vec<_> = std::fs::read_dir(&model_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("r1")], "{left:?}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk: a clear refusal, nothing listed, nothing partial kept.
#[test]
fn a_full_disk_is_a_clear_refusal() {
    let tmp = scratch();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=3m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .expect("mount(8)");
    assert!(
        st.success(),
        "mounting a 3 MiB tmpfs failed (the test suite runs as root)"
    );
    let _m = Mount(mnt.clone());
    let v = mnt.join("vault");
    init(&v);
    let ck = small_checkpoint(&tmp.path().join("ck"), 5, 2 << 20); // 8 MiB
    assert_fails(seal(&v, &ck, "m@r1", &[]), "disk full while writing");
    let (ok, out, _) = cli(&v, &["list"]);
    assert!(ok && out.contains("no sealed models"), "{out}");
    let left: Vec<_> = std::fs::read_dir(v.join("models/m")).unwrap().collect();
    assert!(left.is_empty(), "partial seal kept: {left:?}");
    // A small checkpoint still seals and opens in the space left.
    let small = small_checkpoint(&tmp.path().join("ck2"), 6, 1000);
    let (ok, _, err) = seal(&v, &small, "m@r2", &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&v, &["verify", "m@r2"]);
    assert!(ok, "{err}");
}

/// A model sealed with training facts that disagree with the inventory is never released.
#[test]
fn sealed_facts_that_disagree_with_the_inventory_deny() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 7, 1000);
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let check = |model: &str| {
        Command::new(bin())
            .args([
                "--vault",
                v.to_str().unwrap(),
                "policy",
                "check",
                "--json",
                "--date",
                "2026-06-01",
            ])
            .args([
                "--requester",
                "alice@acme.example",
                "--host-country",
                "US",
                "--model",
                model,
            ])
            .arg("--policies")
            .arg(&policies)
            .output()
            .unwrap()
    };
    // acme-small is 4e24 closed in the inventory; sealed claiming 5e26 operations.
    let (ok, _, err) = seal(
        &v,
        &ck,
        "acme-small@r1",
        &["--training-ops", "5e26", "--force"],
    );
    assert!(ok, "{err}");
    let out = check("acme-small");
    assert_eq!(out.status.code(), Some(1));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &d["checks"][1];
    assert_eq!(
        (c["check"].as_str(), c["verdict"].as_str()),
        (Some("classification"), Some("fail")),
        "{d}"
    );
    assert!(c["reason"].as_str().unwrap().contains("disagree"), "{c}");
    // Sealed with the inventory's facts, it passes.
    let (ok, _, err) = seal(
        &v,
        &ck,
        "acme-threshold@r1",
        &["--training-ops", "1e26", "--eccn", "4E091"],
    );
    assert!(ok, "{err}");
    let out = check("acme-threshold");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `open` is recorded in the ledger; checkpoints are signed by the HSM; `audit verify`,
/// `audit prove` and the offline `audit verify-proof` agree, and a tampered ledger fails.
#[test]
fn opens_are_audited() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 8, 1000);
    let (ok, _, err) = seal(&v, &ck, "m@r1", &[]);
    assert!(ok, "{err}");
    for i in 0..3 {
        let out = tmp.path().join(format!("out{i}"));
        let (ok, stdout, err) = cli(&v, &["open", "m@r1", "--out", out.to_str().unwrap()]);
        assert!(ok, "{err}");
        // Entry 0 is the seal; each open is a start and an end.
        assert!(
            stdout.contains(&format!("(ledger entries {}, {})", 1 + 2 * i, 2 + 2 * i)),
            "{stdout}"
        );
    }
    let (ok, note, err) = cli(&v, &["audit", "checkpoint"]);
    assert!(ok, "{err}");
    assert!(note.starts_with("weightvault.local/ledger\n7\n"), "{note}");
    let (ok, out, _) = cli(&v, &["audit", "show"]);
    assert!(
        ok && out.lines().count() == 7
            && out
                .lines()
                .filter(|l| l.contains(" operator-open ") && l.contains(" started"))
                .count()
                == 3
            && out
                .lines()
                .filter(|l| l.contains(" open-end ") && l.contains(" completed"))
                .count()
                == 3,
        "{out}"
    );
    // Output into a pipe nobody reads any more (`audit show | head -0`) ends quietly, without
    // the panic `println!` gives.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let r = Command::new(bin())
        .arg("--vault")
        .arg(&v)
        .args(["audit", "show"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success() && err.is_empty(),
        "{:?}: {err}",
        r.status
    );
    let (ok, out, err) = cli(&v, &["audit", "verify"]);
    assert!(
        ok && out.contains("7 entries (0 closed segments), 1 checkpoints"),
        "{out}{err}"
    );
    // Filters: by model, requester and time; JSON lines carry the index.
    let (ok, out, err) = cli(&v, &["audit", "show", "--model", "m", "--json"]);
    assert!(ok && out.lines().count() == 7, "{out}{err}");
    assert!(
        out.starts_with("{\"index\":0,\"record\":{\"kind\":\"seal\""),
        "{out}"
    );
    let (ok, out, _) = cli(&v, &["audit", "show", "--model", "other"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = cli(&v, &["audit", "show", "--requester", "nobody@example"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = cli(&v, &["audit", "show", "--since", "2000-01-01"]);
    assert!(ok && out.lines().count() == 7, "{out}");
    let (ok, out, _) = cli(&v, &["audit", "show", "--since", "2999-01-01T00:00:00Z"]);
    assert!(ok && out.is_empty(), "{out}");
    assert_fails(
        cli(&v, &["audit", "show", "--since", "yesterday"]),
        "expected an RFC 3339 time",
    );
    // A witness holding the checkpoint of size 1 gets a consistency proof to the latest.
    let (ok, out, err) = cli(&v, &["audit", "consistency", "--from", "1"]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["old_size"], 1);
    assert_eq!(c["proof"].as_array().unwrap().len(), 3, "{c}");
    let (ok, key, _) = cli(&v, &["audit", "public-key"]);
    assert!(ok);
    let key = key.trim().to_string();
    let (ok, proof, err) = cli(&v, &["audit", "prove", "1"]);
    assert!(ok, "{err}");
    let pf = tmp.path().join("proof.json");
    std::fs::write(&pf, &proof).unwrap();
    // Offline: no vault needed.
    let (ok, out, err) = cli(
        &tmp.path().join("no-vault"),
        &[
            "audit",
            "verify-proof",
            pf.to_str().unwrap(),
            "--public-key",
            &key,
        ],
    );
    assert!(
        ok && out.contains("entry 1 is in the ledger at checkpoint size 7"),
        "{out}{err}"
    );
    let tampered = proof.replacen("operator-open", "operator-opem", 1);
    std::fs::write(&pf, tampered).unwrap();
    let (ok, _, _) = cli(
        &tmp.path().join("no-vault"),
        &[
            "audit",
            "verify-proof",
            pf.to_str().unwrap(),
            "--public-key",
            &key,
        ],
    );
    assert!(!ok, "a tampered proof verified");
    // Tamper with the stored ledger: audit verify names the entry.
    let log = v.join(format!("ledger/segments/seg-{:020}.log", 0));
    let mut b = std::fs::read(&log).unwrap();
    b[20] ^= 1;
    std::fs::write(&log, b).unwrap();
    assert_fails(cli(&v, &["audit", "verify"]), "entry 0");
    // An open that cannot be recorded does not happen.
    let out = tmp.path().join("refused");
    assert_fails(
        cli(&v, &["open", "m@r1", "--out", out.to_str().unwrap()]),
        "nothing was opened",
    );
    assert!(!out.exists());
}

/// Writes `json` as a safetensors header followed by `data` bytes.
fn raw_safetensors(dir: &Path, json: &str, data: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("model.safetensors");
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend(std::iter::repeat_n(7u8, data));
    std::fs::write(&p, b).unwrap();
    p
}

/// Nothing of a refused seal is in the vault: no revision, no staging, no ledger entry.
fn assert_vault_untouched(v: &Path, model: &str) {
    let (ok, out, _) = cli(v, &["list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(ok && listed.iter().all(|m| m["model"] != model), "{out}");
    let left: Vec<_> = std::fs::read_dir(v.join("models").join(model))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Every malformed header is refused at seal, naming the file and the tensor, and nothing
/// is left in the vault.
#[test]
fn malformed_headers_are_refused_at_seal() {
    let (tmp, v) = common::fresh_vault();
    let f32x2 = r#""dtype":"F32","shape":[2],"data_offsets""#;
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let rows: Vec<(&str, String, usize, String)> = vec![
        (
            "duplicate",
            format!(r#"{{"w":{{{f32x2}:[0,8]}},"w":{{{f32x2}:[8,16]}}}}"#),
            16,
            r#"tensor "w" is named twice"#.into(),
        ),
        (
            "overlap",
            format!(r#"{{"a":{{{f32x2}:[0,8]}},"b":{{{f32x2}:[4,12]}}}}"#),
            12,
            r#"tensor "b": data_offsets start at 4, inside tensor "a""#.into(),
        ),
        (
            "backwards",
            format!(r#"{{"a":{{{f32x2}:[8,0]}}}}"#),
            8,
            r#"tensor "a": data_offsets [8, 0] end before they start"#.into(),
        ),
        (
            "past-the-file",
            format!(r#"{{"a":{{{f32x2}:[0,8]}}}}"#),
            5,
            r#"tensor "a" ends at byte 8 of the data, past the 5 bytes"#.into(),
        ),
        (
            "dtype",
            r#"{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}"#.into(),
            8,
            r#"tensor "a": dtype "F31" is not a safetensors dtype"#.into(),
        ),
        (
            "shape",
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#.into(),
            8,
            r#"tensor "a": shape [3] of F32 is 12 bytes"#.into(),
        ),
        (
            "nested",
            format!(r#"{{"a":{{"dtype":"F32","shape":{deep},"data_offsets":[0,4]}}}}"#),
            4,
            r#"tensor "a": invalid type: sequence"#.into(),
        ),
        (
            "nested-metadata",
            r#"{"__metadata__":{"k":{"k":{"k":"v"}}}}"#.into(),
            0,
            r#"__metadata__ key "k": invalid type: map"#.into(),
        ),
        (
            "too-long",
            String::new(),
            0,
            "header length 100000001 exceeds 100000000".into(),
        ),
    ];
    for (name, json, data, want) in &rows {
        let dir = tmp.path().join(name);
        let p = if *name == "too-long" {
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("model.safetensors");
            let mut b = 100_000_001u64.to_le_bytes().to_vec();
            b.extend(std::iter::repeat_n(b' ', 100_000_001));
            std::fs::write(&p, b).unwrap();
            p
        } else {
            raw_safetensors(&dir, json, *data)
        };
        let r = seal(&v, &dir, &format!("{name}@r1"), &[]);
        assert_fails(r.clone(), want);
        assert!(
            r.2.contains(p.to_str().unwrap()),
            "{name}: the file is named: {}",
            r.2
        );
        assert_vault_untouched(&v, name);
    }
    let (ok, out, _) = cli(&v, &["audit", "show"]);
    assert!(
        !v.join("ledger/segments").exists() || (ok && out.is_empty()),
        "refused seals are not recorded: {out}"
    );
}

/// ECCN syntax and contradictions between the facts (or with the inventory) are refused
/// before anything is written; --force seals and records the disagreement; `remove` then a
/// new seal under the same name works, and the ledger shows all of it.
#[test]
fn seal_facts_are_checked_forced_seals_recorded_and_removal_frees_the_name() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 3, 64);
    let ck = ck.to_str().unwrap();
    let rows: &[(&[&str], &str)] = &[
        (
            &["--eccn", "bogus"],
            "ECCN \"bogus\" is not written as the Commerce Control List writes them",
        ),
        (
            &["--eccn", "4e091"],
            "is not written as the Commerce Control List",
        ),
        (
            &["--eccn", "4E091", "--open-weights"],
            "--open-weights with ECCN 4E091: published weights are not subject to the EAR",
        ),
        (
            &["--eccn", "4E091", "--training-ops", "1e20"],
            "4E091 covers closed weights trained with at least 1e26",
        ),
        (
            &["--eccn", "EAR99", "--training-ops", "3e26"],
            "are ECCN 4E091, but --eccn says EAR99",
        ),
    ];
    for (flags, want) in rows {
        assert_fails(seal(&v, ck, "m@r1", flags), want);
        assert_vault_untouched(&v, "m");
    }
    // A model of the inventory (policies/models.toml: acme-small is EAR99, 4e24, closed)
    // sealed with other facts.
    let wrong = ["--training-ops", "2e24"];
    assert_fails(
        seal(&v, ck, "acme-small@r1", &wrong),
        "2e24 training operations at seal, 4e24 in the inventory",
    );
    assert_vault_untouched(&v, "acme-small");
    // A syntax error is never forced.
    assert_fails(
        seal(&v, ck, "m@r1", &["--eccn", "bogus", "--force"]),
        "is not written as",
    );
    let mut forced = wrong.to_vec();
    forced.push("--force");
    let (ok, _, err) = seal(&v, ck, "acme-small@r1", &forced);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: sealed with --force although 2e24 training operations"),
        "{err}"
    );
    // Sealing the same name again is refused until it is removed.
    assert_fails(
        seal(&v, ck, "acme-small@r1", &["--training-ops", "4e24"]),
        "already sealed",
    );
    assert_fails(
        cli(&v, &["remove", "acme-small@r1"]),
        "run again with --yes",
    );
    let (ok, out, err) = cli(&v, &["remove", "acme-small@r1", "--yes"]);
    assert!(ok && out.contains("removed"), "{out}{err}");
    assert_fails(
        cli(&v, &["remove", "acme-small@r1", "--yes"]),
        "no revision acme-small@r1",
    );
    let (ok, _, err) = seal(&v, ck, "acme-small@r1", &["--training-ops", "4e24"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&v, &["verify", "acme-small@r1"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&v, &["audit", "show", "--json"]);
    assert!(ok);
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .collect();
    let kinds: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("seal", "sealed"),
            ("remove", "removed"),
            ("seal", "sealed")
        ]
    );
    assert_eq!(
        recs[0]["failed_checks"],
        serde_json::json!(["classification"])
    );
    assert!(
        recs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("forced: 2e24 training operations at seal"),
        "{}",
        recs[0]
    );
    assert!(recs[2].get("reason").is_none(), "{}", recs[2]);
    assert_eq!(recs[0]["requester"], "root");
    assert_eq!(
        recs[1]["shards"].as_array().unwrap().len(),
        3,
        "manifest and two files: {}",
        recs[1]
    );
}

/// A checkpoint of so many files that the `seal` record naming them cannot be a ledger entry
/// (65,535 bytes, what a bundle of the published tiles holds) is refused before anything is
/// sealed, with the count and the way out, and nothing recorded; 1,501 of them seal.
#[test]
fn a_checkpoint_of_too_many_files_for_one_record_is_refused_before_sealing() {
    let (tmp, v) = common::fresh_vault();
    let dir = small_checkpoint(&tmp.path().join("many"), 3, 4);
    // 2,000 files of 33-byte names: about 72 KB of names in the record.
    for i in 0..1999 {
        std::fs::write(dir.join(format!("extra-{i:05}-of-02000-data.json")), b"{}").unwrap();
    }
    let r = seal(&v, &dir, "many@r1", &[]);
    assert_fails(
        r.clone(),
        "has 2001 files: the `seal` record naming them would be",
    );
    assert!(r.2.contains("(65535 bytes); nothing was sealed"), "{}", r.2);
    assert_vault_untouched(&v, "many");
    let (ok, out, _) = cli(&v, &["audit", "show"]);
    assert!(
        !v.join("ledger/segments").exists() || (ok && out.is_empty()),
        "a refused seal is not recorded: {out}"
    );
    for i in 1500..1999 {
        std::fs::remove_file(dir.join(format!("extra-{i:05}-of-02000-data.json"))).unwrap();
    }
    let (ok, _, err) = seal(&v, &dir, "many@r1", &[]);
    assert!(ok, "1,501 files fit one record: {err}");
}

/// The documented exit statuses, one test each here (denied: tests/release.rs, a denial
/// exits 2; SIGINT and SIGTERM: tests/interrupt.rs), and the table in `--help` and the README.
fn run_bare(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn exit_status_0_for_success_and_help() {
    assert_eq!(run_bare(&["--help"]).status.code(), Some(0));
    assert_eq!(run_bare(&["serve", "--help"]).status.code(), Some(0));
    let o = run_bare(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    // The release, the container format it writes and the commit.
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], concat!("weightvault ", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        lines[1],
        format!("container format: {}", weightvault::format::VERSION)
    );
    let commit = lines[2].strip_prefix("commit: ").unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[test]
fn exit_status_1_for_an_error_with_one_line_why() {
    let dir = common::scratch();
    let o = run_bare(&["--vault", dir.path().join("none").to_str().unwrap(), "list"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("weightvault: error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn exit_status_64_for_a_command_line_not_understood() {
    for args in [
        &["--frobnicate"][..],
        &["seal"],
        &["fetch", "a@b", "--parallel", "x"],
        &[],
    ] {
        let o = run_bare(args);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        assert!(!o.stderr.is_empty());
    }
}

#[test]
fn the_exit_table_is_in_help_and_the_readme() {
    let help = String::from_utf8(run_bare(&["--help"]).stdout).unwrap();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for line in weightvault::cli::EXIT_CODES.lines().skip(1) {
        assert!(help.contains(line), "--help lacks {line:?}");
        // The README's table: `| code | meaning |`.
        let (code, meaning) = line.trim().split_once(' ').unwrap();
        let row = format!("| {code} | {} |", meaning.trim());
        assert!(readme.contains(&row), "README lacks {row:?}");
    }
    let serve = String::from_utf8(run_bare(&["serve", "--help"]).stdout).unwrap();
    for (k, _) in weightvault::store::SERVE_KEYS {
        assert!(
            serve.contains(&format!("  {k} = ")),
            "serve --help lacks {k}"
        );
    }
}

/// `--json` on one command: it succeeds, prints one JSON document on stdout and nothing on
/// stderr.
fn json_of(v: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = cli(v, &all);
    assert!(ok, "{args:?}: {err}");
    assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Every command that reports something, with `--json`, prints the shape docs/CLI.md gives it
/// (`inspect`: `inspect_lists_files_and_tensors_without_the_hsm`; `trace`: tests/compat.rs; `fetch`: tests/release.rs; `policy reload`: tests/release.rs;
/// `audit publish`: tests/bucket.rs; `gc`: tests/interrupt.rs).
#[test]
fn every_report_parses_as_json() {
    let tmp = common::scratch();
    let v = tmp.path().join("vault");
    let init = json_of(&v, &["init"]);
    assert_eq!(init["vault"].as_str(), Some(v.to_str().unwrap()));
    assert!(!init["done"].as_array().unwrap().is_empty());
    let ck = small_checkpoint(&tmp.path().join("ck"), 7, 1000);
    let seal_json = |rev: &str| {
        json_of(
            &v,
            &[
                "seal",
                ck.to_str().unwrap(),
                "--model",
                "j",
                "--revision",
                rev,
                "--eccn",
                "EAR99",
            ],
        )
    };
    let s = seal_json("r1");
    assert_eq!(
        (s["model"].as_str(), s["revision"].as_str()),
        (Some("j"), Some("r1"))
    );
    assert_eq!(
        (
            s["files"].as_u64(),
            s["shards"].as_u64(),
            s["tensors"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    // The tensors' data (1,000 F32) and config.json's 2 bytes.
    assert_eq!(s["bytes"].as_u64(), Some(4002), "{s}");
    assert!(s["recorded"]["ledger_index"].is_u64(), "{s}");
    let list = json_of(&v, &["list"]);
    assert_eq!(list[0]["model"], "j");
    let ver = json_of(&v, &["verify", "j@r1"]);
    assert_eq!(
        (ver["revision"].as_str(), ver["authentic"].as_bool()),
        (Some("j@r1"), Some(true))
    );
    let out = tmp.path().join("opened");
    let o = json_of(&v, &["open", "j@r1", "--out", out.to_str().unwrap()]);
    assert_eq!(
        (o["files"].as_u64(), o["tensor"].is_null()),
        (Some(2), true)
    );
    assert!(o["ledger_start"].as_u64() < o["ledger_end"].as_u64());
    let t = json_of(
        &v,
        &[
            "open",
            "j@r1",
            "--tensor",
            "w",
            "--out",
            tmp.path().join("w.safetensors").to_str().unwrap(),
        ],
    );
    assert_eq!(t["tensor"], "w");
    let keks = json_of(&v, &["kek", "list"]);
    assert_eq!(keks["on_token"], serde_json::json!([1]), "{keks}");
    let rot = json_of(&v, &["kek", "rotate"]);
    assert_eq!(rot["version"], 2);
    let rw = json_of(&v, &["rewrap"]);
    assert_eq!(rw["newest"], 2);
    assert!(rw["rewrapped"].as_u64().unwrap() >= 2, "{rw}");
    let ret = json_of(&v, &["kek", "retire", "1"]);
    assert_eq!(ret["destroyed"], 1);
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let lint = json_of(
        &v,
        &["policy", "lint", "--policies", policies.to_str().unwrap()],
    );
    assert_eq!(lint["valid"], true);
    assert!(lint["models"].as_u64().unwrap() > 0);
    // A what-if decision: the decision itself, whichever way it goes.
    let (_, out, err) = cli(
        &v,
        &[
            "policy",
            "check",
            "--policies",
            policies.to_str().unwrap(),
            "--requester",
            "raj@globex.example",
            "--host-country",
            "IN",
            "--model",
            "acme-frontier",
            "--json",
        ],
    );
    let d: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(
        d["checks"].as_array().unwrap().len(),
        weightvault::policy::CheckId::ALL.len()
    );
    let cp = json_of(&v, &["audit", "checkpoint"]);
    assert!(cp["checkpoint"]
        .as_str()
        .unwrap()
        .starts_with("weightvault.local/ledger\n"));
    let av = json_of(&v, &["audit", "verify"]);
    assert_eq!(av["verified"], true);
    let (ok, shown, err) = cli(&v, &["audit", "show", "--json"]);
    assert!(ok, "{err}");
    let mut n = 0u64;
    for l in shown.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(e["index"].as_u64(), Some(n), "{l}");
        assert!(e["record"]["kind"].is_string(), "{l}");
        n += 1;
    }
    assert_eq!(Some(n), av["entries"].as_u64());
    let key = json_of(&v, &["audit", "public-key"]);
    let key = key["public_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    let proof = json_of(&v, &["audit", "prove", "0"]);
    let pf = tmp.path().join("proof.json");
    std::fs::write(&pf, proof.to_string()).unwrap();
    let vp = json_of(
        &v,
        &[
            "audit",
            "verify-proof",
            pf.to_str().unwrap(),
            "--public-key",
            &key,
        ],
    );
    assert_eq!(
        (vp["index"].as_u64(), vp["included"].as_bool()),
        (Some(0), Some(true))
    );
    let cons = json_of(&v, &["audit", "consistency", "--from", "1"]);
    assert!(cons.is_object(), "{cons}");
    let rm = json_of(&v, &["remove", "j@r1", "--yes"]);
    assert_eq!(
        (rm["revision"].as_str(), rm["files"].as_u64()),
        (Some("j@r1"), Some(3))
    );
    seal_json("r2");
    let sh = json_of(&v, &["shred", "j@r2", "--yes"]);
    assert_eq!(sh["label"], "j@r2");
    assert!(sh["still_open"].as_array().unwrap().is_empty());
}

/// Under `--json` an error is one JSON object on stderr, with the exit status in it; a
/// command line that does not parse too.
#[test]
fn errors_under_json_are_json() {
    let (tmp, v) = common::fresh_vault();
    for (args, status) in [
        (&["verify", "nosuch@r1", "--json"][..], 1),
        (&["--json", "seal"], 64),
        (&["list", "--json", "--frobnicate"], 64),
    ] {
        let o = Command::new(bin())
            .arg("--vault")
            .arg(&v)
            .args(args)
            .env("WEIGHTVAULT_STATE_DIR", tmp.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(status), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let e: serde_json::Value = serde_json::from_slice(&o.stderr)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&o.stderr)));
        assert_eq!(e["status"], status, "{e}");
        assert!(!e["error"].as_str().unwrap().is_empty());
    }
}

/// `-q` prints nothing but errors.
#[test]
fn quiet_prints_nothing_but_errors() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 8, 1000);
    for (args, ok) in [
        (
            vec![
                "-q",
                "seal",
                ck.to_str().unwrap(),
                "--model",
                "q",
                "--revision",
                "r1",
            ],
            true,
        ),
        (vec!["-q", "list"], true),
        (vec!["-q", "verify", "q@r1"], true),
        (vec!["-q", "audit", "show"], true),
        (vec!["-q", "verify", "q@nosuch"], false),
    ] {
        let o = Command::new(bin())
            .arg("--vault")
            .arg(&v)
            .args(&args)
            .env("WEIGHTVAULT_STATE_DIR", tmp.path().join("state"))
            .output()
            .unwrap();
        assert_eq!(o.status.success(), ok, "{args:?}");
        assert!(
            o.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert_eq!(
            o.stderr.is_empty(),
            ok,
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The names of every command and nested command (`seal`, `audit-show`, ...).
fn command_names() -> Vec<String> {
    use clap::CommandFactory;
    fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<String>) {
        for s in c.get_subcommands() {
            let name = format!("{prefix}{}", s.get_name());
            walk(&format!("{name}-"), s, out);
            out.push(name);
        }
    }
    let mut out = Vec::new();
    walk("", &weightvault::cli::Cli::command(), &mut out);
    out
}

/// Completion scripts for every shell clap knows, the bash one valid bash naming every
/// command; the manual page, and one page per command that `man` renders.
#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run_bare(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        assert!(o.stdout.len() > 1000, "{shell}");
    }
    let tmp = common::scratch();
    let script = tmp.path().join("weightvault.bash");
    std::fs::write(&script, run_bare(&["completions", "bash"]).stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    let names = command_names();
    assert!(names.contains(&"audit-verify-proof".to_string()));
    for n in names.iter().filter(|n| !n.contains('-')) {
        assert!(
            text.contains(&format!("weightvault,{n})")),
            "bash completion lacks {n}"
        );
    }
    let page = String::from_utf8(run_bare(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH weightvault 1"), "{page}");
    let dir = tmp.path().join("man1");
    let o = run_bare(&["man", "--out", dir.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["pages"].as_array().unwrap().len(), names.len() + 1);
    for n in &names {
        assert!(
            dir.join(format!("weightvault-{n}.1")).exists(),
            "no page for {n}"
        );
    }
    if Path::new("/usr/bin/man").exists() {
        let shown = Command::new("man")
            .arg("-l")
            .arg(dir.join("weightvault-seal.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains("--training-ops"), "{shown}");
    }
}

/// An unknown model, revision or tensor is refused with the closest known name.
#[test]
fn unknown_names_get_did_you_mean() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 9, 100);
    seal_ok(&v, &ck, "acme-small@step-100", &[]);
    assert_fails(
        cli(&v, &["verify", "acme-smal@step-100"]),
        "no model 'acme-smal' in this vault (did you mean 'acme-small'?)",
    );
    assert_fails(
        cli(&v, &["verify", "acme-small@step-10"]),
        "no revision acme-small@step-10 in this vault (did you mean 'step-100'?)",
    );
    assert_fails(
        cli(&v, &["verify", "globex@r1"]),
        "no model 'globex' in this vault",
    );
    let (_, _, err) = cli(&v, &["verify", "globex@r1"]);
    assert!(!err.contains("did you mean"), "{err}");
    let out = tmp.path().join("t.safetensors");
    assert_fails(
        cli(
            &v,
            &[
                "open",
                "acme-small@step-100",
                "--tensor",
                "W",
                "--out",
                out.to_str().unwrap(),
            ],
        ),
        "has no tensor named 'W' (did you mean 'w'?)",
    );
}

/// `inspect` lists files and tensors from clear headers alone: it works with the HSM's token
/// gone, where `verify` cannot.
#[test]
fn inspect_lists_files_and_tensors_without_the_hsm() {
    let (tmp, v) = common::fresh_vault();
    let ck = tmp.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    write_safetensors(
        &ck.join("model.safetensors"),
        &[
            ("a.weight", Dtype::F32, vec![4, 3], bytes(1, 48)),
            ("b.bias", Dtype::BF16, vec![5], bytes(2, 10)),
        ],
    );
    std::fs::write(ck.join("config.json"), b"{\"x\":1}").unwrap();
    seal_ok(&v, &ck, "ins@r1", &["--eccn", "EAR99"]);
    std::fs::rename(v.join("hsm"), v.join("hsm.away")).unwrap();
    let (ok, _, err) = cli(&v, &["verify", "ins@r1"]);
    assert!(!ok, "verify needs the HSM: {err}");
    let (ok, text, err) = cli(&v, &["inspect", "ins@r1"]);
    assert!(ok, "{err}");
    assert!(text.contains("2 files, 2 tensors"), "{text}");
    assert!(
        text.contains("a.weight") && text.contains("[4, 3]"),
        "{text}"
    );
    let i: serde_json::Value =
        serde_json::from_str(&cli_ok(&v, &["inspect", "ins@r1", "--json"])).unwrap();
    assert_eq!(i["revision"], "ins@r1");
    assert_eq!(i["training"]["eccn"], "EAR99");
    let files = i["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["config.json", "model.safetensors"]);
    assert_eq!(files[0]["bytes"], 7);
    assert_eq!(
        files[1]["tensors"],
        serde_json::json!([
            {"name": "a.weight", "dtype": "F32", "shape": [4, 3], "bytes": 48},
            {"name": "b.bias", "dtype": "BF16", "shape": [5], "bytes": 10},
        ])
    );
    assert_eq!(
        files[1]["bytes"].as_u64(),
        Some(
            std::fs::metadata(ck.join("model.safetensors"))
                .unwrap()
                .len()
        )
    );
    assert_fails(cli(&v, &["inspect", "ins@r2"]), "no revision ins@r2");
}

/// `open --out -` writes one tensor, one file or a byte range of it to standard output,
/// byte for byte what the file holds, recorded in the ledger like any open.
#[test]
fn open_writes_a_tensor_a_file_or_a_range_to_standard_output() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 11, 50_000);
    seal_ok(&v, &ck, "so@r1", &[]);
    let original = std::fs::read(ck.join("model.safetensors")).unwrap();
    let stdout_of = |args: &[&str]| -> Vec<u8> {
        let o = Command::new(bin())
            .arg("--vault")
            .arg(&v)
            .args(["open", "so@r1", "--out", "-"])
            .args(args)
            .env("WEIGHTVAULT_STATE_DIR", state_dir_of(&v))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    assert_eq!(stdout_of(&["--file", "config.json"]), b"{}");
    assert_eq!(stdout_of(&["--file", "model.safetensors"]), original);
    // Ranges within the header, across it and the data, within the data, to the end.
    for (a, b) in [
        (0, 8),
        (3, 10_000),
        (90_000, 150_000),
        (199_000, original.len()),
    ] {
        let got = stdout_of(&[
            "--file",
            "model.safetensors",
            "--range",
            &format!("{a}:{b}"),
        ]);
        assert_eq!(got, &original[a..b], "{a}:{b}");
    }
    assert_eq!(
        stdout_of(&["--file", "model.safetensors", "--range", "199990:"]),
        &original[199_990..]
    );
    let file = tmp.path().join("w.safetensors");
    cli_ok(
        &v,
        &[
            "open",
            "so@r1",
            "--tensor",
            "w",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout_of(&["--tensor", "w"]), std::fs::read(&file).unwrap());
    let shown = cli_ok(&v, &["audit", "show", "--json"]);
    assert!(
        shown.contains(r#""file:model.safetensors[3:10000]""#),
        "{shown}"
    );
    assert_fails(
        cli(&v, &["open", "so@r1", "--out", "-"]),
        "--out - (standard output) takes one tensor or one file",
    );
    assert_fails(
        cli(
            &v,
            &["open", "so@r1", "--out", "-", "--file", "nosuch.json"],
        ),
        "has no file 'nosuch.json'",
    );
    assert_fails(
        cli(
            &v,
            &[
                "open",
                "so@r1",
                "--out",
                "-",
                "--file",
                "config.json",
                "--range",
                "5:9",
            ],
        ),
        "outside config.json",
    );
}

/// Hugging Face style `ORG/NAME` models are accepted by every command; on disk the model's
/// directory is `ORG--NAME`, as in the Hugging Face cache.
#[test]
fn org_slash_name_models_work_everywhere() {
    let (tmp, v) = common::fresh_vault();
    let ck = small_checkpoint(&tmp.path().join("ck"), 12, 100);
    let m = "sentence-transformers/all-MiniLM-L6-v2";
    seal_ok(&v, &ck, &format!("{m}@r1"), &[]);
    assert!(v
        .join("models/sentence-transformers--all-MiniLM-L6-v2/r1/manifest.sealed")
        .is_file());
    let list: serde_json::Value = serde_json::from_str(&cli_ok(&v, &["list", "--json"])).unwrap();
    assert_eq!(list[0]["model"], m);
    cli_ok(&v, &["verify", &format!("{m}@r1")]);
    cli_ok(&v, &["verify", m]);
    let i: serde_json::Value =
        serde_json::from_str(&cli_ok(&v, &["inspect", m, "--json"])).unwrap();
    assert_eq!(i["revision"], format!("{m}@r1"));
    let out = tmp.path().join("out");
    cli_ok(&v, &["open", m, "--out", out.to_str().unwrap()]);
    assert_eq!(tree_hashes(&out), tree_hashes(&ck));
    let shown = cli_ok(&v, &["audit", "show", "--model", m]);
    assert_eq!(shown.lines().count(), 3, "seal, open, open end: {shown}");
    assert_fails(
        cli(&v, &["verify", "sentence-transformers/all-MiniLM-L6-v3@r1"]),
        "did you mean 'sentence-transformers/all-MiniLM-L6-v2'?",
    );
    for bad in ["a/b/c", "org--name", "org/../x"] {
        assert_fails(seal(&v, &ck, &format!("{bad}@r1"), &[]), "(or ORG/NAME");
    }
    cli_ok(&v, &["remove", &format!("{m}@r1"), "--yes"]);
    assert!(!v
        .join("models/sentence-transformers--all-MiniLM-L6-v2/r1")
        .exists());
}
