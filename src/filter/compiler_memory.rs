//! What compiling filters leaves behind, given back when the compile ends:
//! the heap Cranelift freed, and the pages of the executable it ran.
//!
//! Cranelift is megabytes of code and tables that no scrape runs again,
//! and the kernel keeps every page a process faulted in mapped until the
//! process ends: with one `.wasm` filter the sidecar idled at 16.7 MiB, of
//! which 12 MiB were pages of its own binary (docs/benchmarks.md). So the
//! executable's read-only segments are unmapped from the process: the page
//! cache keeps them, and the code that runs next (a scrape's, about 1.6
//! MiB laid out together by `link/startup-functions.txt`) faults its pages
//! back in once, from the page cache.

/// Hands back the compiler's freed heap and the executable's read-only
/// pages; see the module doc.
pub fn release() {
    trim_heap();
    unmap_read_only_segments();
}

/// Cranelift allocates megabytes on its worker threads, and glibc keeps
/// what each thread's arena freed: without this, idle RSS carries it for
/// good.
#[allow(unsafe_code, reason = "one FFI call into the C allocator")]
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `madvise(MADV_DONTNEED)` over every loadable segment of the executable
/// that is not writable, whole pages only.
#[allow(
    unsafe_code,
    reason = "reads the program headers the loader mapped, and calls madvise"
)]
fn unmap_read_only_segments() {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    // SAFETY: AT_PHDR and AT_PHNUM locate the executable's program headers,
    // mapped for the life of the process (zero when absent, checked). On a
    // private file mapping MADV_DONTNEED drops this process's page table
    // entries, and the next access reads the page again from the file: the
    // same bytes, so long as this process never wrote them. Segments
    // without PF_W are mapped without write permission, and the loader
    // writes them only to apply text relocations, which are looked for
    // first (nothing is done if there are any); RELRO, which the loader
    // writes and then makes read-only, lies in a writable segment and is
    // left alone. (A debugger's breakpoints or a uprobe in those pages
    // would be dropped with them.)
    unsafe {
        let phdr = libc::getauxval(libc::AT_PHDR) as usize;
        let phnum = libc::getauxval(libc::AT_PHNUM) as usize;
        if phdr == 0 || phnum == 0 {
            return;
        }
        let headers = std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum);
        // Where the executable was loaded: PT_PHDR gives the headers' own
        // address before relocation.
        let Some(bias) = headers
            .iter()
            .find(|h| h.p_type == libc::PT_PHDR)
            .map(|h| phdr.wrapping_sub(h.p_vaddr as usize))
        else {
            return;
        };
        if headers
            .iter()
            .filter(|h| h.p_type == libc::PT_DYNAMIC)
            .any(|h| has_text_relocations(bias.wrapping_add(h.p_vaddr as usize)))
        {
            return;
        }
        // Not rustix's page_size: its auxv reader faults under valgrind,
        // which scripts/startup-order runs this under.
        let page = match usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)) {
            Ok(page) if page.is_power_of_two() => page,
            _ => return,
        };
        for header in headers {
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
                continue;
            }
            // Only the pages wholly inside the segment.
            let start = bias.wrapping_add(header.p_vaddr as usize);
            let end = (start + header.p_memsz as usize) & !(page - 1);
            let start = start.next_multiple_of(page);
            if end > start
                && libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) != 0
            {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "cannot unmap the executable's read-only pages"
                );
            }
        }
    }
}

/// Whether the dynamic section at `address` asks the loader to write into
/// read-only segments (`DT_TEXTREL`, or `DF_TEXTREL` in `DT_FLAGS`).
///
/// # Safety
///
/// `address` is the loaded address of the executable's `PT_DYNAMIC`.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[allow(unsafe_code, reason = "reads the dynamic section the loader mapped")]
unsafe fn has_text_relocations(address: usize) -> bool {
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    /// `Elf64_Dyn`, which the libc crate does not declare.
    #[repr(C)]
    struct Dyn {
        d_tag: i64,
        d_val: u64,
    }
    let mut entry = address as *const Dyn;
    loop {
        // SAFETY: the entries run up to a DT_NULL one (the caller's word).
        let dynamic = unsafe { &*entry };
        match dynamic.d_tag {
            DT_NULL => return false,
            DT_TEXTREL => return true,
            DT_FLAGS if dynamic.d_val & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        // SAFETY: within the section, which DT_NULL ends.
        entry = unsafe { entry.add(1) };
    }
}

#[cfg(test)]
mod tests {
    /// The test binary goes on running its own code, which faults back in.
    #[test]
    fn the_code_that_runs_next_comes_back() {
        let before: u64 = (1..=1000).sum();
        super::release();
        let after: u64 = (1..=1000).map(std::hint::black_box).sum();
        assert_eq!(before, after);
        assert_eq!(format!("{:?}", [1, 2]), "[1, 2]");
    }
}
