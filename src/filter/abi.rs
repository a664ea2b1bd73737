//! The ABI between the runtime and a filter, versions 1 and 2
//! (`docs/wasm-abi.md`): every function a guest may call, and every call
//! into a guest.
//!
//! Guest memory is only touched through wasmtime's bounds-checked
//! `Memory::read`/`write`/`data`, so a pointer or length a guest gets wrong
//! is an error here, never undefined behaviour.

use std::sync::Arc;
use std::time::Duration;

use super::epoch::{EpochClock, ticks};
use super::health::Reason;
use wasmtime::{Caller, Instance, Linker, Memory, ResourceLimiter, Store, Trap, TypedFunc};

/// The ABI versions this runtime speaks: 1, and 2, which adds
/// [`UNCHANGED`].
pub const ABI_VERSIONS: std::ops::RangeInclusive<i32> = 1..=2;
/// `mi_filter`'s answer for "serve the input as it came", from version 2
/// on: all 64 bits set, a `(ptr, len)` no guest memory can hold (under
/// version 1 it is an output too large, as it always was).
pub const UNCHANGED: i64 = -1;
/// Log lines a guest may write per instance (then it is muted).
const LOG_BUDGET: u32 = 100;

/// What the host keeps per guest instance.
#[derive(Debug)]
pub struct HostState {
    /// The filter's name, for logs.
    pub filter: Arc<str>,
    /// Most bytes the guest's memory may grow to.
    pub memory_cap: usize,
    /// Set when the guest tried to grow past the cap.
    pub hit_memory_cap: bool,
    log_budget: u32,
    /// The engine's epoch clock, run for every call into the guest.
    pub clock: Arc<EpochClock>,
}

impl HostState {
    /// State for one instance of `filter`, on the engine `clock` ticks for.
    pub fn new(filter: Arc<str>, memory_cap: usize, clock: Arc<EpochClock>) -> HostState {
        HostState {
            filter,
            memory_cap,
            hit_memory_cap: false,
            log_budget: LOG_BUDGET,
            clock,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            // Refused: `memory.grow` returns -1 and the guest's allocator
            // gives up (a trap); the flag tells the two apart.
            self.hit_memory_cap = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Registers the one import a guest may use.
///
/// `matrixinfer.log(level: i32, ptr: i32, len: i32)`: a UTF-8 line at
/// `[ptr, ptr + len)` in guest memory, logged under the filter's name at
/// `level` (0 error, 1 warn, 2 info, 3 debug). The host copies the bytes;
/// the guest keeps ownership of its memory. Out-of-bounds ranges are
/// ignored. At most 100 lines per instance.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "matrixinfer",
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            if caller.data().log_budget == 0 {
                return;
            }
            caller.data_mut().log_budget -= 1;
            let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
                return;
            };
            let start = ptr as u32 as usize;
            let end = start.saturating_add(len as u32 as usize).min(start + 4096);
            let Some(bytes) = memory.data(&caller).get(start..end) else {
                return;
            };
            let text = String::from_utf8_lossy(bytes).into_owned();
            let filter = caller.data().filter.clone();
            match level {
                0 => tracing::error!(%filter, "filter: {text}"),
                1 => tracing::warn!(%filter, "filter: {text}"),
                2 => tracing::info!(%filter, "filter: {text}"),
                _ => tracing::debug!(%filter, "filter: {text}"),
            }
        },
    )?;
    Ok(())
}

/// Why a call into a guest failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped.
    #[error("trapped: {0}")]
    Trap(String),
    /// It ran past its deadline.
    #[error("ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// It tried to use more memory than its cap.
    #[error("tried to grow its memory past {0} bytes")]
    Memory(usize),
    /// Its output is larger than allowed.
    #[error("returned {0} bytes, more than allowed")]
    OutputTooLarge(usize),
    /// It broke the ABI (missing export, bad pointer, wrong version).
    #[error("{0}")]
    Abi(String),
}

impl CallError {
    /// The reason it counts under.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Trap(_) => Reason::Trap,
            CallError::Deadline(_) => Reason::Deadline,
            CallError::Memory(_) => Reason::Memory,
            CallError::OutputTooLarge(_) => Reason::OutputTooLarge,
            CallError::Abi(_) => Reason::Abi,
        }
    }

    /// Classifies a wasmtime error from a call.
    pub(super) fn from_wasm(
        error: wasmtime::Error,
        state: &HostState,
        deadline: Duration,
    ) -> CallError {
        if state.hit_memory_cap {
            return CallError::Memory(state.memory_cap);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Deadline(deadline),
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Trap(error.to_string()),
        }
    }
}

/// What `mi_filter` answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'s> {
    /// Its output, in place in guest memory.
    Output(&'s [u8]),
    /// Serve the input as it came.
    Unchanged,
}

/// A guest's exports, looked up once per instance.
pub struct Exports {
    /// The ABI version it speaks, once [`Exports::negotiate`] accepted it.
    abi: i32,
    memory: Memory,
    version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    init: TypedFunc<(i32, i32), i32>,
    selectors: TypedFunc<(), i64>,
    filter: TypedFunc<(i32, i32), i64>,
}

impl Exports {
    /// Binds the exports of `instance`, checking their types.
    pub fn bind(store: &mut Store<HostState>, instance: &Instance) -> Result<Exports, CallError> {
        let missing =
            |name: &str, e: wasmtime::Error| CallError::Abi(format!("export {name}: {e}"));
        Ok(Exports {
            abi: 0,
            memory: instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| CallError::Abi("no exported memory".into()))?,
            version: instance
                .get_typed_func(&mut *store, "mi_abi_version")
                .map_err(|e| missing("mi_abi_version", e))?,
            alloc: instance
                .get_typed_func(&mut *store, "mi_alloc")
                .map_err(|e| missing("mi_alloc", e))?,
            init: instance
                .get_typed_func(&mut *store, "mi_init")
                .map_err(|e| missing("mi_init", e))?,
            selectors: instance
                .get_typed_func(&mut *store, "mi_selectors")
                .map_err(|e| missing("mi_selectors", e))?,
            filter: instance
                .get_typed_func(&mut *store, "mi_filter")
                .map_err(|e| missing("mi_filter", e))?,
        })
    }

    /// `mi_abi_version()`, refused unless this runtime speaks it; kept,
    /// for it decides what `mi_filter` may answer. Every call into the
    /// guest runs under its own `deadline`, whatever ran before it.
    pub fn negotiate(
        &mut self,
        store: &mut Store<HostState>,
        deadline: Duration,
    ) -> Result<(), CallError> {
        store.set_epoch_deadline(ticks(deadline));
        let _running = store.data().clock.run();
        let version = self
            .version
            .call(&mut *store, ())
            .map_err(|e| CallError::from_wasm(e, store.data(), deadline))?;
        if !ABI_VERSIONS.contains(&version) {
            return Err(CallError::Abi(format!(
                "built for filter ABI version {version}; this runtime speaks versions {} to {}",
                ABI_VERSIONS.start(),
                ABI_VERSIONS.end()
            )));
        }
        self.abi = version;
        Ok(())
    }

    /// `mi_init(config)`: true when the filter accepts its config.
    pub fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[u8],
        deadline: Duration,
    ) -> Result<bool, CallError> {
        let (ptr, len) = self.write(store, config, deadline)?;
        store.set_epoch_deadline(ticks(deadline));
        let _running = store.data().clock.run();
        let status = self
            .init
            .call(&mut *store, (ptr, len))
            .map_err(|e| CallError::from_wasm(e, store.data(), deadline))?;
        Ok(status == 0)
    }

    /// `mi_selectors()`, as text.
    pub fn selectors(
        &self,
        store: &mut Store<HostState>,
        deadline: Duration,
    ) -> Result<String, CallError> {
        store.set_epoch_deadline(ticks(deadline));
        let _running = store.data().clock.run();
        let packed = self
            .selectors
            .call(&mut *store, ())
            .map_err(|e| CallError::from_wasm(e, store.data(), deadline))?;
        let bytes = self.read(store, packed, 1024 * 1024)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CallError::Abi("selectors are not UTF-8".into()))
    }

    /// `mi_filter(input)`: the output, read in place in guest memory (no
    /// copy; it stays valid until the next call into the guest), or
    /// [`Answer::Unchanged`] from a version 2 guest.
    pub fn filter<'s>(
        &self,
        store: &'s mut Store<HostState>,
        input: &[u8],
        max_output: usize,
        deadline: Duration,
    ) -> Result<Answer<'s>, CallError> {
        let (ptr, len) = self.write(store, input, deadline)?;
        store.set_epoch_deadline(ticks(deadline));
        let _running = store.data().clock.run();
        let packed = self
            .filter
            .call(&mut *store, (ptr, len))
            .map_err(|e| CallError::from_wasm(e, store.data(), deadline))?;
        if packed == UNCHANGED && self.abi >= 2 {
            return Ok(Answer::Unchanged);
        }
        self.read(store, packed, max_output).map(Answer::Output)
    }

    /// Copies `bytes` into guest memory via `mi_alloc`.
    fn write(
        &self,
        store: &mut Store<HostState>,
        bytes: &[u8],
        deadline: Duration,
    ) -> Result<(i32, i32), CallError> {
        let len =
            i32::try_from(bytes.len()).map_err(|_| CallError::Abi("input too large".into()))?;
        store.set_epoch_deadline(ticks(deadline));
        let _running = store.data().clock.run();
        let ptr = self
            .alloc
            .call(&mut *store, len)
            .map_err(|e| CallError::from_wasm(e, store.data(), deadline))?;
        if ptr == 0 && len > 0 {
            return Err(CallError::Abi("mi_alloc returned 0".into()));
        }
        self.memory
            .write(&mut *store, ptr as u32 as usize, bytes)
            .map_err(|_| CallError::Abi(format!("mi_alloc returned {ptr}, outside memory")))?;
        Ok((ptr, len))
    }

    /// The bytes a packed `(ptr, len)` names, bounds-checked.
    fn read<'s>(
        &self,
        store: &'s Store<HostState>,
        packed: i64,
        max: usize,
    ) -> Result<&'s [u8], CallError> {
        let (ptr, len) = unpack(packed);
        if len > max {
            return Err(CallError::OutputTooLarge(len));
        }
        self.memory.data(store).get(ptr..ptr + len).ok_or_else(|| {
            CallError::Abi(format!(
                "returned bytes {ptr}..{} outside its memory",
                ptr + len
            ))
        })
    }
}

/// Splits a packed `(ptr, len)`: pointer in the high 32 bits.
pub fn unpack(packed: i64) -> (usize, usize) {
    let packed = packed as u64;
    ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn packing() {
        assert_eq!(super::unpack(((1024u64 << 32) | 77) as i64), (1024, 77));
        assert_eq!(super::unpack(-1), (0xffff_ffff, 0xffff_ffff));
    }
}
