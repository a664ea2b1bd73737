//! What a process costs, from `/proc`: CPU time (all threads, user and
//! system) and resident memory (now, at its peak, and its anonymous part).

use std::io;

/// A process's CPU time so far, in nanoseconds.
pub fn cpu_nanos(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unexpected /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc stat"))
    };
    let total = ticks(14 - 3)? + ticks(15 - 3)?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(total * 1_000_000_000 / per_second)
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss: u64,
    /// The peak so far (VmHWM).
    pub peak: u64,
    /// The anonymous part of `rss`: heap and stacks, the process's own.
    /// The rest is mapped files, mostly the binary's code, which the page
    /// cache shares between every process that maps the same file.
    pub anon: u64,
}

/// A process's resident memory.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
        anon: field("RssAnon:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let before = cpu_nanos(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_nanos(pid).unwrap() > before);
        let m = memory(pid).unwrap();
        assert!(m.anon > 0 && m.rss >= m.anon && m.peak >= m.rss, "{m:?}");
    }
}
