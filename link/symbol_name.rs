//! How a function's name in `link/startup-functions.txt` is compared with
//! the names a build gives it. Shared by build.rs, which writes the linker
//! script, and tests/code_layout.rs, which checks what the linker did.

/// A symbol without the suffixes that vary from build to build: ThinLTO's
/// `.llvm.<module hash>` (it changes with the code and the checkout's
/// path), and callgrind's `'<depth>` on a recursive call.
pub fn base_symbol(name: &str) -> &str {
    let name = name.split_once('\'').map_or(name, |(name, _)| name);
    name.split_once(".llvm.").map_or(name, |(name, _)| name)
}
