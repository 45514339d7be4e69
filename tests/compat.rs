//! What older code wrote still verifies, opens, audits and traces: `tests/fixtures/compat-v1`
//! is a vault (with its SoftHSM2 token) made by `tools/make-compat-fixture` at the commit named
//! in its `made-by` file, before the redesign of issue 14. Each test works on a copy.

mod common;

use common::cli_ok as ok;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat-v1")
}

/// A copy of the fixture vault whose SoftHSM2 configuration names the copy's token directory
/// (git keeps neither the absolute path nor the modes the vault was made with).
fn copy(root: &Path) -> PathBuf {
    let v = root.join("vault");
    let st = Command::new("cp")
        .arg("-r")
        .arg(fixture().join("vault"))
        .arg(&v)
        .status()
        .unwrap();
    assert!(st.success());
    let conf = v.join("hsm/softhsm2.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("directories.tokendir") {
                format!("directories.tokendir = {}", v.join("hsm/tokens").display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&conf, text + "\n").unwrap();
    let st = Command::new("chmod")
        .args(["-R", "go-rwx"])
        .arg(&v)
        .status()
        .unwrap();
    assert!(st.success());
    v
}

#[test]
fn an_old_vault_verifies_opens_audits_and_traces() {
    common::require_softhsm();
    let tmp = common::scratch();
    let v = copy(tmp.path());
    ok(&v, &["verify", "acme-frontier@r1"]);
    let list = ok(&v, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().take(2).eq(["acme-frontier", "r1"])),
        "{list}"
    );

    // Opened byte for byte as the old code sealed it.
    let out = tmp.path().join("opened");
    ok(
        &v,
        &["open", "acme-frontier@r1", "--out", out.to_str().unwrap()],
    );
    let want: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(fixture().join("original.sha256"))
            .unwrap()
            .lines()
            .map(|l| {
                let (h, p) = l.split_once("  ").unwrap();
                (p.trim_start_matches("./").to_string(), h.to_string())
            })
            .collect();
    assert_eq!(common::tree_hashes(&out), want);

    // The old ledger with the new code's records appended still verifies, and every old
    // record reads back.
    let verified = ok(&v, &["audit", "verify"]);
    assert!(verified.contains("ledger verified"), "{verified}");
    let shown = ok(&v, &["audit", "show", "--json"]);
    let recs: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .collect();
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..10],
        [
            "seal",
            "operator-open",
            "open-end",
            "release-decision",
            "stream-end",
            "stream-end",
            "release-decision",
            "stream-end",
            "stream-end",
            "release-decision"
        ]
    );
    assert_eq!(recs[9]["outcome"], "denied");
    assert!(kinds.len() > 10, "the open was recorded");

    // The copy released to acme is traced to its release, and only to it.
    let t = ok(
        &v,
        &[
            "trace",
            fixture().join("leaked").to_str().unwrap(),
            "--model",
            "acme-frontier@r1",
            "--json",
        ],
    );
    let rep: serde_json::Value = serde_json::from_str(&t).unwrap();
    let accused = rep["accused"].as_array().unwrap();
    assert_eq!(accused.len(), 1, "{t}");
    assert_eq!(accused[0]["release"]["ledger_index"], 3);
    assert_eq!(accused[0]["release"]["record"]["organisation"], "acme");
    assert_eq!(rep["releases"], 2);

    // What cannot be traced says why.
    let trace_fails = |suspect: &std::path::Path| {
        let (traced, _, err) = common::cli(
            &v,
            &[
                "trace",
                suspect.to_str().unwrap(),
                "--model",
                "acme-frontier@r1",
            ],
        );
        assert!(!traced, "{err}");
        err
    };
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = trace_fails(&empty);
    assert!(err.contains("no .safetensors file"), "{err}");
    let other = tmp.path().join("other.safetensors");
    common::write_safetensors(
        &other,
        &[(
            "unrelated.weight",
            safetensors::Dtype::F32,
            vec![3, 5],
            common::bytes(7, 60),
        )],
    );
    let err = trace_fails(&other);
    assert!(
        err.contains("no tensor of the suspect matches a watermarked tensor"),
        "{err}"
    );
}
