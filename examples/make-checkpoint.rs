//! Writes a generated safetensors checkpoint of a given size, streaming (bounded memory), for
//! benchmarks and demos: `cargo run --release --example make-checkpoint -- OUT_DIR SIZE_MIB [SHARDS]`.
//! Tensors are BF16 matrices of 4096 columns with pseudo-random contents; with more than one
//! shard, `model.safetensors.index.json` is written too.

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: make-checkpoint OUT_DIR SIZE_MIB [SHARDS]"
    );
    let out = std::path::PathBuf::from(&args[1]);
    let size_mib: u64 = args[2].parse()?;
    let shards: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    std::fs::create_dir_all(&out)?;
    let cols = 4096u64;
    let row_bytes = cols * 2;
    let per_shard = size_mib * (1 << 20) / shards;
    // Tensors of 256 rows (2 MiB) each, plus a remainder.
    let mut weight_map = serde_json::Map::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for s in 0..shards {
        let name = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{shards:05}.safetensors", s + 1)
        };
        let rows_total = per_shard / row_bytes;
        let mut header = serde_json::Map::new();
        let mut off = 0u64;
        let mut t = 0;
        let mut rows_left = rows_total;
        while rows_left > 0 {
            let rows = rows_left.min(256);
            let len = rows * row_bytes;
            let tname = format!("layers.{s}.{t}.weight");
            header.insert(
                tname.clone(),
                serde_json::json!({"dtype": "BF16", "shape": [rows, cols], "data_offsets": [off, off + len]}),
            );
            weight_map.insert(tname, name.clone().into());
            off += len;
            rows_left -= rows;
            t += 1;
        }
        let mut json = serde_json::to_vec(&header)?;
        while (8 + json.len()) % 8 != 0 {
            json.push(b' ');
        }
        let f = std::fs::File::create(out.join(&name))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        let mut block = vec![0u8; 1 << 20];
        let mut left = off;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            for c in block[..n].chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            w.write_all(&block[..n])?;
            left -= n as u64;
        }
        w.flush()?;
    }
    if shards > 1 {
        std::fs::write(
            out.join("model.safetensors.index.json"),
            serde_json::to_vec_pretty(
                &serde_json::json!({"metadata": {}, "weight_map": weight_map}),
            )?,
        )?;
    }
    std::fs::write(out.join("config.json"), br#"{"model_type": "generated"}"#)?;
    Ok(())
}
