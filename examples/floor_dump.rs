//! The floor: the least work that gets every socket's `inet_diag` reply
//! out of the kernel, to measure xtcp2 against (issue 8), and the
//! namespace discovery timer of issue 3.
//!
//! `floor_dump dump`: finds the same namespaces xtcp2 would (the host
//! namespace, bind mounts in `--netns-dirs`, optionally `/proc/*/ns/net`),
//! and in each one sends one dump per family with the same `idiag_ext` as
//! `-deserializers` and the states of `--states` (xtcp2's flag, `all` by
//! default), walks the netlink headers to count messages and stop
//! at `NLMSG_DONE`, and decodes nothing. One thread, `setns` on that
//! thread, one socket per namespace, closed after its dumps. Prints one
//! JSON object with the counts.
//!
//! `floor_dump discover`: runs `netns::discover` `--repeat` times and
//! prints the wall and CPU time of each pass.
//!
//! `floor_dump measure --report FILE -- PROGRAM ARGS...`: runs a program
//! and writes its wall time, user and system CPU time and peak RSS (from
//! wait4) to FILE as JSON. The benchmark starts every measured program
//! through it because a child's peak RSS includes the memory of the
//! process it was forked from: forked from this small program, that is
//! about 2 MB instead of the Python orchestrator's 20 MB or more.
//!
//! `floor_dump hold --processes N [--new-netns]`: the load for the
//! discovery timer: forks N idle children (each in a network namespace of
//! its own with `--new-netns`), prints `ready N` once all of them are in
//! place, and keeps them until its stdin closes. Children die with it
//! (`PR_SET_PDEATHSIG`) even if it is killed.
//!
//! It is an example rather than a `src/bin/` binary so that it is built by
//! `cargo build --release --examples` next to xtcp2 but never installed
//! with it: it is a measuring instrument, not part of the product.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use xtcp2::collect::DumpPlan;
use xtcp2::decode::Deserializers;
use xtcp2::kernel::{parse_states, DiagSocket, DumpSummary, RECV_BUFFER_BYTES};
use xtcp2::netns::{discover, Discovery, DiscoveryConfig, NetnsOrigin};

/// Receive timeout per recv, as xtcp2's default `-nltimeout`.
const RECV_TIMEOUT: Duration = Duration::from_millis(1000);
/// Deadline of one dump, as xtcp2's default `--timeout auto` for a
/// one-shot (60 s): at a million sockets on a busy machine a dump can take
/// longer than the 5 s this used to be, and the floor must not fail where
/// xtcp2 succeeds.
const DUMP_DEADLINE: Duration = Duration::from_secs(60);

struct Args {
    mode: String,
    dirs: Vec<PathBuf>,
    proc_scan: bool,
    deserializers: String,
    states: String,
    /// xtcp2's `--filter`, compiled the same way; empty: none.
    filter: String,
    repeat: usize,
    io_uring: bool,
    processes: usize,
    new_netns: bool,
    report: Option<PathBuf>,
    command: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: String::new(),
        dirs: Vec::new(),
        proc_scan: false,
        deserializers: "default".into(),
        states: "all".into(),
        filter: String::new(),
        repeat: 5,
        io_uring: false,
        processes: 0,
        new_netns: false,
        report: None,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "dump" | "discover" | "hold" | "measure" if args.mode.is_empty() => args.mode = arg,
            "--report" => args.report = Some(PathBuf::from(value("--report")?)),
            "--" => {
                args.command = it.by_ref().collect();
                break;
            }
            "--netns-dirs" => {
                args.dirs = value("--netns-dirs")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            "--proc-scan" => args.proc_scan = true,
            "--deserializers" => args.deserializers = value("--deserializers")?,
            "--states" => args.states = value("--states")?,
            "--filter" => args.filter = value("--filter")?,
            "--repeat" => args.repeat = value("--repeat")?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--io-uring" => args.io_uring = true,
            "--processes" => args.processes = value("--processes")?.parse().map_err(|e| format!("--processes: {e}"))?,
            "--new-netns" => args.new_netns = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.mode.is_empty() {
        return Err(
            "usage: floor_dump dump|discover|hold|measure [--netns-dirs D,..] [--proc-scan] \
                    [--deserializers SPEC] [--states SPEC] [--filter EXPR] [--repeat N] [--io-uring] [--processes N] [--new-netns] \
                    [--report FILE -- PROGRAM ARGS...]"
                .into(),
        );
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("floor_dump: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.mode.as_str() {
        "dump" => dump_all(&args),
        "hold" => hold_processes(&args),
        "measure" => return measure(&args),
        _ => time_discovery(&args),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("floor_dump: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Dumps every namespace once; returns the counts as JSON.
fn dump_all(args: &Args) -> Result<String, String> {
    let deserializers = Deserializers::parse(&args.deserializers).map_err(|e| e.to_string())?;
    // The same states as xtcp2's --states (all by default): on Linux 6.5+
    // "all" includes bound-inactive, whose dump walks the bind hash, which
    // every namespace shares (bench/scale.py measures what that costs).
    let states = parse_states(&args.states).map_err(|e| e.to_string())?;
    let filter = xtcp2::kernel::parse_filter(&args.filter).map_err(|e| e.to_string())?;
    let plan = DumpPlan {
        states,
        filter,
        deserializers,
        modulus: 1,
        recv_buffer: RECV_BUFFER_BYTES,
        track: Default::default(),
    };
    let namespaces = discover(&DiscoveryConfig::new(args.dirs.clone(), args.proc_scan));
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut total = DumpSummary::default();
    // One ring for the whole run, as each xtcp2 netlinker keeps one.
    let mut uring = None;
    let mut uring_fallbacks = 0u64;
    if args.io_uring {
        match xtcp2::kernel::uring::UringReceiver::new(4, 4) {
            Ok(u) => uring = Some(u),
            Err(e) => {
                eprintln!("floor_dump: io_uring unavailable, using recv(2): {e}");
                uring_fallbacks += 1;
            }
        }
    }
    for netns in &namespaces {
        if netns.origin != NetnsOrigin::Host {
            let file = File::open(&netns.path).map_err(|e| format!("{}: {e}", netns.path.display()))?;
            // SAFETY: `file` is an open nsfs file for the duration of the
            // call; this program is single-threaded, so moving its only
            // thread between namespaces affects nothing else.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "setns {}: {}",
                    netns.path.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        let mut socket = DiagSocket::open(RECV_TIMEOUT).map_err(|e| e.to_string())?;
        for request in plan.requests() {
            let deadline = Instant::now() + DUMP_DEADLINE;
            let summary = match &mut uring {
                Some(uring) => uring.dump(&mut socket, &request, deadline, |_, _| {}),
                None => socket.dump(&request, &mut buf, deadline, |_, _| {}),
            }
            .map_err(|e| format!("{}: {e}", netns.path.display()))?;
            total.recv_calls += summary.recv_calls;
            total.bytes += summary.bytes;
            total.messages += summary.messages;
            total.sockets += summary.sockets;
        }
    }
    Ok(format!(
        "{{\"namespaces\":{},\"sockets\":{},\"messages\":{},\"bytes\":{},\"recv_calls\":{},\"uring_fallbacks\":{}}}",
        namespaces.len(),
        total.sockets,
        total.messages,
        total.bytes,
        total.recv_calls,
        uring_fallbacks
    ))
}

/// Times `--repeat` full discovery passes (every process stat'ed, as a
/// one-shot does), then `--repeat` incremental ones (a daemon's passes
/// between full rescans); returns both as JSON.
fn time_discovery(args: &Args) -> Result<String, String> {
    let config = DiscoveryConfig::new(args.dirs.clone(), args.proc_scan);
    let mut full = Timings::default();
    let mut found = 0;
    for _ in 0..args.repeat.max(1) {
        found = full.time(|| discover(&config).len());
    }
    let mut daemon = Discovery::new(config.with_proc_rescan_interval(Duration::from_secs(3600)));
    daemon.run(Instant::now());
    let mut incremental = Timings::default();
    for _ in 0..args.repeat.max(1) {
        incremental.time(|| daemon.run(Instant::now()).len());
    }
    Ok(format!(
        "{{\"namespaces\":{found},{},\"incremental\":{{{}}}}}",
        full.json(),
        incremental.json()
    ))
}

#[derive(Default)]
struct Timings {
    wall_ms: Vec<f64>,
    cpu_ms: Vec<f64>,
}

impl Timings {
    fn time<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let cpu_before = thread_cpu_ms();
        let started = Instant::now();
        let result = work();
        self.wall_ms.push(started.elapsed().as_secs_f64() * 1e3);
        self.cpu_ms.push(thread_cpu_ms() - cpu_before);
        result
    }

    fn json(&self) -> String {
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(",");
        format!(
            "\"wall_ms\":[{}],\"cpu_ms\":[{}]",
            list(&self.wall_ms),
            list(&self.cpu_ms)
        )
    }
}

/// User + system CPU time of the calling thread, milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Forks `--processes` idle children and keeps them until stdin closes.
fn hold_processes(args: &Args) -> Result<String, String> {
    use std::io::{Read, Write};
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // `release`: children block reading it until we close the write end.
    // `ready`: each child writes one byte once it is in place.
    let mut release = [0i32; 2];
    let mut ready = [0i32; 2];
    // SAFETY: each array is a valid, writable [c_int; 2] for pipe2.
    if unsafe { libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        || unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(os_error("pipe2"));
    }
    let flags = if args.new_netns { libc::CLONE_NEWNET } else { 0 };
    let mut children = 0usize;
    for _ in 0..args.processes {
        // SAFETY: this program is single-threaded, so the child may run
        // anything; it still calls only async-signal-safe functions and
        // leaves with _exit, never returning into Rust code of the parent.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain system calls on fds this process owns; `byte`
            // is a valid one-byte buffer.
            unsafe {
                libc::close(release[1]);
                libc::close(ready[0]);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if flags != 0 && libc::unshare(flags) != 0 {
                    libc::_exit(1);
                }
                let mut byte = 1u8;
                libc::write(ready[1], (&byte as *const u8).cast(), 1);
                libc::close(ready[1]);
                libc::read(release[0], (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        if pid < 0 {
            eprintln!("floor_dump: {}", os_error("fork"));
            break;
        }
        children += 1;
    }
    // SAFETY: closing our copy of the children's end, which we own.
    unsafe { libc::close(ready[1]) };
    let mut ready_file = pipe_end(ready[0]);
    let mut in_place = 0usize;
    let mut chunk = [0u8; 4096];
    while in_place < children {
        match ready_file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => in_place += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for children: {e}")),
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {in_place}");
    let _ = out.flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    // SAFETY: closing the write end we own releases every child.
    unsafe { libc::close(release[1]) };
    for _ in 0..children {
        // SAFETY: waiting for any child; a null status pointer is allowed.
        unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
    }
    Ok(format!("{{\"held\":{in_place},\"forked\":{children}}}"))
}

/// Takes ownership of a pipe end created by this program.
fn pipe_end(fd: i32) -> File {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is a pipe end from pipe2 above, open and owned by no one else.
    unsafe { File::from_raw_fd(fd) }
}

/// Runs `args.command`, writes its resource use to `--report`, and exits
/// with its exit code.
fn measure(args: &Args) -> ExitCode {
    let (Some(report), Some((program, rest))) = (&args.report, args.command.split_first()) else {
        eprintln!("floor_dump measure: needs --report FILE -- PROGRAM ARGS...");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("floor_dump measure: starting {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = loop {
        // SAFETY: `status` and `usage` are valid, writable and outlive the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break rc;
    };
    let wall = started.elapsed().as_secs_f64();
    if rc < 0 {
        eprintln!("floor_dump measure: wait4: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let json = format!(
        "{{\"wall_s\":{wall:.6},\"user_s\":{:.6},\"sys_s\":{:.6},\"rss_kb\":{},\"exit\":{code}}}",
        seconds(usage.ru_utime),
        seconds(usage.ru_stime),
        usage.ru_maxrss
    );
    if let Err(e) = std::fs::write(report, json) {
        eprintln!("floor_dump measure: writing {}: {e}", report.display());
        return ExitCode::FAILURE;
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
