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

/// `shutdown(2)` on a socket descriptor. Used by a shard to wake a
/// connection parked in a read when it timed out or the shard is draining:
/// the read then returns end-of-file and the connection task closes itself.
/// Errors (for example `ENOTCONN` on a socket the peer already reset) are
/// returned for the caller to ignore.
pub fn shutdown(fd: RawFd, half: Half) -> io::Result<()> {
    let how = match half {
        Half::Read => libc::SHUT_RD,
        Half::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown(2) takes a descriptor and a constant; it touches no
    // memory of ours. A stale or invalid descriptor yields EBADF/ENOTSOCK,
    // which we return; callers only pass descriptors of sockets they own.
    let rc = unsafe { libc::shutdown(fd, how) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of
    // the call; getrlimit writes only into it.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(lim.rlim_cur)
    })
}

/// True when the process runs as root (and so, normally, holds
/// `CAP_IPC_LOCK`, which lifts `RLIMIT_MEMLOCK`).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
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
        tracing::warn!(error = %io::Error::last_os_error(), "cannot lower the checkpoint writer's priority");
    }
}
