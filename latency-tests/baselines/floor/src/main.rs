//! floor baseline for the coreline latency suite: the leanest HTTP/1.1
//! responder we can write, to show the physical limit of this machine.
//!
//! One thread pinned to one core, level-triggered epoll, non-blocking sockets.
//! Every complete request (head ended by `\r\n\r\n`, then `Content-Length`
//! body bytes) is answered with the same pre-built 200 reply
//! `{"fooLength":11}`, without parsing JSON or even the request line; so
//! `GET /health` is 200 too. Keep-alive always; pipelined requests are all
//! answered, in order, with one `write` per readiness event.
//!
//! Invariants: a connection's `input[..filled]` holds only bytes not yet
//! answered; its `output` holds replies not yet written, and EPOLLOUT interest
//! is on exactly when `output` is non-empty.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

const REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"fooLength\":11}";
const LISTENER: u64 = u64::MAX;
const READ_CHUNK: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    /// Fixed-size read buffer (zeroed once); `input[..filled]` is unanswered.
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    want_write: bool,
}

/// Length of the first complete request in `buf`, or `None` if incomplete.
/// `Err` for a head with an unparsable Content-Length.
fn request_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut body = 0usize;
    for line in buf[..head_end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let digits = std::str::from_utf8(&line[15..]).map_err(|_| ())?.trim();
            body = digits.parse().map_err(|_| ())?;
        }
    }
    let total = head_end + 4 + body;
    Ok((buf.len() >= total).then_some(total))
}

fn epoll_ctl(epfd: i32, op: i32, fd: i32, events: u32, token: u64) {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call; the
    // kernel copies it.
    let rc = unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) };
    if rc != 0 {
        panic!("epoll_ctl: {}", std::io::Error::last_os_error());
    }
}

/// Reads everything available, queues one reply per complete request and
/// writes. Returns false when the connection must be closed.
fn serve(conn: &mut Conn) -> bool {
    loop {
        if conn.filled == conn.input.len() {
            // Only a request larger than the buffer gets here; grow once.
            let len = conn.input.len();
            conn.input.resize(len * 2, 0);
        }
        match conn.stream.read(&mut conn.input[conn.filled..]) {
            Ok(0) => return false,
            Ok(n) => {
                conn.filled += n;
                if conn.filled < conn.input.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let mut consumed = 0;
    loop {
        match request_len(&conn.input[consumed..conn.filled]) {
            Ok(Some(n)) => {
                consumed += n;
                conn.output.extend_from_slice(REPLY);
            }
            Ok(None) => break,
            Err(()) => return false,
        }
    }
    conn.input.copy_within(consumed..conn.filled, 0);
    conn.filled -= consumed;
    flush(conn)
}

/// Writes as much of `output` as the socket takes. False on a write error.
fn flush(conn: &mut Conn) -> bool {
    let mut written = 0;
    while written < conn.output.len() {
        match conn.stream.write(&conn.output[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.output.drain(..written);
    true
}

/// `--port P --core C`, both required.
fn parse_args() -> Result<(u16, usize), String> {
    let mut port = None;
    let mut core = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse().map_err(|e| format!("--port {value}: {e}"))?),
            "--core" => core = Some(value.parse().map_err(|e| format!("--core {value}: {e}"))?),
            other => return Err(format!("unknown flag {other}; expected --port P --core C")),
        }
    }
    Ok((
        port.ok_or("missing --port P")?,
        core.ok_or("missing --core C")?,
    ))
}

fn main() {
    let (port, core) = parse_args().unwrap_or_else(|e| {
        eprintln!("baseline-floor: {e}");
        std::process::exit(2)
    });
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("baseline-floor: cannot pin to core {core}");
        std::process::exit(2)
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("baseline-floor: bind 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    // SAFETY: plain syscall with no pointer arguments.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(
        epfd >= 0,
        "epoll_create1: {}",
        std::io::Error::last_os_error()
    );
    epoll_ctl(
        epfd,
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        libc::EPOLLIN as u32,
        LISTENER,
    );
    eprintln!("baseline-floor listening on 127.0.0.1:{port}, core {core}");

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    loop {
        // SAFETY: `events` is a valid buffer of `events.len()` entries.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {err}");
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(true).expect("nonblocking");
                            stream.set_nodelay(true).expect("nodelay");
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            let fd = stream.as_raw_fd();
                            conns[slot] = Some(Conn {
                                stream,
                                input: vec![0; READ_CHUNK],
                                filled: 0,
                                output: Vec::with_capacity(4096),
                                want_write: false,
                            });
                            epoll_ctl(
                                epfd,
                                libc::EPOLL_CTL_ADD,
                                fd,
                                libc::EPOLLIN as u32,
                                slot as u64,
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("baseline-floor: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let slot = token as usize;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            let mut alive = true;
            if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                alive = false;
            }
            if alive && flags & libc::EPOLLOUT as u32 != 0 {
                alive = flush(conn);
            }
            if alive && flags & libc::EPOLLIN as u32 != 0 {
                alive = serve(conn);
            }
            if !alive {
                // Dropping the stream closes the fd, which removes it from epoll.
                conns[slot] = None;
                free.push(slot);
                continue;
            }
            let want_write = !conn.output.is_empty();
            if want_write != conn.want_write {
                conn.want_write = want_write;
                let interest = if want_write {
                    (libc::EPOLLIN | libc::EPOLLOUT) as u32
                } else {
                    libc::EPOLLIN as u32
                };
                epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_MOD,
                    conn.stream.as_raw_fd(),
                    interest,
                    token,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_len;

    #[test]
    fn frames_requests_with_and_without_body() {
        assert_eq!(request_len(b"GET /health HTTP/1.1\r\n\r\n"), Ok(Some(24)));
        let post = b"POST /my_api HTTP/1.1\r\ncontent-LENGTH: 3\r\n\r\nabcGET";
        assert_eq!(request_len(post), Ok(Some(post.len() - 3)));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Ok(None)
        );
        assert_eq!(request_len(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(())
        );
    }
}
