//! The UDP hot path in batches: `recvmmsg` takes up to [`BATCH`] queries
//! in one system call and `sendmmsg` sends their answers in one, instead
//! of a call per datagram each way (a fifth of the server's time under
//! `dnsperf` went to system call entry and wake-ups; see docs/dns.md).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use nix::libc;

/// Datagrams per call.
pub(crate) const BATCH: usize = 32;
/// The largest query kept whole (a longer one arrives cut and is refused).
const QUERY_MAX: usize = 2048;

/// Buffers for one worker.
pub(crate) struct Batch {
    bufs: Vec<[u8; QUERY_MAX]>,
    addrs: Vec<libc::sockaddr_in6>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    count: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            bufs: vec![[0u8; QUERY_MAX]; BATCH],
            // SAFETY: an all-zero sockaddr_in6 is a valid value.
            addrs: vec![unsafe { zeroed() }; BATCH],
            lens: vec![0; BATCH],
            truncated: vec![false; BATCH],
            count: 0,
        }
    }

    /// Receives what is waiting on `sock` (non-blocking), up to [`BATCH`];
    /// how many arrived (0 when none: the socket is empty).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> =
            self.bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: QUERY_MAX }).collect();
        // SAFETY: an all-zero mmsghdr is valid; every pointer set below
        // points into `iovs` and `self.addrs`, which outlive the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in6).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH valid headers whose buffers are ours
        // and large enough; the kernel writes only within them.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.count = n as usize;
        for (i, m) in msgs.iter().take(self.count).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.truncated[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last [`Batch::recv`]: its bytes (`None` when it
    /// was longer than a query can be) and its sender.
    pub fn get(&self, i: usize) -> (Option<&[u8]>, Option<SocketAddr>) {
        let bytes = (!self.truncated[i]).then(|| &self.bufs[i][..self.lens[i]]);
        (bytes, sockaddr(&self.addrs[i]))
    }
}

/// A sender's address as the kernel wrote it.
fn sockaddr(a: &libc::sockaddr_in6) -> Option<SocketAddr> {
    match i32::from(a.sin6_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET),
            // which is smaller than the sockaddr_in6 it lives in.
            let v4: &libc::sockaddr_in = unsafe { &*(a as *const libc::sockaddr_in6).cast() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.sin6_addr.s6_addr),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        ))),
        _ => None,
    }
}

/// The kernel's form of `addr`, and its length.
fn raw(addr: &SocketAddr) -> (libc::sockaddr_in6, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_in6 is a valid value.
    let mut out: libc::sockaddr_in6 = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: a sockaddr_in fits in a sockaddr_in6 and has no
            // alignment beyond it.
            let s: &mut libc::sockaddr_in = unsafe { &mut *(&mut out as *mut libc::sockaddr_in6).cast() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            (out, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            out.sin6_flowinfo = v6.flowinfo();
            out.sin6_scope_id = v6.scope_id();
            (out, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Sends every `(answer, peer)` on `sock` with as few `sendmmsg` calls as
/// it takes; what a full socket buffer refuses is dropped (the client
/// asks again).
pub(crate) fn send_all(sock: &UdpSocket, out: &[(Vec<u8>, SocketAddr)]) {
    let mut done = 0;
    while done < out.len() {
        let chunk = &out[done..out.len().min(done + BATCH)];
        let mut names: Vec<(libc::sockaddr_in6, libc::socklen_t)> = chunk.iter().map(|(_, p)| raw(p)).collect();
        let mut iovs: Vec<libc::iovec> =
            chunk.iter().map(|(b, _)| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() }).collect();
        // SAFETY: an all-zero mmsghdr is valid; its pointers are set to
        // `names` and `iovs`, which outlive the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len()).map(|_| unsafe { zeroed() }).collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut names[i].0 as *mut libc::sockaddr_in6).cast();
            m.msg_hdr.msg_namelen = names[i].1;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers the kernel only reads.
        let n = unsafe {
            libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if n <= 0 {
            // Full buffer or a refused destination: skip one and go on.
            done += 1;
        } else {
            done += n as usize;
        }
    }
}
