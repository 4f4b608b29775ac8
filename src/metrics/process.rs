//! The `process_*` figures of `/metrics` (CPU time, memory, file
//! descriptors, start time), read from `/proc/self`, `getrusage` and the
//! rlimits when asked.

use std::time::{SystemTime, UNIX_EPOCH};

/// `process_*` figures of this process, read from `/proc/self` and
/// `getrusage`. A figure the system does not give is left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current figures; `started` is when the service started.
    pub fn read(started: SystemTime) -> ProcessStats {
        use nix::sys::resource::{UsageWho, getrusage};
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).ok().map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        });
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |field: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.trim();
                let n: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
                Some(n * 1024)
            })
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        ProcessStats {
            cpu_seconds,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds,
            start_time_seconds: started
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64()),
        }
    }
}
