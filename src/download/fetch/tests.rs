//! The downloader against an in-memory origin that can fail on purpose.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::*;
use crate::download::verify::{Expect, hex};

mod digest;

/// Serves files from memory; can cut transfers short, fail transiently,
/// or refuse.
#[derive(Default)]
struct MemoryOrigin {
    files: HashMap<String, Vec<u8>>,
    /// Cut every n-th transfer after half its bytes (0: never), each part
    /// at most once: parallel parts share the call count, and a part whose
    /// every resume landed on an n-th call would run out of attempts.
    cut_every: u32,
    /// The ends of the ranges cut so far.
    cut_ends: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Fail this many transfers transiently before serving.
    transient_failures: AtomicU32,
    deny: bool,
    served: AtomicU64,
    calls: AtomicU32,
}

impl Origin for MemoryOrigin {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let call = self.calls.fetch_add(1, Relaxed) + 1;
        if self.deny {
            return Err(FetchError::Fatal(DownloadError::Denied("no".into())));
        }
        if self
            .transient_failures
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(FetchError::Transient("503 SlowDown".into()));
        }
        let bytes = &self.files[&file.locator][range.start as usize..range.end as usize];
        let cut = self.cut_every > 0
            && call.is_multiple_of(self.cut_every)
            && self.cut_ends.lock().unwrap().insert(range.end);
        let send = if cut {
            &bytes[..bytes.len() / 2]
        } else {
            bytes
        };
        for chunk in send.chunks(100_000) {
            self.served.fetch_add(chunk.len() as u64, Relaxed);
            sink(chunk)?;
        }
        if cut {
            Err(FetchError::Transient("connection reset".into()))
        } else {
            Ok(())
        }
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha256(data: &[u8]) -> Expect {
    let mut h = Expect::Sha256([0; 32]).hasher(0).unwrap();
    h.update(data);
    Expect::Sha256(h.finish().try_into().unwrap())
}

fn remote(rel: &str, data: &[u8]) -> RemoteFile {
    RemoteFile {
        rel: rel.into(),
        size: data.len() as u64,
        expect: sha256(data),
        version: "v1".into(),
        locator: rel.into(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_finished_runs);
    let dir = std::env::temp_dir().join(format!("mi-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Tests keep their directories for a look after a failure; the next
/// run removes those of runs that have ended, so they do not pile up.
fn remove_dirs_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with("mi-"))
            .and_then(|n| n.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 6,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    }
}

fn run_job(
    dir: &Path,
    origin: &MemoryOrigin,
    files: &[RemoteFile],
) -> (Result<(), DownloadError>, Progress) {
    let progress = Progress::default();
    let cancel = AtomicBool::new(false);
    let plan = Plan {
        workers: 4,
        retry: quick(),
        force: false,
    };
    let result = run(dir, files.to_vec(), origin, &plan, &progress, &cancel);
    (result, progress)
}

#[test]
fn downloads_verifies_and_skips_next_time() {
    let big = data(40 * 1024 * 1024 + 123, 1);
    let small = data(1000, 2);
    let files = [
        remote("nested/dir/big.bin", &big),
        remote("small.json", &small),
        remote("empty", b""),
    ];
    let origin = MemoryOrigin {
        files: files
            .iter()
            .zip([&big, &small, &Vec::new()])
            .map(|(f, d)| (f.locator.clone(), d.clone()))
            .collect(),
        ..MemoryOrigin::default()
    };
    let dir = temp_dir("ok");
    let (result, progress) = run_job(&dir, &origin, &files);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("nested/dir/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(dir.join("small.json")).unwrap(), small);
    assert_eq!(std::fs::read(dir.join("empty")).unwrap(), b"");
    assert_eq!(progress.files_done.load(Relaxed), 3);
    assert_eq!(
        progress.bytes_done.load(Relaxed),
        (big.len() + small.len()) as u64
    );
    // Big file in parts: 40 MiB / 8 MiB parts = 6 transfers, plus one small.
    assert_eq!(origin.calls.load(Relaxed), 7);
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(PART_SUFFIX))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Second run: everything verified already; nothing fetched.
    let (result, progress) = run_job(&dir, &origin, &files);
    result.unwrap();
    assert_eq!(origin.calls.load(Relaxed), 7);
    assert_eq!(progress.files_done.load(Relaxed), 3);
    assert_eq!(progress.bytes_fetched.load(Relaxed), 0);
}

#[test]
fn transient_faults_resume_from_the_byte_where_they_stopped() {
    let big = data(20 * 1024 * 1024, 3);
    let files = [remote("big", &big)];
    let origin = MemoryOrigin {
        files: [("big".to_string(), big.clone())].into(),
        cut_every: 2,
        transient_failures: AtomicU32::new(3),
        ..MemoryOrigin::default()
    };
    let dir = temp_dir("resume");
    let (result, progress) = run_job(&dir, &origin, &files);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), big);
    assert!(progress.retries.load(Relaxed) >= 3);
    // Cut transfers resumed where they stopped: every byte sent once.
    assert_eq!(origin.served.load(Relaxed), big.len() as u64);
}

#[test]
fn interrupted_download_resumes_from_finished_parts() {
    let big = data(33 * 1024 * 1024, 4);
    let files = [remote("big", &big)];
    let dir = temp_dir("journal");
    // A first run that gives up after a few parts (every transfer fails
    // once it has served some), as if the process had been killed.
    let origin = MemoryOrigin {
        files: [("big".to_string(), big.clone())].into(),
        ..MemoryOrigin::default()
    };
    {
        let progress = Progress::default();
        let cancel = AtomicBool::new(false);
        let limited = Limited {
            inner: &origin,
            budget: AtomicU32::new(3),
        };
        let plan = Plan {
            workers: 1,
            retry: quick(),
            force: false,
        };
        let result = run(&dir, files.to_vec(), &limited, &plan, &progress, &cancel);
        assert!(result.is_err());
        assert!(
            !dir.join("big").exists(),
            "nothing unverified at the final path"
        );
    }
    let before = origin.served.load(Relaxed);
    assert_eq!(before, 3 * PART_SIZE);
    let (result, progress) = run_job(&dir, &origin, &files);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), big);
    // Only the missing parts were fetched again.
    assert_eq!(
        origin.served.load(Relaxed) - before,
        big.len() as u64 - 3 * PART_SIZE
    );
    assert_eq!(
        progress.bytes_fetched.load(Relaxed),
        big.len() as u64 - 3 * PART_SIZE
    );
}

/// Serves `budget` transfers, then refuses everything.
struct Limited<'a> {
    inner: &'a MemoryOrigin,
    budget: AtomicU32,
}

impl Origin for Limited<'_> {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        if self
            .budget
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(FetchError::Fatal(DownloadError::Cancelled));
        }
        self.inner.fetch(file, range, sink)
    }
}

#[test]
fn corrupt_bytes_never_land() {
    let good = data(5000, 5);
    let mut file = remote("model.bin", &good);
    file.expect = sha256(b"something else");
    let origin = MemoryOrigin {
        files: [("model.bin".to_string(), good)].into(),
        ..MemoryOrigin::default()
    };
    let dir = temp_dir("corrupt");
    let (result, _) = run_job(&dir, &origin, &[file]);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Integrity {
                check: "SHA-256",
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.join("model.bin").exists());
    assert!(
        walk(&dir)
            .iter()
            .all(|p| !p.to_string_lossy().contains(PART_SUFFIX))
    );
}

#[test]
fn fatal_errors_stop_at_once() {
    let files = [remote("a", &data(10, 0)), remote("b", &data(10, 1))];
    let origin = MemoryOrigin {
        deny: true,
        ..MemoryOrigin::default()
    };
    let dir = temp_dir("deny");
    let (result, _) = run_job(&dir, &origin, &files);
    assert!(matches!(result, Err(DownloadError::Denied(_))));
    assert!(origin.calls.load(Relaxed) <= 4);
}

#[test]
fn exhausted_retries_report_what_failed() {
    let files = [remote("a", &data(10, 0))];
    let origin = MemoryOrigin {
        files: [("a".to_string(), data(10, 0))].into(),
        transient_failures: AtomicU32::new(100),
        ..MemoryOrigin::default()
    };
    let dir = temp_dir("exhausted");
    let (result, _) = run_job(&dir, &origin, &files);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "a bytes 0-9: gave up after 6 attempts: 503 SlowDown"
    );
}

#[test]
fn present_files_are_checked_not_trusted() {
    let good = data(3000, 6);
    let dir = temp_dir("present");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), data(3000, 7)).unwrap();
    let origin = MemoryOrigin {
        files: [("f".to_string(), good.clone())].into(),
        ..MemoryOrigin::default()
    };
    let (result, _) = run_job(&dir, &origin, &[remote("f", &good)]);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), good);
    assert_eq!(origin.calls.load(Relaxed), 1);
}

#[test]
fn names_cannot_escape() {
    let dir = Path::new("/out");
    assert_eq!(
        safe_join(dir, "a/b.bin").unwrap(),
        Path::new("/out/a/b.bin")
    );
    assert_eq!(safe_join(dir, "./a//b").unwrap(), Path::new("/out/a/b"));
    for bad in ["../x", "a/../../x", "/etc/passwd", "", ".", "a\0b"] {
        assert!(safe_join(dir, bad).is_err(), "{bad:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn digest_helpers_agree() {
    assert_eq!(hex(&[0xab, 0x01]), "ab01");
}
