//! The release binary's code layout (build.rs): the functions that run at
//! start-up and on a scrape, as `link/startup-functions.txt` lists them, sit
//! together at the front of `.text`, so that the code the kernel maps around
//! each first touch is code that runs (idle RSS, docs/benchmarks.md). Fails
//! when the list has gone stale (the code, a dependency or the toolchain
//! renamed the symbols), when the linker stopped honouring it, or when a
//! running sidecar has code resident beyond it (with no filter, and after
//! compiling a `.wasm` one, whose compiler's pages it gives back). And its
//! relative relocations are packed, so that the loader does not page in
//! 560 KiB of them at every start.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::util::*;

/// The page size the kernel maps code in, on x86_64.
const PAGE: u64 = 4096;

#[path = "../link/glibc_version.rs"]
mod glibc_version;
#[path = "../link/symbol_name.rs"]
mod symbol_name;

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
    let listed: HashSet<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(symbol_name::base_symbol)
        .collect();
    assert!(listed.len() > 500, "{} functions listed", listed.len());

    let bytes = std::fs::read(&binary).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let text = file.section_by_name(".text").expect("a .text section");
    // Every symbol a listed name stands for: ThinLTO's `.llvm.<hash>`
    // suffix, which the list leaves off, varies from build to build.
    let mut found: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for symbol in file.symbols() {
        if let Ok(name) = symbol.name()
            && symbol.size() > 0
            && symbol.kind() == SymbolKind::Text
        {
            let base = symbol_name::base_symbol(name);
            if listed.contains(base) {
                found
                    .entry(base)
                    .or_default()
                    .push((symbol.address(), symbol.size()));
            }
        }
    }
    assert!(
        found.len() * 20 >= listed.len() * 19,
        "only {} of the {} functions in link/startup-functions.txt are in {}: \
         the list is stale; run scripts/startup-order (with valgrind) and commit it",
        found.len(),
        listed.len(),
        binary.display()
    );
    // The linker places every local copy of a name (one per codegen unit
    // that has one); the first is the one that counts here.
    let placed: Vec<(&str, u64, u64)> = found
        .iter()
        .map(|(name, copies)| {
            let (address, size) = *copies.iter().min().expect("found has a copy");
            (*name, address, size)
        })
        .collect();
    let code: u64 = placed.iter().map(|(_, _, size)| size).sum();
    // Together at the front of .text: within little more than their own
    // size (alignment padding) of its start, but for the odd function that
    // LLVM merged into another's body under that one's name.
    let front = text.address() + code + code / 4;
    let astray: Vec<&str> = placed
        .iter()
        .filter(|(_, address, size)| address + size > front)
        .map(|(name, _, _)| *name)
        .collect();
    assert!(
        astray.len() * 100 <= placed.len(),
        "{} of {} start-up functions lie beyond the first {} KiB of .text, e.g. {:?}",
        astray.len(),
        placed.len(),
        (front - text.address()) / 1024,
        &astray[..astray.len().min(3)]
    );
    let end = placed
        .iter()
        .map(|(_, address, size)| address + size)
        .filter(|&end| end <= front)
        .max()
        .unwrap();
    eprintln!(
        "{} start-up functions, {} KiB, in the first {} KiB of {} KiB of code; {} elsewhere",
        found.len(),
        code / 1024,
        (end - text.address()) / 1024,
        text.size() / 1024,
        astray.len()
    );
    // Where the listed code ends, in pages of the code mapping (which
    // starts at the page .text opens).
    let listed_end = end - (text.address() & !(PAGE - 1));
    code_that_ran_is_together(&binary, listed_end, &[]);
    // Compiling a `.wasm` filter runs Cranelift, megabytes of code no
    // scrape runs again: the compile gives its pages back
    // (src/filter/compiler_memory.rs).
    let filter = crate::filters::filter("passthrough");
    code_that_ran_is_together(&binary, listed_end, &["--filter", &filter]);
}

/// Runs the release sidecar through a few scrapes and checks which of its
/// code pages are resident: the kernel maps code in windows (64 KiB by
/// default) around each first touch, so a function that ran outside the
/// listed ones leaves a window of the code resident beyond them. A few
/// windows may differ from machine to machine (another CPU takes other
/// paths through memchr or zlib-rs); the stale list this replaced left
/// about 1.2 MiB in ten such windows. Idle RSS is printed for the record
/// (it depends on the page cache; the benchmark harness reports it).
fn code_that_ran_is_together(binary: &std::path::Path, listed_end: u64, args: &[&str]) {
    let engine = Engine::flavor("vllm-v1").size("120k").start();
    let sidecar = args
        .iter()
        .fold(Sidecar::new("vllm", engine.addr).binary(binary), |s, a| {
            s.arg(a)
        })
        .start();
    for gzip in [false, true, false] {
        let response = match gzip {
            true => get_gzip(sidecar.addr, "/metrics"),
            false => get(sidecar.addr, "/metrics"),
        };
        assert_eq!(response.status, 200);
    }
    let pid = sidecar.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    eprintln!(
        "idle after three scrapes ({args:?}): VmRSS {}, RssFile {}, RssAnon {}",
        field("VmRSS:"),
        field("RssFile:"),
        field("RssAnon:")
    );

    // The code mapping, and which of its pages are present (bit 63 of
    // each page's pagemap entry; readable for a process of one's own).
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let binary = std::fs::canonicalize(binary).unwrap();
    let code = maps
        .lines()
        .find(|l| l.contains(" r-xp ") && l.ends_with(binary.to_str().unwrap()))
        .expect("the binary's code mapping");
    let (low, high) = code
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    let low = u64::from_str_radix(low, 16).unwrap();
    let high = u64::from_str_radix(high, 16).unwrap();
    let mut pagemap = match std::fs::File::open(format!("/proc/{pid}/pagemap")) {
        Ok(file) => file,
        // A hardened kernel (Yama's ptrace scope 3) may refuse it.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("resident code not checked: /proc/{pid}/pagemap: {e}");
            return;
        }
        Err(e) => panic!("/proc/{pid}/pagemap: {e}"),
    };
    let mut entries = vec![0u8; ((high - low) / PAGE * 8) as usize];
    pagemap.seek(SeekFrom::Start(low / PAGE * 8)).unwrap();
    pagemap.read_exact(&mut entries).unwrap();
    let beyond = (listed_end + 128 * 1024) / PAGE;
    let stray = entries
        .chunks_exact(8)
        .map(|entry| u64::from_le_bytes(entry.try_into().unwrap()) >> 63 == 1)
        .enumerate()
        .filter(|&(page, present)| present && page as u64 >= beyond)
        .count() as u64
        * PAGE;
    eprintln!(
        "code resident beyond the listed functions (and 128 KiB past them), {args:?}: {} KiB",
        stray / 1024
    );
    assert!(
        stray <= 512 * 1024,
        "{args:?}: {} KiB of code resident beyond the start-up functions: functions \
         that ran at start-up or on a scrape are missing from link/startup-functions.txt \
         (run scripts/startup-order, with valgrind, and commit it), or with a filter, \
         the compiler's pages were not given back",
        stray / 1024
    );
}
