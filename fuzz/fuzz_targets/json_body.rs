//! Arbitrary bytes as a download or LoRA request body: no panic, accepted
//! requests are well-formed, refusals never repeat a secret.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::json_body(data);
});
