//! Arbitrary bytes as an HTTP request head: no panic, consistent answers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::request(data);
});
