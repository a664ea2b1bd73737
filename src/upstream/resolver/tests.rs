use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ThreadId;
use std::time::Instant;

use super::*;

/// Waits for `check`, with the patience the suite allows.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::yield_now();
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A lookup that records the threads it ran on and answers the next port
/// of a counter (so each answer differs), failing while `fail` is set.
struct Recorder {
    calls: AtomicUsize,
    threads: Mutex<Vec<(ThreadId, Option<String>)>>,
    fail: AtomicBool,
}

impl Recorder {
    fn new(fail: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            calls: AtomicUsize::new(0),
            threads: Mutex::default(),
            fail: AtomicBool::new(fail),
        })
    }

    fn lookup(self: &Arc<Self>) -> Arc<Lookup> {
        let me = self.clone();
        Arc::new(move |host: &str, _port| {
            let current = std::thread::current();
            me.threads
                .lock()
                .unwrap()
                .push((current.id(), current.name().map(str::to_owned)));
            let n = me.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if me.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other(format!("{host}: no such host")));
            }
            Ok(vec![addr(n as u16)])
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[test]
fn address_literals_need_no_lookup() {
    let lookup: Arc<Lookup> = Arc::new(|_: &str, _| panic!("looked up a literal"));
    for (host, expected) in [
        ("127.0.0.1", "127.0.0.1:80"),
        ("[::1]", "[::1]:80"),
        ("::1", "[::1]:80"),
    ] {
        let resolver = Resolver::start_with(host, 80, RESOLVE_TTL, lookup.clone()).unwrap();
        assert_eq!(*resolver.addresses().unwrap(), [expected.parse().unwrap()]);
        resolver.refresh();
    }
}

#[test]
fn a_lookup_in_progress_never_blocks_the_caller() {
    let (release_tx, release_rx) = flume::bounded::<()>(0);
    let lookup: Arc<Lookup> = Arc::new(move |_: &str, _| {
        let _ = release_rx.recv();
        Ok(vec![addr(1)])
    });
    let resolver = Resolver::start_with("engine", 80, RESOLVE_TTL, lookup).unwrap();
    // The lookup is stuck until released; the caller gets an answer.
    assert_eq!(
        resolver.addresses().unwrap_err(),
        "the first lookup has not finished"
    );
    release_tx.send(()).unwrap();
    assert_eq!(
        *resolver.wait_first(Duration::from_secs(30)).unwrap(),
        [addr(1)]
    );
}

#[test]
fn looks_up_on_its_own_thread_again_every_ttl() {
    let recorder = Recorder::new(false);
    let resolver =
        Resolver::start_with("engine", 80, Duration::from_millis(1), recorder.lookup()).unwrap();
    let first = resolver.wait_first(Duration::from_secs(30)).unwrap();
    eventually("a lookup after the TTL", || {
        resolver.addresses().unwrap() != first && recorder.calls() >= 3
    });
    let caller = std::thread::current().id();
    for (thread, name) in recorder.threads.lock().unwrap().iter() {
        assert_ne!(*thread, caller, "a lookup ran on the caller's thread");
        assert_eq!(name.as_deref(), Some("engine-dns"));
    }
}

#[test]
fn a_name_that_does_not_resolve_says_why_until_a_refresh_finds_it() {
    let recorder = Recorder::new(true);
    // A TTL longer than any test: only `refresh` looks again.
    let resolver = Resolver::start_with(
        "engine.invalid",
        80,
        Duration::from_secs(3600),
        recorder.lookup(),
    )
    .unwrap();
    let reason = resolver.wait_first(Duration::from_secs(30)).unwrap_err();
    assert_eq!(reason, "engine.invalid: no such host");
    assert_eq!(recorder.calls(), 1);
    recorder.fail.store(false, Ordering::SeqCst);
    resolver.refresh();
    eventually("the refreshed addresses", || resolver.addresses().is_ok());
    assert_eq!(*resolver.addresses().unwrap(), [addr(2)]);
}

#[test]
fn a_failed_lookup_after_a_good_one_keeps_the_addresses() {
    let recorder = Recorder::new(false);
    let resolver =
        Resolver::start_with("engine", 80, Duration::from_secs(3600), recorder.lookup()).unwrap();
    assert_eq!(
        *resolver.wait_first(Duration::from_secs(30)).unwrap(),
        [addr(1)]
    );
    recorder.fail.store(true, Ordering::SeqCst);
    resolver.refresh();
    eventually("a second lookup", || recorder.calls() >= 2);
    // The thread stores an answer before it waits again: once a third
    // lookup has started, the failed second one has been stored.
    resolver.refresh();
    eventually("a third lookup", || recorder.calls() >= 3);
    assert_eq!(*resolver.addresses().unwrap(), [addr(1)]);
}

#[test]
fn an_empty_answer_is_an_error() {
    let lookup: Arc<Lookup> = Arc::new(|_: &str, _| Ok(Vec::new()));
    let resolver = Resolver::start_with("engine", 80, RESOLVE_TTL, lookup).unwrap();
    assert_eq!(
        resolver.wait_first(Duration::from_secs(30)).unwrap_err(),
        "engine has no address"
    );
}
