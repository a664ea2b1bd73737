//! The release binary's code layout (build.rs): the functions that run at
//! start-up and on a scrape, as `link/startup-functions.txt` lists them, sit
//! together at the front of `.text`, so that the code the kernel maps around
//! each first touch is code that runs (idle RSS, docs/benchmarks.md). Fails
//! when the list has gone stale (a dependency or the toolchain renamed the
//! symbols), or when the linker stopped honouring it. And its relative
//! relocations are packed, so that the loader does not page in 560 KiB of
//! them at every start.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol};

use crate::util::*;

#[path = "../link/glibc_version.rs"]
mod glibc_version;

/// Relative relocations packed (`DT_RELR`, build.rs) where the glibc the
/// build links against loads them: `.rela.dyn`, which the dynamic loader
/// reads through at every start, keeps only the few that are not relative.
#[test]
fn relative_relocations_are_packed_where_glibc_loads_them() {
    let Some(binary) = crate::load::release_binary() else {
        eprintln!("relocations not checked: no release build (set MATRIXINFER_RELEASE_BIN)");
        return;
    };
    let glibc = glibc_version::glibc_version();
    if glibc.is_none_or(|version| version < (2, 36)) {
        eprintln!("relocations not checked: glibc {glibc:?} predates DT_RELR");
        return;
    }
    let bytes = std::fs::read(&binary).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let size = |name: &str| file.section_by_name(name).map(|s| s.size());
    let (relr, rela) = (size(".relr.dyn"), size(".rela.dyn").unwrap_or(0));
    assert!(
        relr.is_some_and(|n| n > 0),
        "no .relr.dyn in {}",
        binary.display()
    );
    assert!(rela < 64 * 1024, ".rela.dyn still holds {rela} bytes");
}

#[test]
fn startup_functions_sit_together_at_the_front_of_the_code() {
    let Some(binary) = crate::load::release_binary() else {
        eprintln!("code layout not checked: no release build (set MATRIXINFER_RELEASE_BIN)");
        return;
    };
    let list = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/startup-functions.txt"),
    )
    .unwrap();
    let listed: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(listed.len() > 500, "{} functions listed", listed.len());

    let bytes = std::fs::read(&binary).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let text = file.section_by_name(".text").expect("a .text section");
    let mut symbols: HashMap<&str, (u64, u64)> = HashMap::new();
    for symbol in file.symbols() {
        if let Ok(name) = symbol.name()
            && symbol.size() > 0
        {
            symbols.insert(name, (symbol.address(), symbol.size()));
        }
    }
    let found: Vec<(u64, u64)> = listed
        .iter()
        .filter_map(|name| symbols.get(name).copied())
        .collect();
    // Names ThinLTO suffixes with `.llvm.<module hash>` change with the
    // code and the checkout's path; the others only with the crates'
    // versions and the toolchain, and those must be there.
    let stable: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|name| !name.contains(".llvm."))
        .collect();
    let stable_found = stable.iter().filter(|n| symbols.contains_key(*n)).count();
    assert!(
        stable_found * 20 >= stable.len() * 19,
        "only {stable_found} of the {} functions in link/startup-functions.txt \
         (not counting ThinLTO's .llvm. names) are in {}: the list is stale; \
         run scripts/startup-order (with valgrind) and commit it",
        stable.len(),
        binary.display()
    );
    let code: u64 = found.iter().map(|(_, size)| size).sum();
    let start = found.iter().map(|(address, _)| *address).min().unwrap();
    let end = found
        .iter()
        .map(|(address, size)| address + size)
        .max()
        .unwrap();
    // Together: spread over little more than their own size (alignment
    // padding), and at the front of .text, not scattered through it.
    assert!(
        end - start <= code + code / 4,
        "{} KiB of start-up code spread over {} KiB",
        code / 1024,
        (end - start) / 1024
    );
    assert!(
        start - text.address() < 64 * 1024,
        "start-up code begins {} KiB into .text",
        (start - text.address()) / 1024
    );
    eprintln!(
        "{} start-up functions, {} KiB, in {} KiB at the front of {} KiB of code",
        found.len(),
        code / 1024,
        (end - start) / 1024,
        text.size() / 1024
    );
    idle_rss(&binary);
}

/// What the layout buys, printed for the record (RSS depends on the
/// kernel's fault-around, so it is not asserted here; the benchmark
/// harness reports it): idle RSS after a few scrapes.
fn idle_rss(binary: &std::path::Path) {
    let engine = Engine::flavor("vllm-v1").size("120k").start();
    let sidecar = Sidecar::new("vllm", engine.addr).binary(binary).start();
    for _ in 0..3 {
        assert_eq!(get(sidecar.addr, "/metrics").status, 200);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    eprintln!(
        "idle after three scrapes: VmRSS {}, RssFile {}, RssAnon {}",
        field("VmRSS:"),
        field("RssFile:"),
        field("RssAnon:")
    );
}
