//! The one way the tests run the built binary. [`Xtcp2`] is its command:
//! the binary cargo built for this test run, stdin closed, and none of the
//! test's own `XTCP2_*` environment variables (a developer's exported
//! `XTCP2_LOG` or `XTCP2_DEST` must not change what a test sees). It runs
//! to completion within a deadline ([`Xtcp2::output`]) or becomes a
//! [`Daemon`] whose stderr is always collected and which is killed and
//! reaped on drop, so a failing assertion never leaves a daemon behind.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary cargo built for this test run.
pub const XTCP2: &str = env!("CARGO_BIN_EXE_xtcp2");

/// How long [`Xtcp2::output`] lets a run take before calling it hung. A
/// one-shot collection takes well under a second; the rest is headroom
/// for a loaded two-core CI machine.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(5);

/// The command that runs xtcp2 (see the module doc).
pub struct Xtcp2 {
    command: Command,
}

impl Default for Xtcp2 {
    fn default() -> Self {
        Xtcp2::new()
    }
}

impl Xtcp2 {
    /// `xtcp2` with no arguments yet.
    pub fn new() -> Xtcp2 {
        Xtcp2::from_command(Command::new(XTCP2))
    }

    /// `program wrapper_args… xtcp2`: xtcp2 started by another program,
    /// e.g. `setpriv --bounding-set=-net_admin --`.
    pub fn under<S: AsRef<OsStr>>(program: &str, wrapper_args: impl IntoIterator<Item = S>) -> Xtcp2 {
        let mut command = Command::new(program);
        command.args(wrapper_args).arg(XTCP2);
        Xtcp2::from_command(command)
    }

    fn from_command(mut command: Command) -> Xtcp2 {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("XTCP2_") {
                command.env_remove(name);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Xtcp2 { command }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Xtcp2 {
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Xtcp2 {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Xtcp2 {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(&mut self, name: impl AsRef<OsStr>) -> &mut Xtcp2 {
        self.command.env_remove(name);
        self
    }

    /// Where a spawned daemon's stdout goes (thrown away unless set);
    /// [`Xtcp2::output`] always captures it.
    pub fn stdout(&mut self, stdout: Stdio) -> &mut Xtcp2 {
        self.command.stdout(stdout);
        self
    }

    /// Runs to completion and returns the exit status, stdout and stderr.
    /// Panics, after killing it, when the run outlasts [`RUN_DEADLINE`].
    pub fn output(&mut self) -> Output {
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {XTCP2}: {e}"));
        // Drained on threads so a full pipe cannot block the child.
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for xtcp2") {
                break status;
            }
            if started.elapsed() > RUN_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().expect("stderr reader");
                panic!(
                    "xtcp2 did not exit within {RUN_DEADLINE:?}; stderr:\n{}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(POLL);
        };
        Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }

    /// Starts the daemon and returns at once.
    pub fn spawn(&mut self) -> Daemon {
        let mut child = self.command.spawn().unwrap_or_else(|e| panic!("spawn {XTCP2}: {e}"));
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = keep.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Daemon {
            child,
            stderr,
            stderr_reader: Some(reader),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// A running xtcp2 (see the module doc).
pub struct Daemon {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far (all of it once it exited
    /// through [`Daemon::wait_exit`] or [`Daemon::kill`]).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its stdout, when spawned with `stdout(Stdio::piped())`.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("spawned with stdout(Stdio::piped())")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the first stderr line containing `needle` and returns it.
    /// Panics, showing stderr, when the daemon exits first or `within` passes.
    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.finish_stderr();
                if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                    return line.to_string();
                }
                panic!(
                    "xtcp2 exited with {status} before logging {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "xtcp2 did not log {needle:?} within {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) of our own child, which is not reaped before drop
        // (or an explicit wait), so the pid still names it.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit; then [`Daemon::stderr`] is complete.
    /// Panics, showing stderr, when it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.finish_stderr();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "xtcp2 did not exit within {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then asserts a clean exit (code 0) within `within`,
    /// showing stderr if not.
    pub fn stop_cleanly(&mut self, within: Duration) {
        self.terminate();
        let status = self.wait_exit(within);
        assert_eq!(status.code(), Some(0), "stderr:\n{}", self.stderr());
    }

    /// SIGKILL and reap; then [`Daemon::stderr`] is complete.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for xtcp2");
        self.finish_stderr();
        status
    }

    /// Waits until the stderr reader has read to EOF (the process exited).
    fn finish_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
