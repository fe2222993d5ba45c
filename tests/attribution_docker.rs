//! `--enrich-container` against a real Docker Engine: Debian's `dockerd`,
//! started by the test on a data root, exec root, pid file and socket of
//! its own (so it meets no other engine), runs containers made by `docker
//! import` of a busybox root filesystem (no registry is needed), each with
//! a network namespace of its own and a listener in it. The built daemon
//! then follows the engine and every container's listener must carry the
//! container's id, name and image; a container started while the daemon
//! runs must be known from the events stream within its polls.
//!
//! Needs root, `dockerd`, `docker` and `busybox` (CI installs them). The
//! containers, the engine and every directory are removed when the test
//! ends, failing or not.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{find_tool, require, require_tool, run_tool, Need, Xtcp2};

/// How long the engine may take to answer after it is started.
const ENGINE_START: Duration = Duration::from_secs(60);
const IMAGE: &str = "xtcp2-test-busybox";

/// A dockerd of the test's own, stopped and removed on drop.
struct Engine {
    dir: tempfile::TempDir,
    dockerd: Child,
    docker: PathBuf,
}

impl Engine {
    fn start() -> Engine {
        let dir = tempfile::Builder::new()
            .prefix("xtcp2-docker-")
            .tempdir()
            .expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let log = std::fs::File::create(p("dockerd.log")).expect("dockerd log");
        let dockerd = Command::new(find_tool("dockerd").expect("dockerd"))
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p("docker.sock").display()))
            // No bridge, no iptables: the test's containers use
            // `--network none` (a namespace with loopback only) and the
            // host's firewall stays as it is.
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--storage-driver=vfs", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let engine = Engine {
            dir,
            dockerd,
            docker: find_tool("docker").expect("docker"),
        };
        let started = Instant::now();
        loop {
            let ok = engine
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(
                started.elapsed() < ENGINE_START,
                "dockerd did not answer within {ENGINE_START:?}: {}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("exec/netns")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self) -> Command {
        let mut c = Command::new(&self.docker);
        c.arg("-H").arg(format!("unix://{}", self.socket().display()));
        c
    }

    /// Imports a root filesystem of busybox and its applets as [`IMAGE`].
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::copy(find_tool("busybox").expect("busybox"), root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "httpd", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        let tar = self.dir.path().join("rootfs.tar");
        run_tool(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
        run_tool(self.docker().arg("import").arg(&tar).arg(IMAGE));
    }

    /// Runs a container named `name` with an HTTP listener on `port` in a
    /// network namespace of its own; returns its id.
    fn run(&self, name: &str, port: u16) -> String {
        let out = run_tool(
            self.docker()
                .args(["run", "-d", "--network", "none", "--name", name, IMAGE])
                .args(["/bin/busybox", "httpd", "-f", "-p", &port.to_string()]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self
            .docker()
            .args(["rm", "-f", "xtcp2-attr-a", "xtcp2-attr-b"])
            .output();
        // SAFETY: kill(2) on the engine this test started; no memory involved.
        unsafe {
            libc::kill(self.dockerd.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.dockerd.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        // The engine unmounts its namespaces when it stops; one left by a
        // crash would keep the directory busy.
        if let Ok(entries) = std::fs::read_dir(self.netns_dir()) {
            for entry in entries.flatten() {
                let _ = Command::new("umount").arg(entry.path()).output();
            }
        }
    }
}

fn can_run() -> bool {
    require(Need::Root, "dockerd and the daemon's setns need root")
        && require_tool("dockerd", "the Docker Engine the test follows")
        && require_tool("docker", "the client that makes the image and containers")
        && require_tool("busybox", "the containers' root filesystem")
}

/// The listeners of containers running before the daemon and of one started
/// while it runs carry each container's id, name, image and runtime.
#[test]
fn container_sockets_carry_the_engines_id_name_and_image() {
    if !can_run() {
        return;
    }
    let engine = Engine::start();
    engine.import_busybox();
    let id_a = engine.run("xtcp2-attr-a", 18081);

    let mut daemon = Xtcp2::new()
        .args(["--netns-dirs"])
        .arg(engine.netns_dir())
        .args([
            "--netns-proc-scan=false",
            "--prom-listen",
            "",
            "--states",
            "listen",
            "--frequency",
            "1s",
            "--max-loops",
            "8",
            // Both sources: the cgroup (`/docker/<id>` where dockerd
            // manages cgroup v2) and the Engine must agree on the id.
            "-resolveContainerId",
            "-enrichContainer",
            "-dockerSocket",
        ])
        .arg(engine.socket())
        .stdout(Stdio::piped())
        .spawn();
    let stdout = daemon.take_stdout();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<_>>()
    });
    daemon.wait_for_stderr("following the Docker Engine", Duration::from_secs(20));
    // Started after the daemon listed the containers: known by its event.
    let id_b = engine.run("xtcp2-attr-b", 18082);
    let status = daemon.wait_exit(Duration::from_secs(60));
    let records = reader.join().expect("stdout reader");
    assert!(status.success(), "xtcp2 {status}: {}", daemon.stderr());

    for (port, id, name) in [(18081, &id_a, "xtcp2-attr-a"), (18082, &id_b, "xtcp2-attr-b")] {
        let mine: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["idiag_sport"].as_u64() == Some(port))
            .collect();
        assert!(!mine.is_empty(), "no record of {name}'s listener: {}", daemon.stderr());
        let named: Vec<_> = mine
            .iter()
            .filter(|r| r["container_name"].as_str() == Some(name))
            .collect();
        assert!(!named.is_empty(), "{name}: no record names it: {mine:?}");
        for r in &named {
            assert_eq!(r["container_id"].as_str(), Some(id.as_str()), "{r}");
            assert_eq!(r["container_image"].as_str(), Some(IMAGE), "{r}");
            assert_eq!(r["container_runtime"].as_str(), Some("docker"), "{r}");
        }
        // Containers before the daemon are known from its first poll.
        if name == "xtcp2-attr-a" {
            assert_eq!(named.len(), mine.len(), "{name}: a poll without the name: {mine:?}");
        }
    }
    drop(engine);
}

/// An engine that is not there is logged once and counted; records still go out.
#[test]
fn an_absent_engine_is_logged_and_the_daemon_goes_on() {
    if !require(Need::Root, "the daemon dumps sockets") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket: &Path = &dir.path().join("absent.sock");
    let out = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--netns-dirs",
            "",
            "--netns-proc-scan=false",
            "--prom-listen",
            "",
            "--enrich-container",
            "--docker-socket",
        ])
        .arg(socket)
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!out.stdout.is_empty(), "no records: {stderr}");
    assert_eq!(
        stderr.matches("the Docker Engine cannot be followed").count(),
        1,
        "{stderr}"
    );
}
