//! The filter ABI, version 2 (`docs/wasm-abi.md`): the one import and the
//! five exports of a filter module, each directly above the safe Rust it
//! wraps or calls.
//!
//! This is the only module with `unsafe`: calling the host's `log` import,
//! and the `#[unsafe(no_mangle)]` on the exports, which the macros below
//! expand in the filter's own crate (they only call the safe functions
//! here). Nothing here dereferences a pointer the host passes: `mi_init`
//! and `mi_filter` check that the `(ptr, len)` they get is the buffer
//! `mi_alloc` handed out, and read it as the `Vec<u8>` it is.
//!
//! State lives in one thread-local cell (`wasm32-unknown-unknown` runs one
//! thread): the input buffer the host writes into, the output buffer whose
//! `(ptr, len)` is returned to it, and the filter instance. Both buffers are
//! reused from call to call.

use std::cell::RefCell;
use std::fmt;

use crate::filter::{self, Filter, Instance, Outcome, Raw, RawFilter, Structured};

/// The ABI version this SDK implements; `mi_abi_version` returns it.
pub const ABI_VERSION: i32 = 2;

/// `mi_filter`'s answer for "serve the input as it came" (version 2): all
/// 64 bits set, a `(ptr, len)` no memory can hold.
const UNCHANGED: i64 = -1;

// === import matrixinfer.log ===

// `matrixinfer.log(level: i32, ptr: i32, len: i32)`: one UTF-8 log line;
// the host copies it during the call. Natively (unit tests) there is no host
// and `log` writes to stderr instead.
#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "matrixinfer")]
unsafe extern "C" {
    #[link_name = "log"]
    fn mi_log(level: i32, ptr: *const u8, len: usize);
}

/// How severe a [`log`] line is; the numbers are the ABI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something is off, but the filter carries on.
    Warn = 1,
    /// Worth knowing.
    Info = 2,
    /// For debugging.
    Debug = 3,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        })
    }
}

/// Logs a line through the runtime's log (which rate-limits it); on a native
/// build, to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: `message` is valid, initialized UTF-8 of `len` bytes for the
    // whole call; the host only reads it, and only during the call. On
    // wasm32 a pointer and a usize are the ABI's i32.
    unsafe {
        mi_log(level as i32, message.as_ptr(), message.len())
    };
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("matrixinfer-filter {level}: {message}");
}

// === state ===

struct State {
    /// Where the host writes its next input (config or families).
    /// INVARIANT: `input_len <= input.len()`; the input is
    /// `input[..input_len]`. It never shrinks, so its address only changes
    /// when `mi_alloc` has to grow it.
    input: Vec<u8>,
    input_len: usize,
    /// What the last `mi_selectors` or `mi_filter` returned; cleared and
    /// refilled by the next one.
    output: Vec<u8>,
    /// The filter, once `mi_init` accepted its config.
    filter: Option<Box<dyn Instance>>,
    /// Its selectors, one per line, as `mi_selectors` returns them.
    selectors: String,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State {
            input: Vec::new(),
            input_len: 0,
            output: Vec::new(),
            filter: None,
            selectors: String::new(),
        })
    };
}

/// The input at `(ptr, len)`, which must be what `mi_alloc` handed out: the
/// first `buffer_len` bytes of `buffer` (any pointer will do for an empty
/// input).
fn checked_input(
    buffer: &[u8],
    buffer_len: usize,
    ptr: usize,
    len: usize,
) -> Result<&[u8], String> {
    debug_assert!(buffer_len <= buffer.len());
    if len == 0 {
        return Ok(&[]);
    }
    let expected = (buffer.as_ptr() as usize, buffer_len);
    if (ptr, len) != expected {
        return Err(format!(
            "input at ({ptr:#x}, {len}) is not the buffer mi_alloc returned ({:#x}, {})",
            expected.0, expected.1
        ));
    }
    Ok(&buffer[..len])
}

/// Logs `message` as an error and traps: the host broke the ABI, and a
/// trap is how the runtime learns that a call failed.
fn fail(message: &str) -> ! {
    log(Level::Error, message);
    panic!("{message}");
}

/// An i32 argument as the unsigned address or length it carries.
fn addr(value: i32) -> usize {
    value as u32 as usize
}

/// Packs `(ptr, len)` into an i64: pointer in the high 32 bits, length in
/// the low 32 (meaningful on wasm32, where both fit).
fn pack(ptr: usize, len: usize) -> i64 {
    ((ptr as u64) << 32 | len as u64 & 0xffff_ffff) as i64
}

// === export mi_abi_version ===

#[doc(hidden)]
#[macro_export]
macro_rules! __export_abi_version {
    () => {
        /// Filter ABI export `mi_abi_version() -> i32`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mi_abi_version() -> i32 {
            $crate::__private::abi_version()
        }
    };
}

/// `mi_abi_version`: [`ABI_VERSION`].
pub fn abi_version() -> i32 {
    ABI_VERSION
}

// === export mi_alloc ===

#[doc(hidden)]
#[macro_export]
macro_rules! __export_alloc {
    () => {
        /// Filter ABI export `mi_alloc(len: i32) -> i32`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mi_alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }
    };
}

/// `mi_alloc`: a pointer to `len` writable bytes for the next input, or 0.
pub fn alloc(len: i32) -> i32 {
    alloc_at(addr(len)) as i32
}

fn alloc_at(len: usize) -> usize {
    STATE.with_borrow_mut(|state| {
        if let Some(more) = len.checked_sub(state.input.len()) {
            if state.input.try_reserve_exact(more).is_err() {
                return 0;
            }
            state.input.resize(len, 0);
        }
        state.input_len = len;
        state.input.as_ptr() as usize
    })
}

// === export mi_init ===

#[doc(hidden)]
#[macro_export]
macro_rules! __export_init {
    ($init:path) => {
        /// Filter ABI export `mi_init(ptr: i32, len: i32) -> i32`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mi_init(ptr: i32, len: i32) -> i32 {
            $init(ptr, len)
        }
    };
}

/// `mi_init` for a [`Filter`]: 0 when it accepted its config, 1 (after
/// logging why) when not.
pub fn init<F: Filter>(ptr: i32, len: i32) -> i32 {
    init_at(addr(ptr), addr(len), new_structured::<F>)
}

/// `mi_init` for a [`RawFilter`].
pub fn init_raw<F: RawFilter>(ptr: i32, len: i32) -> i32 {
    init_at(addr(ptr), addr(len), new_raw::<F>)
}

type New = fn(&str) -> Result<Box<dyn Instance>, String>;

fn new_structured<F: Filter>(config: &str) -> Result<Box<dyn Instance>, String> {
    Ok(Box::new(Structured(F::new(config)?)))
}

fn new_raw<F: RawFilter>(config: &str) -> Result<Box<dyn Instance>, String> {
    Ok(Box::new(Raw(F::new(config)?)))
}

fn init_at(ptr: usize, len: usize, new: New) -> i32 {
    STATE.with_borrow_mut(|state| {
        let built = checked_input(&state.input, state.input_len, ptr, len).and_then(|config| {
            let config =
                std::str::from_utf8(config).map_err(|e| format!("config is not UTF-8: {e}"))?;
            filter::build(new, config)
        });
        match built {
            Ok(instance) => {
                state.selectors = instance.selectors().join("\n");
                state.filter = Some(instance);
                0
            }
            Err(reason) => {
                log(Level::Error, &reason);
                state.filter = None;
                1
            }
        }
    })
}

// === export mi_selectors ===

#[doc(hidden)]
#[macro_export]
macro_rules! __export_selectors {
    () => {
        /// Filter ABI export `mi_selectors() -> i64`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mi_selectors() -> i64 {
            $crate::__private::selectors()
        }
    };
}

/// `mi_selectors`: the packed `(ptr, len)` of the selectors, one per line
/// (joined by `\n`, no newline after the last).
pub fn selectors() -> i64 {
    let (ptr, len) = selectors_at();
    pack(ptr, len)
}

fn selectors_at() -> (usize, usize) {
    STATE.with_borrow_mut(|state| {
        if state.filter.is_none() {
            fail("mi_selectors called without a successful mi_init");
        }
        state.output.clear();
        state.output.extend_from_slice(state.selectors.as_bytes());
        (state.output.as_ptr() as usize, state.output.len())
    })
}

// === export mi_filter ===

#[doc(hidden)]
#[macro_export]
macro_rules! __export_filter {
    () => {
        /// Filter ABI export `mi_filter(ptr: i32, len: i32) -> i64`.
        #[unsafe(no_mangle)]
        pub extern "C" fn mi_filter(ptr: i32, len: i32) -> i64 {
            $crate::__private::filter(ptr, len)
        }
    };
}

/// `mi_filter`: runs the filter on the input at `(ptr, len)` and returns the
/// packed `(ptr, len)` of its output, valid until the next call, or
/// `UNCHANGED` when the filter had nothing to change.
pub fn filter(ptr: i32, len: i32) -> i64 {
    match filter_at(addr(ptr), addr(len)) {
        Some((ptr, len)) => pack(ptr, len),
        None => UNCHANGED,
    }
}

/// The output's `(ptr, len)`, or `None` for an unchanged input.
fn filter_at(ptr: usize, len: usize) -> Option<(usize, usize)> {
    STATE.with_borrow_mut(|state| {
        let State {
            input,
            input_len,
            output,
            filter,
            ..
        } = state;
        let Some(filter) = filter else {
            fail("mi_filter called without a successful mi_init");
        };
        let input = checked_input(input, *input_len, ptr, len)
            .unwrap_or_else(|e| fail(&format!("mi_filter: {e}")));
        output.clear();
        match filter.run(input, output) {
            Outcome::Replaced => Some((output.as_ptr() as usize, output.len())),
            Outcome::Unchanged => None,
        }
    })
}

// === the registration macros ===

/// Exports a [`Filter`] type as a filter module: expands to the ABI's five
/// exports (`mi_abi_version`, `mi_alloc`, `mi_init`, `mi_selectors`,
/// `mi_filter`). Use it once, at the root of a `cdylib` crate.
///
/// ```
/// # use matrixinfer_filter::{Families, Filter};
/// struct Nothing;
/// impl Filter for Nothing {
///     fn new(_config: &str) -> Result<Self, String> { Ok(Nothing) }
///     fn filter(&mut self, _families: &mut Families) {}
/// }
/// matrixinfer_filter::export_filter!(Nothing);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        $crate::__export_abi_version!();
        $crate::__export_alloc!();
        $crate::__export_init!($crate::__private::init::<$filter>);
        $crate::__export_selectors!();
        $crate::__export_filter!();
    };
}

/// Exports a [`RawFilter`] type as a filter module, like
/// [`export_filter!`](crate::export_filter) does for a [`Filter`].
#[macro_export]
macro_rules! export_raw_filter {
    ($filter:ty) => {
        $crate::__export_abi_version!();
        $crate::__export_alloc!();
        $crate::__export_init!($crate::__private::init_raw::<$filter>);
        $crate::__export_selectors!();
        $crate::__export_filter!();
    };
}

#[cfg(test)]
mod tests {
    //! The host's side of the protocol, played natively through the same
    //! functions the exports call (minus the i32 narrowing of pointers,
    //! which only fits on wasm32).

    use super::*;
    use crate::model::Families;

    struct Tag(String);

    impl Filter for Tag {
        fn new(config: &str) -> Result<Self, String> {
            match config {
                "" => Err("config must name a pod".to_owned()),
                "bad-selector" => Ok(Tag(String::new())),
                pod => Ok(Tag(pod.to_owned())),
            }
        }

        fn selectors(&self) -> Vec<String> {
            if self.0.is_empty() {
                return vec!["no spaces allowed".to_owned()];
            }
            vec!["vllm:*".to_owned(), "sglang:num_queue_reqs".to_owned()]
        }

        fn filter(&mut self, families: &mut Families) {
            for f in families.iter_mut() {
                for s in &mut f.samples {
                    s.set_label("pod", &self.0);
                }
            }
        }
    }

    /// Writes `bytes` where `mi_alloc` says, as the host does.
    fn host_write(bytes: &[u8]) -> (usize, usize) {
        let ptr = alloc_at(bytes.len());
        assert_ne!(ptr, 0);
        STATE.with_borrow_mut(|state| {
            assert_eq!(state.input.as_ptr() as usize, ptr);
            state.input[..bytes.len()].copy_from_slice(bytes);
        });
        (ptr, bytes.len())
    }

    /// Reads what an export returned, checking it is the output buffer.
    fn host_read((ptr, len): (usize, usize)) -> String {
        STATE.with_borrow(|state| {
            assert_eq!(
                (state.output.as_ptr() as usize, state.output.len()),
                (ptr, len)
            );
            String::from_utf8(state.output.clone()).unwrap()
        })
    }

    fn init_tag(config: &str) -> i32 {
        let (ptr, len) = host_write(config.as_bytes());
        init_at(ptr, len, new_structured::<Tag>)
    }

    #[test]
    fn version() {
        assert_eq!(abi_version(), 2);
    }

    #[test]
    fn whole_protocol() {
        assert_eq!(init_tag("p-1"), 0);
        assert_eq!(host_read(selectors_at()), "vllm:*\nsglang:num_queue_reqs");
        let (ptr, len) = host_write(b"vllm:x{a=\"1\"} 1\n");
        assert_eq!(
            host_read(filter_at(ptr, len).unwrap()),
            "vllm:x{a=\"1\",pod=\"p-1\"} 1\n"
        );
        // Buffers are reused: a shorter input lands at the same address.
        let (again, len) = host_write(b"vllm:y 2\n");
        assert_eq!(again, ptr);
        assert_eq!(
            host_read(filter_at(again, len).unwrap()),
            "vllm:y{pod=\"p-1\"} 2\n"
        );
        // Empty input, any pointer.
        assert_eq!(host_read(filter_at(0, 0).unwrap()), "");
        // Not UTF-8: served as it came, without a copy.
        let (ptr, len) = host_write(b"vllm:z 1\n\xff\n");
        assert_eq!(filter_at(ptr, len), None);
    }

    #[test]
    fn refused_config() {
        assert_eq!(init_tag(""), 1);
        assert_eq!(init_tag("bad-selector"), 1);
        assert_eq!(
            init_at(1, 1, new_structured::<Tag>),
            1,
            "not mi_alloc's buffer"
        );
        let (ptr, len) = host_write(b"\xff");
        assert_eq!(init_at(ptr, len, new_structured::<Tag>), 1, "not UTF-8");
        assert!(STATE.with_borrow(|s| s.filter.is_none()));
    }

    #[test]
    #[should_panic = "without a successful mi_init"]
    fn filter_before_init_traps() {
        filter_at(0, 0);
    }

    #[test]
    #[should_panic = "is not the buffer mi_alloc returned"]
    fn filter_elsewhere_traps() {
        assert_eq!(init_tag("p"), 0);
        let (ptr, len) = host_write(b"x 1\n");
        filter_at(ptr + 1, len - 1);
    }

    #[test]
    fn alloc_beyond_memory_returns_zero() {
        assert_eq!(alloc_at(usize::MAX / 2), 0);
        assert_ne!(alloc_at(0), 0);
    }

    #[test]
    fn packing() {
        assert_eq!(pack(0x10_0000, 5), 0x0010_0000_0000_0005);
        assert_eq!(pack(0xffff_fff0, 0xffff_ffff) as u64, 0xffff_fff0_ffff_ffff);
        assert_eq!(addr(-1), 0xffff_ffff);
        // No output in a 4 GiB memory packs to the unchanged answer.
        assert_ne!(pack(0xffff_ffff, 0), UNCHANGED);
        assert_eq!(UNCHANGED as u64, u64::MAX);
    }
}
