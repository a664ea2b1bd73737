//! The release binary's code layout: the functions that run at start-up and
//! on a scrape (`link/startup-functions.txt`, made by
//! `scripts/startup-order`) go together at the front of `.text`. The kernel
//! maps code in 64 KiB windows around each first touch; scattered through
//! 15 MiB of code, the 1.6 MiB that runs kept about 6.5 MiB of it resident
//! at idle (docs/benchmarks.md, "Idle RSS: the code that runs, together").
//!
//! The list goes to the linker as a script of input-section patterns, not
//! as a `--symbol-ordering-file`: ThinLTO renames the local functions it
//! shares between modules `<name>.llvm.<module hash>`, and that hash changes
//! with any edit to the module and with the checkout's path, so an exact
//! list made on one machine missed a sixth of its functions (many of them on
//! the scrape path) in every other build. A pattern matches the name with
//! any such suffix, and in `.text.unlikely.` too (cold-marked functions
//! such as `RawVec::grow_one`, which run at start-up all the same).
//!
//! `MATRIXINFER_NO_CODE_LAYOUT=1` turns it off for a toolchain whose linker
//! rejects the script.
//!
//! The same build packs the binary's relative relocations (`DT_RELR`, `-z
//! pack-relative-relocs`): 560 KiB of `.rela.dyn` that the dynamic loader
//! reads through at every start become 10 KiB, 0.4-0.7 MiB less idle RSS.
//! glibc loads such a binary from 2.36 on (Debian 12, the image's
//! distroless base); an older one refuses it at exec, so it is done only
//! when the glibc this build links against is 2.36 or later.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "link/glibc_version.rs"]
mod glibc_version;
#[path = "link/symbol_name.rs"]
mod symbol_name;

use symbol_name::base_symbol;

fn main() {
    let order = Path::new("link/startup-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=MATRIXINFER_NO_CODE_LAYOUT");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || env::var_os("MATRIXINFER_NO_CODE_LAYOUT").is_some() {
        return;
    }
    println!("cargo:rerun-if-changed=link/glibc_version.rs");
    println!("cargo:rerun-if-changed=link/symbol_name.rs");
    // The build machine's glibc is the one linked against (host = target).
    let glibc =
        glibc_version::glibc_version().filter(|_| env::var("HOST").as_deref() == Ok(&target));
    if glibc.is_some_and(|version| version >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The layout is for the binary that ships; debug builds link faster
    // without 1,600 patterns to match.
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = std::fs::read_to_string(Path::new(&dir).join(order))
        .expect("link/startup-functions.txt is readable");
    let script = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("startup-functions.ld");
    std::fs::write(&script, linker_script(&list)).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// `.text` with the listed functions first, in the list's order, and every
/// other function after them; the rest of the default layout unchanged.
/// Rust puts every function in its own `.text.<symbol>` input section;
/// names missing from this build (renamed, inlined) match nothing. (A
/// section of their own ahead of `.text` would do as well for the kernel,
/// but valgrind reads function names only in `.text`, and
/// `scripts/startup-order` needs them.)
fn linker_script(list: &str) -> String {
    let mut script = String::from("SECTIONS {\n  .text : {\n");
    let mut seen = std::collections::HashSet::new();
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let name = base_symbol(name);
        // Anything but what mangled names are made of would be read as
        // script syntax or a glob.
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'));
        if !plain || !seen.insert(name) {
            continue;
        }
        let _ = writeln!(
            script,
            "    *(.text.{name} .text.{name}.llvm.* .text.unlikely.{name} .text.unlikely.{name}.llvm.*)"
        );
    }
    script.push_str("    *(.text .text.*)\n  }\n} INSERT BEFORE .init;\n");
    script
}
