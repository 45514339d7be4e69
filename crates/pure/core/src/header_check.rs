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

/// What is wrong with a safetensors header. Each message names the tensor and says what a
/// user can check; a file refused here is never sealed, and a sealed one never opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Not the strict JSON shape of a header (a name twice, an unknown field, a bad value).
    #[error("{0}")]
    Json(String),
    /// `data_offsets` that end before they start.
    #[error("tensor {name:?}: data_offsets [{start}, {end}] end before they start")]
    OffsetsBackwards {
        /// Tensor.
        name: String,
        /// First byte.
        start: u64,
        /// End.
        end: u64,
    },
    /// A dtype safetensors does not define.
    #[error("tensor {name:?}: dtype {dtype:?} is not a safetensors dtype")]
    UnknownDtype {
        /// Tensor.
        name: String,
        /// The dtype given.
        dtype: String,
    },
    /// A shape whose size does not fit in 64 bits.
    #[error("tensor {name:?}: shape {shape:?} overflows")]
    ShapeOverflows {
        /// Tensor.
        name: String,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// A shape of a sub-byte dtype that does not fill whole bytes.
    #[error("tensor {name:?}: shape {shape:?} of {dtype} is not a whole number of bytes")]
    NotWholeBytes {
        /// Tensor.
        name: String,
        /// Its shape.
        shape: Vec<u64>,
        /// Its dtype.
        dtype: String,
    },
    /// Shape and dtype give another size than the offsets.
    #[error(
        "tensor {name:?}: shape {shape:?} of {dtype} is {bytes} bytes but data_offsets [{start}, {end}] span {}",
        end - start
    )]
    SizeMismatch {
        /// Tensor.
        name: String,
        /// Its shape.
        shape: Vec<u64>,
        /// Its dtype.
        dtype: String,
        /// The size shape and dtype give.
        bytes: u64,
        /// First byte.
        start: u64,
        /// End.
        end: u64,
    },
    /// Two tensors share bytes.
    #[error("tensor {name:?}: data_offsets start at {start}, inside tensor {inside:?} (which ends at {inside_end})")]
    Overlap {
        /// Tensor.
        name: String,
        /// Its first byte.
        start: u64,
        /// The tensor it starts inside.
        inside: String,
        /// Where that one ends.
        inside_end: u64,
    },
    /// Bytes between two tensors (or before the first) that no tensor covers.
    #[error("tensor {name:?}: data_offsets start at {start}, leaving {gap} bytes unaccounted for after {after}")]
    Gap {
        /// Tensor.
        name: String,
        /// Its first byte.
        start: u64,
        /// Bytes uncovered.
        gap: u64,
        /// `the header` or `tensor "<name>"`.
        after: String,
    },
    /// The last tensor ends past the file's data.
    #[error("tensor {name:?} ends at byte {end} of the data, past the {len} bytes the file holds: the file is truncated or extended, or the header lies about offsets")]
    PastEnd {
        /// Tensor.
        name: String,
        /// Where it ends.
        end: u64,
        /// The data the file holds.
        len: u64,
    },
    /// Data after the last tensor.
    #[error("the tensors end at byte {end} of the data but the file holds {len} bytes: {} bytes no tensor accounts for (the file is truncated or extended, or the header lies about offsets)", len - end)]
    TrailingBytes {
        /// Where the tensors end.
        end: u64,
        /// The data the file holds.
        len: u64,
    },
    /// The 8-byte length prefix is missing or disagrees with the header's length.
    #[error("{0}")]
    Prefix(&'static str),
    /// The header is not UTF-8.
    #[error("header is not UTF-8")]
    NotUtf8,
    /// The safetensors crate refuses what this check accepted.
    #[error("invalid header: {0}")]
    Invalid(String),
}

/// A relative path inside a checkpoint that is not made of ordinary components.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Empty, or longer than the container allows.
    #[error("path is empty or too long")]
    Length,
    /// `.`, `..`, an empty component, NUL or a backslash.
    #[error("path '{path}' has a component '{component}' that is not allowed")]
    Component {
        /// The path.
        path: String,
        /// The component refused.
        component: String,
    },
}

/// Reads `json` strictly and checks that its tensors tile `[0, data_len)` exactly (when
/// `data_len` is given: the bytes after the header in the file). Returns the tensors in
/// data order.
pub fn check(
    json: &str,
    data_len: Option<u64>,
) -> Result<Vec<(String, HeaderTensor)>, HeaderError> {
    let mut tensors = serde_json::from_str::<Entries>(json)
        .map_err(|e| HeaderError::Json(e.to_string()))?
        .0;
    for (name, t) in &tensors {
        let [s, e] = t.data_offsets;
        if e < s {
            return Err(HeaderError::OffsetsBackwards {
                name: name.clone(),
                start: s,
                end: e,
            });
        }
        let bits = dtype_bits(&t.dtype).ok_or_else(|| HeaderError::UnknownDtype {
            name: name.clone(),
            dtype: t.dtype.clone(),
        })?;
        let elements = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(bits))
            .ok_or_else(|| HeaderError::ShapeOverflows {
                name: name.clone(),
                shape: t.shape.clone(),
            })?;
        if elements % 8 != 0 {
            return Err(HeaderError::NotWholeBytes {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: t.dtype.clone(),
            });
        }
        if elements / 8 != e - s {
            return Err(HeaderError::SizeMismatch {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: t.dtype.clone(),
                bytes: elements / 8,
                start: s,
                end: e,
            });
        }
    }
    tensors.sort_by_key(|(_, t)| t.data_offsets);
    let mut at = 0u64;
    let mut prev: Option<&str> = None;
    for (name, t) in &tensors {
        let [s, _] = t.data_offsets;
        if s < at {
            return Err(HeaderError::Overlap {
                name: name.clone(),
                start: s,
                inside: prev.unwrap_or("").to_string(),
                inside_end: at,
            });
        }
        if s > at {
            return Err(HeaderError::Gap {
                name: name.clone(),
                start: s,
                gap: s - at,
                after: prev.map_or("the header".to_string(), |p| format!("tensor {p:?}")),
            });
        }
        at = t.data_offsets[1];
        prev = Some(name);
    }
    if let Some(len) = data_len {
        if at > len {
            return Err(HeaderError::PastEnd {
                name: prev.unwrap_or("").to_string(),
                end: at,
                len,
            });
        }
        if at < len {
            return Err(HeaderError::TrailingBytes { end: at, len });
        }
    }
    Ok(tensors)
}

/// Checks a relative path is made of ordinary components only.
pub fn check_rel_path(rel: &str) -> Result<(), PathError> {
    if rel.is_empty() || rel.len() > crate::format::MAX_PATH_LEN {
        return Err(PathError::Length);
    }
    for c in rel.split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.contains('\\') {
            return Err(PathError::Component {
                path: rel.to_string(),
                component: c.to_string(),
            });
        }
    }
    Ok(())
}

/// Parses the 8-byte prefix + JSON header of a safetensors file into validated metadata
/// (offsets contiguous, sizes agree with dtypes and shapes).
pub fn parse_safetensors_meta(meta: &[u8]) -> Result<safetensors::tensor::Metadata, HeaderError> {
    if meta.len() < 8 {
        return Err(HeaderError::Prefix("header shorter than 8 bytes"));
    }
    let n = u64::from_le_bytes(meta[..8].try_into().expect("8")) as usize;
    // Compared without adding to `n`, which may be anything (found by fuzzing).
    if meta.len() - 8 != n {
        return Err(HeaderError::Prefix("header length prefix does not match"));
    }
    let json = std::str::from_utf8(&meta[8..]).map_err(|_| HeaderError::NotUtf8)?;
    check(json, None)?;
    serde_json::from_str::<safetensors::tensor::Metadata>(json)
        .map_err(|e| HeaderError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::check;

    const F32_2: &str = r#""dtype":"F32","shape":[2],"data_offsets""#;

    /// A length prefix near `u64::MAX` is refused, not added to (overflowed before; found by
    /// the safetensors_header fuzz target).
    #[test]
    fn a_huge_length_prefix_is_refused() {
        for n in [u64::MAX, u64::MAX - 7, 1 << 40] {
            let mut b = n.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            assert!(matches!(
                super::parse_safetensors_meta(&b),
                Err(super::HeaderError::Prefix(_))
            ));
        }
    }

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
            assert!(
                err.to_string().contains(want),
                "{json}: {err} (wanted {want})"
            );
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
