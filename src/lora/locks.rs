//! Per-adapter-name locks: operations on one name never interleave, and
//! operations on different names never wait for each other.
//!
//! The map holds an entry only while some operation holds or waits for
//! that name's lock, so it does not grow with every name ever used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The lock of every adapter name in use.
#[derive(Debug, Default)]
pub(super) struct NameLocks {
    names: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl NameLocks {
    /// Joins the holders and waiters of `name`'s lock; take the lock with
    /// [`Claim::lock`]. The entry is pruned when the last claim ends.
    pub(super) fn claim(&self, name: &str) -> Claim<'_> {
        let lock = self.map().entry(name.to_owned()).or_default().clone();
        Claim {
            locks: self,
            name: name.to_owned(),
            lock,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<()>>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names with an entry.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }

    /// Claims on `name` (holders and waiters).
    #[cfg(test)]
    fn claims(&self, name: &str) -> usize {
        self.map()
            .get(name)
            .map_or(0, |lock| Arc::strong_count(lock) - 1)
    }
}

/// An operation's interest in one name's lock. Lock guards taken from it
/// must be dropped before it (declare them after it).
#[derive(Debug)]
pub(super) struct Claim<'a> {
    locks: &'a NameLocks,
    name: String,
    lock: Arc<Mutex<()>>,
}

impl Claim<'_> {
    /// The name's lock.
    pub(super) fn lock(&self) -> &Mutex<()> {
        &self.lock
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Under the map's lock, since a claim clones the `Arc` only under
        // it: a count of two (the map's and this claim's) means no other
        // operation holds or waits for the name, and none can start to
        // before the entry is gone.
        let mut map = self.locks.map();
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_map_does_not_grow_with_distinct_names() {
        let locks = NameLocks::default();
        for i in 0..1000 {
            let claim = locks.claim(&format!("adapter-{i}"));
            let _held = claim.lock().lock().unwrap();
            assert_eq!(locks.len(), 1);
        }
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn operations_on_one_name_still_wait_for_each_other() {
        let locks = NameLocks::default();
        let (entered, entries) = mpsc::channel();
        std::thread::scope(|scope| {
            let first = locks.claim("x");
            let held = first.lock().lock().unwrap();
            scope.spawn(|| {
                let second = locks.claim("x");
                let _held = second.lock().lock().unwrap_or_else(|e| e.into_inner());
                entered.send(()).unwrap();
            });
            // The second operation is waiting on the same lock.
            let deadline = Instant::now() + Duration::from_secs(10);
            while locks.claims("x") < 2 {
                assert!(Instant::now() < deadline, "the second claim never came");
                std::thread::yield_now();
            }
            assert!(first.lock().try_lock().is_err());
            assert!(entries.recv_timeout(Duration::from_millis(100)).is_err());
            // A third claim, made while the second waits, gets the same lock:
            // the first one ending must not drop the entry under a waiter.
            let third = locks.claim("x");
            assert!(std::ptr::eq(first.lock(), third.lock()));
            drop(held);
            drop(first);
            entries.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(locks.len(), 1, "the third claim keeps the entry");
            let _held = third.lock().lock().unwrap();
            // A different name does not wait.
            let other = locks.claim("y");
            assert!(other.lock().try_lock().is_ok());
        });
        assert_eq!(locks.len(), 0);
    }
}
