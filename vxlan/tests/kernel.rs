//! The codec against the Linux kernel as the peer: a frame the codec
//! encapsulates, sent on the underlay to a kernel vxlan device, comes out of
//! that device (an inner ping gets its reply), and the reply the kernel
//! encapsulates decodes to the expected VNI and inner frame.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cnm_netns::testing::TestHost;
use cnm_netns::{AddrFlags, LinkAdd, VethPeer};
use cnm_vxlan::wire::{checksum, decapsulate, encapsulate, Outer, VXLAN_PORT};
use nix::libc;

const VNI: u32 = 42;
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x42, 0x01];
const KERNEL_MAC: &str = "02:00:00:00:42:02";

/// An inner Ethernet frame: ICMP echo request 10.42.0.1 -> 10.42.0.2.
fn inner_echo(dst_mac: [u8; 6], id: u16) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&1u16.to_be_bytes());
    icmp.extend_from_slice(b"cnm-vxlan codec test payload");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0, 10, 42, 0, 1, 10, 42, 0, 2]);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// An AF_PACKET socket on interface `index` of the calling thread's namespace.
fn packet_socket(index: u32) -> OwnedFd {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, (libc::ETH_P_ALL as u16).to_be() as i32)
    };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is fresh and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; bind reads it only.
    unsafe {
        let mut sa: libc::sockaddr_ll = std::mem::zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sa.sll_ifindex = index as i32;
        let r =
            libc::bind(fd, (&sa as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32);
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), 16);
    }
    sock
}

#[test]
fn the_kernel_vxlan_device_accepts_our_frames_and_we_decode_its_own() {
    let Some(host) = TestHost::new("vxlan_kernel_peer") else { return };
    // Underlay: us (192.0.2.1 on "ua") <-> the kernel peer (192.0.2.2 on "ub").
    let peer = host.container("peer").unwrap();
    let ua = host.handle.link_add(&LinkAdd::veth("ua", VethPeer::new("ub").netns(&peer.ns)).up()).unwrap();
    host.handle.addr_add(ua.index, "192.0.2.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let ub = ua.peer_index.unwrap();
    peer.handle.link_set_up(ub).unwrap();
    peer.handle.addr_add(ub, "192.0.2.2/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    // The kernel's VTEP, configured with iproute2: VNI 42, no learning, our
    // inner MAC reachable through our underlay address. Zero UDP checksums
    // over IPv4, as RFC 7348 recommends (a checksum the kernel sends over a
    // veth is left for offload and not final when captured).
    for cmd in [
        "link add vx0 address 02:00:00:00:42:02 type vxlan id 42 local 192.0.2.2 dstport 4789 nolearning noudpcsum dev ub",
        "addr add 10.42.0.2/24 dev vx0",
        "link set vx0 up",
        "neigh add 10.42.0.1 lladdr 02:00:00:00:42:01 dev vx0 nud permanent",
    ] {
        host.exec(&peer.ns, "ip", &cmd.split(' ').collect::<Vec<_>>());
    }
    host.exec(&peer.ns, "bridge", &["fdb", "append", "02:00:00:00:42:01", "dev", "vx0", "dst", "192.0.2.1"]);

    let ua_mac = host.handle.link_get("ua").unwrap().mac.unwrap().0;
    let ub_mac = peer.handle.link_get(ub).unwrap().mac.unwrap().0;
    let kernel_mac: [u8; 6] = KERNEL_MAC.parse::<cnm_netns::MacAddr>().unwrap().0;
    let sock = host.ns.run(move || packet_socket(ua.index)).unwrap();

    let id = 0x4242;
    let inner = inner_echo(kernel_mac, id);
    let outer = Outer {
        dst_mac: ub_mac,
        src_mac: ua_mac,
        src_ip: "192.0.2.1".parse().unwrap(),
        dst_ip: "192.0.2.2".parse().unwrap(),
        dst_port: VXLAN_PORT,
        ttl: 64,
    };
    let mut frame = [0u8; 1600];
    let n = encapsulate(&mut frame, &outer, VNI, &inner).unwrap();

    let mut seen_vnis = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reply = None;
    'outer: while Instant::now() < deadline {
        // SAFETY: the frame outlives the call; the socket is bound to "ua".
        let sent = unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), n, 0) };
        assert_eq!(sent, n as isize, "send: {}", std::io::Error::last_os_error());
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let mut buf = [0u8; 2048];
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got <= 0 {
                continue;
            }
            let Ok(d) = decapsulate(&buf[..got as usize]) else { continue };
            seen_vnis.push(d.vni);
            let i = d.inner;
            // The kernel's answer: from its VTEP to ours, an ICMP echo reply
            // from 10.42.0.2 to 10.42.0.1 with our identifier.
            if d.outer.src_ip.to_string() == "192.0.2.2" && i.len() >= 42 && i[23] == 1 && i[34] == 0 {
                assert_eq!(&i[0..6], &OUR_MAC, "inner destination is our inner MAC");
                assert_eq!(&i[26..30], &[10, 42, 0, 2]);
                assert_eq!(u16::from_be_bytes([i[38], i[39]]), id);
                reply = Some((d.vni, d.outer.dst_port));
                break 'outer;
            }
        }
    }
    let (vni, port) = reply.unwrap_or_else(|| {
        panic!(
            "no echo reply through the kernel's VTEP; VNIs seen: {seen_vnis:?}\n{}\n{}\n{}",
            host.exec(&peer.ns, "ip", &["-s", "link", "show"]),
            host.exec(&peer.ns, "ip", &["neigh"]),
            host.exec(&peer.ns, "bridge", &["fdb", "show", "dev", "vx0"])
        )
    });
    assert_eq!((vni, port), (VNI, VXLAN_PORT));
    // The kernel counted our frame as received on its vxlan device.
    let stats = host.ip_json(&peer.ns, &["-s", "link", "show", "dev", "vx0"]);
    assert!(stats[0]["stats64"]["rx"]["packets"].as_u64().unwrap() >= 1, "{stats}");
}
