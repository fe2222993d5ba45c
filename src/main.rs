//! The `xtcp2` binary: parses flags, checks capabilities, and runs either
//! the collector daemon or the offline `decode` command.
//!
//! Exit codes (documented in README.md):
//! - 0: finished (`--max-loops` reached, or SIGTERM/SIGINT after a flush,
//!   or the reader of stdout closed it: `xtcp2 decode ... | head`);
//! - 1: a runtime error (destination cannot be opened, corrupt capture, ...);
//! - 2: bad flags or configuration (clap's convention);
//! - 77: a required capability is missing (sysexits EX_NOPERM). Restarting
//!   will not help, so the NixOS unit does not restart on it.

use std::process::ExitCode;

use anyhow::Context;
use xtcp2::config::{self, CliCommand, Config, DecodeArgs, OutputConfig};
use xtcp2::format::writer::StreamWriter;
use xtcp2::observe::caps;

/// Envelope size of `xtcp2 decode` output, as the daemon's default flush size.
const DECODE_ENVELOPE_BYTES: usize = 768 * 1024;
/// Read buffer of `xtcp2 decode`'s input: the reader asks for 16- and
/// 24-byte headers, which must not each cost a system call.
const DECODE_READ_BUFFER_BYTES: usize = 64 * 1024;

// With `--features heap-profiling`, jemalloc is the allocator and samples
// allocations for /debug/pprof/heap and `--profile-mode mem`. These two
// items live in the binary, not the library: `malloc_conf` is a symbol
// jemalloc looks up at startup, and only the binary's own objects are sure
// to be linked.
#[cfg(feature = "heap-profiling")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's startup options: profiling compiled in and active, one sample
/// per 2^19 bytes (512 KiB) allocated, which costs little on our allocation
/// pattern (buffers are reused across polls).
#[cfg(feature = "heap-profiling")]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

/// `XTCP_CONFIG_JSON`'s fields as Go flags.
fn config_json_flags(json: &std::ffi::OsStr) -> anyhow::Result<xtcp2::grpc::config_json::GoFlags> {
    let json = json.to_str().context("not UTF-8")?;
    let parsed = xtcp2::grpc::config_json::parse(json)?;
    Ok(xtcp2::grpc::config_json::go_flags(&parsed)?)
}

fn main() -> ExitCode {
    // First, before anything else: a SIGTERM or SIGHUP in the first
    // milliseconds must not kill the daemon with nothing flushed.
    let held = xtcp2::shutdown::HeldSignals::hold();
    // args_os, not args: args() panics on a non-UTF-8 argument (exit 101);
    // the parser makes that a usage error naming it (exit 2).
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cli = match config::parse_args_os(argv.clone()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The Go daemon's pushed configuration: its fields as flags after the
    // command line's, replacing them (the daemon only; a subcommand has
    // flags of its own).
    let mut without_effect = Vec::new();
    if cli.command.is_none() {
        if let Some(json) = std::env::var_os(xtcp2::grpc::config_json::ENV) {
            match config_json_flags(&json) {
                Ok(flags) => {
                    argv.extend(flags.arguments.into_iter().map(Into::into));
                    without_effect = flags.without_effect;
                    cli = match config::parse_args_os_later_wins(argv.clone()) {
                        Ok(cli) => cli,
                        Err(e) => {
                            eprintln!("xtcp2: {}: {}", xtcp2::grpc::config_json::ENV, e.render());
                            return ExitCode::from(2);
                        }
                    };
                }
                Err(e) => {
                    eprintln!("xtcp2: {}: {e}", xtcp2::grpc::config_json::ENV);
                    return ExitCode::from(2);
                }
            }
        }
    }
    init_logging(cli.daemon.debug_level);
    for field in without_effect {
        tracing::info!(
            field,
            "{}: a field of the Go daemon's configuration accepted without effect here",
            xtcp2::grpc::config_json::ENV
        );
    }
    match cli.command {
        Some(CliCommand::Ctl(args)) => {
            held.release();
            run_client("ctl", xtcp2::grpc::client::ctl(args))
        }
        Some(CliCommand::Client(args)) => {
            held.release();
            run_client("client", xtcp2::grpc::client::client(args))
        }
        Some(CliCommand::Decode(args)) => {
            // decode keeps the default actions: Ctrl-C stops it at once.
            held.release();
            let output = match OutputConfig::from_args(&args.output) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("xtcp2 decode: {e}");
                    return ExitCode::from(2);
                }
            };
            match run_decode(&args, &output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtcp2 decode: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            // Flags first (a typo is exit 2 whoever runs it), then the
            // capability check, before anything opens a socket.
            let config = match Config::from_args(&cli.daemon) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("xtcp2: {e}");
                    return ExitCode::from(2);
                }
            };
            // The Go daemon's one-off modes: they start nothing.
            if cli.daemon.healthcheck {
                return healthcheck(config.observe.prom_listen);
            }
            if cli.daemon.conf {
                let effective = config::effective_flags(argv, &config);
                println!("{effective}");
                return ExitCode::SUCCESS;
            }
            for (flag, given) in [
                ("-goMaxProcs", cli.daemon.go_max_procs.is_some()),
                ("-maxThreads", cli.daemon.max_threads.is_some()),
            ] {
                if given {
                    tracing::info!(
                        flag,
                        "a Go runtime flag: accepted for compatibility, it has no effect here"
                    );
                }
            }
            if !cli.daemon.skip_capability_check {
                if let Some(code) = check_capabilities() {
                    return code;
                }
            }
            if let Some(filter) = &config.poll.filter {
                // A first dump with the program, before anything starts: a
                // kernel that refuses it must not yield silent empty output.
                if let Err(e) = xtcp2::kernel::check_with_kernel(filter) {
                    eprintln!("xtcp2: {}", error_chain(&anyhow::Error::new(e)));
                    return ExitCode::from(2);
                }
            }
            let counted_loops = config.poll.max_loops > 0;
            match xtcp2::daemon::run_with_held_signals(config, xtcp2::shutdown::Shutdown::new(), Some(held)) {
                Ok(outcome) if counted_loops && outcome.incomplete_polls > 0 => {
                    // A one-shot's caller (a script, a cron job) must not
                    // take a partial host for the whole one.
                    eprintln!(
                        "xtcp2: {} of {} polls were incomplete (dumps cut short; see the error lines above); what was collected was delivered",
                        outcome.incomplete_polls, outcome.polls
                    );
                    ExitCode::from(xtcp2::daemon::RunOutcome::EXIT_INCOMPLETE)
                }
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtcp2: {}", error_chain(&e));
                    // A flag whose value proves bad only when used (an
                    // unwritable --profile-path) is a usage error too.
                    let usage = e
                        .chain()
                        .filter_map(|cause| cause.downcast_ref::<xtcp2::observe::ObserveError>())
                        .any(|o| o.is_usage_error());
                    if usage {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// Logs go to stderr only: stdout may be the data destination. The Go
/// daemon's `-d LEVEL`, when given, picks the level; else `XTCP2_LOG` (or
/// `RUST_LOG`), else info.
fn init_logging(debug_level: Option<u64>) {
    let filter = match debug_level {
        Some(level) => tracing_subscriber::EnvFilter::new(match level {
            0 => "warn",
            1..=99 => "info",
            100..=999 => "debug",
            _ => "trace",
        }),
        None => tracing_subscriber::EnvFilter::try_from_env("XTCP2_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs a gRPC client command on a small runtime of its own: exit 0, or
/// 1 with the error (an RPC's status code and message) on stderr.
fn run_client(
    name: &str,
    command: impl std::future::Future<Output = Result<(), xtcp2::grpc::client::ClientError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xtcp2 {name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtcp2 {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `-healthcheck`: GET /readyz of the local listener; 0 when it answers
/// 200, 1 otherwise (no listener, refused, not ready, or no answer in 2 s).
fn healthcheck(prom_listen: Option<std::net::SocketAddr>) -> ExitCode {
    use std::io::{Read, Write};
    let Some(mut addr) = prom_listen else {
        eprintln!("xtcp2: -healthcheck: --prom-listen is empty, nothing to probe");
        return ExitCode::FAILURE;
    };
    // A listener on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = std::time::Duration::from_secs(2);
    let status = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(stream, "GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    })();
    match status {
        Ok(line) if line.split_whitespace().nth(1) == Some("200") => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok(line) => {
            println!("not ready: {line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("not ready: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns an exit code when the daemon must not start.
fn check_capabilities() -> Option<ExitCode> {
    match caps::check() {
        Ok(report) => {
            for missing in &report.missing_optional {
                tracing::warn!(
                    capability = missing.name,
                    "missing capability {}: {}; running degraded",
                    missing.name,
                    missing.reason
                );
            }
            if report.missing_required.is_empty() {
                None
            } else {
                eprint!("{}", caps::fatal_message(&report));
                Some(ExitCode::from(caps::EXIT_MISSING_CAPABILITIES as u8))
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the capability sets; skipping the capability check");
            None
        }
    }
}

/// `xtcp2 decode --pcap FILE | --raw FILE`: the same records as a live
/// dump, with every output flag applied (format, columns, decoders, stamps).
///
/// The input is streamed, one packet at a time, so memory does not grow
/// with it: `--pcap /dev/stdin` may be an endless pipe, and `/dev/zero` is
/// refused after its first bytes instead of filling memory.
///
/// When the reader of stdout leaves (`xtcp2 decode ... | head`), the write
/// fails with EPIPE (Rust ignores SIGPIPE). That is the reader's way of
/// saying it has enough, not a failure: decode stops reading and exits 0,
/// as the daemon does with its stdout destination.
fn run_decode(args: &DecodeArgs, output: &OutputConfig) -> anyhow::Result<()> {
    use std::ops::ControlFlow;
    use xtcp2::decode::capture::{read_pcap_replies, read_raw_replies, ReplyOrigin};
    use xtcp2::decode::SocketDecoder;

    let (path, is_pcap) = match (&args.input.pcap, &args.input.raw) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, false),
        (None, None) => anyhow::bail!("give --pcap FILE or --raw FILE"),
    };
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let input = std::io::BufReader::with_capacity(DECODE_READ_BUFFER_BYTES, file);
    let mut decoder = SocketDecoder::new(output.deserializers);
    let stamps = &output.stamps;
    // Framed exactly as a file: destination would be (csv header once,
    // protobufList envelopes length-delimited), so outputs are interchangeable.
    let mut writer = StreamWriter::new(&output.format, std::io::stdout().lock(), DECODE_ENVELOPE_BYTES);
    let mut write_error = None;
    let mut first_error = None;
    let on_socket = |origin: ReplyOrigin, payload: &[u8]| {
        let (record, error) = decoder.decode(payload);
        if let Some(e) = error {
            first_error.get_or_insert(e);
        }
        if let Some(record) = record {
            record.timestamp_ns = origin.timestamp_ns;
            stamps.apply(record);
            if let Err(e) = writer.write(record) {
                write_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    let dumps = if is_pcap {
        read_pcap_replies(input, on_socket)
    } else {
        read_raw_replies(input, on_socket)
    }
    .with_context(|| format!("decoding {}", path.display()))?;
    let written = match write_error {
        None => writer.finish().map(drop),
        Some(e) => Err(e),
    };
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::info!("the reader of the output closed it; stopping");
            return Ok(());
        }
        Err(e) => return Err(e).context("writing stdout"),
    }
    let stats = &decoder.stats;
    if let Some(e) = first_error {
        tracing::warn!(errors = stats.errors, first = %e, "some messages did not decode");
    }
    tracing::info!(sockets = stats.sockets, dumps, "decoded {}", path.display());
    if stats.sockets == 0 && stats.errors > 0 {
        anyhow::bail!(
            "no socket in {} could be decoded ({} errors)",
            path.display(),
            stats.errors
        );
    }
    Ok(())
}

/// The error and its causes joined by ": ", each said once: our typed
/// errors already show their source's text (so logs carry it), and anyhow's
/// `{:#}` would print the OS error a second time.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
