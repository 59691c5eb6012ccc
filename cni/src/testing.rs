//! Helpers for tests and benchmarks that drive real CNI runtimes against a
//! plugin, inside a network namespace they made (the `testing` feature):
//! Podman 4.3 with its CNI backend and containerd's `ctr run --cni`, set
//! up as `../shared/clients/podman-cni.sh` and `ctr-cni.sh` do, with
//! everything of theirs under one directory and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cnm_netns::NetNs;

/// Runs `cmd`, which must succeed; its standard output.
fn ok(what: &str, mut cmd: Command) -> String {
    checked(what, cmd.output().unwrap_or_else(|e| panic!("{what}: {e}")))
}

/// The standard output of a command that must have succeeded.
fn checked(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox root file system from Debian's busybox-static under `dir`,
/// with `/www/index.html` saying `hello`; the tar file's path.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&applets.stdout).split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("www/index.html"), "hello\n").unwrap();
    let tar = dir.join("rootfs.tar");
    let mut c = Command::new("tar");
    c.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
    ok("tar", c);
    tar
}

/// A directory of CNI plugins: Debian's reference plugins and `plugin`
/// as `cnm`.
pub fn plugin_dir(dir: &Path, plugin: &Path) -> PathBuf {
    let bin = dir.join("plugins");
    std::fs::create_dir_all(&bin).unwrap();
    for p in std::fs::read_dir("/usr/lib/cni").expect("containernetworking-plugins").flatten() {
        let _ = std::os::unix::fs::symlink(p.path(), bin.join(p.file_name()));
    }
    std::os::unix::fs::symlink(plugin, bin.join("cnm")).unwrap();
    bin
}

/// Podman 4.3 with `network_backend = "cni"`, all its storage and
/// configuration under one directory, run in a namespace of the test's.
pub struct Podman {
    dir: PathBuf,
    netns: NetNs,
    network: String,
    cgroup: String,
}

impl Podman {
    /// Podman under `dir`, with CNI plugins from `plugins`, the network
    /// `network` configured by `conflist` (a CNI configuration list), in
    /// `netns`; `tag` names its cgroup parent (unique per test).
    pub fn new(
        netns: &NetNs,
        dir: &Path,
        plugins: &Path,
        network: &str,
        conflist: &serde_json::Value,
        tag: &str,
    ) -> Podman {
        for d in ["net.d", "tmp", "root", "runroot"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("net.d").join(format!("{network}.conflist")), conflist.to_string()).unwrap();
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n\
             runtime = \"runc\"\ntmp_dir = \"{d}/tmp\"\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{p}\"]\nnetwork_config_dir = \"{d}/net.d\"\n\
             default_network = \"{network}\"\n",
            d = dir.display(),
            p = plugins.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        Podman {
            dir: dir.to_path_buf(),
            netns: netns.try_clone().unwrap(),
            network: network.to_string(),
            cgroup: format!("cnm-{tag}"),
        }
    }

    /// `podman ARGS` (`run` gets this Podman's cgroup parent).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.netns.command("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c.arg("--root").arg(self.dir.join("root")).arg("--runroot").arg(self.dir.join("runroot"));
        c.args(["--storage-driver", "overlay"]);
        if args.first() == Some(&"run") {
            c.arg("run").arg("--cgroup-parent").arg(format!("/{}", self.cgroup)).args(&args[1..]);
        } else {
            c.args(args);
        }
        c.stdin(Stdio::null()).output().expect("running podman (Debian package podman)")
    }

    /// `podman ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        checked(&format!("podman {args:?}"), self.run(args))
    }

    /// Imports `localhost/bb` (see [`busybox_rootfs`]).
    pub fn import_busybox(&self) {
        let tar = busybox_rootfs(&self.dir);
        self.ok(&["import", "-q", "-c", "ENV PATH=/bin", &tar.display().to_string(), "localhost/bb:latest"]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // The containers' namespaces, in case Podman leaves one.
        let ids = self.run(&["ps", "-aq"]);
        let mut netns = Vec::new();
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let key = self.run(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id]);
            netns.push(String::from_utf8_lossy(&key.stdout).trim().to_string());
        }
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = self.run(&["rmi", "-af"]);
        for ns in netns.iter().filter(|n| n.starts_with("/run/netns/netns-")) {
            let _ = nix::mount::umount2(ns.as_str(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(ns);
        }
        // libcni's cache of results (not configurable in Podman 4.3).
        for f in std::fs::read_dir("/var/lib/cni/results").into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with(&format!("{}-", self.network)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
        remove_cgroups(&self.cgroup);
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the cgroup `name` (and its children) in every hierarchy.
fn remove_cgroups(name: &str) {
    fn rm(d: &Path) {
        for sub in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if sub.path().is_dir() {
                rm(&sub.path());
            }
        }
        let _ = std::fs::remove_dir(d);
    }
    for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let ours = controller.path().join(name);
        if ours.exists() {
            rm(&ours);
        }
    }
}

/// Unmounts whatever is mounted below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by(|a, b| b.cmp(a));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A private containerd 1.6 (all its directories under one), started in a
/// namespace of the test's, and `ctr run --cni` against it in a mount
/// namespace of its own where `/etc/cni/net.d` and `/opt/cni/bin` are the
/// test's (ctr reads only those).
pub struct Containerd {
    dir: PathBuf,
    netns: NetNs,
    namespace: String,
    child: Option<std::process::Child>,
}

impl Containerd {
    /// containerd under `dir` in `netns`; `tag` names its containerd
    /// namespace (and so its cgroups). The plugins are `plugins`, the
    /// configuration list `conflist` (written as the only one ctr sees).
    pub fn start(netns: &NetNs, dir: &Path, plugins: &Path, conflist: &serde_json::Value, tag: &str) -> Containerd {
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::write(dir.join("net.d/10-cnm.conflist"), conflist.to_string()).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        // ctr's view: the test's configuration and plugins where it looks.
        let script = format!(
            "#!/bin/sh\nmount --make-rprivate / && mount --bind {d}/net.d /etc/cni/net.d && \
             mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni && ln -s {p} /opt/cni/bin && exec \"$@\"\n",
            d = dir.display(),
            p = plugins.display()
        );
        std::fs::write(dir.join("inmnt.sh"), script).unwrap();
        std::fs::set_permissions(dir.join("inmnt.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all("/etc/cni/net.d").unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = netns
            .command("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd (Debian package containerd)");
        let c = Containerd {
            dir: dir.to_path_buf(),
            netns: netns.try_clone().unwrap(),
            namespace: format!("cnm-{tag}"),
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "containerd never answered");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        c
    }

    /// `ctr ARGS` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ctr");
        c.env("CONTAINERD_ADDRESS", self.dir.join("containerd.sock")).env("CONTAINERD_NAMESPACE", &self.namespace);
        c.args(args).stdin(Stdio::null()).output().expect("running ctr")
    }

    /// `ctr ARGS` in the test's namespace and in the mount namespace where
    /// ctr finds the test's CNI configuration (`ctr run --cni`).
    pub fn ctr_cni(&self, args: &[&str]) -> Output {
        let mut c = self.netns.command("unshare");
        c.env("CONTAINERD_ADDRESS", self.dir.join("containerd.sock")).env("CONTAINERD_NAMESPACE", &self.namespace);
        c.arg("-m").arg(self.dir.join("inmnt.sh")).arg("ctr").args(args);
        c.stdin(Stdio::null()).output().expect("running ctr")
    }

    /// Imports `localhost/bb:latest`: a Docker archive made by hand (one
    /// layer, its config, the manifest) of [`busybox_rootfs`].
    pub fn import_busybox(&self) {
        let img = self.dir.join("img");
        std::fs::create_dir_all(&img).unwrap();
        let layer = busybox_rootfs(&self.dir);
        let sha = |p: &Path| {
            let mut c = Command::new("sha256sum");
            c.arg(p);
            ok("sha256sum", c).split_whitespace().next().unwrap().to_string()
        };
        let l = sha(&layer);
        std::fs::rename(&layer, img.join(format!("{l}.tar"))).unwrap();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{l}"]}}}}"#
        );
        std::fs::write(img.join("config.json"), config).unwrap();
        let c = sha(&img.join("config.json"));
        std::fs::rename(img.join("config.json"), img.join(format!("{c}.json"))).unwrap();
        let manifest = format!(r#"[{{"Config":"{c}.json","RepoTags":["localhost/bb:latest"],"Layers":["{l}.tar"]}}]"#);
        std::fs::write(img.join("manifest.json"), manifest).unwrap();
        let mut t = Command::new("tar");
        t.arg("-C").arg(&img).arg("-cf").arg(self.dir.join("bb.tar")).arg(".");
        ok("tar", t);
        let out = self.ctr(&["images", "import", &self.dir.join("bb.tar").display().to_string()]);
        assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in String::from_utf8_lossy(&self.ctr(&["containers", "ls", "-q"]).stdout).split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "KILL", id]);
            let _ = self.ctr(&["containers", "rm", id]);
        }
        let _ = self.ctr(&["images", "rm", "localhost/bb:latest"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_cgroups(&self.namespace);
        // runc's state of this containerd namespace (the shim sockets'
        // directories under /run/containerd are shared and stay).
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
