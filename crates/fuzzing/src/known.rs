//! Bugs the fuzz targets found that are not fixed yet (each fix is outside this crate). While
//! one is open, its target steps around the inputs that reach it, so that fuzzing goes on past
//! it, and a test here runs the kept regression input through its target with the guard off
//! and checks that it still panics: once the fix lands that test fails, and the guard and the
//! test go.

use std::cell::Cell;

thread_local! {
    /// Whether the guards step around the open bugs (off only in the tests below).
    static STEP_AROUND: Cell<bool> = const { Cell::new(true) };
}

fn on() -> bool {
    STEP_AROUND.with(Cell::get)
}

/// `parse_safetensors_meta` (core header_check.rs:344) computes `8 + n` from the file's own
/// 64-bit length prefix `n`: a prefix above `u64::MAX - 8` overflows (a panic where overflow
/// checks are on, debug and fuzz builds; in release it wraps, and the length check that
/// follows still refuses it).
pub(crate) fn safetensors_prefix_overflows(meta: &[u8]) -> bool {
    on() && meta
        .get(..8)
        .is_some_and(|p| u64::from_le_bytes(p.try_into().expect("8")) > u64::MAX - 8)
}

/// `KeySlot::body` (core format/mod.rs:505) copies `4 + 4 + 1 + label + 2 + wrapped` bytes into
/// a body of [`KEY_SLOT_BODY_LEN`] (224) after checking each length alone (a label of up to 64
/// bytes, a wrapped key of up to 160): a label and a wrapped key longer than 213 bytes
/// together panic (range end index out of range).
pub(crate) fn key_slot_body_overflows(label: usize, wrapped: usize) -> bool {
    on() && 4 + 4 + 1 + label + 2 + wrapped > KEY_SLOT_BODY_LEN
}

/// `KeySlot::parse` (core format/mod.rs:545) has the same gap on the reading side, where the
/// bytes are a sealed file's: a slot whose label length (at most 64) and wrapped-key length
/// (at most 160) are each in range but end past the body slices `b[end..224]` with
/// `end > 224` and panics (slice index starts at 231 but ends at 224). Any sealed file in a
/// vault or a bucket can carry such a slot: `verify`, `open` and the service's parse of the
/// head (src/store/sealed.rs `SealedFile::from_object`) panic on it.
pub(crate) fn key_slot_parse_overruns(b: &[u8]) -> bool {
    if !on() || b.len() != KEY_SLOT_LEN {
        return false;
    }
    let ll = usize::from(b[8]);
    if ll == 0 || ll > 64 {
        return false;
    }
    let p = 9 + ll;
    let wl = usize::from(u16::from_be_bytes([b[p], b[p + 1]]));
    (1..=160).contains(&wl) && p + 2 + wl > KEY_SLOT_BODY_LEN
}

use weightvault_core::format::{KEY_SLOT_BODY_LEN, KEY_SLOT_LEN};

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    /// Runs a kept regression input through its target with the guards off.
    fn still_panics(target: &str, name: &str) -> bool {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target)
            .join(name);
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let (_, f) = crate::TARGETS.iter().find(|(n, _)| *n == target).unwrap();
        super::STEP_AROUND.with(|g| g.set(false));
        let r = catch_unwind(|| f(&b));
        super::STEP_AROUND.with(|g| g.set(true));
        r.is_err()
    }

    #[test]
    fn safetensors_prefix_overflow_is_still_open() {
        assert!(
            still_panics("safetensors_header", "prefix-length-overflow"),
            "fixed: remove known::safetensors_prefix_overflows and this test"
        );
    }

    #[test]
    fn key_slot_body_overflow_is_still_open() {
        assert!(
            still_panics("container_key_slots", "slot-body-overflow"),
            "fixed: remove known::key_slot_body_overflows and this test"
        );
    }

    #[test]
    fn key_slot_parse_overrun_is_still_open() {
        assert!(
            still_panics("container_key_slots", "slot-parse-overrun"),
            "fixed: remove known::key_slot_parse_overruns and this test"
        );
    }
}
