//! Round trips through a real SoftHSM2 token: the real MiniLM checkpoint and generated ones.

mod common;

use common::*;
use safetensors::Dtype;
use std::path::Path;
use weightvault::store::{RevisionRef, Vault};

fn rref(s: &str) -> RevisionRef {
    s.parse().unwrap()
}

/// Seals `src`, verifies, opens into a fresh directory and returns it.
fn round_trip(v: &Vault, src: &Path, model: &str, rev: &str, out: &Path) {
    let sh = shared();
    v.seal(src, &seal_request(model, rev), &sh.kw, &()).unwrap();
    let r = v
        .open_revision(&rref(&format!("{model}@{rev}")), &sh.kw)
        .unwrap();
    r.verify(2, &()).unwrap();
    r.open_to(out, 2, &()).unwrap();
}

#[test]
fn minilm_round_trip_is_byte_identical() {
    let sh = shared();
    let v = sh.vault(1 << 20);
    let src = minilm_dir();
    let tmp = scratch();
    let out = tmp.path().join("out");
    // An existing empty directory is an acceptable output.
    std::fs::create_dir(&out).unwrap();
    round_trip(&v, &src, "minilm", "pypi-0.1.0", &out);
    let want = tree_hashes(&src);
    assert_eq!(want.len(), 13);
    assert_eq!(
        tree_hashes(&out),
        want,
        "opened files differ from the original"
    );

    // A single tensor matches the original's bytes, dtype and shape.
    let r = v.open_revision(&rref("minilm@pypi-0.1.0"), &sh.kw).unwrap();
    let orig_bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let orig = safetensors::SafeTensors::deserialize(&orig_bytes).unwrap();
    for name in [
        "encoder.layer.3.attention.self.query.weight",
        "embeddings.position_ids",
        "embeddings.word_embeddings.weight",
    ] {
        let file = tmp.path().join(format!("{name}.safetensors"));
        r.open_tensor_to(name, &file).unwrap();
        let got_bytes = std::fs::read(&file).unwrap();
        let got = safetensors::SafeTensors::deserialize(&got_bytes).unwrap();
        assert_eq!(got.names().len(), 1);
        let (a, b) = (got.tensor(name).unwrap(), orig.tensor(name).unwrap());
        assert_eq!(a.dtype(), b.dtype());
        assert_eq!(a.shape(), b.shape());
        assert_eq!(a.data(), b.data(), "{name}");
    }
    assert!(r
        .open_tensor_to("no.such.tensor", &tmp.path().join("x"))
        .is_err());
}

type Tensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);

fn t(name: &'static str, d: Dtype, shape: Vec<usize>, seed: u64) -> Tensor {
    let n: usize = shape.iter().product::<usize>() * d.bitsize() / 8;
    (name, d, shape, bytes(seed, n))
}

#[test]
fn generated_checkpoints_round_trip() {
    let sh = shared();
    let tmp = scratch();
    // (case, chunk size, shards: each a list of tensors)
    let cases: Vec<(&str, u32, Vec<Vec<Tensor>>)> = vec![
        ("zero-tensors", 4096, vec![vec![]]),
        (
            "one-empty-tensor",
            4096,
            vec![vec![t("e", Dtype::F32, vec![0, 7], 1)]],
        ),
        (
            "straddling-chunks",
            4096,
            vec![vec![
                t("a", Dtype::F32, vec![1023], 2), // 4092 bytes: ends 4 short of a boundary
                t("b", Dtype::F32, vec![3, 1000], 3), // crosses three boundaries
                t("c", Dtype::U8, vec![1], 4),
                t("d", Dtype::BF16, vec![4096], 5), // exactly two chunks long, misaligned
            ]],
        ),
        (
            "all-dtypes",
            16,
            vec![vec![
                t("bf16", Dtype::BF16, vec![7, 9], 6),
                t("f16", Dtype::F16, vec![5, 3], 7),
                t("f32", Dtype::F32, vec![11], 8),
                t("i64", Dtype::I64, vec![1, 13], 9),
                t("u8", Dtype::U8, vec![33], 10),
            ]],
        ),
        (
            "three-shards",
            1 << 12,
            vec![
                vec![t("l0.w", Dtype::BF16, vec![64, 64], 11)],
                vec![
                    t("l1.w", Dtype::BF16, vec![64, 65], 12),
                    t("l1.b", Dtype::F32, vec![65], 13),
                ],
                vec![t("head.w", Dtype::F16, vec![10, 300], 14)],
            ],
        ),
    ];
    for (case, cs, shards) in cases {
        let src = tmp.path().join(case);
        std::fs::create_dir_all(&src).unwrap();
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        for (i, tensors) in shards.iter().enumerate() {
            let name = if n == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            };
            write_safetensors(&src.join(&name), tensors);
            for t in tensors {
                weight_map.insert(t.0.into(), name.clone().into());
            }
        }
        if n > 1 {
            std::fs::write(
                src.join("model.safetensors.index.json"),
                serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": weight_map}))
                    .unwrap(),
            )
            .unwrap();
            std::fs::write(src.join("config.json"), br#"{"model_type":"test"}"#).unwrap();
            std::fs::create_dir_all(src.join("tokenizer")).unwrap();
            std::fs::write(src.join("tokenizer/vocab.txt"), b"a\nb\n").unwrap();
        }
        let v = sh.vault(cs);
        let out = tmp.path().join(format!("{case}.out"));
        round_trip(&v, &src, "generated", case, &out);
        assert_eq!(tree_hashes(&out), tree_hashes(&src), "case {case}");
        let r = v
            .open_revision(&rref(&format!("generated@{case}")), &sh.kw)
            .unwrap();
        assert_eq!(
            r.files.iter().filter(|(e, _)| e.shard_count > 0).count(),
            n,
            "case {case}"
        );
    }
}

#[test]
fn byte_ranges_decrypt_alone() {
    let sh = shared();
    let tmp = scratch();
    let src = tmp.path().join("ranges.safetensors");
    let data = bytes(42, 10_000 * 4);
    write_safetensors(&src, &[("w", Dtype::F32, vec![10_000], data.clone())]);
    let v = sh.vault(1000);
    v.seal(&src, &seal_request("ranges", "r1"), &sh.kw, &())
        .unwrap();
    let r = v.open_revision(&rref("ranges@r1"), &sh.kw).unwrap();
    let (_, f) = &r.files[0];
    for (s, e) in [
        (0, 0),
        (0, 1),
        (999, 1001),
        (1000, 2000),
        (123, 39_999),
        (39_999, 40_000),
        (0, 40_000),
    ] {
        assert_eq!(
            f.read_range(s, e).unwrap(),
            data[s as usize..e as usize],
            "{s}..{e}"
        );
    }
    assert!(f.read_range(0, 40_001).is_err());
}

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let sh = shared();
    let tmp = scratch();
    let v = sh.vault(4096);
    let good = tmp.path().join("good.safetensors");
    write_safetensors(&good, &[("w", Dtype::F32, vec![100], bytes(1, 400))]);
    // A header that lies about offsets: claim 404 bytes of data where there are 400.
    let lying = tmp.path().join("lying.safetensors");
    let raw = std::fs::read(&good).unwrap();
    let text = String::from_utf8_lossy(&raw)
        .replace("[100]", "[101]")
        .replace("[0,400]", "[0,404]");
    std::fs::write(&lying, text.as_bytes()).unwrap();
    let short = tmp.path().join("short.safetensors");
    std::fs::write(&short, &raw[..raw.len() - 1]).unwrap();
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
    let not_st = tmp.path().join("notes.txt");
    std::fs::write(&not_st, b"hello").unwrap();
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let cases: Vec<(&Path, &str, &str)> = vec![
        (&lying, "r", "not a valid safetensors file"),
        (&short, "r", "truncated or extended"),
        (&garbage, "r", "not a valid safetensors file"),
        (&not_st, "r", "must be a .safetensors file"),
        (&empty_dir, "r", "directory is empty"),
        (&good, "bad/rev", "is not allowed"),
        (&good, "..", "is not allowed"),
    ];
    for (src, rev, want) in cases {
        let e = v
            .seal(src, &seal_request("bad", rev), &sh.kw, &())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want),
            "{}: got '{e}', want '{want}'",
            src.display()
        );
    }
    assert!(v.revisions("bad").map(|r| r.is_empty()).unwrap_or(true));
    v.seal(&good, &seal_request("bad", "ok"), &sh.kw, &())
        .unwrap();
    let e = v
        .seal(&good, &seal_request("bad", "ok"), &sh.kw, &())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already sealed"), "{e}");
}

#[test]
fn a_failed_tensor_open_leaves_no_file() {
    let sh = shared();
    let tmp = scratch();
    let src = tmp.path().join("t.safetensors");
    write_safetensors(&src, &[("w", Dtype::F32, vec![4000], bytes(9, 16_000))]);
    let v = sh.vault(4096);
    v.seal(&src, &seal_request("tensorfail", "r1"), &sh.kw, &())
        .unwrap();
    // Damage the last chunk: the tensor's first chunks are written before the failure.
    let sealed = sh
        .vault_dir()
        .join("models/tensorfail/r1/files/t.safetensors.sealed");
    let mut b = std::fs::read(&sealed).unwrap();
    let n = b.len();
    b[n - 10] ^= 1;
    std::fs::write(&sealed, b).unwrap();
    let r = v.open_revision(&rref("tensorfail@r1"), &sh.kw).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let e = r
        .open_tensor_to("w", &out_dir.join("w.safetensors"))
        .unwrap_err();
    assert!(e.to_string().contains("failed authentication"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "a failed tensor open left {left:?}");
}
