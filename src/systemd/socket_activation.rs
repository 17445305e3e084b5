//! Socket activation: take the listening sockets systemd passed (`LISTEN_FDS`, fds 3…), before
//! any thread exists, because the environment is cleared here so children do not inherit it.
//! Every socket is checked: it must be a listening stream socket, TCP or Unix. Anything odd
//! is an error — never a silent fallback to binding our own port.
#![allow(unsafe_code)]

use std::{
    net::TcpListener,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    os::unix::net::UnixListener,
};

use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};

/// A socket handed over by systemd (or bound by us).
#[derive(Debug)]
pub enum Inherited {
    Tcp(TcpListener),
    Unix(UnixListener),
}

const SD_LISTEN_FDS_START: RawFd = 3;

/// Reads `LISTEN_FDS`/`LISTEN_PID` through `env` and returns the sockets, or `None` when the
/// process was not socket-activated.
pub fn take_with(
    env: &dyn Fn(&str) -> Option<String>,
    pid: u32,
) -> Result<Option<Vec<Inherited>>, String> {
    let Some(fds) = env("LISTEN_FDS") else {
        return Ok(None);
    };
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number of sockets"))?;
    let listen_pid = env("LISTEN_PID").ok_or(
        "LISTEN_FDS is set but LISTEN_PID is not: refusing to guess whose sockets these are",
    )?;
    let listen_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={listen_pid:?} is not a process id"))?;
    if listen_pid != pid {
        return Err(format!(
            "LISTEN_PID={listen_pid} is not this process ({pid}): the socket-activation variables were inherited from another process"
        ));
    }
    if count == 0 {
        return Err(
            "LISTEN_FDS=0: systemd passed no sockets; check the socket unit's ListenStream=".into(),
        );
    }
    // fds 3..3+count must be valid fd numbers; a larger count would wrap around to an empty range.
    let count = RawFd::try_from(count)
        .ok()
        .filter(|n| n.checked_add(SD_LISTEN_FDS_START).is_some())
        .ok_or_else(|| format!("LISTEN_FDS={count} is too large to be a number of sockets"))?;
    (0..count)
        .map(|i| inspect(SD_LISTEN_FDS_START + i))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Takes the inherited sockets from the process environment and clears the variables.
///
/// # Safety
/// Must be called while the process has a single thread (before the async runtime starts):
/// it removes environment variables, which races with any other thread reading the
/// environment (`std::env::remove_var`'s precondition).
pub unsafe fn take() -> Result<Option<Vec<Inherited>>, String> {
    let result = take_with(&|k| std::env::var(k).ok(), std::process::id());
    // SAFETY: the caller guarantees no other thread exists (this function's precondition).
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    result
}

fn inspect(fd: RawFd) -> Result<Inherited, String> {
    // Is the number an open fd at all? Asked on the raw number: a BorrowedFd may only be
    // made for an fd that is open.
    // SAFETY: F_GETFD reads the fd's flags and touches no memory; a closed fd gives EBADF.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
        return Err(format!(
            "inherited fd {fd} is not open ({}): LISTEN_FDS counts more sockets than were passed",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is open (checked above) and stays open for this function: nothing else in
    // this single-threaded start-up closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let kind = getsockopt(&borrowed, sockopt::SockType)
        .map_err(|e| format!("inherited fd {fd} is not a socket ({e})"))?;
    if kind != SockType::Stream {
        return Err(format!(
            "inherited fd {fd} is a {kind:?} socket; sysom-mcp needs a stream socket (ListenStream=)"
        ));
    }
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)
        .map_err(|e| format!("inherited fd {fd}: cannot query SO_ACCEPTCONN ({e})"))?;
    if !listening {
        return Err(format!(
            "inherited fd {fd} is not listening (Accept=yes is not supported; use Accept=no)"
        ));
    }
    let addr: SockaddrStorage =
        getsockname(fd).map_err(|e| format!("inherited fd {fd}: getsockname failed ({e})"))?;
    // SAFETY: the fd was checked to be an open listening socket handed to this process,
    // and nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // systemd passes the sockets without FD_CLOEXEC; nothing we spawn may inherit them.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("inherited fd {fd}: cannot set close-on-exec ({e})"))?;
    match addr.family() {
        Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
            Ok(Inherited::Tcp(TcpListener::from(owned)))
        }
        Some(AddressFamily::Unix) => Ok(Inherited::Unix(UnixListener::from(owned))),
        other => Err(format!(
            "inherited fd {fd} has unsupported address family {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_closed_fd_is_reported_and_an_adopted_one_is_close_on_exec() {
        // A high fd number nothing in the test process has open.
        let e = inspect(4000).unwrap_err();
        assert!(e.contains("not open"), "{e}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let flags = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty());
        // SAFETY: fd was just made by into_raw_fd and is owned by this test.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(borrowed, flags).unwrap();
        let Inherited::Tcp(adopted) = inspect(fd).unwrap() else {
            panic!("a TCP listener was not adopted as one")
        };
        let got = nix::fcntl::fcntl(&adopted, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            got & nix::libc::FD_CLOEXEC,
            0,
            "inherited socket left inheritable"
        );
    }

    #[test]
    fn not_activated_without_listen_fds() {
        assert!(take_with(&env_of(&[]), 1).unwrap().is_none());
    }

    #[test]
    fn malformed_values_are_errors() {
        let e = take_with(&env_of(&[("LISTEN_FDS", "x"), ("LISTEN_PID", "1")]), 1).unwrap_err();
        assert!(e.contains("LISTEN_FDS"), "{e}");
        let e = take_with(&env_of(&[("LISTEN_FDS", "1")]), 1).unwrap_err();
        assert!(e.contains("LISTEN_PID"), "{e}");
        let e = take_with(&env_of(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "abc")]), 1).unwrap_err();
        assert!(e.contains("LISTEN_PID"), "{e}");
        let e = take_with(&env_of(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "2")]), 1).unwrap_err();
        assert!(e.contains("not this process"), "{e}");
        let e = take_with(&env_of(&[("LISTEN_FDS", "0"), ("LISTEN_PID", "1")]), 1).unwrap_err();
        assert!(e.contains("LISTEN_FDS=0"), "{e}");
        // Counts that would wrap past the last fd number (they used to mean "no sockets").
        let huge: [&'static [(&str, &str)]; 3] = [
            &[("LISTEN_FDS", "4294967295"), ("LISTEN_PID", "1")],
            &[("LISTEN_FDS", "2147483648"), ("LISTEN_PID", "1")],
            &[("LISTEN_FDS", "2147483645"), ("LISTEN_PID", "1")],
        ];
        for pairs in huge {
            let e = take_with(&env_of(pairs), 1).unwrap_err();
            assert!(e.contains("too large"), "{pairs:?}: {e}");
        }
    }
}
