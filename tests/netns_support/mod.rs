//! Test helpers for real network namespaces. Every helper cleans up what it
//! makes when dropped, even when the test fails. Whether a test may make
//! namespaces at all is `support::require(Need::Netns, ..)`; a test file
//! that includes this module includes `mod support;` too.
#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn run(cmd: &str, args: &[&str]) {
    crate::support::run_tool(Command::new(cmd).args(args));
}

/// The nsfs inode of a namespace file.
pub fn netns_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// Runs `f` on a thread that has entered the namespace at `path`. Sockets
/// created by `f` stay in that namespace.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::spawn(move || {
        // SAFETY: the fd is valid for the call; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A namespace made with `ip netns add`, deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn new(name: &str) -> Self {
        run("ip", &["netns", "add", name]);
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
        NamedNetns { name: name.to_string() }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A namespace bind-mounted at `dir/name` (as Docker does under
/// /run/docker/netns), unmounted and removed on drop.
pub struct BindMountedNetns {
    pub path: PathBuf,
}

impl BindMountedNetns {
    pub fn new(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        File::create(&path).expect("create mount point");
        let target = format!("--net={}", path.display());
        run("unshare", &[&target, "ip", "link", "set", "lo", "up"]);
        BindMountedNetns { path }
    }
}

impl Drop for BindMountedNetns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An anonymous namespace held only by a `sleep` process, killed on drop.
pub struct ProcessNetns {
    pub child: Child,
}

impl ProcessNetns {
    pub fn new() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up; exec sleep 600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare -n");
        let me = ProcessNetns { child };
        // Wait until the process is inside its new namespace with lo up.
        let host = netns_inode(Path::new("/proc/self/ns/net"));
        for _ in 0..200 {
            if netns_inode(&me.path()) != host && lo_is_up(me.child.id()) {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare -n did not enter a new namespace");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }
}

fn lo_is_up(pid: u32) -> bool {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "-o", "link", "show", "lo", "up"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

impl Drop for ProcessNetns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener and one established connection to it on 127.0.0.1, kept open
/// while this value lives.
pub struct LoopbackConnection {
    pub listener: TcpListener,
    pub client: TcpStream,
    pub server: TcpStream,
    pub server_port: u16,
    pub client_port: u16,
}

impl LoopbackConnection {
    /// Opens the connection in the current thread's namespace.
    pub fn open() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let server_port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, server_port))).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let client_port = client.local_addr().expect("addr").port();
        use std::io::Write;
        (&client).write_all(b"hello").expect("write");
        LoopbackConnection {
            listener,
            client,
            server,
            server_port,
            client_port,
        }
    }

    /// Opens the connection inside the namespace at `path`.
    pub fn open_in(path: &Path) -> Self {
        in_netns(path, LoopbackConnection::open)
    }
}

/// Parses JSON lines into objects.
pub fn parse_records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Records with this local and remote port.
pub fn with_ports(records: &[serde_json::Value], sport: u16, dport: u16) -> Vec<&serde_json::Value> {
    records
        .iter()
        .filter(|r| r["idiag_sport"] == sport && r["idiag_dport"] == dport)
        .collect()
}
