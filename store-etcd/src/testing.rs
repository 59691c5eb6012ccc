//! An etcd server for tests: Debian's `etcd` (package `etcd-server`) started
//! inside a namespace the test made, with its data on tmpfs, and killed
//! (data removed) when dropped.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;

/// A running etcd.
pub struct EtcdServer {
    child: Option<Child>,
    ns: NetNs,
    dir: PathBuf,
    extra: Vec<String>,
    /// `http://ip:2379`.
    pub url: String,
}

impl EtcdServer {
    /// Starts etcd in `ns`, serving clients on `ip:2379`, with its data
    /// under `dir` (created; removed on drop), and waits until it answers.
    pub fn start(ns: &NetNs, ip: IpAddr, dir: impl Into<PathBuf>) -> EtcdServer {
        EtcdServer::start_with(ns, ip, dir, &[])
    }

    /// [`EtcdServer::start`], serving etcd's v2 API as well (`--enable-v2`:
    /// dockerd 20.10's `--cluster-store` speaks only that).
    pub fn start_with_v2(ns: &NetNs, ip: IpAddr, dir: impl Into<PathBuf>) -> EtcdServer {
        EtcdServer::start_with(ns, ip, dir, &["--enable-v2=true"])
    }

    /// [`EtcdServer::start`] with more of etcd's flags.
    pub fn start_with(ns: &NetNs, ip: IpAddr, dir: impl Into<PathBuf>, extra: &[&str]) -> EtcdServer {
        let dir = dir.into();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let ns = ns.try_clone().expect("clone namespace");
        let mut server = EtcdServer { child: None, ns, dir, extra, url: format!("http://{host}:2379") };
        server.restart();
        server
    }

    /// Starts it again (after [`EtcdServer::kill`]) on the same data, and
    /// waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let url = self.url.clone();
        let child = self
            .ns
            .command("etcd")
            .args(["--name", "cnm-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "cnm-test=http://127.0.0.1:2380"])
            .args(["--log-level", "error", "--logger", "zap"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd (Debian package etcd-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // A port that takes connections first: the store itself tries
            // for seconds before it says etcd is down.
            let port = url.strip_prefix("http://").unwrap_or(&url).to_string();
            let listening = |a: &str| {
                a.parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
            };
            let up = self.ns.run(|| listening(&port) && crate::EtcdStore::connect(&url).is_ok()).unwrap_or(false);
            if up {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "etcd did not answer on {url} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Certificates for TLS tests, made with `openssl` under a directory: a CA,
/// and server and client certificates it signs.
pub struct Pki {
    dir: PathBuf,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (Debian package openssl): {e}"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A fresh CA named `name` under `dir`.
    pub fn new(dir: impl Into<PathBuf>, name: &str) -> Pki {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).unwrap();
        let subj = format!("/CN={name}");
        let key = format!("{name}-key.pem");
        let cert = format!("{name}.pem");
        openssl(&dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(&dir, &["req", "-x509", "-new", "-key", &key, "-out", &cert, "-days", "2", "-subj", &subj]);
        Pki { ca: dir.join(&cert), dir }
    }

    /// A certificate for `name` signed by the CA, for the IP addresses
    /// `ips` (a server's) or none (a client's); its (certificate, key).
    pub fn issue(&self, name: &str, ips: &[IpAddr]) -> (PathBuf, PathBuf) {
        let (key, csr, cert) = (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}.pem"));
        let ca = self.ca.display().to_string();
        let ca_key = ca.replace(".pem", "-key.pem");
        openssl(&self.dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(&self.dir, &["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={name}")]);
        let ext = match ips.is_empty() {
            true => "extendedKeyUsage=clientAuth\n".to_string(),
            false => {
                let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
                format!("subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n", sans.join(","))
            }
        };
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

/// Three etcd members (Debian's etcd-server), each in its own namespace,
/// serving clients over TLS that requires a client certificate the CA
/// signed (or over plain HTTP, for comparison); killed (data removed) when
/// dropped.
pub struct EtcdCluster {
    /// The members: namespace, address, process.
    members: Vec<(NetNs, IpAddr, Option<Child>)>,
    dir: PathBuf,
    /// The CA and the certificates.
    pub pki: Pki,
    /// A client certificate and key the members accept.
    pub client: (PathBuf, PathBuf),
    tls: bool,
}

impl EtcdCluster {
    /// Starts members in `namespaces` at `ips` (`https://IP:2379` for
    /// clients, `http://IP:2380` between themselves), data under `dir`, and
    /// waits until the cluster has a leader.
    pub fn start(namespaces: &[&NetNs], ips: &[IpAddr], dir: impl Into<PathBuf>) -> EtcdCluster {
        EtcdCluster::start_with(namespaces, ips, dir.into(), true)
    }

    /// [`EtcdCluster::start`] serving clients over plain HTTP.
    pub fn start_plain(namespaces: &[&NetNs], ips: &[IpAddr], dir: impl Into<PathBuf>) -> EtcdCluster {
        EtcdCluster::start_with(namespaces, ips, dir.into(), false)
    }

    fn start_with(namespaces: &[&NetNs], ips: &[IpAddr], dir: PathBuf, tls: bool) -> EtcdCluster {
        let pki = Pki::new(dir.join("pki"), "cnm-test-ca");
        let scheme = if tls { "https" } else { "http" };
        let client = pki.issue("client", &[]);
        let initial: Vec<String> = ips.iter().enumerate().map(|(i, ip)| format!("m{i}=http://{ip}:2380")).collect();
        let mut members = Vec::new();
        for (i, (ns, ip)) in namespaces.iter().zip(ips).enumerate() {
            let (cert, key) = pki.issue(&format!("m{i}"), &[*ip]);
            let data = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let mut cmd = ns.command("etcd");
            cmd.args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(data.join("data"))
                .args(["--listen-client-urls", &format!("{scheme}://{ip}:2379")])
                .args(["--advertise-client-urls", &format!("{scheme}://{ip}:2379")])
                .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
                .args(["--initial-advertise-peer-urls", &format!("http://{ip}:2380")])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--log-level", "error", "--logger", "zap"]);
            if tls {
                cmd.arg("--cert-file").arg(&cert).arg("--key-file").arg(&key);
                cmd.arg("--trusted-ca-file").arg(&pki.ca).arg("--client-cert-auth");
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(data.join("etcd.log")).expect("etcd log"))
                .spawn()
                .unwrap_or_else(|e| panic!("starting etcd (Debian package etcd-server): {e}"));
            members.push((ns.try_clone().unwrap(), *ip, Some(child)));
        }
        let c = EtcdCluster { members, dir, pki, client, tls };
        c.wait_for_leader();
        c
    }

    /// `etcds://IP:2379,…/` of the members (`etcd://` when plain).
    pub fn url(&self) -> String {
        let m: Vec<String> = self.members.iter().map(|(_, ip, _)| format!("{ip}:2379")).collect();
        format!("{}://{}/", if self.tls { "etcds" } else { "etcd" }, m.join(","))
    }

    /// The configuration of a client with the CA and the client
    /// certificate (when TLS).
    pub fn config(&self) -> crate::EtcdConfig {
        let plain = crate::EtcdConfig::from_url(&self.url()).unwrap();
        match self.tls {
            false => plain,
            true => plain.tls(crate::TlsFiles {
                ca: Some(self.pki.ca.clone()),
                cert: Some(self.client.0.clone()),
                key: Some(self.client.1.clone()),
            }),
        }
    }

    /// Waits until a store can write through every live member.
    pub fn wait_for_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, (ns, ip, child)) in self.members.iter().enumerate() {
            if child.is_none() {
                continue;
            }
            let mut cfg = self.config();
            cfg.members.retain(|m| m.addr.ip() == *ip);
            loop {
                let ok = ns
                    .run(|| {
                        crate::EtcdStore::open(cfg.clone(), None)
                            .and_then(|s| {
                                cnm_core::Store::put(&s, "ready", b"1", cnm_core::Expect::Any)
                                    .map_err(|e| crate::Error::Protocol(e.to_string()))
                            })
                            .is_ok()
                    })
                    .unwrap_or(false);
                if ok {
                    break;
                }
                let log = std::fs::read_to_string(self.dir.join(format!("m{i}/etcd.log"))).unwrap_or_default();
                assert!(Instant::now() < deadline, "etcd member m{i} never served: {log}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].2.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Member `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].2.as_ref().map(Child::id)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(pid) = self.pid(i) {
                // A stopped member would never die of SIGKILL's wait.
                let _ = nix_cont(pid);
            }
            self.kill(i);
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// SIGCONT, for a member a test stopped.
fn nix_cont(pid: u32) -> std::io::Result<()> {
    let st = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status()?;
    st.success().then_some(()).ok_or_else(|| std::io::Error::other("kill -CONT failed"))
}
