//! This machine's glibc version, which decides whether the release binary's
//! relative relocations are packed (`DT_RELR` loads from glibc 2.36 on).
//! Shared by build.rs, which decides, and tests/code_layout.rs, which checks.

/// The version `getconf GNU_LIBC_VERSION` reports ("glibc 2.36" is
/// `(2, 36)`); `None` where there is no glibc or the answer is unreadable.
pub fn glibc_version() -> Option<(u32, u32)> {
    let out = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().strip_prefix("glibc ")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
