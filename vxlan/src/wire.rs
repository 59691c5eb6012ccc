//! The VXLAN wire format (RFC 7348), zero-copy over buffers the caller owns.
//! No allocation and no I/O; only `core` is used, so this module builds
//! without the standard library (`--no-default-features`).
//!
//! - [`VxlanPacket`] is a view of the 8-byte VXLAN header and what follows;
//!   [`VxlanRepr`] is its meaning (the VNI), with `parse` and `emit`.
//! - [`encapsulate`] writes outer Ethernet + IPv4 or IPv6 + UDP + VXLAN
//!   around an inner Ethernet frame; [`decapsulate`] checks and strips them.
//!   The UDP source port comes from a hash of the inner flow (RFC 7348 §5),
//!   the IPv4 header checksum is filled in and checked, and the UDP checksum
//!   is computed over IPv6 (mandatory there) and checked whenever present.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IANA port for VXLAN.
pub const VXLAN_PORT: u16 = 4789;

/// Bytes of outer headers over IPv4: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OVERHEAD_V4: usize = 14 + 20 + 8 + 8;
/// Bytes of outer headers over IPv6: Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8.
pub const OVERHEAD_V6: usize = 14 + 40 + 8 + 8;

/// Why a buffer is not a valid packet, or too small for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than the headers it must hold (`what`).
    Truncated {
        /// The header or field that did not fit.
        what: &'static str,
    },
    /// The outer Ethernet type is neither IPv4 nor IPv6.
    NotIp {
        /// The EtherType found.
        ethertype: u16,
    },
    /// The IP version field does not match the EtherType.
    BadIpVersion,
    /// The IPv4 header length field is below 5 words or beyond the packet.
    BadIpHeaderLength,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// A fragment of an IPv4 datagram (VXLAN needs whole datagrams).
    Fragmented,
    /// The IP length field disagrees with the buffer.
    BadIpLength,
    /// The IP payload is not UDP.
    NotUdp {
        /// The protocol / next header found.
        protocol: u8,
    },
    /// The UDP length field disagrees with the IP payload.
    BadUdpLength,
    /// The UDP checksum is wrong (or zero over IPv6, where it is mandatory).
    BadUdpChecksum,
    /// The VXLAN header's I flag is not set: the VNI is not valid.
    NoVni,
    /// A VNI above 24 bits.
    VniTooLarge,
    /// The outer source and destination are of different IP families.
    MixedFamilies,
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { what } => write!(f, "packet too short for its {what}"),
            Error::NotIp { ethertype } => write!(f, "outer EtherType {ethertype:#06x} is not IPv4 or IPv6"),
            Error::BadIpVersion => f.write_str("IP version does not match the EtherType"),
            Error::BadIpHeaderLength => f.write_str("bad IPv4 header length"),
            Error::BadIpChecksum => f.write_str("bad IPv4 header checksum"),
            Error::Fragmented => f.write_str("IPv4 fragment"),
            Error::BadIpLength => f.write_str("IP length field disagrees with the packet"),
            Error::NotUdp { protocol } => write!(f, "IP protocol {protocol} is not UDP"),
            Error::BadUdpLength => f.write_str("UDP length field disagrees with the IP payload"),
            Error::BadUdpChecksum => f.write_str("bad UDP checksum"),
            Error::NoVni => f.write_str("VXLAN I flag not set"),
            Error::VniTooLarge => f.write_str("VNI does not fit in 24 bits"),
            Error::MixedFamilies => f.write_str("outer source and destination are of different IP families"),
            Error::BufferTooSmall { needed } => write!(f, "output buffer too small: {needed} bytes needed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Field positions.
mod field {
    use core::ops::Range;
    /// VXLAN header: flags (I = 0x08), 3 reserved, VNI (24 bits), 1 reserved.
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    pub const VXLAN_LEN: usize = 8;
    /// Ethernet.
    pub const ETH_DST: Range<usize> = 0..6;
    pub const ETH_SRC: Range<usize> = 6..12;
    pub const ETH_TYPE: Range<usize> = 12..14;
    pub const ETH_LEN: usize = 14;
    /// IPv4 (offsets within the IP header).
    pub const V4_TOTAL_LEN: Range<usize> = 2..4;
    pub const V4_FLAGS_FRAG: Range<usize> = 6..8;
    pub const V4_TTL: usize = 8;
    pub const V4_PROTO: usize = 9;
    pub const V4_CHECKSUM: Range<usize> = 10..12;
    pub const V4_SRC: Range<usize> = 12..16;
    pub const V4_DST: Range<usize> = 16..20;
    pub const V4_LEN: usize = 20;
    /// IPv6.
    pub const V6_PAYLOAD_LEN: Range<usize> = 4..6;
    pub const V6_NEXT: usize = 6;
    pub const V6_HOPS: usize = 7;
    pub const V6_SRC: Range<usize> = 8..24;
    pub const V6_DST: Range<usize> = 24..40;
    pub const V6_LEN: usize = 40;
    /// UDP.
    pub const UDP_SRC: Range<usize> = 0..2;
    pub const UDP_DST: Range<usize> = 2..4;
    pub const UDP_LEN: Range<usize> = 4..6;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const UDP_HDR: usize = 8;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_UDP: u8 = 17;
const FLAG_I: u8 = 0x08;

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A view of a VXLAN header and its payload (the inner Ethernet frame).
#[derive(Debug, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// A view without any check; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// A view of a buffer long enough for the header.
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>, Error> {
        if buffer.as_ref().len() < field::VXLAN_LEN {
            return Err(Error::Truncated { what: "VXLAN header" });
        }
        Ok(VxlanPacket { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::VXLAN_LEN..]
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI (its top 8 bits are dropped).
    pub fn set_vni(&mut self, vni: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }

    /// Zeroes the reserved fields.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[1..4].fill(0);
        b[7] = 0;
    }
}

/// The meaning of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The VXLAN network identifier (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads a header: the I flag must be set; reserved bits are ignored,
    /// as RFC 7348 asks of receivers.
    pub fn parse<T: AsRef<[u8]>>(p: &VxlanPacket<T>) -> Result<VxlanRepr, Error> {
        if p.flags() & FLAG_I == 0 {
            return Err(Error::NoVni);
        }
        Ok(VxlanRepr { vni: p.vni() })
    }

    /// Writes the header: I flag, VNI, reserved bits zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut VxlanPacket<T>) -> Result<(), Error> {
        if self.vni > 0x00ff_ffff {
            return Err(Error::VniTooLarge);
        }
        p.set_flags(FLAG_I);
        p.clear_reserved();
        p.set_vni(self.vni);
        Ok(())
    }

    /// Header length.
    pub const fn header_len(&self) -> usize {
        field::VXLAN_LEN
    }
}

/// The outer headers of an encapsulated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// Outer Ethernet destination (the next hop's MAC on the underlay).
    pub dst_mac: [u8; 6],
    /// Outer Ethernet source.
    pub src_mac: [u8; 6],
    /// Source VTEP address.
    pub src_ip: IpAddr,
    /// Destination VTEP address (same family as `src_ip`).
    pub dst_ip: IpAddr,
    /// UDP destination port (normally [`VXLAN_PORT`]).
    pub dst_port: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// What [`decapsulate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    /// The outer headers (TTL as received).
    pub outer: Outer,
    /// The outer UDP source port.
    pub src_port: u16,
    /// The VNI.
    pub vni: u32,
    /// The inner Ethernet frame.
    pub inner: &'a [u8],
}

/// Ones' complement sum of 16-bit words (a trailing odd byte is padded),
/// added to `acc`. Big-endian 32-bit words are summed into 64 bits and
/// folded at the end, which gives the same ones' complement sum with a
/// quarter of the additions.
fn sum16(acc: u32, data: &[u8]) -> u32 {
    let mut wide = u64::from(acc);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        wide += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    wide += u64::from(u32::from_be_bytes(tail));
    // 64 -> 32 -> 17 bits; `fold` finishes the carries.
    let folded = (wide & 0xffff_ffff) + (wide >> 32);
    let folded = (folded & 0xffff_ffff) + (folded >> 32);
    ((folded & 0xffff) + (folded >> 16)) as u32
}

/// The Internet checksum (RFC 1071) of `data`: the ones' complement of the
/// ones' complement sum of its 16-bit words. The workspace's one
/// implementation (the codec's IPv4 and UDP checksums, ICMP probes).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(0, data))
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The UDP checksum over the pseudo-header and `udp` (header and payload,
/// with the checksum field as it is in `udp`).
fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
        }
        _ => {}
    }
    acc += u32::from(PROTO_UDP);
    acc += udp.len() as u32 & 0xffff;
    acc += (udp.len() as u32) >> 16;
    !fold(sum16(acc, udp))
}

/// RFC 7348 §5: a source port from a hash of the inner frame's flow
/// (addresses, protocol, ports), in the dynamic range 49152–65535, so the
/// underlay's ECMP spreads flows while keeping each flow on one path.
pub fn flow_source_port(inner: &[u8]) -> u16 {
    // FNV-1a over the flow's fields.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    if inner.len() >= field::ETH_LEN {
        eat(&inner[..field::ETH_LEN]);
        let ip = &inner[field::ETH_LEN..];
        match be16(&inner[field::ETH_TYPE]) {
            ETHERTYPE_IPV4 if ip.len() >= field::V4_LEN => {
                eat(&ip[field::V4_SRC.start..field::V4_DST.end]);
                eat(&[ip[field::V4_PROTO]]);
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if let Some(ports) = ip.get(ihl..ihl + 4) {
                    eat(ports);
                }
            }
            ETHERTYPE_IPV6 if ip.len() >= field::V6_LEN => {
                eat(&ip[field::V6_SRC.start..field::V6_DST.end]);
                eat(&[ip[field::V6_NEXT]]);
                if let Some(ports) = ip.get(field::V6_LEN..field::V6_LEN + 4) {
                    eat(ports);
                }
            }
            _ => {}
        }
    } else {
        eat(inner);
    }
    49152 + (fold(h) % 16384)
}

/// Writes `outer` headers, the VXLAN header with `vni`, and `inner` into
/// `out`; returns the length of the whole frame. Nothing is allocated.
pub fn encapsulate(out: &mut [u8], outer: &Outer, vni: u32, inner: &[u8]) -> Result<usize, Error> {
    if vni > 0x00ff_ffff {
        return Err(Error::VniTooLarge);
    }
    let ip_len = match (outer.src_ip, outer.dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => field::V4_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => field::V6_LEN,
        _ => return Err(Error::MixedFamilies),
    };
    let udp_len = field::UDP_HDR + field::VXLAN_LEN + inner.len();
    let total = field::ETH_LEN + ip_len + udp_len;
    if out.len() < total || udp_len > 0xffff || ip_len + udp_len > 0xffff {
        return Err(Error::BufferTooSmall { needed: total });
    }
    let out = &mut out[..total];
    // Ethernet.
    out[field::ETH_DST].copy_from_slice(&outer.dst_mac);
    out[field::ETH_SRC].copy_from_slice(&outer.src_mac);
    let (ip, rest) = out[field::ETH_LEN..].split_at_mut(ip_len);
    // IP.
    match (outer.src_ip, outer.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip[0] = 0x45;
            ip[1] = 0;
            ip[field::V4_TOTAL_LEN].copy_from_slice(&((ip_len + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]);
            // Don't fragment: the overlay's MTU leaves room for the headers.
            ip[field::V4_FLAGS_FRAG].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[field::V4_TTL] = outer.ttl;
            ip[field::V4_PROTO] = PROTO_UDP;
            ip[field::V4_CHECKSUM].copy_from_slice(&[0, 0]);
            ip[field::V4_SRC].copy_from_slice(&s.octets());
            ip[field::V4_DST].copy_from_slice(&d.octets());
            let c = !fold(sum16(0, ip));
            ip[field::V4_CHECKSUM].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[field::V6_PAYLOAD_LEN].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[field::V6_NEXT] = PROTO_UDP;
            ip[field::V6_HOPS] = outer.ttl;
            ip[field::V6_SRC].copy_from_slice(&s.octets());
            ip[field::V6_DST].copy_from_slice(&d.octets());
        }
        _ => unreachable!("families checked above"),
    }
    // UDP, VXLAN, inner frame.
    let udp = rest;
    udp[field::UDP_SRC].copy_from_slice(&flow_source_port(inner).to_be_bytes());
    udp[field::UDP_DST].copy_from_slice(&outer.dst_port.to_be_bytes());
    udp[field::UDP_LEN].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[field::UDP_CHECKSUM].copy_from_slice(&[0, 0]);
    {
        let mut v = VxlanPacket::new_unchecked(&mut udp[field::UDP_HDR..field::UDP_HDR + field::VXLAN_LEN]);
        VxlanRepr { vni }.emit(&mut v)?;
    }
    udp[field::UDP_HDR + field::VXLAN_LEN..].copy_from_slice(inner);
    if outer.src_ip.is_ipv6() {
        // Mandatory over IPv6; 0 is sent as 0xffff.
        let c = match udp_checksum(outer.src_ip, outer.dst_ip, udp) {
            0 => 0xffff,
            c => c,
        };
        udp[field::UDP_CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    let ethertype = if outer.src_ip.is_ipv4() { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
    out[field::ETH_TYPE].copy_from_slice(&ethertype.to_be_bytes());
    Ok(total)
}

/// Checks and strips the outer headers of a VXLAN frame. Every length is
/// checked before it is used; a malformed buffer is an error, never a panic.
pub fn decapsulate(frame: &[u8]) -> Result<Decapsulated<'_>, Error> {
    if frame.len() < field::ETH_LEN {
        return Err(Error::Truncated { what: "Ethernet header" });
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[field::ETH_DST]);
    src_mac.copy_from_slice(&frame[field::ETH_SRC]);
    let ethertype = be16(&frame[field::ETH_TYPE]);
    let ip = &frame[field::ETH_LEN..];
    let (src_ip, dst_ip, ttl, udp) = match ethertype {
        ETHERTYPE_IPV4 => {
            if ip.len() < field::V4_LEN {
                return Err(Error::Truncated { what: "IPv4 header" });
            }
            if ip[0] >> 4 != 4 {
                return Err(Error::BadIpVersion);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < field::V4_LEN || ihl > ip.len() {
                return Err(Error::BadIpHeaderLength);
            }
            if fold(sum16(0, &ip[..ihl])) != 0xffff {
                return Err(Error::BadIpChecksum);
            }
            let total = usize::from(be16(&ip[field::V4_TOTAL_LEN]));
            if total < ihl || total > ip.len() {
                return Err(Error::BadIpLength);
            }
            let frag = be16(&ip[field::V4_FLAGS_FRAG]);
            if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
                return Err(Error::Fragmented);
            }
            if ip[field::V4_PROTO] != PROTO_UDP {
                return Err(Error::NotUdp { protocol: ip[field::V4_PROTO] });
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(s), IpAddr::V4(d), ip[field::V4_TTL], &ip[ihl..total])
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < field::V6_LEN {
                return Err(Error::Truncated { what: "IPv6 header" });
            }
            if ip[0] >> 4 != 6 {
                return Err(Error::BadIpVersion);
            }
            let payload = usize::from(be16(&ip[field::V6_PAYLOAD_LEN]));
            if field::V6_LEN + payload > ip.len() {
                return Err(Error::BadIpLength);
            }
            if ip[field::V6_NEXT] != PROTO_UDP {
                return Err(Error::NotUdp { protocol: ip[field::V6_NEXT] });
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[field::V6_SRC]);
            d.copy_from_slice(&ip[field::V6_DST]);
            let udp = &ip[field::V6_LEN..field::V6_LEN + payload];
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), ip[field::V6_HOPS], udp)
        }
        other => return Err(Error::NotIp { ethertype: other }),
    };
    if udp.len() < field::UDP_HDR {
        return Err(Error::Truncated { what: "UDP header" });
    }
    let udp_len = usize::from(be16(&udp[field::UDP_LEN]));
    if udp_len < field::UDP_HDR || udp_len > udp.len() {
        return Err(Error::BadUdpLength);
    }
    let udp = &udp[..udp_len];
    let checksum = be16(&udp[field::UDP_CHECKSUM]);
    // Zero means "none" over IPv4; over IPv6 a checksum is mandatory.
    let present = checksum != 0 || src_ip.is_ipv6();
    if present && (checksum == 0 || udp_checksum(src_ip, dst_ip, udp) != 0) {
        return Err(Error::BadUdpChecksum);
    }
    let v = VxlanPacket::new_checked(&udp[field::UDP_HDR..])?;
    let repr = VxlanRepr::parse(&v)?;
    Ok(Decapsulated {
        outer: Outer { dst_mac, src_mac, src_ip, dst_ip, dst_port: be16(&udp[field::UDP_DST]), ttl },
        src_port: be16(&udp[field::UDP_SRC]),
        vni: repr.vni,
        inner: &udp[field::UDP_HDR + field::VXLAN_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_ping() -> [u8; 42] {
        // Ethernet + IPv4 header (20) + 8 bytes of ICMP echo.
        let mut f = [0u8; 42];
        f[0..6].copy_from_slice(&[0x02, 0x42, 10, 1, 1, 12]);
        f[6..12].copy_from_slice(&[0x02, 0x42, 10, 1, 1, 7]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = 1;
        f[26..30].copy_from_slice(&[10, 1, 1, 7]);
        f[30..34].copy_from_slice(&[11, 1, 1, 12]);
        f[34] = 8;
        f
    }

    fn outer(v6: bool) -> Outer {
        let (s, d): (IpAddr, IpAddr) = if v6 {
            ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
        } else {
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
        };
        Outer {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: s,
            dst_ip: d,
            dst_port: VXLAN_PORT,
            ttl: 64,
        }
    }

    #[test]
    fn checksum_matches_rfc1071() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2 before complement.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        // An echo request, type 8, id 1, seq 1, and an odd length.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn header_fields_round_trip_and_reserved_bits_are_ignored() {
        let mut b = [0xffu8; 8];
        let mut p = VxlanPacket::new_checked(&mut b[..]).unwrap();
        VxlanRepr { vni: 4097 }.emit(&mut p).unwrap();
        assert_eq!(b, [0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0]);
        // Reserved bits set by a sender are ignored on receipt.
        let noisy = [0x08 | 0xf7, 0xaa, 0xbb, 0xcc, 0x00, 0x10, 0x02, 0xdd];
        assert_eq!(VxlanRepr::parse(&VxlanPacket::new_checked(&noisy[..]).unwrap()), Ok(VxlanRepr { vni: 4098 }));
        assert_eq!(VxlanRepr::parse(&VxlanPacket::new_checked(&[0u8; 8][..]).unwrap()), Err(Error::NoVni));
        assert_eq!(VxlanPacket::new_checked(&[0u8; 7][..]).unwrap_err(), Error::Truncated { what: "VXLAN header" });
        assert_eq!(
            VxlanRepr { vni: 1 << 24 }.emit(&mut VxlanPacket::new_unchecked(&mut [0u8; 8][..])),
            Err(Error::VniTooLarge)
        );
    }

    #[test]
    fn encapsulation_round_trips_over_ipv4_and_ipv6() {
        let inner = inner_ping();
        for v6 in [false, true] {
            let mut buf = [0u8; 256];
            let n = encapsulate(&mut buf, &outer(v6), 4097, &inner).unwrap();
            assert_eq!(n, inner.len() + if v6 { OVERHEAD_V6 } else { OVERHEAD_V4 });
            let d = decapsulate(&buf[..n]).unwrap();
            assert_eq!((d.vni, d.inner, d.outer), (4097, &inner[..], outer(v6)));
            assert!((49152..=65535).contains(&d.src_port));
            if !v6 {
                // The IPv4 header checksums to zero.
                assert_eq!(fold(sum16(0, &buf[14..34])), 0xffff);
            } else {
                assert_ne!(be16(&buf[14 + 40 + 6..]), 0, "IPv6 UDP checksum is set");
            }
        }
    }

    #[test]
    fn corrupted_packets_give_typed_errors() {
        let inner = inner_ping();
        let mut good = [0u8; 256];
        let n = encapsulate(&mut good, &outer(false), 42, &inner).unwrap();
        let bad = |f: &dyn Fn(&mut [u8])| {
            let mut b = good;
            f(&mut b[..n]);
            decapsulate(&b[..n]).unwrap_err()
        };
        assert_eq!(bad(&|b| b[12] = 0x86), Error::NotIp { ethertype: 0x8600 });
        assert_eq!(bad(&|b| b[14 + 8] = 1), Error::BadIpChecksum);
        assert_eq!(bad(&|b| b[14] = 0x44), Error::BadIpHeaderLength);
        assert_eq!(decapsulate(&good[..30]).unwrap_err(), Error::Truncated { what: "IPv4 header" });
        assert_eq!(decapsulate(&good[..n - 1]).unwrap_err(), Error::BadIpLength);
        // The VXLAN I flag, the UDP checksum (IPv4: checked when present).
        assert_eq!(bad(&|b| b[42] = 0), Error::NoVni);
        let mut b = good;
        b[40..42].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(decapsulate(&b[..n]).unwrap_err(), Error::BadUdpChecksum);
        let mut six = [0u8; 256];
        let m = encapsulate(&mut six, &outer(true), 42, &inner).unwrap();
        six[m - 1] ^= 1;
        assert_eq!(decapsulate(&six[..m]).unwrap_err(), Error::BadUdpChecksum);
        let mut small = [0u8; 60];
        assert_eq!(encapsulate(&mut small, &outer(false), 42, &inner), Err(Error::BufferTooSmall { needed: 92 }));
        let mut o = outer(false);
        o.dst_ip = "::1".parse().unwrap();
        assert_eq!(encapsulate(&mut [0u8; 256], &o, 42, &inner), Err(Error::MixedFamilies));
    }

    #[test]
    fn the_source_port_follows_the_inner_flow() {
        let a = inner_ping();
        let mut b = a;
        b[33] = 13; // another destination
        assert_eq!(flow_source_port(&a), flow_source_port(&a));
        assert_ne!(flow_source_port(&a), flow_source_port(&b));
    }

    /// A property test over arbitrary bytes: decapsulation never panics,
    /// on random buffers and on every truncation and single-byte mutation of
    /// valid packets (xorshift, fixed seed: the same run every time).
    #[test]
    fn decapsulation_never_panics_on_arbitrary_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 200];
        for _ in 0..200_000 {
            let len = (next() % 200) as usize;
            for b in buf[..len].iter_mut() {
                *b = next() as u8;
            }
            // Bias towards plausible headers so the deep paths run too.
            if len > 14 && next() % 2 == 0 {
                buf[12..14].copy_from_slice(if next() % 2 == 0 { &[0x08, 0] } else { &[0x86, 0xdd] });
                buf[14] = if buf[12] == 0x08 { 0x45 } else { 0x60 };
            }
            let _ = decapsulate(&buf[..len]);
        }
        let inner = inner_ping();
        for v6 in [false, true] {
            let mut good = [0u8; 256];
            let n = encapsulate(&mut good, &outer(v6), 7, &inner).unwrap();
            for cut in 0..=n {
                let _ = decapsulate(&good[..cut]);
            }
            for i in 0..n {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut b = good;
                    b[i] ^= x;
                    let _ = decapsulate(&b[..n]);
                }
            }
        }
    }
}
