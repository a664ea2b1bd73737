//! Per-adapter-name locks: operations on one name never interleave, and
//! operations on different names never wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The lock of every adapter name used.
#[derive(Debug, Default)]
pub(super) struct NameLocks {
    names: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl NameLocks {
    /// The lock of `name`.
    pub(super) fn get(&self, name: &str) -> Arc<Mutex<()>> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }
}
