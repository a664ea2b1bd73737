//! A filter's code: the one engine configuration, and the two forms a
//! filter file takes. A `.wasm` module is compiled by Cranelift when it is
//! loaded; a module precompiled ahead of time (`matrixinfer-runtime filter
//! compile`, wasmtime's serialized form) is mapped as it is, with no
//! compiler started, which saves the compile time and the compiler's
//! memory. A precompiled module made by another wasmtime version or for
//! another engine configuration is refused, never run.
//!
//! A precompiled module is native code: it must come from a build you
//! trust as much as this binary, since wasmtime cannot check it the way it
//! checks a `.wasm`.

use std::path::Path;

use wasmtime::{Config, Engine, Module, Precompiled};

/// The first bytes of a WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The engine every filter runs on, and that `filter compile` compiles
/// for: epoch interruption (the deadlines), Cranelift at `Speed`.
pub fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&config)
}

/// How a filter's module came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from `.wasm` at load.
    Compiled,
    /// Precompiled ahead of time, loaded without the compiler.
    Precompiled,
}

impl Origin {
    /// As the log says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::Precompiled => "precompiled",
        }
    }
}

/// Loads `path`, in either form; the error says what is wrong with it.
pub fn load(engine: &Engine, path: &Path) -> Result<(Module, Origin), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.starts_with(WASM_MAGIC) {
        let module = Module::new(engine, &bytes).map_err(|e| format!("cannot compile: {e}"))?;
        return Ok((module, Origin::Compiled));
    }
    match Engine::detect_precompiled(&bytes) {
        Some(Precompiled::Module) => {}
        Some(Precompiled::Component) => {
            return Err("a precompiled component, not a module".into());
        }
        None => {
            return Err(
                "neither a WebAssembly module nor one precompiled by `matrixinfer-runtime filter compile`"
                    .into(),
            );
        }
    }
    // SAFETY: wasmtime checks that the bytes were made by this wasmtime
    // version for this engine configuration and refuses them otherwise;
    // what it cannot check (that the code is what the compiler made) is
    // the operator's promise, as the module docs say.
    #[allow(
        unsafe_code,
        reason = "a precompiled module is native code; trusted as the binary is (docs/filters.md)"
    )]
    let module = unsafe { Module::deserialize(engine, &bytes) }.map_err(|e| {
        format!(
            "precompiled by another wasmtime version or for another configuration ({e:#}); \
             compile it again with this binary's `filter compile`"
        )
    })?;
    Ok((module, Origin::Precompiled))
}

/// Why `filter compile` failed.
#[derive(Debug, thiserror::Error)]
pub enum PrecompileError {
    /// The input cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The input.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The input is not a `.wasm` module.
    #[error("{0} is not a WebAssembly module (no \\0asm header)")]
    NotWasm(String),
    /// Cranelift refused it.
    #[error("cannot compile {path}: {reason}")]
    Compile {
        /// The input.
        path: String,
        /// Cranelift's reason.
        reason: String,
    },
    /// The output cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The output.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Compiles the `.wasm` at `input` for [`engine`] and writes wasmtime's
/// serialized module to `output` (whole or not at all: a temporary file
/// renamed into place).
pub fn precompile(input: &Path, output: &Path) -> Result<(), PrecompileError> {
    let shown = |p: &Path| p.display().to_string();
    let bytes = std::fs::read(input).map_err(|source| PrecompileError::Read {
        path: shown(input),
        source,
    })?;
    if !bytes.starts_with(WASM_MAGIC) {
        return Err(PrecompileError::NotWasm(shown(input)));
    }
    let compile = |reason: String| PrecompileError::Compile {
        path: shown(input),
        reason,
    };
    let engine = engine().map_err(|e| compile(format!("{e:#}")))?;
    // Compiling checks the module the way loading a `.wasm` does.
    let module = Module::new(&engine, &bytes).map_err(|e| compile(format!("{e:#}")))?;
    let serialized = module.serialize().map_err(|e| compile(format!("{e:#}")))?;
    let write = |source| PrecompileError::Write {
        path: shown(output),
        source,
    };
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, &serialized).map_err(write)?;
    std::fs::rename(&partial, output).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest module a filter file can hold (not a filter: loading
    /// the code is all this tests).
    fn wasm() -> Vec<u8> {
        wat::parse_str(r#"(module (func (export "f") (result i32) i32.const 7))"#).unwrap()
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mi-module-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_precompiled_module_loads_without_compiling_and_runs_the_same() {
        let dir = dir("same");
        let (wasm_path, cwasm_path) = (dir.join("f.wasm"), dir.join("f.cwasm"));
        std::fs::write(&wasm_path, wasm()).unwrap();
        precompile(&wasm_path, &cwasm_path).unwrap();
        let engine = engine().unwrap();
        let run = |module: &Module| {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_epoch_deadline(1);
            let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
            let f = instance.get_typed_func::<(), i32>(&mut store, "f").unwrap();
            f.call(&mut store, ()).unwrap()
        };
        let (compiled, origin) = load(&engine, &wasm_path).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (precompiled, origin) = load(&engine, &cwasm_path).unwrap();
        assert_eq!(origin, Origin::Precompiled);
        assert_eq!((run(&compiled), run(&precompiled)), (7, 7));
        assert!(!dir.join("f.cwasm.partial").exists());
    }

    #[test]
    fn a_module_precompiled_for_another_configuration_is_refused() {
        let dir = dir("other");
        let path = dir.join("other.cwasm");
        let mut config = Config::new();
        config.epoch_interruption(false);
        let other = Engine::new(&config).unwrap();
        std::fs::write(&path, other.precompile_module(&wasm()).unwrap()).unwrap();
        let error = load(&engine().unwrap(), &path).unwrap_err();
        assert!(
            error.contains("another wasmtime version or for another configuration")
                && error.contains("filter compile"),
            "{error}"
        );
    }

    #[test]
    fn other_files_are_refused_by_what_they_are() {
        let dir = dir("junk");
        let engine = engine().unwrap();
        let text = dir.join("text.wasm");
        std::fs::write(&text, "not a module").unwrap();
        assert!(load(&engine, &text).unwrap_err().contains("neither"));
        assert!(matches!(
            precompile(&text, &dir.join("out.cwasm")),
            Err(PrecompileError::NotWasm(_))
        ));
        let bad = dir.join("bad.wasm");
        std::fs::write(&bad, b"\0asm\x01\0\0\0\x7f").unwrap();
        assert!(
            load(&engine, &bad)
                .unwrap_err()
                .starts_with("cannot compile")
        );
        assert!(matches!(
            precompile(&bad, &dir.join("out.cwasm")),
            Err(PrecompileError::Compile { .. })
        ));
        assert!(!dir.join("out.cwasm").exists());
    }
}
