//! Sealed revisions in an S3 bucket (a real `moto_server` on 127.0.0.1): the real MiniLM
//! model reads back byte for byte as from the vault directory; objects are created once;
//! rewrap, KEK retirement and shred change key-slot side objects only, survive SIGKILL, and a
//! shredded revision opens under nothing.

mod common;

use common::s3::*;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use weightvault::store::object::{ObjectName, SealedStore};
use weightvault::store::{StoreError, Vault};

fn bucket_vault(url: &str) -> Vault {
    let mut v = shared().vault(weightvault::format::DEFAULT_CHUNK_SIZE);
    v.set_store(Box::new(bucket(url)));
    v
}

fn small_checkpoint(dir: &Path, seed: u64, big: usize) {
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            ("w", safetensors::Dtype::U8, vec![big], bytes(seed, big)),
            ("b", safetensors::Dtype::F32, vec![16], bytes(seed + 1, 64)),
        ],
    );
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("extra-{i:02}.json")),
            bytes(seed + 2 + i, 300),
        )
        .unwrap();
    }
}

#[test]
fn minilm_in_a_bucket_reads_byte_for_byte_as_from_the_vault_directory() {
    let sh = shared();
    let url = format!("s3://{}/lab/weights", new_bucket(false));
    let src = minilm_dir();
    let local = sh.vault(weightvault::format::DEFAULT_CHUNK_SIZE);
    let remote = bucket_vault(&url);
    for v in [&local, &remote] {
        v.seal(&src, &seal_request("minilm-b", "r1"), &sh.kw, &())
            .unwrap();
    }
    // The same listing, file for file (header hashes differ: every file has its own key).
    let shape = |v: &Vault| {
        let l = v.list().unwrap();
        assert_eq!(l.len(), 1, "one revision");
        l[0].manifest
            .files
            .iter()
            .map(|e| (e.path.clone(), e.original_len, e.sealed_len, e.tensors))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&local), shape(&remote));
    let rref = "minilm-b@r1".parse().unwrap();
    let tmp = scratch();
    let want = tree_hashes(&src);
    for (name, v) in [("local", &local), ("bucket", &remote)] {
        let r = v.open_revision(&rref, &sh.kw).unwrap();
        r.verify(2, &()).unwrap();
        let out = tmp.path().join(name);
        r.open_to(&out, 2, &()).unwrap();
        assert_eq!(
            tree_hashes(&out),
            want,
            "{name}: open differs from the source"
        );
        let t = tmp.path().join(format!("{name}.tensor"));
        r.open_tensor_to("embeddings.word_embeddings.weight", &t)
            .unwrap();
    }
    assert_eq!(
        sha256_file(&tmp.path().join("local.tensor")),
        sha256_file(&tmp.path().join("bucket.tensor"))
    );
    // A byte range across chunk boundaries decrypts on its own, from the bucket as from disk.
    let original = std::fs::read(src.join("model.safetensors")).unwrap();
    let r = remote.open_revision(&rref, &sh.kw).unwrap();
    let (_, f) = r
        .files
        .iter()
        .find(|(e, _)| e.path == "model.safetensors")
        .unwrap();
    let meta = f.header().meta.len();
    for (s, e) in [(0, 10), (1_048_570, 3_500_000), (88_000_000, 90_000_000)] {
        let e = e.min(f.header().plaintext_len);
        assert_eq!(
            f.read_range(s, e).unwrap(),
            original[meta + s as usize..meta + e as usize],
            "bytes {s}..{e}"
        );
    }
}

#[test]
fn objects_in_a_bucket_are_created_once() {
    let sh = shared();
    let name = new_bucket(false);
    let url = format!("s3://{name}");
    let tmp = scratch();
    let src = tmp.path().join("ckpt");
    small_checkpoint(&src, 7, 1000);
    let v = bucket_vault(&url);
    v.seal(&src, &seal_request("once", "r1"), &sh.kw, &())
        .unwrap();
    let again = v.seal(&src, &seal_request("once", "r1"), &sh.kw, &());
    assert!(
        matches!(again, Err(StoreError::AlreadySealed { .. })),
        "{again:?}"
    );

    // The store itself refuses to replace an object: a single PUT and a multipart upload
    // (5 MiB parts, 12 MiB object) each written twice under one name.
    let b = weightvault::store::bucket::Bucket::new(&bucket_config(&url, 5 << 20)).unwrap();
    let mut rev = b.begin_revision("once", "r2").unwrap();
    for (file, len) in [("small", 9000u64), ("large", 12 << 20)] {
        for attempt in 0..2 {
            let mut sink = rev.create(ObjectName::File(file), 4096, len).unwrap();
            let body = bytes(attempt, (len - 4096) as usize);
            for (i, c) in body.chunks(1 << 20).enumerate().rev() {
                sink.write_at(4096 + (i << 20) as u64, c).unwrap();
            }
            let r = sink.finish(&[attempt as u8 + 1; 4096], len);
            match attempt {
                0 => r.unwrap(),
                _ => {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains("exists already"), "{file}: {e}");
                }
            }
        }
        let (o, _) = b.open("once", "r2", ObjectName::File(file)).unwrap();
        let mut head = [0u8; 4096];
        o.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, [1u8; 4096], "{file}: the first write was replaced");
        let mut tail = vec![0u8; (len - 4096) as usize];
        o.read_exact_at(&mut tail, 4096).unwrap();
        assert!(
            tail == bytes(0, tail.len()),
            "{file}: the first write was replaced"
        );
    }
    drop(rev);

    // Two seals of one name at once: exactly one wins.
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (v, src) = (&v, &src);
                s.spawn(move || v.seal(src, &seal_request("once", "r3"), &sh.kw, &()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let rref = "once@r3".parse().unwrap();
    v.open_revision(&rref, &sh.kw)
        .unwrap()
        .verify(1, &())
        .unwrap();
}

/// Every object of a bucket (key -> (size, ETag)), through the AWS CLI.
fn objects(bucket: &str) -> BTreeMap<String, (u64, String)> {
    let out = moto()
        .aws(&["s3api", "list-objects-v2", "--bucket", bucket])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["Contents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    (
                        o["Key"].as_str().unwrap().to_string(),
                        (
                            o["Size"].as_u64().unwrap(),
                            o["ETag"].as_str().unwrap().to_string(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The PUT and POST requests to `bucket` that moto logged after byte `from` of its log:
/// (method, path). (Tests run side by side on one server: each counts its own bucket's.)
fn writes_since(bucket: &str, from: u64) -> Vec<(String, String)> {
    let mine = format!("/{bucket}/");
    let log = std::fs::read(&moto().log).unwrap();
    String::from_utf8_lossy(&log[from as usize..])
        .lines()
        .filter_map(|l| {
            let req = l.split('"').nth(1)?;
            let mut p = req.split(' ');
            let (m, path) = (p.next()?, p.next()?);
            ((m == "PUT" || m == "POST") && path.starts_with(&mine))
                .then(|| (m.to_string(), path.to_string()))
        })
        .collect()
}

fn log_len() -> u64 {
    std::fs::metadata(&moto().log).unwrap().len()
}

#[test]
fn rewrap_retire_and_shred_in_a_bucket_change_key_slots_only() {
    let name = new_bucket(false);
    let (_tmp, vault) = fresh_vault();
    // Configured in vault.toml this time; credentials from the AWS_* variables.
    let mut cfg = std::fs::read_to_string(vault.join("vault.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[store]\nurl = \"s3://{name}/p\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\npart_size = {}\n",
        moto().endpoint,
        5 << 20
    ));
    std::fs::write(vault.join("vault.toml"), cfg).unwrap();
    let env: Vec<(&str, String)> = moto().env();
    let ok = |args: &[&str]| {
        let (ok, out, err) = cli_env(&vault, &env, args);
        assert!(ok, "weightvault {args:?}: {err}");
        out
    };
    let src = vault.parent().unwrap().join("ckpt");
    small_checkpoint(&src, 11, 12 << 20);
    ok(&[
        "seal",
        src.to_str().unwrap(),
        "--model",
        "rw",
        "--revision",
        "r1",
        "--eccn",
        "EAR99",
    ]);
    ok(&[
        "seal",
        src.to_str().unwrap(),
        "--model",
        "rw",
        "--revision",
        "r2",
        "--eccn",
        "EAR99",
    ]);
    assert!(objects(&name).keys().all(|k| k.starts_with("p/models/rw/")));
    let sealed_before: BTreeMap<String, (u64, String)> = objects(&name)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".sealed"))
        .collect();
    let ciphertext: u64 = sealed_before.values().map(|(n, _)| n).sum();
    assert!(ciphertext > 24 << 20, "{ciphertext}");

    ok(&["kek", "rotate"]);
    let mark = log_len();
    ok(&["rewrap"]);
    let writes = writes_since(&name, mark);
    let slot_objects: BTreeMap<String, (u64, String)> = objects(&name)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".slots"))
        .collect();
    assert_eq!(
        slot_objects.len(),
        sealed_before.len(),
        "one slot object per sealed object"
    );
    assert!(!writes.is_empty());
    for (m, path) in &writes {
        assert!(
            m == "PUT" && path.ends_with(".slots"),
            "rewrap wrote {m} {path}: only key slot objects may be written"
        );
    }
    let put_bytes: u64 = writes.len() as u64 * 512;
    eprintln!(
        "rewrap: {} PUTs, {put_bytes} bytes, for {ciphertext} bytes of sealed objects",
        writes.len()
    );
    let verify_all = |why: &str| {
        for r in ["rw@r1", "rw@r2"] {
            let (ok, _, err) = cli_env(&vault, &env, &["verify", r]);
            assert!(ok, "{why}: {r} does not open: {err}");
        }
    };
    verify_all("after rewrap");

    // SIGKILL during rewraps: every object still opens (the side object is replaced in one
    // PUT: the old slots or the new).
    let mut killed_mid_way = 0;
    for i in 0..20u64 {
        ok(&["kek", "rotate"]);
        let mut child = std::process::Command::new(bin())
            .arg("--vault")
            .arg(&vault)
            .args(["--quiet", "rewrap"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WEIGHTVAULT_STATE_DIR", state_dir_of(&vault))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30 + (i * 37) % 400));
        if child.try_wait().unwrap().is_none() {
            killed_mid_way += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        verify_all(&format!("after SIGKILL {i}"));
    }
    eprintln!("{killed_mid_way} of 20 rewraps killed before they finished");
    assert!(
        killed_mid_way >= 10,
        "only {killed_mid_way} kills landed mid-rewrap"
    );
    ok(&["rewrap"]);
    // Every older version now opens nothing and can be retired.
    let list = ok(&["kek", "list"]);
    let newest: u32 = list
        .lines()
        .filter_map(|l| l.split(".v").nth(1)?.split(':').next()?.parse().ok())
        .max()
        .unwrap();
    for v in 1..newest {
        ok(&["kek", "retire", &v.to_string()]);
    }
    verify_all("after retiring every older KEK");
    let after: BTreeMap<String, (u64, String)> = objects(&name)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".sealed"))
        .collect();
    assert_eq!(after, sealed_before, "a ciphertext object changed");

    // Shred: nothing of r1 opens, even with the shred mark and the slot objects deleted (the
    // in-object slots are under KEK versions that no longer exist).
    ok(&["shred", "rw@r1", "--yes"]);
    let (ok1, _, err) = cli_env(&vault, &env, &["verify", "rw@r1"]);
    assert!(!ok1 && err.contains("crypto-shredded"), "{err}");
    for k in objects(&name).keys() {
        if k.starts_with("p/models/rw/r1/") && (k.ends_with(".slots") || k.ends_with("SHREDDED")) {
            moto()
                .aws(&["s3api", "delete-object", "--bucket", &name, "--key", k])
                .unwrap();
        }
    }
    let (ok2, _, err) = cli_env(&vault, &env, &["verify", "rw@r1"]);
    assert!(
        !ok2,
        "a shredded revision opened once its marks were deleted"
    );
    eprintln!("shredded, marks deleted: {err}");
    verify_all_but_r1(&vault, &env);
    let left: Vec<String> = objects(&name)
        .into_keys()
        .filter(|k| k.starts_with("p/models/rw/r2/"))
        .collect();
    assert!(left.is_empty(), "remove left {left:?}");
}

fn verify_all_but_r1(vault: &Path, env: &[(&str, String)]) {
    let (ok, _, err) = cli_env(vault, env, &["verify", "rw@r2"]);
    assert!(ok, "rw@r2 after shredding r1: {err}");
    // `remove` deletes every object of the revision from the bucket, recorded first.
    let (ok, out, err) = cli_env(vault, env, &["remove", "rw@r2", "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("rw@r2"), "{out}");
    let (ok, _, err) = cli_env(vault, env, &["verify", "rw@r2"]);
    assert!(!ok && err.contains("no revision rw@r2"), "{err}");
}

#[test]
fn a_buckets_object_lock_retention_is_read_and_required() {
    use weightvault::store::worm::{default_retention, require, LockMode, Retention};
    let plain = new_bucket(false);
    let cfg = |b: &str| bucket_config(&format!("s3://{b}/ledger"), 16 << 20);
    assert_eq!(default_retention(&cfg(&plain)).unwrap(), None);
    let e = require(&cfg(&plain), 1825, LockMode::Compliance).unwrap_err();
    assert!(e.to_string().contains("no Object Lock"), "{e}");

    let locked = new_bucket(true);
    assert_eq!(
        default_retention(&cfg(&locked)).unwrap(),
        None,
        "lock without a default"
    );
    set_default_retention(&locked, "GOVERNANCE", r#""Days":1"#);
    let got = default_retention(&cfg(&locked)).unwrap();
    assert_eq!(
        got,
        Some(Retention {
            mode: LockMode::Governance,
            days: 1
        })
    );
    let e = require(&cfg(&locked), 1825, LockMode::Compliance).unwrap_err();
    assert!(e.to_string().contains("GOVERNANCE, 1 days"), "{e}");
    require(&cfg(&locked), 1, LockMode::Governance).unwrap();

    let five_years = new_bucket(true);
    set_default_retention(&five_years, "COMPLIANCE", r#""Years":5"#);
    let r = require(&cfg(&five_years), 1825, LockMode::Compliance).unwrap();
    assert_eq!(r.days, 1825);
}

#[test]
fn an_interrupted_seal_into_a_bucket_leaves_no_revision() {
    let name = new_bucket(false);
    let url = format!("s3://{name}/p");
    let (_tmp, vault) = fresh_vault();
    let env = store_env(&url);
    let src = vault.parent().unwrap().join("ckpt");
    small_checkpoint(&src, 5, 96 << 20);
    let seal = |rev: &str| {
        std::process::Command::new(bin())
            .arg("--vault")
            .arg(&vault)
            .args(["--quiet", "seal", src.to_str().unwrap(), "--model", "int"])
            .args(["--revision", rev, "--eccn", "EAR99"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WEIGHTVAULT_STATE_DIR", state_dir_of(&vault))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // moto logs `POST /<bucket>/<key>?uploads` when a multipart upload starts.
    let upload_started = |from: u64| {
        writes_since(&name, from)
            .iter()
            .any(|(m, p)| m == "POST" && p.contains("model.safetensors.sealed?uploads"))
    };
    let uploads = || {
        moto()
            .aws(&["s3api", "list-multipart-uploads", "--bucket", &name])
            .unwrap()
    };
    // SIGINT once the upload is under way: the seal deletes what it wrote, its claim, and
    // aborts its multipart upload; the name is free.
    let mark = log_len();
    let c = seal("r1");
    let t = std::time::Instant::now();
    while !upload_started(mark) {
        assert!(t.elapsed().as_secs() < 60, "no multipart upload started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(c.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("nothing partial was kept"), "{err}");
    assert!(
        objects(&name)
            .keys()
            .all(|k| !k.starts_with("p/models/int/r1/")),
        "{:?}",
        objects(&name)
    );
    assert!(!uploads().contains("UploadId"), "{}", uploads());
    let (ok, list, _) = cli_env(&vault, &env, &["list"]);
    assert!(ok && !list.contains("int"), "{list}");

    // SIGKILL: what it wrote stays, without a manifest: no command lists it, and a new seal
    // of the name says which prefix to delete.
    let mark = log_len();
    let mut c = seal("r1");
    let t = std::time::Instant::now();
    while !upload_started(mark) {
        if c.try_wait().unwrap().is_some() {
            let out = c.wait_with_output().unwrap();
            panic!("the seal ended: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(t.elapsed().as_secs() < 60, "no multipart upload started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let (ok, list, _) = cli_env(&vault, &env, &["list"]);
    assert!(ok && !list.contains("int"), "{list}");
    let (ok, _, err) = seal_env(&vault, &env, &src, "int@r1", &["--eccn", "EAR99"]);
    assert!(
        !ok && err.contains("unfinished seal") && err.contains("/p/models/int/r1/"),
        "{err}"
    );
    moto()
        .aws(&[
            "s3",
            "rm",
            "--recursive",
            &format!("s3://{name}/p/models/int/r1/"),
        ])
        .unwrap();
    let (ok, _, err) = seal_env(&vault, &env, &src, "int@r1", &["--eccn", "EAR99"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli_env(&vault, &env, &["verify", "int@r1"]);
    assert!(ok, "{err}");
}

#[test]
fn the_ledger_published_as_tiles_is_audited_from_the_buckets_and_public_key_alone() {
    let worm = new_worm_bucket();
    let head = new_bucket(false);
    let (tmp, vault) = fresh_vault();
    let tiles_section = |days: u32, mode: &str| {
        format!(
            "\n[ledger.tiles]\nurl = \"s3://{worm}/log\"\nhead_url = \"s3://{head}/log\"\nendpoint = \"{}\"\nallow_http = true\nworm_days = {days}\nworm_mode = \"{mode}\"\n",
            moto().endpoint
        )
    };
    let base = std::fs::read_to_string(vault.join("vault.toml")).unwrap();
    std::fs::write(
        vault.join("vault.toml"),
        format!("{base}{}", tiles_section(1, "governance")),
    )
    .unwrap();
    let env = moto().env();
    let ok = |args: &[&str]| {
        let (ok, out, err) = cli_env(&vault, &env, args);
        assert!(ok, "weightvault {args:?}: {err}");
        out
    };
    // 300 records: one full tile (and entry bundle) of 256, the rest partial.
    {
        let (l, _) =
            weightvault::ledger::Ledger::open(&vault.join("ledger"), "weightvault.local/ledger")
                .unwrap();
        for i in 0..300 {
            l.append(&record(i)).unwrap();
        }
    }
    let out = ok(&["audit", "publish"]);
    assert!(out.contains("0 -> 300 entries"), "{out}");
    let key = ok(&["audit", "public-key"]).trim().to_string();
    // The auditor: no vault, the buckets and the key.
    let nowhere = tmp.path().join("no-vault");
    let tiles = |extra: &[&str]| {
        let mut a = vec![
            "--tiles".to_string(),
            format!("s3://{worm}/log"),
            "--head".into(),
            format!("s3://{head}/log"),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let auditor = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_env(&nowhere, &env, &a)
    };
    let mut args = vec![
        "audit".to_string(),
        "verify".into(),
        "--public-key".into(),
        key.clone(),
    ];
    args.extend(tiles(&[]));
    let (okv, out, err) = auditor(args.clone());
    assert!(okv && out.contains("300 entries"), "{out}{err}");
    // `prove` takes the key from the environment the auditor sets.
    let mut prove = vec!["audit".to_string(), "prove".into(), "7".into()];
    prove.extend(tiles(&[]));
    let mut env2 = env.clone();
    env2.push(("WEIGHTVAULT_LEDGER_PUBLIC_KEY", key.clone()));
    let a: Vec<&str> = prove.iter().map(String::as_str).collect();
    let (okp, proof2, err) = cli_env(&nowhere, &env2, &a);
    assert!(okp, "{err}");
    let pf = tmp.path().join("proof.json");
    std::fs::write(&pf, &proof2).unwrap();
    let (okf, out, err) = auditor(vec![
        "audit".into(),
        "verify-proof".into(),
        pf.to_string_lossy().into_owned(),
        "--public-key".into(),
        key.clone(),
    ]);
    assert!(
        okf && out.contains("entry 7 is in the ledger at checkpoint size 300"),
        "{out}{err}"
    );

    // Publishing again is idempotent; more entries extend the published tree.
    let out = ok(&["audit", "publish"]);
    assert!(out.contains("300 -> 300 entries"), "{out}");
    {
        let (l, _) =
            weightvault::ledger::Ledger::open(&vault.join("ledger"), "weightvault.local/ledger")
                .unwrap();
        for i in 300..520 {
            l.append(&record(i)).unwrap();
        }
    }
    // `--json`: {"location", "from", "size", "objects"}.
    let out: serde_json::Value =
        serde_json::from_str(&ok(&["audit", "publish", "--json"])).unwrap();
    assert_eq!(
        (out["from"].as_u64(), out["size"].as_u64()),
        (Some(300), Some(520)),
        "{out}"
    );
    assert!(out["objects"].as_u64().unwrap() > 0);
    let (okv, out, err) = auditor(args.clone());
    assert!(okv && out.contains("520 entries"), "{out}{err}");

    // The write-once bucket: a full tile is created once (the server refuses a second
    // create), its locked version cannot be deleted, and a plain overwrite (a new version on
    // top) is caught by the audit.
    let full = "log/tile/0/000";
    let raw = Raw::new(&worm);
    let versions = moto()
        .aws(&[
            "s3api",
            "list-object-versions",
            "--bucket",
            &worm,
            "--prefix",
            full,
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&versions).unwrap();
    let version = v["Versions"][0]["VersionId"].as_str().unwrap().to_string();
    let objs = weightvault::store::bucket::Objects::new(&bucket_config(
        &format!("s3://{worm}/log"),
        16 << 20,
    ))
    .unwrap();
    let again = objs
        .create("tile/0/000", bytes::Bytes::from_static(b"forged"))
        .unwrap();
    assert!(
        matches!(again, weightvault::store::bucket::Created::Already(ref b) if b.len() == 256 * 32),
        "{again:?}"
    );
    let del = moto().aws(&[
        "s3api",
        "delete-object",
        "--bucket",
        &worm,
        "--key",
        full,
        "--version-id",
        &version,
    ]);
    assert!(del.is_err(), "a locked full tile was deleted");
    eprintln!("deleting the locked tile: {}", del.unwrap_err());
    let mut forged = raw.get(full);
    forged[5] ^= 1;
    raw.put(full, forged);
    let (okv, out, err) = auditor(args.clone());
    assert!(!okv, "the audit accepted a replaced full tile: {out}");
    assert!(err.contains("tile/0/000"), "{err}");

    // serve --require-worm: one day of GOVERNANCE is not five years of COMPLIANCE.
    std::fs::write(
        vault.join("vault.toml"),
        format!("{base}{}", tiles_section(1826, "compliance")),
    )
    .unwrap();
    let (oks, _, err) = cli_env(
        &vault,
        &env,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--require-worm",
            "--cert",
            "x",
            "--key",
            "x",
            "--client-ca",
            "x",
        ],
    );
    assert!(
        !oks && err.contains("--require-worm") && err.contains("GOVERNANCE, 1 days"),
        "{err}"
    );
}
