#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightvault_fuzzing::csl_import(data));
