//! The digest computed as bytes arrive (parts out of order, retries,
//! resume) and the batched syncs, against the in-memory origin.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::*;

/// Holds back part 0 until the origin has served every other byte of
/// the file, so that every other part finishes first.
struct HoldFirst<'a> {
    inner: &'a MemoryOrigin,
}

impl Origin for HoldFirst<'_> {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        if range.start == 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.inner.served.load(Relaxed) < file.size - PART_SIZE {
                assert!(Instant::now() < deadline, "the other parts never finished");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.inner.fetch(file, range, sink)
    }
}

fn run_with(
    dir: &Path,
    origin: &dyn Origin,
    files: &[RemoteFile],
    workers: usize,
) -> (Result<(), DownloadError>, Progress) {
    let progress = Progress::default();
    let cancel = AtomicBool::new(false);
    let plan = Plan {
        workers,
        retry: quick(),
        force: false,
    };
    let result = run(dir, files.to_vec(), origin, &plan, &progress, &cancel);
    (result, progress)
}

fn serving(rel: &str, data: &[u8]) -> MemoryOrigin {
    MemoryOrigin {
        files: [(rel.to_string(), data.to_vec())].into(),
        ..MemoryOrigin::default()
    }
}

#[test]
fn parts_finishing_out_of_order_are_hashed_in_order() {
    let big = data(5 * PART_SIZE as usize, 10);
    let files = [remote("big", &big)];
    let origin = MemoryOrigin {
        cut_every: 3,
        ..serving("big", &big)
    };
    let dir = temp_dir("out-of-order");
    let (result, progress) = run_with(&dir, &HoldFirst { inner: &origin }, &files, 4);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), big);
    assert_eq!(progress.checks().get("sha256"), Some(&1));
    // Part 0 streamed into the digest; the four parts that finished
    // before it were read back once it had.
    assert_eq!(
        progress.bytes_read_back.load(Relaxed),
        big.len() as u64 - PART_SIZE
    );
    assert_eq!(origin.served.load(Relaxed), big.len() as u64);
}

#[test]
fn a_corrupt_byte_in_a_part_read_back_fails_the_digest() {
    let good = data(5 * PART_SIZE as usize, 11);
    let mut bad = good.clone();
    bad[3 * PART_SIZE as usize + 4567] ^= 0x20;
    let files = [remote("model.bin", &good)];
    let origin = serving("model.bin", &bad);
    let dir = temp_dir("corrupt-part");
    let (result, progress) = run_with(&dir, &HoldFirst { inner: &origin }, &files, 4);
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
    assert!(progress.bytes_read_back.load(Relaxed) > 0);
    assert!(!dir.join("model.bin").exists());
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(PART_SUFFIX))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn one_worker_reads_nothing_back_and_syncs_in_batches() {
    let parts = 20;
    let big = data(parts * PART_SIZE as usize, 12);
    let files = [remote("big", &big)];
    // Transfers cut midway are retried from where they stopped: the
    // digest must not see those bytes twice.
    let origin = MemoryOrigin {
        cut_every: 3,
        ..serving("big", &big)
    };
    let dir = temp_dir("one-worker");
    let (result, progress) = run_with(&dir, &origin, &files, 1);
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), big);
    assert!(progress.retries.load(Relaxed) >= 5);
    assert_eq!(origin.served.load(Relaxed), big.len() as u64);
    assert_eq!(progress.bytes_read_back.load(Relaxed), 0);
    // One sync per SYNC_EVERY bytes of finished parts, and one to land.
    let syncs = progress.syncs.load(Relaxed);
    assert_eq!(syncs, big.len() as u64 / SYNC_EVERY, "{syncs} syncs");
    assert!(syncs * 3 < parts as u64, "{syncs} syncs for {parts} parts");
}

#[test]
fn a_resumed_download_rehashes_what_is_on_disk_and_says_so() {
    let big = data(33 * 1024 * 1024, 13);
    let files = [remote("big", &big)];
    let dir = temp_dir("rehash");
    let origin = serving("big", &big);
    let limited = Limited {
        inner: &origin,
        budget: AtomicU32::new(3),
    };
    let (result, progress) = run_with(&dir, &limited, &files, 1);
    assert!(result.is_err());
    // The three finished parts, synced once as the run stopped, then
    // recorded.
    assert_eq!(progress.syncs.load(Relaxed), 1);
    let journal = std::fs::read_to_string(dir.join(format!(".big{PART_SUFFIX}.journal"))).unwrap();
    assert_eq!(journal.lines().skip(1).collect::<Vec<_>>(), ["0", "1", "2"]);

    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let (result, progress) =
        tracing::subscriber::with_default(subscriber, || run_with(&dir, &origin, &files, 1));
    result.unwrap();
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), big);
    let on_disk = 3 * PART_SIZE;
    assert_eq!(
        progress.bytes_fetched.load(Relaxed),
        big.len() as u64 - on_disk
    );
    // The resumed parts, read back once; the rest streamed.
    assert_eq!(progress.bytes_read_back.load(Relaxed), on_disk);
    let logs = logs.text();
    assert!(
        logs.contains(&format!(
            "resuming: re-hashing {on_disk} bytes already on disk"
        )),
        "{logs}"
    );
}

/// Log lines written by a test's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[test]
fn parts_hashed_and_synced_are_let_go_whatever_the_parts_before() {
    use super::super::prefix::Prefix;
    let parts = [0..10, 10..20, 20..30];
    let file: Vec<u8> = (0..30).collect();
    let read = |buf: &mut [u8], at: u64| {
        buf.copy_from_slice(&file[at as usize..at as usize + buf.len()]);
        Ok(())
    };
    let (progress, cancel) = (Progress::default(), AtomicBool::new(false));
    // Part 1 was on disk already (and synced); parts 0 and 2 come now.
    let prefix = Prefix::new(
        &parts,
        &[false, true, false],
        Expect::Md5([0; 16]).hasher(30),
    );
    // The ranges let go, as (start, end).
    let spans = |ranges: Vec<Range<u64>>| -> Vec<(u64, u64)> {
        ranges.into_iter().map(|r| (r.start, r.end)).collect()
    };
    let wrote = |part, at: u64, end: u64| {
        let chunk = &file[at as usize..end as usize];
        spans(
            prefix
                .wrote(part, at, chunk, &read, &progress, &cancel)
                .unwrap(),
        )
    };
    let synced = |written: &[u64]| spans(prefix.synced(written));
    // Nothing hashed: part 0 has no bytes yet.
    assert_eq!(wrote(2, 20, 25), []);
    let before_part_0 = prefix.written().unwrap();
    assert_eq!(before_part_0, [0, 20, 25]);
    // Hashed to 20 (part 0 from memory, part 1 read back): part 1, on
    // disk, goes although part 0 does not.
    assert_eq!(wrote(0, 0, 10), [(10, 20)]);
    // A sync that started before part 0 was written does not cover it.
    assert_eq!(synced(&before_part_0), []);
    assert_eq!(synced(&prefix.written().unwrap()), [(0, 10)]);
    // Part 2 is hashed, but not all of it on disk; then it is.
    assert_eq!(wrote(2, 25, 30), []);
    assert_eq!(synced(&prefix.written().unwrap()), [(20, 30)]);
    assert_eq!(synced(&prefix.written().unwrap()), []);
    // No digest: nothing to say.
    assert_eq!(Prefix::new(&parts, &[false; 3], None).written(), None);
}
