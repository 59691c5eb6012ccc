//! What the DNS tests share: a stub upstream resolver in a namespace of
//! its own, a controller with the bridge driver and the DNS server in a
//! test host, and a small DNS client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, MemStore, NetworkConfig, SandboxConfig, Store};
use cnm_dns::{DnsServer, ServerConfig};
use cnm_ipam::Ipam;
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::{AddrFlags, NetNs};
use simple_dns::rdata::{RData, A};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// The stub's answering address (in the "outside" namespace).
pub const UPSTREAM: &str = "198.51.100.2";
/// An address there that reads queries and never answers.
pub const BLACKHOLE: &str = "198.51.100.3";
/// What the stub answers for every name with a dot.
pub const STUB_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The stub upstream: NXDOMAIN for single-label names (container names
/// that leaked upstream), `big.test` truncated over UDP and 100 records
/// over TCP, A 192.0.2.1 for every other name. It logs each query's
/// source address and name.
pub struct Stub {
    pub log: Arc<Mutex<Vec<(IpAddr, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn stub_answer(msg: &[u8], tcp: bool) -> Option<(Vec<u8>, String)> {
    let q = Packet::parse(msg).ok()?;
    let question = q.questions.first()?.clone();
    let name = question.qname.to_string().to_ascii_lowercase();
    let mut r = Packet::new_reply(q.id());
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    r.questions.push(question.clone());
    if !name.trim_end_matches('.').contains('.') {
        *r.rcode_mut() = RCODE::NameError;
    } else if question.qtype == QTYPE::TYPE(TYPE::A) {
        let n = if name.starts_with("big.") { 100 } else { 1 };
        if n > 1 && !tcp {
            r.set_flags(PacketFlag::TRUNCATION);
        } else {
            for i in 0..n {
                let a = u32::from(STUB_ANSWER) + i;
                r.answers.push(ResourceRecord::new(question.qname.clone(), CLASS::IN, 60, RData::A(A { address: a })));
            }
        }
    }
    Some((r.build_bytes_vec_compressed().ok()?, name))
}

impl Stub {
    /// Starts it in `ns` (which has both addresses).
    pub fn start(ns: &NetNs) -> Stub {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (udp, tcp, hole) = ns
            .run(|| {
                let udp = UdpSocket::bind((UPSTREAM, 53)).unwrap();
                let tcp = TcpListener::bind((UPSTREAM, 53)).unwrap();
                let hole = UdpSocket::bind((BLACKHOLE, 53)).unwrap();
                (udp, tcp, hole)
            })
            .unwrap();
        for s in [&udp, &hole] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let (l, st) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    if let Some((a, name)) = stub_answer(&buf[..n], false) {
                        l.lock().unwrap().push((peer.ip(), name));
                        let _ = udp.send_to(&a, peer);
                    }
                }
                // The black hole reads and stays silent.
                let _ = hole.recv_from(&mut buf);
            }
        });
        let (l, st) = (log.clone(), stop.clone());
        // accept() waits at most 50 ms (SO_RCVTIMEO), then looks at `stop`.
        let wait = nix::sys::time::TimeVal::new(0, 50_000);
        nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::ReceiveTimeout, &wait).unwrap();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut s, peer)) = tcp.accept() else { continue };
                // (An accepted socket inherits the 50 ms; a query gets more.)
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut msg).is_err() {
                    continue;
                }
                if let Some((a, name)) = stub_answer(&msg, true) {
                    l.lock().unwrap().push((peer.ip(), format!("tcp:{name}")));
                    let mut out = (a.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&a);
                    let _ = s.write_all(&out);
                }
            }
        });
        Stub { log, stop }
    }
}

/// A test host with the stub outside, a controller with the DNS server,
/// and network "front" (10.77.0.0/24).
pub struct Rig {
    pub host: TestHost,
    pub outside: TestNs,
    pub stub: Stub,
    pub dns: Arc<DnsServer>,
    pub ctl: Controller,
}

pub fn rig(test: &str) -> Option<Rig> {
    let host = TestHost::new(test)?;
    let outside = host.outside().unwrap();
    let eth0 = outside.handle.link_get("eth0").unwrap().index;
    outside.handle.addr_add(eth0, format!("{BLACKHOLE}/24").parse().unwrap(), AddrFlags::empty()).unwrap();
    let stub = Stub::start(&outside.ns);
    std::fs::create_dir_all(host.dir()).unwrap();
    let resolv = host.dir().join("host-resolv.conf");
    std::fs::write(&resolv, format!("nameserver 127.0.0.53\nnameserver {UPSTREAM}\nsearch example.test\n")).unwrap();
    let dns =
        DnsServer::start(ServerConfig::new(host.ns.try_clone().unwrap()).host_resolv_conf(&resolv).workers(2)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .sandbox_files(host.dir().join("files"))
        .host_resolv_conf(&resolv)
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store)))
        .driver(Arc::new(BridgeDriver::new()))
        .name_server(dns.clone())
        .build()
        .unwrap();
    let mut front = NetworkConfig::new("front", "bridge").subnet("10.77.0.0/24");
    front.options.insert("com.docker.network.bridge.name".into(), host.name("fr"));
    ctl.create_network(front).unwrap();
    Some(Rig { host, outside, stub, dns, ctl })
}

impl Rig {
    /// A sandbox (namespace made by the controller) connected to `net`;
    /// its namespace and address.
    pub fn container(&self, name: &str, net: &str, aliases: &[&str]) -> (NetNs, Ipv4Addr) {
        self.ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).unwrap();
        self.connect(name, net, aliases)
    }

    pub fn connect(&self, name: &str, net: &str, aliases: &[&str]) -> (NetNs, Ipv4Addr) {
        let cfg = EndpointConfig { aliases: aliases.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let ep = self.ctl.connect(net, name, cfg).unwrap();
        let ip = match ep.ipv4.unwrap().addr() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        };
        (NetNs::open(self.ctl.sandbox(name).unwrap().netns).unwrap(), ip)
    }

    /// `dig +short` inside `ns`; its lines.
    pub fn dig(&self, ns: &NetNs, args: &[&str]) -> Vec<String> {
        let mut full = vec!["+short", "+tries=1", "+time=5", "@127.0.0.11"];
        full.extend_from_slice(args);
        self.host.exec(ns, "dig", &full).lines().map(str::to_string).collect()
    }

    /// `dig` inside `ns`; the whole output.
    pub fn dig_full(&self, ns: &NetNs, args: &[&str]) -> String {
        let mut full = vec!["+tries=1", "+time=5", "@127.0.0.11"];
        full.extend_from_slice(args);
        self.host.exec(ns, "dig", &full)
    }
}

/// A UDP DNS client bound inside a namespace.
pub struct Client {
    sock: UdpSocket,
    id: u16,
}

/// What a query got.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Addrs(Vec<Ipv4Addr>),
    NxDomain,
    Other(String),
}

impl Client {
    pub fn new(ns: &NetNs) -> Client {
        let sock = ns.run(|| UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        sock.connect(SocketAddr::from(([127, 0, 0, 11], 53))).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Client { sock, id: 1 }
    }

    /// Asks for the A records of `name`.
    pub fn query(&mut self, name: &str) -> Got {
        self.id = self.id.wrapping_add(1);
        let mut q = Packet::new_query(self.id);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(Question::new(Name::new_unchecked(name), TYPE::A.into(), CLASS::IN.into(), false));
        self.sock.send(&q.build_bytes_vec().unwrap()).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => return Got::Other(format!("no answer: {e}")),
            };
            let Ok(p) = Packet::parse(&buf[..n]) else { return Got::Other("unparsable answer".into()) };
            if p.id() != self.id {
                continue; // a late answer to an earlier query
            }
            return match p.rcode() {
                RCODE::NameError => Got::NxDomain,
                RCODE::NoError => Got::Addrs(
                    p.answers
                        .iter()
                        .filter_map(|a| match a.rdata {
                            RData::A(A { address }) => Some(Ipv4Addr::from(address)),
                            _ => None,
                        })
                        .collect(),
                ),
                other => Got::Other(format!("{other:?}")),
            };
        }
    }
}
