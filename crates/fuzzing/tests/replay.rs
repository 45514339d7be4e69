//! Every input kept for a fuzz target, replayed on stable: its minimised corpus
//! (`fuzz/corpus/<target>/`) and its regression inputs (`fuzz/regressions/<target>/`, each a
//! crash once, or an edge case), through the same function the libFuzzer binary calls. The
//! README's test command runs this, so a parser change that brings a found bug back fails
//! here without a nightly toolchain. A target whose directories are missing or empty fails
//! too: an input set that silently went away replays nothing.

use std::path::Path;
use std::time::Instant;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_kept_input_of_every_target_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut problems = Vec::new();
    for (name, target) in weightvault_fuzzing::TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = fuzz.join(kind).join(name);
            let files = inputs(&dir);
            if files.is_empty() {
                problems.push(format!("{}: missing or empty", dir.display()));
            }
            let t0 = Instant::now();
            for f in &files {
                let data = std::fs::read(f).unwrap();
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    problems.push(format!("{}: panicked", f.display()));
                }
            }
            eprintln!(
                "{name}: {} {kind} inputs in {:.2} s",
                files.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_fuzz_crate_has_a_binary_for_every_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in weightvault_fuzzing::TARGETS {
        let src = std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|_| panic!("fuzz/fuzz_targets/{name}.rs is missing"));
        assert!(
            src.contains(&format!("weightvault_fuzzing::{name}(data)")),
            "fuzz/fuzz_targets/{name}.rs does not call weightvault_fuzzing::{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}

/// The compat vault's manifest (a real seal's) passes `Manifest::parse`'s checks: they refuse
/// only what a seal never writes.
#[test]
fn the_compat_vaults_manifest_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let b = std::fs::read(
        root.join("tests/fixtures/compat-v1/vault/models/acme-frontier/r1/manifest.sealed"),
    )
    .unwrap();
    let n = weightvault_core::format::ParsedHead::needed(&b).unwrap() as usize;
    let head = weightvault_core::format::ParsedHead::parse(&b[..n], b.len() as u64).unwrap();
    let m = weightvault_core::manifest::Manifest::parse(&head.header.meta).unwrap();
    assert_eq!(
        (m.model.as_str(), m.revision.as_str()),
        ("acme-frontier", "r1")
    );
    assert!(!m.files.is_empty());
}
