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
//!
//! The same build packs the binary's relative relocations (`DT_RELR`, `-z
//! pack-relative-relocs`): 560 KiB of `.rela.dyn` that the dynamic loader
//! reads through at every start become 10 KiB, 0.4-0.7 MiB less idle RSS.
//! glibc loads such a binary from 2.36 on (Debian 12, the image's
//! distroless base); an older one refuses it at exec, so it is done only
//! when the glibc this build links against is 2.36 or later.

use std::env;
use std::path::Path;

#[path = "link/glibc_version.rs"]
mod glibc_version;

fn main() {
    let order = Path::new("link/startup-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=MATRIXINFER_NO_CODE_LAYOUT");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || env::var_os("MATRIXINFER_NO_CODE_LAYOUT").is_some() {
        return;
    }
    println!("cargo:rerun-if-changed=link/glibc_version.rs");
    // The build machine's glibc is the one linked against (host = target).
    let glibc =
        glibc_version::glibc_version().filter(|_| env::var("HOST").as_deref() == Ok(&target));
    if glibc.is_some_and(|version| version >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
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
