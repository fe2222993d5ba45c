//! The alerting rules, their runbook and the Grafana dashboard
//! (deploy/, docs/runbook.md), held to a real Prometheus:
//!
//! - `promtool check rules` accepts the rules, and `promtool test rules`
//!   runs their unit tests, in which every alert fires on a bad target and
//!   stays silent on a healthy one;
//! - every alert has a severity, a summary, a description and a
//!   runbook_url that lands on its own section of docs/runbook.md;
//! - the Kubernetes manifests carry exactly the rules file and the
//!   dashboard (`XTCP2_BLESS_DEPLOY=1` regenerates them);
//! - the dashboard uses only documented metrics and the recording rules;
//! - live: a real `prometheus` server scrapes three real daemons (a dead
//!   destination, a healthy one, one without CAP_SYS_PTRACE whose dumps
//!   time out) with a copy of the rules whose `for:` and range windows are
//!   shortened; the dead one raises XTCP2DestinationFailing, the degraded
//!   one the alerts of its faults, the healthy one nothing; every rule evaluates without
//!   error, and every dashboard query returns data.

mod observability_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observability_support::{free_port, HttpDaemon};
use serde_json::Value;
use support::{find_tool, require, require_tool, Need, Xtcp2, DAEMON_CAPABILITIES};

/// The rules file, as Prometheus and NixOS take it.
const RULES: &str = "deploy/prometheus/xtcp2-rules.yml";
/// Its promtool unit tests.
const RULES_TEST: &str = "deploy/prometheus/xtcp2-rules.test.yml";
/// The dashboard.
const DASHBOARD: &str = "deploy/grafana/xtcp2.json";
/// The Prometheus Operator's copy of the rules, generated from [`RULES`].
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
/// Grafana's sidecar copy of the dashboard, generated from [`DASHBOARD`].
const DASHBOARD_CONFIGMAP: &str = "deploy/kubernetes/grafana-dashboard-configmap.yaml";
/// What every alert's runbook_url starts with: the runbook as published
/// at the project's repository (Cargo.toml `repository`).
const RUNBOOK_URL: &str = "https://github.com/randomizedcoder/xtcp2/blob/main/docs/runbook.md";

/// The live test's copy of the rules divides every `for:` and range window
/// by this: 1 h becomes 1 min, 5 min become 5 s.
const TIME_SCALE: u64 = 60;
/// ... but a range window is never shorter than this: ten scrapes at the
/// live Prometheus's 1 s interval, so a rate always has samples, and a
/// destination retrying at its 5 s backoff cap shows in every window.
const MIN_RANGE_SECONDS: u64 = 10;
/// ... and a `for:` is never shorter than this, so a scrape or a poll
/// delayed on a loaded two-core machine does not fire an alert.
const MIN_FOR_SECONDS: u64 = 5;
/// The daemons' poll period in the live test (and so the period setting
/// of its rules copy).
const LIVE_FREQUENCY_SECONDS: u64 = 1;
/// The Kubernetes namespace label the live Prometheus puts on its targets,
/// as the Prometheus Operator does, so the dashboard's namespace filter is
/// exercised with a real value.
const LIVE_NAMESPACE: &str = "xtcp2-test";
/// How long the live test waits for the alerts it expects.
const LIVE_ALERT_DEADLINE: Duration = Duration::from_secs(60);
/// The live test watches the healthy daemon at least this long.
const LIVE_MIN_OBSERVATION: Duration = Duration::from_secs(20);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The names after `- alert:` (or `- record:`) in a rules file, in order.
fn rule_names(rules: &str, kind: &str) -> Vec<String> {
    let prefix = format!("- {kind}:");
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(prefix.as_str()))
        .map(|name| name.trim().to_string())
        .collect()
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes,
/// punctuation other than `-` and `_` dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of docs/runbook.md's `##` headings.
fn runbook_anchors() -> BTreeSet<String> {
    read("docs/runbook.md")
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(github_anchor)
        .collect()
}

/// The metric families of docs/observability.md's generated metrics table.
fn documented_metrics() -> BTreeSet<String> {
    let doc = read("docs/observability.md");
    let table = doc
        .split("<!-- BEGIN METRICS TABLE")
        .nth(1)
        .and_then(|rest| rest.split("<!-- END METRICS TABLE").next())
        .expect("docs/observability.md has the generated metrics table");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// promtool

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let promtool = find_tool("promtool").expect("promtool is installed");
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check rules` accepts the rules file, and finds every rule in it.
#[test]
fn rules_pass_promtool_check() {
    if !require_tool("promtool", "checks the rules (Debian package prometheus)") {
        return;
    }
    let rules = read(RULES);
    let count = rule_names(&rules, "alert").len() + rule_names(&rules, "record").len();
    let (ok, text) = promtool(&["check", "rules", RULES], repo());
    assert!(ok, "promtool check rules {RULES}:\n{text}");
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "expected {count} rules:\n{text}"
    );
}

/// `promtool test rules` passes, and its file has, for every alert of the
/// rules, an evaluation where it fires and one where nothing fires.
#[test]
fn rules_unit_tests_fire_every_alert_and_spare_healthy_targets() {
    if !require_tool("promtool", "runs the rules' unit tests (Debian package prometheus)") {
        return;
    }
    let dir = repo().join("deploy/prometheus");
    let (ok, text) = promtool(&["test", "rules", "xtcp2-rules.test.yml"], &dir);
    assert!(ok, "promtool test rules {RULES_TEST}:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    // Which alerts each kind of evaluation covers: `exp_alerts: []` is
    // silence, `exp_alerts:` followed by a list is firing.
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut current = None;
    for line in read(RULES_TEST).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.clone().expect("exp_alerts after an alertname");
            if rest.trim() == "[]" {
                silent.insert(name);
            } else {
                assert!(rest.trim().is_empty(), "unexpected exp_alerts form: {line}");
                fires.insert(name);
            }
        }
    }
    for alert in rule_names(&read(RULES), "alert") {
        assert!(fires.contains(&alert), "{RULES_TEST} never shows {alert} firing");
        assert!(silent.contains(&alert), "{RULES_TEST} never shows {alert} silent");
    }
}

/// Every alert says how bad it is (severity), what happened (summary,
/// description) and where to read on (a runbook_url to its own section
/// of docs/runbook.md), and sets `for:` explicitly.
#[test]
fn every_alert_has_severity_annotations_and_a_runbook_section() {
    let rules = read(RULES);
    let anchors = runbook_anchors();
    let alerts = rule_names(&rules, "alert");
    assert!(alerts.len() >= 10, "only {} alerts found in {RULES}", alerts.len());
    // Each alert's text, up to the next rule.
    let blocks: Vec<&str> = rules.split("      - alert: ").skip(1).collect();
    assert_eq!(blocks.len(), alerts.len(), "alert blocks in {RULES}");
    for (name, block) in alerts.iter().zip(&blocks) {
        let block = block.split("      - record: ").next().unwrap();
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
        };
        assert!(field("for:").is_some(), "{name}: no for:");
        let severity = field("severity:").unwrap_or_else(|| panic!("{name}: no severity label"));
        assert!(
            ["critical", "warning", "info"].contains(&severity.as_str()),
            "{name}: severity {severity}"
        );
        assert!(field("summary:").is_some(), "{name}: no summary");
        assert!(field("description:").is_some(), "{name}: no description");
        let url = field("runbook_url:").unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let anchor = github_anchor(name);
        assert_eq!(url, format!("{RUNBOOK_URL}#{anchor}"), "{name}: runbook_url");
        assert!(anchors.contains(&anchor), "docs/runbook.md has no section `## {name}`");
    }
    // And no runbook section is left over from an alert that is gone.
    let alert_anchors: BTreeSet<String> = alerts.iter().map(|a| github_anchor(a)).collect();
    for anchor in &anchors {
        if anchor.starts_with("xtcp2") {
            assert!(alert_anchors.contains(anchor), "docs/runbook.md: #{anchor} is no alert");
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes manifests

/// The PrometheusRule: the rules file's groups, as they are, under `spec:`.
fn expected_prometheus_rule() -> String {
    let rules = read(RULES);
    let groups = &rules[rules.find("\ngroups:").expect("groups: in the rules file") + 1..];
    let mut out = String::from(
        "# Generated from deploy/prometheus/xtcp2-rules.yml by tests/alerts.rs; do not edit.\n\
         # Regenerate: XTCP2_BLESS_DEPLOY=1 cargo test --profile ci --test alerts\n\
         # The Prometheus Operator loads it when the labels below match its\n\
         # ruleSelector (kube-prometheus-stack: add `release: <its release name>`).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: xtcp2\n  labels:\n    app.kubernetes.io/name: xtcp2\n    app.kubernetes.io/component: monitoring\n\
         spec:\n",
    );
    for line in groups.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The dashboard ConfigMap: the JSON, as it is, under `data:`.
fn expected_dashboard_configmap() -> String {
    let json = read(DASHBOARD);
    let mut out = String::from(
        "# Generated from deploy/grafana/xtcp2.json by tests/alerts.rs; do not edit.\n\
         # Regenerate: XTCP2_BLESS_DEPLOY=1 cargo test --profile ci --test alerts\n\
         # Grafana's dashboard sidecar (kube-prometheus-stack, the Grafana chart)\n\
         # loads every ConfigMap labelled grafana_dashboard: \"1\".\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: xtcp2-dashboard\n  labels:\n    grafana_dashboard: \"1\"\n    app.kubernetes.io/name: xtcp2\n    app.kubernetes.io/component: monitoring\n\
         data:\n  xtcp2.json: |\n",
    );
    for line in json.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// deploy/kubernetes carries exactly the rules file and the dashboard.
#[test]
fn kubernetes_manifests_match_their_sources() {
    let bless = std::env::var_os("XTCP2_BLESS_DEPLOY").is_some();
    for (path, expected) in [
        (PROMETHEUS_RULE, expected_prometheus_rule()),
        (DASHBOARD_CONFIGMAP, expected_dashboard_configmap()),
    ] {
        if bless {
            std::fs::write(repo().join(path), &expected).unwrap_or_else(|e| panic!("write {path}: {e}"));
            continue;
        }
        let actual = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        assert!(
            actual == expected,
            "{path} differs from its source; regenerate with \
             XTCP2_BLESS_DEPLOY=1 cargo test --profile ci --test alerts"
        );
    }
}

// ---------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every (panel title, query) of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("panel title").to_string();
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: no expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    queries
}

/// The metric names a PromQL expression reads: every identifier that is
/// one of ours (`xtcp2_…`, `process_…`) or a recording rule (has a `:`),
/// histogram series folded into their family.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals (label values, label_replace arguments).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("xtcp2_") || word.starts_with("process_") || word.contains(':') {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|f| f.ends_with("_seconds"))
                    .unwrap_or(word);
                names.insert(family.to_string());
            }
            continue;
        }
        i += 1;
    }
    names
}

/// The dashboard reads only metrics of docs/observability.md's table and
/// recording rules of the rules file, every panel asks the `$datasource`
/// variable, and every variable it uses is defined.
#[test]
fn dashboard_uses_only_documented_metrics_and_its_own_variables() {
    let dashboard = dashboard();
    let documented = documented_metrics();
    let recorded: BTreeSet<String> = rule_names(&read(RULES), "record").into_iter().collect();
    let variables: BTreeSet<String> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("variable name").to_string())
        .collect();
    assert_eq!(
        variables,
        ["datasource", "instance", "namespace"].map(String::from).into(),
        "variables"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{}: no description",
                panel["title"]
            );
        }
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    for (title, expr) in &queries {
        let used = metrics_in(expr);
        assert!(!used.is_empty(), "{title}: reads no metric: {expr}");
        for metric in used {
            assert!(
                documented.contains(&metric) || recorded.contains(&metric),
                "{title}: {metric} is neither in docs/observability.md's metric table nor a recording rule"
            );
        }
        for var in expr.split('$').skip(1) {
            let name: String = var.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(
                variables.contains(&name) || name == "__rate_interval",
                "{title}: undefined variable ${name}"
            );
        }
        for filtered in ["instance=~\"$instance\"", "namespace=~\"$namespace\""] {
            assert!(expr.contains(filtered), "{title}: ignores {filtered}: {expr}");
        }
    }
}

// ---------------------------------------------------------------------------
// The rules copy for the live test

/// Seconds of a Prometheus duration of one unit (`90s`, `5m`, `1h`, `0m`).
fn duration_seconds(text: &str) -> u64 {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    number
        * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => panic!("duration {text:?}: teach the live test's rewriter this unit"),
        }
}

/// The rules with every `for:` and range window divided by [`TIME_SCALE`]
/// (with floors), and the poll period setting at the live daemons'
/// frequency. Everything else is the file as shipped.
fn live_rules(rules: &str) -> String {
    let period = "expr: sum without (version, heap_profiling) (xtcp2_build_info) * 10\n";
    assert_eq!(rules.matches(period).count(), 1, "the poll period setting in {RULES}");
    let rules = rules.replace(
        period,
        &format!("expr: sum without (version, heap_profiling) (xtcp2_build_info) * {LIVE_FREQUENCY_SECONDS}\n"),
    );
    let mut out = String::new();
    for line in rules.lines() {
        if let Some(value) = line.trim_start().strip_prefix("for:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            let seconds = (duration_seconds(value.trim()) / TIME_SCALE).max(MIN_FOR_SECONDS);
            out.push_str(&format!("{indent}for: {seconds}s\n"));
            continue;
        }
        // Range windows: `[5m]`.
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').expect("] after [") + open;
            let inside = &rest[open + 1..close];
            assert!(
                !inside.contains(':'),
                "subquery {inside:?}: teach the live test's rewriter"
            );
            let seconds = (duration_seconds(inside) / TIME_SCALE).max(MIN_RANGE_SECONDS);
            out.push_str(&rest[..open]);
            out.push_str(&format!("[{seconds}s]"));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// The rewriter shortens what it should and nothing else.
#[test]
fn live_rules_copy_shortens_every_window_and_for() {
    let shipped = read(RULES);
    let live = live_rules(&shipped);
    assert!(live.contains("[10s]") && live.contains("[360s]"), "{live}");
    assert!(live.contains("for: 10s") && live.contains("for: 60s"), "{live}");
    assert!(!live.contains("m]") && !live.contains("h]"), "a window was left long");
    assert!(live
        .lines()
        .filter(|l| l.trim_start().starts_with("for:"))
        .all(|l| l.ends_with('s')));
    assert!(live.contains("(xtcp2_build_info) * 1\n"));
    assert_eq!(shipped.lines().count(), live.lines().count());
    assert_eq!(rule_names(&shipped, "alert"), rule_names(&live, "alert"));
    if require_tool("promtool", "checks the live copy of the rules") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), &live).unwrap();
        let (ok, text) = promtool(&["check", "rules", "rules.yml"], dir.path());
        assert!(ok, "promtool check rules (live copy):\n{text}\n{live}");
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus

/// A `prometheus` server on a loopback port with its own config and
/// storage in a temporary directory; killed, and the directory removed, on
/// drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it scraping `targets` every second as job `xtcp2`, labelled
    /// with [`LIVE_NAMESPACE`], with `rules` loaded, and waits until it is ready.
    fn start(rules: &str, targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: xtcp2\n    static_configs:\n      - targets: [{targets}]\n        labels:\n          namespace: {LIVE_NAMESPACE}\n",
            rules = dir.path().join("rules.yml").display(),
            targets = targets.join(", "),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(find_tool("prometheus").expect("prometheus is installed"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = prometheus.get("/-/ready") {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET over HTTP/1.0, so the body is plain (never chunked) and ends
    /// when the server closes.
    fn get(&self, path_and_query: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// The `data` of a successful API answer; panics on anything else.
    fn api(&self, path_and_query: &str) -> Value {
        let (status, body) = self
            .get(path_and_query)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path_and_query}: {status} {e}: {body}"));
        assert!(
            status == 200 && json["status"] == "success",
            "GET {path_and_query}: {status} {body}"
        );
        json["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Flags every live daemon runs with: polls every second, the listener on
/// loopback (added by `HttpDaemon`).
fn live_flags(extra: &[&str]) -> Vec<String> {
    let mut flags = vec!["--frequency".to_string(), format!("{LIVE_FREQUENCY_SECONDS}s")];
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// One alert as `/api/v1/alerts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeenAlert {
    name: String,
    instance: String,
    state: String,
    labels: BTreeMap<String, String>,
}

fn alerts(prometheus: &Prometheus) -> Vec<SeenAlert> {
    let data = prometheus.api("/api/v1/alerts");
    data["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            SeenAlert {
                name: labels.get("alertname").cloned().unwrap_or_default(),
                instance: labels.get("instance").cloned().unwrap_or_default(),
                state: a["state"].as_str().unwrap_or_default().to_string(),
                labels,
            }
        })
        .collect()
}

/// Live, against a real Prometheus with the rules loaded: the daemon whose
/// destination is dead raises XTCP2DestinationFailing (kind connect) and
/// nothing else; the one without CAP_SYS_PTRACE whose dumps time out
/// raises XTCP2CapabilityMissing, XTCP2NamespaceDumpFailures and
/// XTCP2PollsPartial; the
/// healthy one raises nothing, not even pending, over the same time.
/// Every rule evaluates without error, and every query of the dashboard
/// (and its variables) returns data.
#[test]
fn live_prometheus_alerts_on_the_broken_daemons_only_and_feeds_every_dashboard_query() {
    if !require(Need::Root, DAEMON_CAPABILITIES)
        || !require_tool(
            "prometheus",
            "the live test's Prometheus server (Debian package prometheus)",
        )
        || !require_tool("promtool", "the live test checks its rules copy")
        || !require_tool("setpriv", "starts a daemon without CAP_SYS_PTRACE (util-linux)")
    {
        return;
    }
    let rules = live_rules(&read(RULES));

    // The dead and the healthy daemon dump only the host namespace's
    // listening sockets: the kernel then walks its listening hash alone,
    // never the established one, so a poll stays a few ms however many
    // connections other work holds on the machine (with a million, a dump
    // of established sockets takes seconds and a 1 s poller really is
    // slow: measured while a scale benchmark ran beside this test).
    let quiet = |dest: &str| -> Vec<String> {
        live_flags(&[
            "--dest",
            dest,
            "--timeout",
            "500ms",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
            "--states=listen",
        ])
    };
    let start =
        |flags: Vec<String>| HttpDaemon::start(&flags.iter().map(String::as_str).collect::<Vec<_>>(), Stdio::null());
    // Nobody listens on this port: every send fails to connect.
    let dead = start(quiet(&format!("tcp:127.0.0.1:{}", free_port())));
    let healthy = start(quiet("null"));
    // The /proc scan without CAP_SYS_PTRACE (it runs degraded and says
    // so), and a dump deadline no dump meets, so every poll is incomplete.
    let mut command = Xtcp2::under(
        "setpriv",
        ["--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--"],
    );
    command.args(live_flags(&["--dest", "null", "--timeout", "1ms"]));
    let degraded = HttpDaemon::start_command(command);

    let (dead_instance, healthy_instance, degraded_instance) = (
        dead.addr.to_string(),
        healthy.addr.to_string(),
        degraded.addr.to_string(),
    );
    let prometheus = Prometheus::start(&rules, &[dead.addr, healthy.addr, degraded.addr]);

    // Watch the alerts until the expected ones fire, at least
    // LIVE_MIN_OBSERVATION after every target was first scraped up.
    let started = Instant::now();
    let mut all_up_at = None;
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let required = [
        (dead_instance.as_str(), "XTCP2DestinationFailing", ("kind", "connect")),
        (
            degraded_instance.as_str(),
            "XTCP2CapabilityMissing",
            ("capability", "cap_sys_ptrace"),
        ),
        (
            degraded_instance.as_str(),
            "XTCP2NamespaceDumpFailures",
            ("kind", "timeout"),
        ),
        (degraded_instance.as_str(), "XTCP2PollsPartial", ("severity", "warning")),
    ];
    loop {
        let now = alerts(&prometheus);
        for alert in &now {
            seen.insert((alert.instance.clone(), alert.name.clone(), alert.state.clone()));
            assert_ne!(
                alert.instance, healthy_instance,
                "the healthy daemon raised {alert:?}\nall alerts now: {now:#?}"
            );
        }
        if all_up_at.is_none() && prometheus.query("up{job=\"xtcp2\"} == 1").len() == 3 {
            all_up_at = Some(Instant::now());
        }
        let fired = required.iter().all(|(instance, name, (label, value))| {
            now.iter().any(|a| {
                a.instance == *instance
                    && a.name == *name
                    && a.state == "firing"
                    && a.labels.get(*label).map(String::as_str) == Some(*value)
            })
        });
        if fired && all_up_at.is_some_and(|t| t.elapsed() >= LIVE_MIN_OBSERVATION) {
            break;
        }
        assert!(
            started.elapsed() < LIVE_ALERT_DEADLINE,
            "after {LIVE_ALERT_DEADLINE:?} the expected alerts are not all firing: {required:?}\n\
             now: {now:#?}\nseen: {seen:#?}\nprometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("alerts seen (instance, alert, state): {seen:#?}");

    // The dead destination's daemon raised the destination alert and
    // nothing else; the degraded one only what its faults explain.
    let names = |instance: &str| -> BTreeSet<String> {
        seen.iter()
            .filter(|(i, _, _)| i == instance)
            .map(|(_, n, _)| n.clone())
            .collect()
    };
    assert_eq!(names(&dead_instance), ["XTCP2DestinationFailing".to_string()].into());
    let explained: BTreeSet<String> = [
        "XTCP2CapabilityMissing",
        "XTCP2NamespaceDumpFailures",
        "XTCP2NothingCollected",
        "XTCP2PollsPartial",
    ]
    .map(String::from)
    .into();
    let unexplained: Vec<_> = names(&degraded_instance).difference(&explained).cloned().collect();
    assert!(unexplained.is_empty(), "the degraded daemon raised {unexplained:?}");
    // Alerts of no instance (TargetMissing, before the first scrape) may be
    // pending for a moment, never firing.
    for (instance, name, state) in &seen {
        if instance.is_empty() {
            assert_ne!(state, "firing", "{name} fired");
        }
    }

    // Every rule evaluated without error (a join that matches many-to-many
    // or a wrong type only shows here, not in promtool check).
    let groups = prometheus.api("/api/v1/rules");
    let mut evaluated = 0;
    for group in groups["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert_eq!(
                rule["health"], "ok",
                "rule {} is unhealthy: {}",
                rule["name"], rule["lastError"]
            );
            evaluated += 1;
        }
    }
    let shipped = read(RULES);
    assert_eq!(
        evaluated,
        rule_names(&shipped, "alert").len() + rule_names(&shipped, "record").len(),
        "rules loaded"
    );

    // Every dashboard query, with the variables set as Grafana would: all
    // hosts, the targets' namespace, a rate window of a few scrapes.
    let dashboard = dashboard();
    for (title, expr) in dashboard_queries(&dashboard) {
        let promql = expr
            .replace("$instance", ".*")
            .replace("$namespace", LIVE_NAMESPACE)
            .replace("$__rate_interval", "15s");
        let result = prometheus.query(&promql);
        let finite = result.iter().any(|sample| {
            sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        });
        assert!(
            finite,
            "dashboard panel {title:?}: no data for {promql}\nresult: {result:?}"
        );
    }
    // The variables' own queries: label_values(SELECTOR, LABEL).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query}"));
        let (selector, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
        let selector = selector.replace("$namespace", LIVE_NAMESPACE);
        let values = prometheus.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            percent_encode(&selector)
        ));
        let values: BTreeSet<&str> = values.as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let expected: BTreeSet<&str> = match label.trim() {
            "namespace" => [LIVE_NAMESPACE].into(),
            "instance" => [
                dead_instance.as_str(),
                healthy_instance.as_str(),
                degraded_instance.as_str(),
            ]
            .into(),
            other => panic!("variable over label {other}"),
        };
        assert_eq!(values, expected, "variable {}", variable["name"]);
    }
    drop(prometheus);
    for (name, mut daemon) in [("dead", dead), ("healthy", healthy), ("degraded", degraded)] {
        assert!(daemon.is_running(), "the {name} daemon exited: {}", daemon.stderr());
    }
}
