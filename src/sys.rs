//! The few system calls coreline makes itself, each behind a safe function.
//! This is the only module with `unsafe`.

use std::io;
use std::os::fd::RawFd;

/// Which half of a socket [`shutdown`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// Reads return end-of-file; a pending read wakes up.
    Read,
    /// Both directions.
    Both,
}

/// `shutdown(2)` on a socket descriptor (through `nix`). Used by a shard to
/// wake a connection parked in a read when it timed out or the shard is
/// draining: the read then returns end-of-file and the connection task
/// closes itself. Errors (for example `ENOTCONN` on a socket the peer
/// already reset) are returned for the caller to ignore.
pub fn shutdown(fd: RawFd, half: Half) -> io::Result<()> {
    use nix::sys::socket::Shutdown;
    let how = match half {
        Half::Read => Shutdown::Read,
        Half::Both => Shutdown::Both,
    };
    nix::sys::socket::shutdown(fd, how).map_err(io::Error::from)
}

/// Whether this process may create an io_uring: sets up (and closes) a
/// one-entry ring. `EPERM` means a seccomp profile or
/// `kernel.io_uring_disabled` forbids it, `ENOSYS` a kernel without it.
/// glommio panics in a shard thread in those cases, so the runtime asks first.
pub fn io_uring_setup_probe() -> io::Result<()> {
    // struct io_uring_params: 120 bytes, all zero = default flags.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup(2) reads and writes exactly
    // sizeof(struct io_uring_params) = 120 bytes at the pointer, which is our
    // 120-byte, 4-aligned buffer; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1u32,
            params.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned to us and
    // nothing else refers to it.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`None` = unlimited).
pub fn memlock_limit() -> io::Result<Option<u64>> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::MEMLOCK)?;
    Ok((soft != rlimit::INFINITY).then_some(soft))
}

/// The soft and hard `RLIMIT_NOFILE` (`u64::MAX` = unlimited).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx and haproxy
/// do, and returns the new soft limit. (The soft limit is often 1024 while
/// the hard one is far higher; nothing but this call stands between.)
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    Ok(hard)
}

/// True when the process runs as root (and so, normally, holds
/// `CAP_IPC_LOCK`, which lifts `RLIMIT_MEMLOCK`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Hands freed heap memory back to the kernel (glibc's `malloc_trim(0)`,
/// which also trims the per-thread arenas the shards allocate from and
/// releases free pages inside them). Without it, the buffers of a
/// connection peak stay resident after the connections close: 21 → 70 MB
/// for 3,000 connections and still 70 MB after (tests/memory.rs). Returns
/// whether memory was released; a no-op on other C libraries.
pub fn release_free_memory() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim(3) takes a plain integer and works on the
        // allocator's own state under its own locks; it may be called from
        // any thread at any time and touches no memory we own.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Hands a bound, listening std socket to glommio on the current executor.
pub fn glommio_listener(listener: std::net::TcpListener) -> glommio::net::TcpListener {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = listener.into_raw_fd();
    // SAFETY: `fd` is a bound, listening TCP socket we own (just released by
    // `into_raw_fd`, so nothing else closes it); glommio's listener takes
    // over closing it.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
}

/// Moves the calling thread to the `SCHED_IDLE` policy, so that it runs only
/// when nothing else wants its core (a pinned shard always wins). Falls back
/// to the lowest `nice` priority if the policy cannot be set; a failure of
/// both is logged and otherwise harmless.
pub fn run_when_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) on pid 0 (the calling thread) reads the
    // `param` struct, which lives across the call; no memory is written.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        return;
    }
    // SAFETY: setpriority(2) takes plain integers and touches no memory.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot lower a background thread's priority (checkpoint writer, model swap, reload)");
    }
}

/// The sending end of a shard's wake-up line: whoever sends the shard a
/// command or a checkpoint barrier calls [`Wake::wake`] after the send, so
/// that the shard's housekeeping sleeps until there is work instead of
/// polling its channels. A Unix socket pair: this end is written without
/// blocking, the shard reads the other through glommio.
#[derive(Debug, Clone)]
pub struct Wake(std::sync::Arc<std::os::unix::net::UnixStream>);

impl Wake {
    /// Wakes the shard. A full socket buffer means wake-ups are already
    /// pending, so a failed write loses nothing.
    pub fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.0).write(&[1]);
    }
}

impl PartialEq for Wake {
    fn eq(&self, other: &Wake) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The shard's end of a wake-up line (see [`Wake`]).
#[derive(Debug)]
pub struct WakeReceiver(std::os::unix::net::UnixStream);

impl WakeReceiver {
    /// This end as a glommio stream; call on the shard's executor thread.
    pub fn into_glommio(self) -> glommio::net::UnixStream {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let fd = self.0.into_raw_fd();
        // SAFETY: `fd` is an open, connected, non-blocking Unix stream
        // socket whose ownership `into_raw_fd` just gave up; glommio's stream
        // takes it over and closes it when dropped.
        unsafe { glommio::net::UnixStream::from_raw_fd(fd) }
    }
}

/// A new wake-up line: the end to keep (cloned to every sender) and the end
/// to move to the shard.
pub fn wake_line() -> io::Result<(Wake, WakeReceiver)> {
    let (tx, rx) = std::os::unix::net::UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Wake(std::sync::Arc::new(tx)), WakeReceiver(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_wake_is_a_readable_byte_and_a_full_line_never_blocks() {
        let (wake, rx) = wake_line().unwrap();
        let mut buf = [0u8; 8];
        // Nothing sent: the shard's end has nothing to read.
        let e = (&rx.0).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        wake.clone().wake();
        assert_eq!((&rx.0).read(&mut buf).unwrap(), 1);
        // Far more wakes than the socket buffer holds: the sender never
        // blocks, and the reader still finds wake-ups pending.
        for _ in 0..1_000_000 {
            wake.wake();
        }
        assert!((&rx.0).read(&mut buf).unwrap() > 0);
    }
}
