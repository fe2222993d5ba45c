//! Profiling: CPU profiles (pprof-rs, frame-pointer unwinding), the heap
//! profile (jemalloc, behind the `heap-profiling` feature), the one-shot
//! whole-run profile of `--profile-mode`, and the lock that keeps them from
//! running at the same time.
//!
//! The process has one CPU profiler (one SIGPROF timer, one sample table),
//! so everything that profiles takes it through [`ProfilerLock`]:
//! - an on-demand request (`/debug/pprof/profile`, `/flamegraph`) gets it if
//!   it is free; a second request while one runs gets 409;
//! - the Pyroscope push yields: when a request arrives mid-period, the push
//!   ends its period early (uploading what it has) and waits for the request
//!   to finish, so an operator's explicit request always wins over
//!   background profiling;
//! - `--profile-mode cpu` holds it for the whole run, so requests get 409
//!   and Pyroscope cannot be combined with it (rejected at startup).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub mod pyroscope;

/// Longest profile an HTTP request may ask for, so a request cannot pin the
/// profiler for long.
pub(crate) const MAX_PROFILE_SECONDS: u64 = 60;

/// One-shot whole-run profile (`--profile-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileMode {
    Cpu,
    Mem,
}

/// Sampling frequency of on-demand and whole-run CPU profiles: Go's
/// default, so profiles compare with the Go xtcp2's.
pub(crate) const CPU_PROFILE_HZ: i32 = 100;
/// Default length of an on-demand profile when `?seconds` is absent (Go's
/// net/http/pprof default).
pub(crate) const DEFAULT_PROFILE_SECONDS: u64 = 30;
/// How long an on-demand request waits for the Pyroscope push to hand over
/// the profiler. The push only has to stop its timer and build a report of
/// at most one upload period, so this is generous.
pub(crate) const PYROSCOPE_YIELD_WAIT: Duration = Duration::from_secs(10);
/// Shared objects whose code has no frame pointers or runs in signal
/// context; unwinding through them from SIGPROF can fault or deadlock.
const UNWIND_BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Who holds the CPU profiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfilerHolder {
    /// An on-demand HTTP request.
    Request,
    /// The periodic Pyroscope push.
    Pyroscope,
    /// `--profile-mode cpu`.
    WholeRun,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    holder: Option<ProfilerHolder>,
    /// A request asked the Pyroscope push to yield and waits for it.
    request_waiting: bool,
}

/// The profiler is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfilerBusy {
    #[error("another CPU profile is being taken; retry when it finishes")]
    Request,
    #[error("the profiler is recording the whole run (--profile-mode cpu); on-demand profiles are unavailable")]
    WholeRun,
    #[error("the Pyroscope push did not hand over the profiler within {0:?}")]
    PyroscopeDidNotYield(Duration),
}

/// Arbitrates the one CPU profiler; see the module doc for the policy.
pub struct ProfilerLock {
    slot: watch::Sender<Slot>,
}

impl Default for ProfilerLock {
    fn default() -> Self {
        ProfilerLock {
            slot: watch::channel(Slot::default()).0,
        }
    }
}

/// Holding the profiler; released on drop.
pub struct ProfilerLease {
    lock: Arc<ProfilerLock>,
    holder: ProfilerHolder,
}

impl ProfilerLease {
    pub fn holder(&self) -> ProfilerHolder {
        self.holder
    }
}

impl Drop for ProfilerLease {
    fn drop(&mut self) {
        self.lock.slot.send_modify(|s| s.holder = None);
    }
}

impl std::fmt::Debug for ProfilerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProfilerLease({:?})", self.holder)
    }
}

impl ProfilerLock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes the profiler if nobody holds it and no request is waiting.
    pub fn try_acquire(self: &Arc<Self>, holder: ProfilerHolder) -> Option<ProfilerLease> {
        let taken = self.slot.send_if_modified(|s| {
            if s.holder.is_none() && !s.request_waiting {
                s.holder = Some(holder);
                true
            } else {
                false
            }
        });
        taken.then(|| ProfilerLease {
            lock: self.clone(),
            holder,
        })
    }

    /// For an on-demand request: takes the profiler, asking the Pyroscope
    /// push to yield if it holds it; busy if another request or the
    /// whole-run profile holds it.
    pub(crate) async fn acquire_for_request(
        self: &Arc<Self>,
        yield_wait: Duration,
    ) -> Result<ProfilerLease, ProfilerBusy> {
        enum Step {
            Taken,
            WaitForPyroscope,
            Busy(ProfilerBusy),
        }
        let mut step = Step::Busy(ProfilerBusy::Request);
        self.slot.send_if_modified(|s| match (s.holder, s.request_waiting) {
            (None, false) => {
                s.holder = Some(ProfilerHolder::Request);
                step = Step::Taken;
                true
            }
            (Some(ProfilerHolder::Pyroscope), false) => {
                s.request_waiting = true;
                step = Step::WaitForPyroscope;
                true
            }
            (Some(ProfilerHolder::WholeRun), _) => {
                step = Step::Busy(ProfilerBusy::WholeRun);
                false
            }
            // Another request holds it, or is waiting for Pyroscope.
            _ => false,
        });
        let lease = || ProfilerLease {
            lock: self.clone(),
            holder: ProfilerHolder::Request,
        };
        match step {
            Step::Taken => Ok(lease()),
            Step::Busy(busy) => Err(busy),
            Step::WaitForPyroscope => {
                let mut rx = self.slot.subscribe();
                let freed = tokio::time::timeout(yield_wait, rx.wait_for(|s| s.holder.is_none()))
                    .await
                    .is_ok();
                let mut taken = false;
                // Pyroscope cannot retake it meanwhile: `request_waiting`
                // is still set.
                self.slot.send_modify(|s| {
                    s.request_waiting = false;
                    if freed && s.holder.is_none() {
                        s.holder = Some(ProfilerHolder::Request);
                        taken = true;
                    }
                });
                if taken {
                    Ok(lease())
                } else {
                    Err(ProfilerBusy::PyroscopeDidNotYield(yield_wait))
                }
            }
        }
    }

    /// Resolves when a request waits for the holder (Pyroscope) to yield.
    pub(crate) async fn yield_requested(&self) {
        let mut rx = self.slot.subscribe();
        // An error means the sender is gone, which cannot happen while self lives.
        let _ = rx.wait_for(|s| s.request_waiting).await;
    }

    /// Resolves when [`try_acquire`](Self::try_acquire) would succeed.
    pub(crate) async fn until_free(&self) {
        let mut rx = self.slot.subscribe();
        let _ = rx.wait_for(|s| s.holder.is_none() && !s.request_waiting).await;
    }

    /// Who holds the profiler now.
    pub fn holder(&self) -> Option<ProfilerHolder> {
        self.slot.borrow().holder
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Busy(#[from] ProfilerBusy),
    // Causes are part of the messages (not `source`s) so that `{:#}`
    // chains and HTTP answers both carry them exactly once.
    #[error("cannot start the CPU profiler: {0}")]
    Start(pprof::Error),
    #[error("cannot build the CPU profile report: {0}")]
    Report(pprof::Error),
    #[error("cannot encode the profile: {0}")]
    Encode(String),
    #[error("the profiling task failed: {0}")]
    Task(String),
    #[error("heap profiling is not in this build: rebuild with `cargo build --release --features heap-profiling` (jemalloc)")]
    HeapNotBuilt,
    #[error("heap profile: {0}")]
    Heap(String),
    #[error("--profile-path {path}: {reason}")]
    Directory { path: PathBuf, reason: String },
    #[error("--profile-path: cannot create {path}: {cause}")]
    Create { path: PathBuf, cause: std::io::Error },
    #[error("writing the profile to {path}: {cause}")]
    Write { path: PathBuf, cause: std::io::Error },
}

/// A running CPU profile; stop it with [`CpuRecording::finish`].
pub(crate) struct CpuRecording {
    guard: pprof::ProfilerGuard<'static>,
}

impl CpuRecording {
    /// Starts sampling every thread of the process at `hz`. The caller
    /// must hold a [`ProfilerLease`]: pprof-rs has one profiler per process.
    pub fn start(_lease: &ProfilerLease, hz: i32) -> Result<Self, ProfileError> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(hz.max(1))
            .blocklist(&UNWIND_BLOCKLIST)
            .build()
            .map_err(ProfileError::Start)?;
        Ok(CpuRecording { guard })
    }

    /// [`start`](Self::start) from async code: starting loads symbol
    /// tables (seconds the first time in a debug build), so it runs on a
    /// blocking thread, not a runtime worker. On success the lease comes
    /// back with the recording; on failure it is released.
    pub(crate) async fn start_blocking(
        lease: ProfilerLease,
        hz: i32,
    ) -> Result<(CpuRecording, ProfilerLease), ProfileError> {
        tokio::task::spawn_blocking(move || CpuRecording::start(&lease, hz).map(|r| (r, lease)))
            .await
            .unwrap_or_else(|join| Err(ProfileError::Task(join.to_string())))
    }

    /// Stops sampling and symbolizes the samples. Slow (symbol lookup), so
    /// call it from a blocking thread.
    pub fn finish(self) -> Result<pprof::Report, ProfileError> {
        let report = self.guard.report().build().map_err(ProfileError::Report);
        // Dropping the guard stops the timer and frees the profiler for
        // the next holder; it must happen before the lease is released.
        drop(self.guard);
        report
    }
}

/// Gives back the memory an on-demand profile left behind (issue 22): the
/// symboliser's cache (the binary's debug sections, mapped, and the line
/// tables parsed from them, ~45 MB of a release build) and the allocator's
/// free pages (the report's symbol strings, the sample table pprof-rs
/// replaced when it stopped). What stays is pprof-rs's sample table, a
/// static it re-creates at every stop (~18 MB: 16,384 slots of a 128-frame
/// stack), until the process exits. The Pyroscope push does not call
/// this: it profiles again within one period and would only re-read the
/// tables.
pub(crate) fn return_memory() {
    backtrace::clear_symbol_cache();
    crate::observe::heap::release_free_memory();
}

/// The report as a gzipped pprof protobuf (what `go tool pprof` reads).
pub(crate) fn encode_pprof_gz(report: &pprof::Report) -> Result<Vec<u8>, ProfileError> {
    use pprof::protos::Message;
    let profile = report.pprof().map_err(|e| ProfileError::Encode(e.to_string()))?;
    gzip(&profile.encode_to_vec())
}

/// The SVG answered for a profile without samples: pprof-rs writes nothing
/// then, and an empty body is not an image.
pub(crate) const IDLE_FLAMEGRAPH_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    "\n",
    r#"<svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="600" y="34" text-anchor="middle" font-family="Verdana" font-size="14">"#,
    "no CPU samples: the process was idle during the profile",
    "</text></svg>\n"
);

/// The report as an SVG flame graph.
pub(crate) fn encode_flamegraph(report: &pprof::Report) -> Result<Vec<u8>, ProfileError> {
    if report.data.is_empty() {
        return Ok(IDLE_FLAMEGRAPH_SVG.as_bytes().to_vec());
    }
    let mut svg = Vec::with_capacity(64 * 1024);
    report
        .flamegraph(&mut svg)
        .map_err(|e| ProfileError::Encode(e.to_string()))?;
    Ok(svg)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ProfileError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 2), flate2::Compression::default());
    gz.write_all(bytes).map_err(|e| ProfileError::Encode(e.to_string()))?;
    gz.finish().map_err(|e| ProfileError::Encode(e.to_string()))
}

/// The current heap profile (sampled live allocations) as gzipped pprof.
#[cfg(feature = "heap-profiling")]
pub(crate) async fn heap_pprof_gz() -> Result<Vec<u8>, ProfileError> {
    let ctl = jemalloc_pprof::PROF_CTL.as_ref().ok_or_else(|| {
        ProfileError::Heap("jemalloc profiling control is unavailable (is jemalloc the allocator?)".into())
    })?;
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return Err(ProfileError::Heap(
            "jemalloc heap profiling is not active (malloc_conf prof_active)".into(),
        ));
    }
    ctl.dump_pprof().map_err(|e| ProfileError::Heap(format!("{e:#}")))
}

/// Without the `heap-profiling` feature there is no heap profile.
#[cfg(not(feature = "heap-profiling"))]
pub(crate) async fn heap_pprof_gz() -> Result<Vec<u8>, ProfileError> {
    Err(ProfileError::HeapNotBuilt)
}

/// The file a whole-run profile is written to:
/// `xtcp2-cpu-<pid>-<random>.pb.gz` or `xtcp2-mem-<pid>-<random>.pb.gz` in
/// `dir`. The random part keeps another user from planting a file or a link
/// at the name in advance (creation refuses what exists, so the most such a
/// plant could do with a predictable name is stop the profile).
pub(crate) fn whole_run_file(dir: &Path, mode: ProfileMode, pid: u32, random: u32) -> PathBuf {
    let kind = match mode {
        ProfileMode::Cpu => "cpu",
        ProfileMode::Mem => "mem",
    };
    dir.join(format!("xtcp2-{kind}-{pid}-{random:08x}.pb.gz"))
}

/// 32 unpredictable bits from the standard library's per-process random
/// hash keys (seeded from the OS), without a random-number crate.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish() as u32
}

/// Creates the profile file new (`O_EXCL`: never an existing file, never
/// through a symlink; `O_NOFOLLOW` says so twice), mode 0600: a profile
/// shows the daemon's memory layout and call paths.
pub(crate) fn create_profile_file(path: &Path) -> Result<std::fs::File, ProfileError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|cause| ProfileError::Create {
            path: path.to_path_buf(),
            cause,
        })
}

/// `--profile-mode`: a profile of the whole run, written when the daemon exits.
pub(crate) struct WholeRunProfile {
    path: PathBuf,
    /// Created at start, so an unwritable `--profile-path` is a startup
    /// error, not a message after a long run.
    file: std::fs::File,
    cpu: Option<(CpuRecording, ProfilerLease)>,
}

impl WholeRunProfile {
    /// Checks the directory and creates the file now (so a typo or an
    /// unwritable directory fails at startup, not after a long run) and,
    /// for `cpu`, starts the profiler.
    pub fn start(mode: ProfileMode, dir: &Path, lock: &Arc<ProfilerLock>) -> Result<Self, ProfileError> {
        let directory = |reason: String| ProfileError::Directory {
            path: dir.to_path_buf(),
            reason,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(directory("not a directory".into())),
            Err(e) => return Err(directory(e.to_string())),
        }
        if mode == ProfileMode::Mem && !cfg!(feature = "heap-profiling") {
            return Err(ProfileError::HeapNotBuilt);
        }
        let path = whole_run_file(dir, mode, std::process::id(), random_u32());
        let file = create_profile_file(&path)?;
        let cpu = match mode {
            ProfileMode::Cpu => {
                let started = lock
                    .try_acquire(ProfilerHolder::WholeRun)
                    .ok_or(ProfilerBusy::Request.into())
                    .and_then(|lease| CpuRecording::start(&lease, CPU_PROFILE_HZ).map(|r| (r, lease)));
                match started {
                    Ok(recording) => Some(recording),
                    Err(e) => {
                        // Nothing will be written: leave no empty file.
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                }
            }
            ProfileMode::Mem => None,
        };
        tracing::info!(path = %path.display(), ?mode, "the whole-run profile will be written here at exit");
        Ok(WholeRunProfile { path, file, cpu })
    }

    /// Stops profiling and writes the file; returns its path. On failure
    /// the empty file made at start is removed.
    pub fn finish(self, runtime: &tokio::runtime::Runtime) -> Result<PathBuf, ProfileError> {
        let WholeRunProfile { path, mut file, cpu } = self;
        let written = (|| {
            let bytes = match cpu {
                Some((recording, lease)) => {
                    let report = recording.finish();
                    drop(lease);
                    encode_pprof_gz(&report?)?
                }
                None => runtime.block_on(heap_pprof_gz())?,
            };
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|cause| ProfileError::Write {
                    path: path.clone(),
                    cause,
                })
        })();
        match written {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A second request while one holds the profiler is refused, and the
    /// profiler is free again once the first lease is dropped.
    #[test]
    fn second_request_is_busy_until_the_first_ends() {
        let rt = runtime();
        let lock = ProfilerLock::new();
        let first = rt
            .block_on(lock.acquire_for_request(Duration::from_millis(10)))
            .unwrap();
        let second = rt.block_on(lock.acquire_for_request(Duration::from_millis(10)));
        assert_eq!(second.unwrap_err(), ProfilerBusy::Request);
        assert!(lock.try_acquire(ProfilerHolder::Pyroscope).is_none());
        drop(first);
        assert_eq!(lock.holder(), None);
        assert!(rt.block_on(lock.acquire_for_request(Duration::from_millis(10))).is_ok());
    }

    /// A request arriving while Pyroscope holds the profiler asks it to
    /// yield, and gets the profiler as soon as Pyroscope lets go; Pyroscope
    /// cannot retake it while the request waits.
    #[test]
    fn pyroscope_yields_to_a_request() {
        let rt = runtime();
        let lock = ProfilerLock::new();
        let pyroscope = lock.try_acquire(ProfilerHolder::Pyroscope).unwrap();
        rt.block_on(async {
            let waiter = {
                let lock = lock.clone();
                tokio::spawn(async move { lock.acquire_for_request(Duration::from_secs(5)).await })
            };
            tokio::time::timeout(Duration::from_secs(1), lock.yield_requested())
                .await
                .expect("yield asked");
            drop(pyroscope);
            assert!(
                lock.try_acquire(ProfilerHolder::Pyroscope).is_none(),
                "pyroscope retook it"
            );
            let lease = waiter.await.unwrap().expect("request got the profiler");
            assert_eq!(lease.holder(), ProfilerHolder::Request);
        });
    }

    /// A whole-run profile makes every request busy with its own reason.
    #[test]
    fn whole_run_refuses_requests() {
        let rt = runtime();
        let lock = ProfilerLock::new();
        let _whole = lock.try_acquire(ProfilerHolder::WholeRun).unwrap();
        let err = rt
            .block_on(lock.acquire_for_request(Duration::from_millis(10)))
            .unwrap_err();
        assert_eq!(err, ProfilerBusy::WholeRun);
    }

    /// A Pyroscope push that never yields makes the request give up after
    /// the wait, leaving Pyroscope's lease intact.
    #[test]
    fn request_gives_up_when_pyroscope_does_not_yield() {
        let rt = runtime();
        let lock = ProfilerLock::new();
        let _pyroscope = lock.try_acquire(ProfilerHolder::Pyroscope).unwrap();
        let err = rt
            .block_on(lock.acquire_for_request(Duration::from_millis(20)))
            .unwrap_err();
        assert_eq!(err, ProfilerBusy::PyroscopeDidNotYield(Duration::from_millis(20)));
        assert_eq!(lock.holder(), Some(ProfilerHolder::Pyroscope));
    }

    /// Whole-run profile names carry the kind, the pid and a random part.
    #[test]
    fn whole_run_file_name() {
        assert_eq!(
            whole_run_file(Path::new("/var/tmp"), ProfileMode::Cpu, 4242, 0xbeef),
            PathBuf::from("/var/tmp/xtcp2-cpu-4242-0000beef.pb.gz")
        );
        assert_eq!(
            whole_run_file(Path::new("."), ProfileMode::Mem, 7, u32::MAX),
            PathBuf::from("./xtcp2-mem-7-ffffffff.pb.gz")
        );
        assert_ne!(random_u32(), random_u32(), "two draws of 32 random bits agree");
    }

    /// The profile file is created new, mode 0600, never over an existing
    /// file and never through a symlink (dangling or not), whose target is
    /// left as it was.
    #[test]
    fn profile_file_is_created_new_0600_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.pb.gz");
        drop(create_profile_file(&fresh).unwrap());
        let meta = std::fs::symlink_metadata(&fresh).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let existing = dir.path().join("existing");
        std::fs::write(&existing, b"keep me").unwrap();
        let err = create_profile_file(&existing).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

        let link = dir.path().join("link.pb.gz");
        std::os::unix::fs::symlink(&existing, &link).unwrap();
        assert!(create_profile_file(&link).is_err());
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

        let dangling = dir.path().join("dangling.pb.gz");
        let target = dir.path().join("made-through-the-link");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        assert!(create_profile_file(&dangling).is_err());
        assert!(!target.exists(), "a file was created through a dangling link");
    }

    /// The file exists from start (an unwritable directory fails then),
    /// and a start that fails later leaves no file behind.
    #[test]
    fn whole_run_file_is_created_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ProfilerLock::new();
        // The profiler is taken, so the cpu start fails after the file was made.
        let _held = lock.try_acquire(ProfilerHolder::Pyroscope).unwrap();
        assert!(WholeRunProfile::start(ProfileMode::Cpu, dir.path(), &lock).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a failed start left a file"
        );
        drop(_held);
        if cfg!(feature = "heap-profiling") {
            return;
        }
        let profile = WholeRunProfile::start(ProfileMode::Cpu, dir.path(), &lock).unwrap();
        let made: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(made, vec![profile.path.clone()]);
        let path = profile.finish(&runtime()).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }

    /// A directory the daemon cannot create files in is refused at start.
    #[test]
    fn unwritable_profile_directory_is_refused_at_start() {
        let lock = ProfilerLock::new();
        // /proc refuses file creation even to root.
        let err = WholeRunProfile::start(ProfileMode::Cpu, Path::new("/proc"), &lock)
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .starts_with("--profile-path: cannot create /proc/xtcp2-cpu-"),
            "{err}"
        );
        assert_eq!(lock.holder(), None);
    }

    /// A missing profile directory is refused at startup, naming it.
    #[test]
    fn missing_profile_directory_is_refused() {
        let lock = ProfilerLock::new();
        let err = WholeRunProfile::start(ProfileMode::Cpu, Path::new("/nonexistent/xtcp2-profiles"), &lock)
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .starts_with("--profile-path /nonexistent/xtcp2-profiles: "),
            "{err}"
        );
        assert_eq!(lock.holder(), None);
    }
}
