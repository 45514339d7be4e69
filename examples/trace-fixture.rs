//! Sets up a trace benchmark on a sealed revision: records RELEASES allowed release decisions
//! (each with a fresh codeword id) in the vault's ledger, as the service does, and writes the
//! copy that the middle release would have received (every eligible tensor marked with its
//! codeword) to OUT_DIR. Prints JSON: the marked release's ledger index and the count.
//! `cargo run --release --example trace-fixture -- VAULT MODEL@REV RELEASES OUT_DIR`
//! (OUT_DIR must not exist.)

use weightvault::ledger::record::Record;
use weightvault::store::{RevisionRef, Vault};
use weightvault::watermark::{mark, tardos, trace};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 5,
        "usage: trace-fixture VAULT MODEL@REV RELEASES OUT_DIR"
    );
    let dir = std::path::Path::new(&a[1]);
    // Before any thread: the library only checks SOFTHSM2_CONF (see weightvault::hsm).
    if let Some(conf) = Vault::softhsm2_conf_for(dir, None) {
        #[allow(clippy::disallowed_methods)]
        std::env::set_var(weightvault::hsm::SOFTHSM2_CONF_VAR, conf);
    }
    let v = Vault::open(dir)?;
    let r: RevisionRef = a[2].parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let n: u64 = a[3].parse()?;
    let out = std::path::PathBuf::from(&a[4]);
    let kw = v.key_wrap()?;
    let rev = v.open_revision(&r, &kw)?;
    let wm = v.watermark_key(&kw)?;
    // The plain copy, then each eligible tensor marked whole (the stream marks chunk by chunk
    // with the same result: see mark::tests::any_range_split_marks_like_whole_tensors).
    rev.open_to(&out, 2, &())?;
    let (files, segments) = trace::revision_tensors(&rev).map_err(|e| anyhow::anyhow!(e))?;
    let code = tardos::Code::new(&wm, segments, tardos::DEFAULT_CUTOFF);
    let (ledger, _) = v.ledger()?;
    let mut marked = None;
    for i in 0..n {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let rec = Record {
            kind: "release-decision".into(),
            time: "2026-11-23T00:00:00Z".into(),
            requester: format!("spiffe://acme.example/ns/serving/sa/node-{i}"),
            requester_kind: "workload".into(),
            organisation: Some("acme".into()),
            nationalities: vec![],
            host_id: Some(format!("node-{i}")),
            host_country: Some("US".into()),
            host_region: None,
            attester: Some("weightvault-test-attester".into()),
            source: Some("127.0.0.1".into()),
            model: rev.manifest.model.clone(),
            revision: Some(rev.manifest.revision.clone()),
            shards: vec![],
            outcome: "allowed".into(),
            failed_checks: vec![],
            authority: Some("NLR".into()),
            codeword: Some(hex::encode(id)),
            bytes: None,
            follows: None,
            reason: None,
        };
        let index = ledger.append(&rec)?;
        if i == n / 2 {
            marked = Some((index, code.codeword(&wm, &id)));
        }
    }
    let (index, cw) = marked.ok_or_else(|| anyhow::anyhow!("RELEASES must be at least 1"))?;
    for ((e, _), ts) in rev.files.iter().zip(&files) {
        if ts.is_empty() {
            continue;
        }
        let path = out.join(&e.path);
        let mut b = std::fs::read(&path)?;
        let data = 8 + u64::from_le_bytes(b[..8].try_into()?) as usize;
        for t in ts {
            let c = weightvault::watermark::carrier::Carrier::new(&wm, &t.name);
            let r = data + t.range.0 as usize..data + t.range.1 as usize;
            mark::embed(
                t.dtype,
                &c,
                0,
                &mut b[r],
                segments,
                &cw,
                weightvault::watermark::DEFAULT_REL_BITS,
            );
        }
        std::fs::write(&path, b)?;
    }
    println!(
        "{}",
        serde_json::json!({"marked_release": index, "releases": n, "segments": segments})
    );
    Ok(())
}
