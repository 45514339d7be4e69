#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightvault_fuzzing::ledger_frames(data));
