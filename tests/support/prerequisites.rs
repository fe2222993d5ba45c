//! The one prerequisite check of the tests and benchmarks, and the one
//! fixture lookup.
//!
//! A test that needs something it may not have (root, network namespaces,
//! a tool, a Python module, the fixture captures) asks [`require`] first
//! and returns when it answers false. Outside CI that prints
//! `SKIPPED: <test>: <reason>` and the test passes without checking
//! anything. Under CI (`CI=true`, as CI starts `.ci/run`) it panics
//! instead: CI runs as root with everything `ci/install-deps.sh` installs
//! and a copy of shared/ beside the checkout, so a missing prerequisite
//! there is a broken machine or a missing install step, and a skipped
//! test must never pass as a checked one.
//!
//! What a build leaves out (a cargo feature) is not a prerequisite: such
//! a test is `#[cfg]`'d away and does not exist in that build.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Something a test cannot run without.
pub enum Need<'a> {
    /// Effective uid 0: the daemon's hard capabilities (CAP_NET_ADMIN for
    /// inet_diag, CAP_SYS_ADMIN for setns), raw sockets, and capabilities
    /// a test can drop.
    Root,
    /// Root, `ip netns` (iproute2), `unshare` and `nsenter` (util-linux):
    /// making, entering and deleting network namespaces.
    Netns,
    /// A command on PATH (or in /usr/sbin, /sbin, where root's tools are).
    Tool(&'a str),
    /// An interpreter that can `import` a module.
    PythonModule { python: &'a Path, module: &'a str },
    /// Anything else the test probed itself: what it is, and the probe's
    /// outcome (`Err` says why it is unusable).
    Usable(&'a str, Result<(), String>),
}

/// Why a test that runs the daemon needs [`Need::Root`].
pub const DAEMON_CAPABILITIES: &str = "the daemon needs CAP_NET_ADMIN for inet_diag and CAP_SYS_ADMIN for setns";

/// True when `need` is met. Otherwise, outside CI, prints
/// `SKIPPED: <test>: <what is missing> (<why>)` and returns false; under
/// CI panics with the same words. `why` says what the test needs it for.
pub fn require(need: Need, why: &str) -> bool {
    match missing(&need) {
        None => true,
        Some(what) => unmet(format!("{what} ({why})")),
    }
}

/// [`require`] of [`Need::Tool`].
pub fn require_tool(tool: &str, why: &str) -> bool {
    require(Need::Tool(tool), why)
}

/// [`require`] of [`Need::PythonModule`].
pub fn require_python_module(python: &Path, module: &str, why: &str) -> bool {
    require(Need::PythonModule { python, module }, why)
}

/// The folder of real kernel captures: `XTCP2_FIXTURES`, or
/// `../shared/fixtures/inet_diag` beside the checkout (where CI has it).
/// `None` when it is absent, after [`require`]'s skip message (and a panic
/// under CI).
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("XTCP2_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/inet_diag"));
    let probe = if dir.join("README.md").is_file() {
        Ok(())
    } else {
        Err(format!("{} has no README.md", dir.display()))
    };
    require(
        Need::Usable("the fixture folder", probe),
        "the real kernel captures; set XTCP2_FIXTURES to their folder",
    )
    .then_some(dir)
}

/// The facts about the Go daemon (`shared/upstream`): `XTCP2_UPSTREAM`,
/// or `upstream` beside the fixtures' `shared` folder (`XTCP2_FIXTURES`
/// is `<shared>/fixtures/inet_diag`), or `../shared/upstream` beside the
/// checkout. `None` when it is absent, after [`require`]'s skip message
/// (and a panic under CI).
pub fn upstream_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("XTCP2_UPSTREAM")
        .map(PathBuf::from)
        .or_else(|| {
            let fixtures = PathBuf::from(std::env::var_os("XTCP2_FIXTURES")?);
            Some(fixtures.parent()?.parent()?.join("upstream"))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/upstream"));
    let probe = if dir.join("record-v1.tsv").is_file() {
        Ok(())
    } else {
        Err(format!("{} has no record-v1.tsv", dir.display()))
    };
    require(
        Need::Usable("the Go daemon's facts (shared/upstream)", probe),
        "what the Go record is; set XTCP2_UPSTREAM to their folder",
    )
    .then_some(dir)
}

/// True when running under CI, where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Where a command is: `tool` itself when it names a path, else the first
/// executable of that name on PATH, /usr/sbin or /sbin.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if tool.contains('/') {
        return executable(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| executable(p))
}

/// Runs a helper tool (`ip`, `openssl`, ...) to completion and asserts
/// it succeeded, showing the command line and its stderr if not.
pub fn run_tool(command: &mut Command) -> std::process::Output {
    let shown = format!("{command:?}");
    let out = command.output().unwrap_or_else(|e| panic!("running {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What of `need` is missing, in words; `None` when nothing is.
fn missing(need: &Need) -> Option<String> {
    match need {
        Need::Root => (!is_root()).then(|| "needs root".to_string()),
        Need::Netns => {
            if !is_root() {
                return Some("needs root to make network namespaces".into());
            }
            if let Some(tool) = ["ip", "unshare", "nsenter"]
                .into_iter()
                .find(|t| find_tool(t).is_none())
            {
                return Some(format!("needs `{tool}` for network namespaces (iproute2, util-linux)"));
            }
            let listed = Command::new(find_tool("ip").unwrap_or_else(|| "ip".into()))
                .args(["netns", "list"])
                .output()
                .is_ok_and(|o| o.status.success());
            (!listed).then(|| "`ip netns list` fails here".to_string())
        }
        Need::Tool(tool) => find_tool(tool)
            .is_none()
            .then(|| format!("`{tool}` is not on PATH, /usr/sbin or /sbin")),
        Need::PythonModule { python, module } => {
            let imported = Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdin(Stdio::null())
                .output();
            match imported {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "{} cannot import {module}: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
                )),
                Err(e) => Some(format!("cannot run {} ({e})", python.display())),
            }
        }
        Need::Usable(what, probe) => probe.as_ref().err().map(|e| format!("{what} is unusable: {e}")),
    }
}

/// The effective uid is 0.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reports an unmet prerequisite: false outside CI, a panic under it.
fn unmet(reason: impl Display) -> bool {
    let test = current_test();
    if under_ci() {
        panic!(
            "{test}: {reason}. Under CI (CI=true) nothing may be skipped: CI runs as root with what \
             ci/install-deps.sh installs, so this is a broken CI machine or a missing install step"
        );
    }
    println!("SKIPPED: {test}: {reason}");
    false
}

/// The running test's name: libtest names each test's thread after it.
/// A benchmark (harness = false) runs on `main`: its program's name then.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => std::env::args()
            .next()
            .map(|a| {
                Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(a)
            })
            .unwrap_or_else(|| "this test".into()),
    }
}
