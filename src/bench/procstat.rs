//! What a process costs, from `/proc`: CPU time (all threads, user and
//! system) and resident memory (now, at its peak, and its anonymous part).

use std::io;

/// A process's CPU time so far, in nanoseconds: the sum of its threads'
/// time on a CPU from `/proc/PID/task/*/schedstat`, which the kernel keeps
/// in nanoseconds. `/proc/PID/stat` reports the same time in clock ticks
/// (10 ms), which over a thousand scrapes is a resolution of 10 µs per
/// scrape: coarser than the differences the harness is there to show. A
/// thread that exits takes its time out of the sum, so only processes
/// whose threads live through a measurement (the sidecar's, the
/// engines') are measured this way; without schedstat (a kernel built
/// without it) the ticks are used.
pub fn cpu_nanos(pid: u32) -> io::Result<u64> {
    match threads_on_cpu_nanos(pid) {
        Ok(nanos) => Ok(nanos),
        Err(_) => cpu_ticks_nanos(pid),
    }
}

fn threads_on_cpu_nanos(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = match std::fs::read_to_string(task?.path().join("schedstat")) {
            Ok(text) => text,
            // The thread ended since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc schedstat"))?;
    }
    Ok(total)
}

/// The same from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks_nanos(pid: u32) -> io::Result<u64> {
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
    use std::process::Command;
    use std::time::Duration;

    use super::*;

    #[test]
    fn cpu_time_in_nanoseconds() {
        // A child that only spins on one thread: no thread of it comes or
        // goes while it is read (this test binary's own threads do).
        let mut child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let ticks = cpu_ticks_nanos(child.id());
        let nanos = cpu_nanos(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let (ticks, nanos) = (ticks.unwrap(), nanos.unwrap());
        assert!(
            nanos > 20_000_000,
            "{nanos} ns on a CPU in 300 ms of spinning"
        );
        // The two sources count the same time; the ticks round it down.
        assert!(
            nanos >= ticks && nanos - ticks < 20_000_000,
            "{nanos} ns vs {ticks} ns in ticks"
        );
        // And the nanoseconds were read, not the ticks again.
        assert_ne!(nanos % 1_000_000, 0, "{nanos}");
    }

    #[test]
    fn memory_of_this_process() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.anon > 0 && m.rss >= m.anon && m.peak >= m.rss, "{m:?}");
    }
}
