//! Bugs the fuzz targets found that are not fixed yet (each fix is outside this crate). While
//! one is open, its target steps around the inputs that reach it, so that fuzzing goes on past
//! it, and a test here checks that the parser itself still fails on the kept regression input:
//! once the fix lands that test fails, and the guard and the test go.

/// `parse_safetensors_meta` (core header_check.rs:344) computes `8 + n` from the file's own
/// 64-bit length prefix `n`: a prefix above `u64::MAX - 8` overflows (a panic where overflow
/// checks are on, debug and fuzz builds; in release it wraps, and the length check that
/// follows still refuses it).
pub(crate) fn safetensors_prefix_overflows(meta: &[u8]) -> bool {
    meta.get(..8)
        .is_some_and(|p| u64::from_le_bytes(p.try_into().expect("8")) > u64::MAX - 8)
}

/// `KeySlot::body` (core format/mod.rs:505) copies `4 + 4 + 1 + label + 2 + wrapped` bytes into
/// a body of [`KEY_SLOT_BODY_LEN`] (224) after checking each length alone (a label of up to 64
/// bytes, a wrapped key of up to 160): a label and a wrapped key longer than 213 bytes
/// together panic (range end index out of range).
pub(crate) fn key_slot_body_overflows(label: usize, wrapped: usize) -> bool {
    4 + 4 + 1 + label + 2 + wrapped > KEY_SLOT_BODY_LEN
}

use weightvault_core::format::KEY_SLOT_BODY_LEN;

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    fn kept(target: &str, name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target)
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn safetensors_prefix_overflow_is_still_open() {
        let b = kept("safetensors_header", "prefix-length-overflow");
        assert!(super::safetensors_prefix_overflows(&b[1..]));
        let r = catch_unwind(|| weightvault_core::header_check::parse_safetensors_meta(&b[1..]));
        assert!(
            r.is_err(),
            "fixed: remove known::safetensors_prefix_overflows and this test"
        );
    }

    #[test]
    fn key_slot_body_overflow_is_still_open() {
        let s = weightvault_core::format::KeySlot::new(1, &"k".repeat(64), 1, vec![1; 160]);
        assert!(super::key_slot_body_overflows(64, 160));
        assert!(
            catch_unwind(|| s.body()).is_err(),
            "fixed: remove known::key_slot_body_overflows and this test"
        );
    }
}
