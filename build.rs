//! The release binary's code layout: the functions that run at start-up and
//! on a scrape (`link/startup-functions.txt`, made by
//! `scripts/startup-order`) go together at the front of `.text`. The kernel
//! maps code in 64 KiB windows around each first touch; scattered through
//! 15 MiB of code, the 1.6 MiB that runs kept about 6.5 MiB of it resident
//! at idle (docs/benchmarks.md, "Idle RSS: the code that runs, together").
//!
//! Only where the linker is LLD, Rust's default for x86_64 Linux since
//! 1.90 (GNU ld has no such option); `MATRIXINFER_NO_CODE_LAYOUT=1` turns it
//! off for a toolchain that links otherwise.

use std::env;
use std::path::Path;

fn main() {
    let order = Path::new("link/startup-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=MATRIXINFER_NO_CODE_LAYOUT");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || env::var_os("MATRIXINFER_NO_CODE_LAYOUT").is_some() {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join(order);
    // Names missing from this build (renamed, inlined) are skipped quietly.
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
