//! The layers hold by construction: a workspace crate depends only on crates listed before it
//! in `[workspace] members` (lowest first), and no pure crate (under `crates/pure/`) depends on a
//! crate that does I/O. Clippy, with `crates/pure/clippy.toml`, refuses I/O calls in the pure
//! crates' own code; this test closes the door a dependency would open.

use std::path::Path;
use std::process::Command;

/// Crates that open files or sockets, start processes or threads that do, or talk to the HSM.
const IO_CRATES: &[&str] = &[
    "tokio",
    "tokio-rustls",
    "rustls",
    "axum",
    "hyper",
    "hyper-util",
    "tower",
    "reqwest",
    "cryptoki",
    "rustix",
    "nix",
    "memmap2",
    "signal-hook",
    "indicatif",
    "clap",
    "tracing-subscriber",
    "tempfile",
];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn crates_depend_only_downwards_and_pure_crates_on_no_io() {
    let m = metadata();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pure_dir = root.join("crates/pure");
    let members: Vec<&str> = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let packages = m["packages"].as_array().unwrap();
    // In the order of [workspace] members, read from Cargo.toml (cargo metadata sorts).
    let toml: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let order: Vec<std::path::PathBuf> = toml["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| root.join(v.as_str().unwrap()).canonicalize().unwrap())
        .collect();
    let dir_of = |p: &serde_json::Value| {
        Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap()
    };
    let mut pure = 0;
    for p in packages {
        assert!(members.contains(&p["id"].as_str().unwrap()));
        let name = p["name"].as_str().unwrap();
        let dir = dir_of(p);
        let pos = order
            .iter()
            .position(|d| *d == dir)
            .unwrap_or_else(|| panic!("{name} is not listed in [workspace] members"));
        let is_pure = dir.starts_with(pure_dir.canonicalize().unwrap());
        pure += usize::from(is_pure);
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            let normal = d["kind"].is_null();
            if let Some(q) = packages.iter().find(|q| q["name"] == dep) {
                let qpos = order.iter().position(|x| *x == dir_of(q)).unwrap();
                assert!(
                    qpos < pos || !normal,
                    "{name} depends on {dep}, a crate of a higher layer"
                );
                assert!(
                    !is_pure || !normal || dir_of(q).starts_with(&pure_dir),
                    "pure crate {name} depends on {dep}, which is not pure"
                );
            }
            assert!(
                !(is_pure && normal && IO_CRATES.contains(&dep)),
                "pure crate {name} depends on {dep}, which does I/O"
            );
        }
        if is_pure {
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            assert!(
                !lib.contains("extern crate std"),
                "{name} must not reach around its clippy.toml"
            );
        }
    }
    assert!(pure > 0, "no pure crates found under crates/pure");
    assert!(pure_dir.join("clippy.toml").exists());
}
