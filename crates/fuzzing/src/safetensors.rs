//! The safetensors header of a file handed over for sealing (and of a sealed file's clear
//! metadata): `header_check::parse_safetensors_meta` and `header_check::check`.

use crate::mode;
use crate::mutate::mutate;
use arbitrary::{Arbitrary, Unstructured};
use weightvault_core::header_check::{self, dtype_bits};

const DTYPES: &[&str] = &[
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
    "F64", "I64", "U64", "F4", "F6_E2M3", "F33",
];

/// One tensor entry: a name, a dtype picked from the known ones (and one unknown), a shape,
/// and offsets that either follow the previous tensor (what a writer does) or are arbitrary.
#[derive(Debug, Arbitrary)]
struct ArbTensor {
    name: String,
    dtype: u8,
    shape: Vec<u16>,
    contiguous: bool,
    offsets: [u64; 2],
}

#[derive(Debug, Arbitrary)]
struct ArbHeader {
    tensors: Vec<ArbTensor>,
    metadata: Option<Vec<(String, String)>>,
    data_len_delta: i8,
}

/// Mode byte 0: `parse_safetensors_meta` on raw bytes (8-byte length prefix, then JSON).
/// 1: `check` of the raw bytes as text, without a data length. 2: a header written as JSON from arbitrary tensors, prefixed, then mutated;
/// both readers see it. Whatever `check` accepts tiles the data exactly.
pub fn safetensors_header(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    match m % 3 {
        0 => {
            let _ = header_check::parse_safetensors_meta(rest);
        }
        1 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                checked(s, None);
            }
        }
        _ => structured(rest),
    }
}

fn structured(rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbHeader::arbitrary(&mut u) else {
        return;
    };
    let mut obj = serde_json::Map::new();
    if let Some(md) = a.metadata {
        let md: serde_json::Map<_, _> = md
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        obj.insert("__metadata__".into(), md.into());
    }
    let mut at = 0u64;
    for t in a.tensors.into_iter().take(64) {
        let dtype = DTYPES[usize::from(t.dtype) % DTYPES.len()];
        let shape: Vec<u64> = t.shape.iter().take(4).map(|&d| u64::from(d)).collect();
        let offsets = if t.contiguous {
            let bytes = dtype_bits(dtype)
                .map_or(4, |b| shape.iter().product::<u64>().saturating_mul(b) / 8);
            let o = [at, at.saturating_add(bytes)];
            at = o[1];
            o
        } else {
            t.offsets
        };
        obj.insert(
            t.name,
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
        );
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(obj)).expect("JSON serialises");
    let data_len = at.saturating_add_signed(i64::from(a.data_len_delta));
    let mut meta = (json.len() as u64).to_le_bytes().to_vec();
    meta.extend_from_slice(&json);
    mutate(&mut u, &mut meta);
    let _ = header_check::parse_safetensors_meta(&meta);
    if let Some(s) = meta.get(8..).and_then(|j| std::str::from_utf8(j).ok()) {
        checked(s, Some(data_len));
    }
}

fn checked(json: &str, data_len: Option<u64>) {
    if let Ok(tensors) = header_check::check(json, data_len) {
        let mut at = 0;
        for (_, t) in &tensors {
            assert_eq!(t.data_offsets[0], at, "accepted tensors leave no gap");
            at = t.data_offsets[1];
        }
        if let Some(len) = data_len {
            assert_eq!(at, len, "accepted tensors cover the data");
        }
    }
}
