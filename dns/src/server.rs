//! The server: worker threads around one epoll set holding every
//! sandbox's UDP socket and TCP listener and the upstream sockets.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use cnm_core::{Endpoint, NameServer, Sandbox};
use cnm_netns::NetNs;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::answer::{udp_limit, Reply};
use crate::batch::Batch;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::listen::{self, Sockets};
use crate::records::Records;

/// How a [`DnsServer`] is set up.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The namespace queries are forwarded from (the host's, where the
    /// upstream servers are reachable).
    pub host_netns: NetNs,
    /// The resolv.conf whose servers are the upstreams of sandboxes without
    /// `--dns` servers of their own.
    pub host_resolv_conf: PathBuf,
    /// Worker threads (default: one per CPU).
    pub workers: usize,
}

impl ServerConfig {
    /// Forwarding from `host_netns`, upstreams from `/etc/resolv.conf`.
    pub fn new(host_netns: NetNs) -> ServerConfig {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ServerConfig { host_netns, host_resolv_conf: "/etc/resolv.conf".into(), workers }
    }

    /// The resolv.conf upstream servers come from.
    pub fn host_resolv_conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.host_resolv_conf = path.into();
        self
    }

    /// The number of worker threads (at least one).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
}

/// An endpoint of another host (see [`DnsServer::set_remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteName {
    /// The names it answers to.
    pub names: Vec<String>,
    /// Its address.
    pub address: IpAddr,
    /// Its PTR name (`SANDBOX.NETWORK`).
    pub ptr: String,
}

impl RemoteName {
    /// An endpoint answering to `names` at `address`, `ptr` in reverse.
    pub fn new(names: Vec<String>, address: IpAddr, ptr: impl Into<String>) -> RemoteName {
        RemoteName { names, address, ptr: ptr.into() }
    }
}

/// A sandbox's UDP socket, as the workers see it.
pub(crate) struct Client {
    /// The sandbox's id (what decides which names it sees).
    pub sandbox: Arc<str>,
    pub udp: UdpSocket,
    pub upstreams: Vec<SocketAddr>,
}

impl Client {
    /// Sends `msg` to the client; a full socket buffer drops it (the client
    /// asks again).
    pub fn reply(&self, msg: &[u8], peer: SocketAddr) {
        let _ = self.udp.send_to(msg, peer);
    }
}

/// What an epoll token stands for.
enum Source {
    Udp(Arc<Client>),
    Tcp(Arc<Client>, TcpListener),
    Upstream(usize),
}

/// A served sandbox.
struct Attached {
    name: String,
    netns: PathBuf,
    tokens: [u64; 2],
}

struct Inner {
    host: NetNs,
    host_resolv_conf: PathBuf,
    records: RwLock<Records>,
    epoll: Epoll,
    sources: RwLock<HashMap<u64, Arc<Source>>>,
    next_token: AtomicU64,
    attached: Mutex<HashMap<String, Attached>>,
    forwarder: Forwarder,
    stop: AtomicBool,
    turn: AtomicUsize,
    tcp_conns: AtomicUsize,
}

/// The embedded DNS server of a host: one per process, serving every
/// sandbox it is given at 127.0.0.11 (see the crate's documentation).
/// Plug it into a controller with
/// [`ControllerBuilder::name_server`](cnm_core::ControllerBuilder::name_server).
pub struct DnsServer {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("sandboxes", &self.sandboxes()).finish()
    }
}

/// TCP connections served at once at most (each has a thread).
const MAX_TCP: usize = 64;

impl DnsServer {
    /// Starts the worker threads; the server serves no sandbox yet.
    pub fn start(cfg: ServerConfig) -> Result<Arc<DnsServer>> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::io("epoll_create", io::Error::from(e)))?;
        let forwarder = Forwarder::new(cfg.host_netns.try_clone().map_err(|e| Error::netns("host namespace", e))?)?;
        let inner = Arc::new(Inner {
            host: cfg.host_netns,
            host_resolv_conf: cfg.host_resolv_conf,
            records: RwLock::new(Records::default()),
            epoll,
            sources: RwLock::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            attached: Mutex::new(HashMap::new()),
            forwarder,
            stop: AtomicBool::new(false),
            turn: AtomicUsize::new(0),
            tcp_conns: AtomicUsize::new(0),
        });
        for i in 0..inner.forwarder.sockets().count() {
            inner.register(Source::Upstream(i))?;
        }
        let mut workers = Vec::new();
        for n in 0..cfg.workers.max(1) {
            let inner = inner.clone();
            let t = std::thread::Builder::new()
                .name(format!("cnm-dns-{n}"))
                .spawn(move || inner.work())
                .map_err(|e| Error::io("spawn a worker thread", e))?;
            workers.push(t);
        }
        Ok(Arc::new(DnsServer { inner, workers: Mutex::new(workers) }))
    }

    /// Stops the workers (sockets close when the server is dropped).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for w in self.workers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = w.join();
        }
    }

    /// The names of the sandboxes served, sorted.
    pub fn sandboxes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.lock_attached().values().map(|a| a.name.clone()).collect();
        v.sort();
        v
    }

    /// Serves `sb`; `false` for a sandbox in the host's own namespace
    /// (which keeps the host's resolver, as `--net=host` does in Docker).
    pub fn attach_sandbox(&self, sb: &Sandbox) -> Result<bool> {
        let inner = &self.inner;
        if inner.stop.load(Ordering::SeqCst) {
            return Err(Error::Unavailable { at: "this process".into(), reason: "the server is stopped".into() });
        }
        let netns = NetNs::open(&sb.netns).map_err(|e| Error::netns(format!("open sandbox {:?}", sb.name), e))?;
        if netns.same_as(&inner.host).map_err(|e| Error::netns("compare namespaces", e))? {
            return Ok(false);
        }
        let mut attached = inner.lock_attached();
        if attached.get(sb.id.as_str()).is_some_and(|a| a.netns == sb.netns) {
            return Ok(true);
        }
        if let Some(old) = attached.remove(sb.id.as_str()) {
            inner.unregister(&old);
        }
        let Sockets { udp, tcp } = listen::open(&netns, &sb.name)?;
        let host_resolv = std::fs::read_to_string(&inner.host_resolv_conf).unwrap_or_default();
        let upstreams = cnm_core::etc::upstream_servers(sb, &host_resolv)
            .into_iter()
            .map(|a: IpAddr| SocketAddr::from((a, 53)))
            .collect();
        let client = Arc::new(Client { sandbox: Arc::from(sb.id.as_str()), udp, upstreams });
        let t_udp = inner.register(Source::Udp(client.clone()));
        let t_tcp = inner.register(Source::Tcp(client.clone(), tcp));
        match (t_udp, t_tcp) {
            (Ok(u), Ok(t)) => {
                attached.insert(
                    sb.id.to_string(),
                    Attached { name: sb.name.clone(), netns: sb.netns.clone(), tokens: [u, t] },
                );
                tracing::debug!(sandbox = %sb.name, "serving names");
                Ok(true)
            }
            (u, t) => {
                let tokens = [u.as_ref().copied().unwrap_or(0), t.as_ref().copied().unwrap_or(0)];
                inner.unregister(&Attached { name: sb.name.clone(), netns: sb.netns.clone(), tokens });
                let _ = listen::close(&netns, &sb.name);
                Err(u.err().or(t.err()).expect("one failed"))
            }
        }
    }

    /// Replaces the names `sb` publishes with those of its joined
    /// `endpoints`.
    pub fn update_sandbox(&self, sb: &Sandbox, endpoints: &[Endpoint]) {
        self.inner.records.write().unwrap_or_else(|p| p.into_inner()).update(sb, endpoints);
    }

    /// Replaces the names of the endpoints other hosts have on network
    /// `network_id` (named `network_name`), e.g. from the overlay agent's
    /// watch of the cluster store: the sandboxes on that network resolve
    /// them too.
    pub fn set_remote(&self, network_id: &str, network_name: &str, remote: &[RemoteName]) {
        self.inner.records.write().unwrap_or_else(|p| p.into_inner()).set_remote(network_id, network_name, remote);
    }

    /// Replaces a service's names (Docker's service discovery): on each of
    /// its networks, `NAME` answers with its virtual IP and `tasks.NAME`
    /// with every backend's address there.
    pub fn set_service(&self, service: &cnm_core::Service) {
        self.inner.records.write().unwrap_or_else(|p| p.into_inner()).set_service(service);
    }

    /// Forgets the names of the service with id `id`.
    pub fn remove_service(&self, id: &str) {
        self.inner.records.write().unwrap_or_else(|p| p.into_inner()).remove_service(id);
    }

    /// Stops serving `sb` and forgets its names; idempotent.
    pub fn detach_sandbox(&self, sb: &Sandbox) -> Result<()> {
        let inner = &self.inner;
        inner.records.write().unwrap_or_else(|p| p.into_inner()).remove(sb.id.as_str());
        let Some(old) = inner.lock_attached().remove(sb.id.as_str()) else { return Ok(()) };
        inner.unregister(&old);
        match NetNs::open(&old.netns) {
            Ok(ns) => listen::close(&ns, &sb.name),
            // The namespace is gone, and the rule with it.
            Err(_) => Ok(()),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NameServer for DnsServer {
    fn attach(&self, sandbox: &Sandbox) -> cnm_core::Result<bool> {
        Ok(self.attach_sandbox(sandbox)?)
    }

    fn update(&self, sandbox: &Sandbox, endpoints: &[Endpoint]) -> cnm_core::Result<()> {
        self.update_sandbox(sandbox, endpoints);
        Ok(())
    }

    fn detach(&self, sandbox: &Sandbox) -> cnm_core::Result<()> {
        Ok(self.detach_sandbox(sandbox)?)
    }
}

impl Inner {
    fn lock_attached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a socket to the set. It is in the map before it is in the
    /// epoll set: edge-triggered, a first event no worker could place would
    /// never come again.
    fn register(&self, source: Source) -> Result<u64> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let source = Arc::new(source);
        self.sources.write().unwrap_or_else(|p| p.into_inner()).insert(token, source.clone());
        let fd = match &*source {
            Source::Udp(c) => c.udp.as_fd(),
            Source::Tcp(_, l) => l.as_fd(),
            Source::Upstream(i) => self.forwarder.sockets().nth(*i).expect("an upstream socket").as_fd(),
        };
        // Edge-triggered: one worker wakes per arrival and reads until the
        // socket is empty (level-triggered woke every idle worker for each
        // datagram, and all but one found nothing).
        let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, token);
        if let Err(e) = self.epoll.add(fd, ev) {
            self.sources.write().unwrap_or_else(|p| p.into_inner()).remove(&token);
            return Err(Error::io("epoll_ctl add", io::Error::from(e)));
        }
        Ok(token)
    }

    /// Takes a sandbox's sockets out of the set; they close when the last
    /// worker using them lets go.
    fn unregister(&self, a: &Attached) {
        let mut sources = self.sources.write().unwrap_or_else(|p| p.into_inner());
        for t in a.tokens {
            if let Some(src) = sources.remove(&t) {
                let _ = match &*src {
                    Source::Udp(c) => self.epoll.delete(c.udp.as_fd()),
                    Source::Tcp(_, l) => self.epoll.delete(l.as_fd()),
                    Source::Upstream(_) => Ok(()),
                };
            }
        }
    }

    /// A worker: wait, serve what is ready, retry or fail what waited.
    fn work(self: Arc<Self>) {
        let mut events = [EpollEvent::empty(); 32];
        let mut batch = Batch::new();
        let mut cache = Cache::default();
        while !self.stop.load(Ordering::Relaxed) {
            let n = match self.epoll.wait(&mut events, 50u16) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; the DNS worker stops");
                    return;
                }
            };
            for ev in &events[..n] {
                let src = self.sources.read().unwrap_or_else(|p| p.into_inner()).get(&ev.data()).cloned();
                match src.as_deref() {
                    Some(Source::Udp(c)) => self.serve_udp(c, &mut batch, &mut cache),
                    Some(Source::Tcp(c, l)) => self.accept(c, l),
                    Some(Source::Upstream(i)) => {
                        if let Some(s) = self.forwarder.sockets().nth(*i) {
                            self.forwarder.receive(s);
                        }
                    }
                    None => {}
                }
            }
            self.forwarder.expire();
        }
    }

    /// Answers every query waiting on a sandbox's UDP socket (until it is
    /// empty: edge-triggered, nothing would wake a worker for the rest),
    /// a batch at a time.
    fn serve_udp(&self, c: &Arc<Client>, batch: &mut Batch, cache: &mut Cache) {
        let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(crate::batch::BATCH);
        loop {
            let n = match batch.recv(&c.udp) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "recvmmsg");
                    return;
                }
            };
            {
                let records = self.records.read().unwrap_or_else(|p| p.into_inner());
                for i in 0..n {
                    let (Some(msg), Some(peer)) = batch.get(i) else { continue };
                    let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                    match cache.answer(msg, &records, &c.sandbox, false, turn) {
                        Reply::Answer(bytes) => out.push((bytes, peer)),
                        Reply::Forward => {
                            let limit =
                                simple_dns::Packet::parse(msg).map(|p| udp_limit(&p)).unwrap_or(crate::answer::UDP_MIN);
                            self.forwarder.forward(msg, c, peer, limit)
                        }
                        Reply::Drop => {}
                    }
                }
            }
            crate::batch::send_all(&c.udp, &out);
            out.clear();
        }
    }

    /// Accepts TCP connections; each is served on its own thread.
    fn accept(self: &Arc<Self>, c: &Arc<Client>, l: &TcpListener) {
        loop {
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            if self.tcp_conns.fetch_add(1, Ordering::SeqCst) >= MAX_TCP {
                self.tcp_conns.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (inner, client) = (self.clone(), c.clone());
            let spawned = std::thread::Builder::new().name("cnm-dns-tcp".into()).spawn(move || {
                crate::tcp::serve(&inner.as_tcp(), &client, stream);
                inner.tcp_conns.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                self.tcp_conns.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn as_tcp(&self) -> crate::tcp::Ctx<'_> {
        crate::tcp::Ctx { records: &self.records, host: &self.host, turn: &self.turn }
    }
}
