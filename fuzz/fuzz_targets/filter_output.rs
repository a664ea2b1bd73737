//! Arbitrary bytes as a WASM filter's output, through the output check and
//! the assembly of the response: what is served is always valid
//! exposition (the suite also runs `promtool` on this target's corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::filter_output(data);
});
