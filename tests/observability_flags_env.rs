//! Every observability flag falls back to its environment variable
//! (`XTCP2_PROM_LISTEN`, `XTCP2_PPROF`, ..., and Pyroscope's own `PYROSCOPE_URL` and
//! friends), and a flag on the command line beats the variable. One test
//! in its own binary: environment variables are process-global.

use std::path::PathBuf;
use std::time::Duration;

use xtcp2::config::{parse_args, Config};
use xtcp2::observe::PprofServing;
use xtcp2::profile::ProfileMode;

fn config(args: &[&str]) -> Config {
    let cli = parse_args(args.iter().map(|s| s.to_string())).expect("flags parse");
    Config::from_args(&cli.daemon).expect("valid configuration")
}

/// Environment variables configure the HTTP server, the one-shot profile
/// and Pyroscope; command-line flags override them.
#[test]
fn observability_environment_variables() {
    let vars = [
        ("XTCP2_PROM_LISTEN", "127.0.0.1:9191"),
        ("XTCP2_PROM_PATH", "/env-metrics"),
        ("XTCP2_PROFILE_PATH", "/var/tmp"),
        ("PYROSCOPE_URL", "http://pyro-env:4040"),
        ("PYROSCOPE_APP_NAME", "from-env"),
        ("PYROSCOPE_SAMPLE_HZ", "49"),
        ("PYROSCOPE_UPLOAD_SEC", "9"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let c = config(&["xtcp2"]);
    assert_eq!(c.observe.prom_listen, Some("127.0.0.1:9191".parse().unwrap()));
    assert_eq!(c.observe.prom_path, "/env-metrics");
    assert_eq!(c.observe.profile_path, PathBuf::from("/var/tmp"));
    let p = c.observe.pyroscope.expect("PYROSCOPE_URL enables the push");
    assert_eq!(
        (p.url.as_str(), p.app_name.as_str(), p.sample_hz),
        ("http://pyro-env:4040", "from-env", 49)
    );
    assert_eq!(p.upload_period, Duration::from_secs(9));

    let c = config(&[
        "xtcp2",
        "-promListen",
        ":9292",
        "-pyroscopeAppName",
        "from-flag",
        "-pyroscopeUrl",
        "",
    ]);
    assert_eq!(c.observe.prom_listen.map(|a| a.port()), Some(9292));
    assert!(
        c.observe.pyroscope.is_none(),
        "an empty -pyroscopeUrl disables the push despite PYROSCOPE_URL"
    );

    std::env::set_var("PYROSCOPE_URL", "");
    std::env::set_var("XTCP2_PROFILE_MODE", "cpu");
    let c = config(&["xtcp2"]);
    assert_eq!(c.observe.profile_mode, Some(ProfileMode::Cpu));
    assert!(c.observe.pyroscope.is_none());

    for (k, _) in vars {
        std::env::remove_var(k);
    }
    std::env::remove_var("XTCP2_PROFILE_MODE");

    std::env::set_var("XTCP2_PPROF", "true");
    assert_eq!(config(&["xtcp2"]).observe.pprof, PprofServing::WithMetrics);
    assert_eq!(config(&["xtcp2", "--pprof=false"]).observe.pprof, PprofServing::Off);
    std::env::set_var("XTCP2_PPROF_LISTEN", "127.0.0.1:6061");
    assert_eq!(
        config(&["xtcp2"]).observe.pprof,
        PprofServing::Own("127.0.0.1:6061".parse().unwrap())
    );
    std::env::remove_var("XTCP2_PPROF");
    std::env::remove_var("XTCP2_PPROF_LISTEN");
}
