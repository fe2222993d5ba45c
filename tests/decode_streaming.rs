//! `xtcp2 decode` streams its input: memory stays bounded whatever the
//! input's size (a zero-filled device, an endless pipe), and a reader of
//! its output that leaves early (`xtcp2 decode ... | head`) is a normal
//! end, exit 0, as it is for the daemon.
//!
//! Regressions of issue 22: decode read the whole file into memory first
//! (`--raw /dev/zero` ran until the allocator failed) and exited 1 on a
//! broken pipe. Every child runs under an address-space limit, so the old
//! behaviour fails these tests quickly instead of exhausting the machine.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/synthetic_pcap.rs"]
mod synthetic_pcap;
use synthetic_pcap::{dump_record, pcap_header};

/// Address space each decode child may map: well above what a streaming
/// decode needs (about 40 MiB of mappings, most of them the binary), far
/// below what reading a large input whole would take.
const CHILD_ADDRESS_SPACE: u64 = 512 << 20;
/// Peak resident memory a streaming decode must stay under. A decode of a
/// 4 MB capture peaks near 11 MiB.
const MAX_RSS_KIB: i64 = 40 << 10;
/// Bytes of valid capture fed through a pipe: larger than [`MAX_RSS_KIB`],
/// so holding the input in memory cannot pass.
const LARGE_STREAM_BYTES: usize = 64 << 20;

// ------------------------------------------------------- child process ---

struct Finished {
    /// `None` when killed by a signal.
    code: Option<i32>,
    signal: Option<i32>,
    max_rss_kib: i64,
    stderr: String,
}

/// `xtcp2 decode ARGS` under [`CHILD_ADDRESS_SPACE`], stderr captured.
fn decode_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtcp2"));
    cmd.arg("decode").args(args).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CHILD_ADDRESS_SPACE,
                rlim_max: CHILD_ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Reaps the child with wait4 (for its peak RSS); kills it after `deadline`
/// and fails the test.
fn finish(mut child: Child, deadline: Duration) -> Finished {
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; the pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!(
                "decode still running after {deadline:?} (peak RSS {} KiB); stderr: {}",
                usage.ru_maxrss,
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let exited = libc::WIFEXITED(status);
    Finished {
        code: exited.then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        max_rss_kib: usage.ru_maxrss,
        stderr: stderr.join().unwrap(),
    }
}

/// A pipe whose read end is already closed: every write gets EPIPE.
fn pipe_without_reader() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// The `sockets=N` count decode logs when it finishes.
fn logged_sockets(stderr: &str) -> Option<u64> {
    let at = stderr.rfind("sockets=")? + "sockets=".len();
    stderr[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// ---------------------------------------------------------------- tests ---

/// `--pcap /dev/zero` is refused by its magic number after 24 bytes, not
/// read until memory runs out (the old decode ended with "out of memory").
#[test]
fn zero_filled_pcap_input_is_refused_by_its_magic_not_read_whole() {
    let child = decode_command(&["--pcap", "/dev/zero"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn xtcp2 decode");
    let done = finish(child, Duration::from_secs(30));
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("not a classic pcap file: magic 0x00000000"),
        "{}",
        done.stderr
    );
    assert!(done.max_rss_kib < MAX_RSS_KIB, "peak RSS {} KiB", done.max_rss_kib);
}

/// `--raw /dev/zero` is refused at its first message (length 0), not read
/// until memory runs out.
#[test]
fn zero_filled_raw_input_is_refused_at_its_first_message_not_read_whole() {
    let child = decode_command(&["--raw", "/dev/zero"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn xtcp2 decode");
    let done = finish(child, Duration::from_secs(30));
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("netlink message at byte 0 has length 0, shorter than its 16-byte header"),
        "{}",
        done.stderr
    );
    assert!(done.max_rss_kib < MAX_RSS_KIB, "peak RSS {} KiB", done.max_rss_kib);
}

/// A valid capture larger than the memory bound, piped in, decodes
/// completely (every socket counted) with a peak RSS far below its size.
#[test]
fn large_piped_capture_decodes_in_bounded_memory() {
    let record = dump_record(100);
    let copies = LARGE_STREAM_BYTES / record.len() + 1;
    let mut child = decode_command(&["--pcap", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn xtcp2 decode");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        stdin.write_all(&pcap_header())?;
        for _ in 0..copies {
            stdin.write_all(&record)?;
        }
        Ok(())
    });
    let done = finish(child, Duration::from_secs(120));
    feeder.join().unwrap().expect("the whole capture was read");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        logged_sockets(&done.stderr),
        Some(100 * copies as u64),
        "{}",
        done.stderr
    );
    assert!(
        done.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB for a {} MiB input",
        done.max_rss_kib,
        LARGE_STREAM_BYTES >> 20
    );
}

/// `xtcp2 decode ... | head`: when the reader of stdout is gone before the
/// first write, decode ends with exit 0 and no error, like the daemon.
#[test]
fn decode_exits_0_when_the_reader_of_its_output_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("one_dump.pcap");
    let mut bytes = pcap_header();
    bytes.extend(dump_record(10));
    std::fs::write(&pcap, bytes).unwrap();
    let child = decode_command(&["--pcap", pcap.to_str().unwrap()])
        .stdout(Stdio::from(pipe_without_reader()))
        .spawn()
        .expect("spawn xtcp2 decode");
    let done = finish(child, Duration::from_secs(30));
    assert_eq!((done.code, done.signal), (Some(0), None), "{}", done.stderr);
    assert!(!done.stderr.contains("Broken pipe"), "{}", done.stderr);
}

/// An endless capture on stdin, and a reader that takes one line and
/// leaves: decode stops reading its input and exits 0, in bounded memory.
#[test]
fn endless_capture_stops_when_its_reader_leaves() {
    let record = dump_record(100);
    let mut child = decode_command(&["--pcap", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn xtcp2 decode");
    let mut stdin = child.stdin.take().unwrap();
    // Writes until decode closes its stdin by exiting (EPIPE here).
    let feeder = std::thread::spawn(move || {
        let mut written = 0usize;
        let _ = stdin.write_all(&pcap_header());
        while stdin.write_all(&record).is_ok() {
            written += record.len();
        }
        written
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).expect("decode printed records");
    assert!(first.starts_with(b"{"), "{}", String::from_utf8_lossy(&first));
    drop(stdout);
    let done = finish(child, Duration::from_secs(60));
    let written = feeder.join().unwrap();
    assert_eq!((done.code, done.signal), (Some(0), None), "{}", done.stderr);
    assert!(
        done.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB after {} MiB of input",
        done.max_rss_kib,
        written >> 20
    );
}
