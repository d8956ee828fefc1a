//! A loopback port that is reserved but refuses connections.
//!
//! Picking a free port and closing it leaves a window in which a QEMU started by a parallel
//! test can take it. A socket that is bound but never listens keeps the port ours, and a
//! connect to it is refused, exactly as when nothing is there. std cannot bind without
//! listening, so this goes through libc.

use std::os::fd::{FromRawFd, OwnedFd};

pub fn closed_port() -> (OwnedFd, u16) {
    // SAFETY: plain socket calls on a descriptor we own; every pointer is to a local of the
    // size given with it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let ok = libc::bind(raw, &addr as *const _ as *const libc::sockaddr, len);
        assert_eq!(ok, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        let ok = libc::getsockname(raw, &mut addr as *mut _ as *mut libc::sockaddr, &mut len);
        assert_eq!(ok, 0, "getsockname: {}", std::io::Error::last_os_error());
        (fd, u16::from_be(addr.sin_port))
    }
}
