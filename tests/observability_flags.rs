//! The observability flags: Go xtcp2 spellings, idiomatic spellings and
//! validation at startup. (Environment variables: observability_flags_env.rs,
//! a separate process because they are process-global.)

use std::path::PathBuf;
use std::time::Duration;

use xtcp2::config::{parse_args, Config, ConfigError};
use xtcp2::observe::PprofServing;
use xtcp2::profile::ProfileMode;

fn parse(args: &[&str]) -> Config {
    let cli = parse_args(args.iter().map(|s| s.to_string())).expect("flags parse");
    Config::from_args(&cli.daemon).expect("valid configuration")
}

fn refuse(args: &[&str]) -> ConfigError {
    let cli = parse_args(args.iter().map(|s| s.to_string())).expect("flags parse");
    Config::from_args(&cli.daemon).expect_err("configuration refused")
}

/// Every observability flag reads the same with its Go spelling
/// (`-promListen`, `-profile.path`, ...) as with its idiomatic one.
#[test]
fn go_and_idiomatic_observability_flags_are_equivalent() {
    let mode = if cfg!(feature = "heap-profiling") { "mem" } else { "cpu" };
    let go = [
        "xtcp2",
        "-promListen",
        "127.0.0.1:9999",
        "-promPath",
        "/m",
        "-profile.mode",
        mode,
        "-profile.path",
        "/var/tmp",
        "-pyroscopeUrl",
        "http://pyro:4040",
        "-pyroscopeAppName",
        "edge",
        "-pyroscopeSampleHz",
        "97",
        "-pyroscopeUploadSec",
        "7",
    ];
    let idiomatic = [
        "xtcp2",
        "--prom-listen",
        "127.0.0.1:9999",
        "--prom-path",
        "/m",
        "--profile-mode",
        mode,
        "--profile-path",
        "/var/tmp",
        "--pyroscope-url",
        "http://pyro:4040",
        "--pyroscope-app-name",
        "edge",
        "--pyroscope-sample-hz",
        "97",
        "--pyroscope-upload-sec",
        "7",
    ];
    // cpu and Pyroscope exclude each other, so check the profile flags and
    // the Pyroscope flags in two runs each.
    let split = |args: &[&'static str]| -> (Vec<&'static str>, Vec<&'static str>) {
        let profile: Vec<_> = args[..9].to_vec();
        let mut pyroscope: Vec<_> = args[..5].to_vec();
        pyroscope.extend_from_slice(&args[9..]);
        (profile, pyroscope)
    };
    for args in [&go[..], &idiomatic[..]] {
        let (profile_args, pyroscope_args) = split(args);
        let c = parse(&profile_args);
        assert_eq!(c.observe.prom_listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(c.observe.prom_path, "/m");
        let expected = if mode == "mem" {
            ProfileMode::Mem
        } else {
            ProfileMode::Cpu
        };
        assert_eq!(c.observe.profile_mode, Some(expected));
        assert_eq!(c.observe.profile_path, PathBuf::from("/var/tmp"));
        let c = parse(&pyroscope_args);
        let p = c.observe.pyroscope.expect("pyroscope on");
        assert_eq!(p.url, "http://pyro:4040");
        assert_eq!(p.app_name, "edge");
        assert_eq!(p.sample_hz, 97);
        assert_eq!(p.upload_period, Duration::from_secs(7));
    }
}

/// Defaults: listen on :9088 (every address), /metrics, no pprof, no
/// profile, no Pyroscope.
#[test]
fn observability_defaults() {
    let c = parse(&["xtcp2", "--pyroscope-url", ""]);
    assert_eq!(c.observe.prom_listen.map(|a| a.port()), Some(9088));
    assert!(c.observe.prom_listen.unwrap().ip().is_unspecified());
    assert_eq!(c.observe.prom_path, "/metrics");
    assert_eq!(c.observe.pprof, PprofServing::Off);
    assert_eq!(c.observe.profile_mode, None);
    assert!(c.observe.pyroscope.is_none());
    assert_eq!(parse(&["xtcp2", "--prom-listen", ""]).observe.prom_listen, None);
}

/// `-profile.mode mem` without the heap-profiling feature is refused at
/// startup with the way to get it.
#[cfg(not(feature = "heap-profiling"))]
#[test]
fn mem_profile_needs_the_heap_profiling_feature() {
    let err = refuse(&["xtcp2", "-profile.mode", "mem"]);
    assert_eq!(
        err.to_string(),
        "--profile-mode mem needs a build with the heap-profiling feature (jemalloc): cargo build --release --features heap-profiling"
    );
}

/// A whole-run CPU profile and the Pyroscope push cannot share the one profiler.
#[test]
fn cpu_profile_and_pyroscope_exclude_each_other() {
    let err = refuse(&["xtcp2", "--profile-mode", "cpu", "--pyroscope-url", "http://pyro:4040"]);
    assert!(matches!(err, ConfigError::ProfilerConflict), "{err}");
}

/// Pyroscope URLs the push cannot use are refused with the reason.
#[test]
fn unusable_pyroscope_urls_are_refused() {
    let err = refuse(&["xtcp2", "--pyroscope-url", "pyro:4040"]);
    assert_eq!(
        err.to_string(),
        "--pyroscope-url \"pyro:4040\": must start with http:// or https://"
    );
    let err = refuse(&["xtcp2", "--pyroscope-url", "https://pyro:4040/?token=x"]);
    assert_eq!(
        err.to_string(),
        "--pyroscope-url \"https://pyro:4040/?token=x\": must not have a query string"
    );
    let err = refuse(&["xtcp2", "--pyroscope-url", "http://pyro", "--pyroscope-upload-sec", "0"]);
    assert!(matches!(err, ConfigError::ZeroPyroscope), "{err}");
}

/// A metrics path without a leading slash and an unparsable listen address are refused.
#[test]
fn bad_prom_path_and_listen_are_refused() {
    assert!(matches!(
        refuse(&["xtcp2", "--prom-path", "metrics"]),
        ConfigError::PromPath(_)
    ));
    assert!(matches!(
        refuse(&["xtcp2", "--prom-listen", "nowhere"]),
        ConfigError::PromListen(_)
    ));
}

/// `--pprof` (also `-pprof`, `--pprof=true`) serves pprof on the metrics
/// listener; `--pprof-listen` (`-pprofListen`) on a listener of its own,
/// with or without `--pprof`.
#[test]
fn pprof_flags() {
    for args in [
        &["xtcp2", "--pprof"][..],
        &["xtcp2", "-pprof"],
        &["xtcp2", "--pprof=true"],
    ] {
        assert_eq!(parse(args).observe.pprof, PprofServing::WithMetrics, "{args:?}");
    }
    assert_eq!(parse(&["xtcp2", "--pprof=false"]).observe.pprof, PprofServing::Off);
    let own = PprofServing::Own("127.0.0.1:6060".parse().unwrap());
    for args in [
        &["xtcp2", "--pprof-listen", "127.0.0.1:6060"][..],
        &["xtcp2", "-pprofListen", "127.0.0.1:6060"],
        &["xtcp2", "--pprof", "--pprof-listen=127.0.0.1:6060"],
        &["xtcp2", "--prom-listen", "", "--pprof-listen", "127.0.0.1:6060"],
    ] {
        assert_eq!(parse(args).observe.pprof, own, "{args:?}");
    }
}

/// `--pprof` with no metrics listener to serve it on, and an unparsable
/// `--pprof-listen`, are refused naming the flag.
#[test]
fn pprof_without_a_listener_is_refused() {
    let err = refuse(&["xtcp2", "--pprof", "--prom-listen", ""]);
    assert_eq!(
        err.to_string(),
        "--pprof serves the profiles on --prom-listen, which is empty; give --pprof-listen ADDR instead"
    );
    let err = refuse(&["xtcp2", "--pprof-listen", "localhost"]);
    assert_eq!(
        err.to_string(),
        "--pprof-listen \"localhost\" is not HOST:PORT or :PORT"
    );
}

/// Regression (issue 22 point 10): `--prom-path /healthz` was accepted and
/// the metrics shadowed the liveness route. Every built-in route, and
/// anything under /debug/pprof, is refused, naming the flag.
#[test]
fn prom_path_cannot_hide_a_builtin_route() {
    for (path, hidden) in [
        ("/healthz", "the liveness endpoint /healthz"),
        ("/readyz", "the readiness endpoint /readyz"),
        ("/debug/pprof", "the profiling endpoints under /debug/pprof"),
        ("/debug/pprof/heap", "the profiling endpoints under /debug/pprof"),
    ] {
        let err = refuse(&["xtcp2", "--prom-path", path]);
        assert!(matches!(err, ConfigError::PromPathReserved { .. }), "{path}: {err}");
        assert_eq!(
            err.to_string(),
            format!("--prom-path {path:?} would hide {hidden}; choose another path (the default is /metrics)")
        );
    }
    assert_eq!(
        parse(&["xtcp2", "--prom-path", "/healthz/metrics"]).observe.prom_path,
        "/healthz/metrics"
    );
}
