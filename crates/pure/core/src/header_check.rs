//! A strict reading of a safetensors JSON header, before anything is sealed: one meaning for
//! every header, or a refusal that names the tensor. Pure (a string in, a verdict out).
//!
//! JSON parsers disagree on a key given twice (first wins, last wins, error), so a header
//! that names a tensor twice can make the vault and a loader read different weights from one
//! file; the `safetensors` crate keeps the last one silently. Refused here too: fields other
//! than `dtype`, `shape` and `data_offsets`, `__metadata__` values that are not strings,
//! offsets that overlap, leave gaps, run backwards or past the data, unknown dtypes, and
//! shapes whose byte size disagrees with the offsets. Nesting deeper than this fixed shape is
//! a type error at the first level too deep.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;

/// One tensor as its header entry gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderTensor {
    /// Dtype name as written.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// `[start, end)` in the data region.
    pub data_offsets: [u64; 2],
}

struct Entries(Vec<(String, HeaderTensor)>);

/// `__metadata__`: strings to strings, each key once.
struct Metadata;

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Metadata, A::Error> {
                let mut seen = HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    let _: String = m
                        .next_value()
                        .map_err(|e| de::Error::custom(format!("__metadata__ key {k:?}: {e}")))?;
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format!("__metadata__ names {k:?} twice")));
                    }
                }
                Ok(Metadata)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format!(
                            "tensor {k:?} is named twice (readers disagree on which entry counts)"
                        )));
                    }
                    if k == "__metadata__" {
                        m.next_value::<Metadata>()?;
                        continue;
                    }
                    let t: HeaderTensor = m
                        .next_value()
                        .map_err(|e| de::Error::custom(format!("tensor {k:?}: {e}")))?;
                    out.push((k, t));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Bits per element of a dtype safetensors knows, `None` for any other name.
pub fn dtype_bits(name: &str) -> Option<u64> {
    let d: safetensors::Dtype =
        serde_json::from_value(serde_json::Value::String(name.into())).ok()?;
    Some(d.bitsize() as u64)
}

/// Reads `json` strictly and checks that its tensors tile `[0, data_len)` exactly (when
/// `data_len` is given: the bytes after the header in the file). Returns the tensors in
/// data order.
pub fn check(json: &str, data_len: Option<u64>) -> Result<Vec<(String, HeaderTensor)>, String> {
    let mut tensors = serde_json::from_str::<Entries>(json)
        .map_err(|e| e.to_string())?
        .0;
    for (name, t) in &tensors {
        let [s, e] = t.data_offsets;
        if e < s {
            return Err(format!(
                "tensor {name:?}: data_offsets [{s}, {e}] end before they start"
            ));
        }
        let bits = dtype_bits(&t.dtype).ok_or_else(|| {
            format!(
                "tensor {name:?}: dtype {:?} is not a safetensors dtype",
                t.dtype
            )
        })?;
        let elements = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(bits))
            .ok_or_else(|| format!("tensor {name:?}: shape {:?} overflows", t.shape))?;
        if elements % 8 != 0 {
            return Err(format!(
                "tensor {name:?}: shape {:?} of {} is not a whole number of bytes",
                t.shape, t.dtype
            ));
        }
        if elements / 8 != e - s {
            return Err(format!(
                "tensor {name:?}: shape {:?} of {} is {} bytes but data_offsets [{s}, {e}] span {}",
                t.shape,
                t.dtype,
                elements / 8,
                e - s
            ));
        }
    }
    tensors.sort_by_key(|(_, t)| t.data_offsets);
    let mut at = 0u64;
    let mut prev: Option<&str> = None;
    for (name, t) in &tensors {
        let [s, _] = t.data_offsets;
        if s < at {
            return Err(format!(
                "tensor {name:?}: data_offsets start at {s}, inside tensor {:?} (which ends at {at})",
                prev.unwrap_or("")
            ));
        }
        if s > at {
            return Err(format!(
                "tensor {name:?}: data_offsets start at {s}, leaving {} bytes unaccounted for after {}",
                s - at,
                prev.map_or("the header".to_string(), |p| format!("tensor {p:?}"))
            ));
        }
        at = t.data_offsets[1];
        prev = Some(name);
    }
    if let Some(len) = data_len {
        if at > len {
            return Err(format!(
                "tensor {:?} ends at byte {at} of the data, past the {len} bytes the file holds: the file is truncated or extended, or the header lies about offsets",
                prev.unwrap_or("")
            ));
        }
        if at < len {
            return Err(format!(
                "the tensors end at byte {at} of the data but the file holds {len} bytes: {} bytes no tensor accounts for (the file is truncated or extended, or the header lies about offsets)",
                len - at
            ));
        }
    }
    Ok(tensors)
}

/// Checks a relative path is made of ordinary components only.
pub fn check_rel_path(rel: &str) -> Result<(), String> {
    if rel.is_empty() || rel.len() > crate::format::MAX_PATH_LEN {
        return Err("path is empty or too long".into());
    }
    for c in rel.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.contains('\\') {
            return Err(format!(
                "path '{rel}' has a component '{c}' that is not allowed"
            ));
        }
    }
    Ok(())
}

/// Parses the 8-byte prefix + JSON header of a safetensors file into validated metadata
/// (offsets contiguous, sizes agree with dtypes and shapes).
pub fn parse_safetensors_meta(meta: &[u8]) -> Result<safetensors::tensor::Metadata, String> {
    if meta.len() < 8 {
        return Err("header shorter than 8 bytes".into());
    }
    let n = u64::from_le_bytes(meta[..8].try_into().expect("8")) as usize;
    if meta.len() != 8 + n {
        return Err("header length prefix does not match".into());
    }
    let json = std::str::from_utf8(&meta[8..]).map_err(|_| "header is not UTF-8".to_string())?;
    check(json, None)?;
    serde_json::from_str::<safetensors::tensor::Metadata>(json)
        .map_err(|e| format!("invalid header: {e}"))
}

#[cfg(test)]
mod tests {
    use super::check;

    const F32_2: &str = r#""dtype":"F32","shape":[2],"data_offsets""#;

    #[test]
    fn headers_that_must_be_refused_and_why() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let rows: Vec<(String, Option<u64>, &str)> = vec![
            (
                format!(r#"{{"a":{{{F32_2}:[0,8]}},"a":{{{F32_2}:[8,16]}}}}"#),
                Some(16),
                r#"tensor "a" is named twice"#,
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8]}},"b":{{{F32_2}:[4,12]}}}}"#),
                Some(12),
                r#"tensor "b": data_offsets start at 4, inside tensor "a""#,
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8]}},"b":{{{F32_2}:[10,18]}}}}"#),
                Some(18),
                "leaving 2 bytes unaccounted for",
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[8,0]}}}}"#),
                Some(8),
                "end before they start",
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8]}}}}"#),
                Some(4),
                "past the 4 bytes the file holds",
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8]}}}}"#),
                Some(9),
                "1 bytes no tensor accounts for",
            ),
            (
                r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#.into(),
                Some(8),
                r#"dtype "F33" is not a safetensors dtype"#,
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#.into(),
                Some(8),
                "is 12 bytes but data_offsets [0, 8] span 8",
            ),
            (
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#.into(),
                Some(1),
                "not a whole number of bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#
                    .into(),
                Some(8),
                "overflows",
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8],"extra":1}}}}"#),
                Some(8),
                "unknown field `extra`",
            ),
            (
                format!(r#"{{"a":{{{F32_2}:[0,8],"dtype":"I64"}}}}"#),
                Some(8),
                "duplicate field `dtype`",
            ),
            (
                r#"{"__metadata__":{"k":"1","k":"2"}}"#.into(),
                Some(0),
                r#"__metadata__ names "k" twice"#,
            ),
            (
                r#"{"__metadata__":{"k":{"x":"y"}}}"#.into(),
                Some(0),
                r#"__metadata__ key "k": invalid type"#,
            ),
            (
                format!(r#"{{"a":{{"dtype":"F32","shape":{deep},"data_offsets":[0,4]}}}}"#),
                Some(4),
                r#"tensor "a": invalid type"#,
            ),
            (deep.clone(), None, "invalid type: sequence"),
            ("[]".into(), None, "invalid type: sequence"),
        ];
        for (json, len, want) in rows {
            let err = check(&json, len).expect_err(&json);
            assert!(err.contains(want), "{json}: {err} (wanted {want})");
        }
    }

    #[test]
    fn good_headers_pass_in_data_order() {
        let json = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"b":{{{F32_2}:[8,16]}},"a":{{{F32_2}:[0,8]}},"e":{{"dtype":"I64","shape":[0],"data_offsets":[16,16]}}}}"#
        );
        let t = check(&json, Some(16)).unwrap();
        let names: Vec<_> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "e"]);
        assert!(check("{}", Some(0)).unwrap().is_empty());
    }
}
