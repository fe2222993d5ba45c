//! The one way the tests run Python: the interpreter CI installs the
//! Python modules into (chdb, protobuf, grpcio-tools), a helper script
//! run to completion with its JSON answer parsed, and ClickHouse (chdb)
//! queries through `tests/clickhouse/run_queries.py`.
//!
//! A test asks [`super::require_python_module`] for each module first, so
//! that a missing one skips it (fails it under CI) saying why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The interpreter ci/install-deps.sh installs the test modules into.
const CI_VENV_PYTHON: &str = "/var/cache/xtcp2-ci/venv/bin/python";

/// The Python to run: `XTCP2_PYTHON` (or the older `XTCP2_CHDB_PYTHON`),
/// else CI's venv when it exists, else `python3` on PATH.
pub fn python() -> PathBuf {
    for var in ["XTCP2_PYTHON", "XTCP2_CHDB_PYTHON"] {
        if let Some(p) = std::env::var_os(var) {
            return PathBuf::from(p);
        }
    }
    if Path::new(CI_VENV_PYTHON).is_file() {
        return PathBuf::from(CI_VENV_PYTHON);
    }
    PathBuf::from("python3")
}

/// Runs `tests/<script>` with `args`, feeding it `stdin`; it must exit 0
/// and print one JSON value, which is returned.
pub fn run_python_json(script: &str, args: &[&std::ffi::OsStr], stdin: &[u8]) -> serde_json::Value {
    run_python_json_with_env(script, args, stdin, &[])
}

/// [`run_python_json`] with variables added to the script's environment.
pub fn run_python_json_with_env(
    script: &str,
    args: &[&std::ffi::OsStr],
    stdin: &[u8],
    env: &[(&str, &std::ffi::OsStr)],
) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let python = python();
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs `queries` in chdb (the caller required the module): each result as
/// TabSeparated text without its last newline. Every query must succeed.
pub fn clickhouse(queries: &[String]) -> Vec<String> {
    let input = serde_json::to_vec(queries).unwrap();
    let results = run_python_json("clickhouse/run_queries.py", &[], &input);
    results
        .as_array()
        .expect("run_queries.py answers a list")
        .iter()
        .zip(queries)
        .map(|(r, q)| match r.get("ok").and_then(|v| v.as_str()) {
            Some(text) => text.trim_end().to_string(),
            None => panic!("ClickHouse rejected\n  {q}\nwith {}", r["error"]),
        })
        .collect()
}
