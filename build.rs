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
use std::process::Command;

fn main() {
    let order = Path::new("link/startup-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=MATRIXINFER_NO_CODE_LAYOUT");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || env::var_os("MATRIXINFER_NO_CODE_LAYOUT").is_some() {
        return;
    }
    if env::var("HOST").is_ok_and(|host| host == target) && host_glibc_at_least(2, 36) {
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

/// Whether the glibc of this (host = target) machine is `major.minor` or
/// later, from `getconf GNU_LIBC_VERSION` ("glibc 2.36"); no when unknown.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(have_major), Some(have_minor)) => (have_major, have_minor) >= (major, minor),
        _ => false,
    }
}
