//! Issue 18: the container image and the DaemonSet. The manifest is parsed
//! by an independent YAML parser (PyYAML) and checked for what the daemon
//! needs on a node: the host's PID and network namespaces, the namespace
//! and cgroup mounts, exactly the capabilities docs/security.md lists,
//! liveness and readiness probes on /healthz and /readyz of its listener,
//! resource requests, and the image the flake builds. The image's Nix file
//! is evaluated by nix-instantiate (with nixpkgs' two functions it calls
//! stood in for: Nix cannot fetch nixpkgs here) and its configuration
//! checked: the binary as entry point, CA certificates, a HEALTHCHECK that
//! runs `-healthcheck` against the port the listener uses by default.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{python, require_python_module, require_tool, run_python_json, run_tool, Xtcp2};

const DAEMONSET: &str = "deploy/kubernetes/daemonset.yaml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn daemonset() -> Option<Value> {
    if !require_python_module(&python(), "yaml", "parses the Kubernetes manifests") {
        return None;
    }
    let documents = run_python_json("deploy/yaml_to_json.py", &[repo().join(DAEMONSET).as_os_str()], b"");
    let documents = documents.as_array().unwrap();
    assert_eq!(documents.len(), 1, "one document: the DaemonSet");
    Some(documents[0].clone())
}

/// The capabilities docs/security.md's table lists (`| \`CAP_X\` | ...`).
/// The capabilities of docs/security.md's table that a daemon given
/// `args` may keep: a row kept only for an option (`--enrich-lldp`) counts
/// when `args` turn that option on.
fn documented_capabilities(args: &[String]) -> BTreeSet<String> {
    const OPT_IN: &[&str] = &["--enrich-lldp"];
    let doc = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `CAP_"))
        .filter_map(|rest| rest.split_once('`'))
        .filter(|(_, row)| {
            let kept_when = row.split('|').nth(1).unwrap_or("");
            OPT_IN
                .iter()
                .filter(|flag| kept_when.contains(&format!("`{flag}`")))
                .all(|flag| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))))
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn cargo_version() -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// The default `--prom-listen` port, as `-conf` shows it.
fn default_listener_port() -> u16 {
    let conf = Xtcp2::new().args(["-conf"]).output();
    assert_eq!(conf.status.code(), Some(0), "{}", String::from_utf8_lossy(&conf.stderr));
    let conf: Value = serde_json::from_slice(&conf.stdout).unwrap();
    let listen = conf["prom-listen"].as_str().unwrap();
    listen.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn daemonset_runs_in_the_host_namespaces_with_the_mounts_it_needs() {
    let Some(ds) = daemonset() else { return };
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(pod["hostPID"], true, "the /proc scan needs the host's PIDs");
    assert_eq!(pod["hostNetwork"], true, "the host's own sockets");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Each host directory is mounted at the same path, read-only.
    let volumes: Vec<(String, String)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["hostPath"]["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mounts = c["volumeMounts"].as_array().unwrap();
    for path in ["/run/netns", "/run/docker/netns", "/sys/fs/cgroup"] {
        let (name, _) = volumes
            .iter()
            .find(|(_, host)| host == path)
            .unwrap_or_else(|| panic!("no hostPath volume {path}: {volumes:?}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == name.as_str())
            .unwrap_or_else(|| panic!("volume {name} is not mounted"));
        assert_eq!(mount["mountPath"], path);
        assert_eq!(mount["readOnly"], true, "{path}");
    }
    // Namespaces bind-mounted after the pod started must appear in it.
    for path in ["/run/netns", "/run/docker/netns"] {
        let mount = mounts.iter().find(|m| m["mountPath"] == path).unwrap();
        assert_eq!(mount["mountPropagation"], "HostToContainer", "{path}");
    }
    let args = strings(&c["args"]);
    assert!(
        args.contains(&"--netns-dirs=/run/netns,/run/docker/netns".to_string()),
        "{args:?}"
    );
}

#[test]
fn daemonset_holds_exactly_the_documented_capabilities() {
    let Some(ds) = daemonset() else { return };
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let security = &container["securityContext"];
    let documented = documented_capabilities(&strings(&container["args"]));
    assert_eq!(documented.len(), 5, "docs/security.md's table: {documented:?}");
    let added: BTreeSet<String> = strings(&security["capabilities"]["add"]).into_iter().collect();
    assert_eq!(added, documented);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
}

#[test]
fn daemonset_probes_the_listener_and_requests_resources() {
    let Some(ds) = daemonset() else { return };
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&c["args"]);
    let listen = args
        .iter()
        .find_map(|a| a.strip_prefix("--prom-listen="))
        .expect("--prom-listen in args");
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let ports = c["ports"].as_array().unwrap();
    let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(metrics["containerPort"], port);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "metrics", "{probe}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    let requests = &c["resources"]["requests"];
    assert!(
        requests["cpu"].is_string() && requests["memory"].is_string(),
        "{requests}"
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(c["image"], format!("xtcp2:{}", cargo_version()));
    // The environment names only variables the daemon reads.
    let conf = Xtcp2::new().args(["--help"]).output();
    let help = String::from_utf8_lossy(&conf.stdout);
    for env in c["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(help.contains(&format!("[env: {name}=")), "{name} is not in --help");
    }
}

/// nixos/image.nix evaluated with nixpkgs' `dockerTools.streamLayeredImage`
/// standing in as the identity: what it is given is the image's config.
#[test]
fn image_runs_the_binary_with_certificates_and_a_healthcheck() {
    if !require_tool("nix-instantiate", "evaluates nixos/image.nix") {
        return;
    }
    let expression = format!(
        r#"import {}/nixos/image.nix {{
          dockerTools = {{ streamLayeredImage = args: args; }};
          cacert = "/nix/store/cacert";
          xtcp2 = {{
            version = "{}";
            outPath = "/nix/store/xtcp2";
            meta = {{ description = "d"; homepage = "https://example.org/xtcp2"; }};
          }};
        }}"#,
        repo().display(),
        cargo_version()
    );
    let out = run_tool(Command::new("nix-instantiate").args(["--eval", "--strict", "--json", "-E", &expression]));
    let image: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(image["name"], "xtcp2");
    assert_eq!(image["tag"], cargo_version());
    assert_eq!(strings(&image["contents"]), ["/nix/store/cacert"]);
    let config = &image["config"];
    assert_eq!(strings(&config["Entrypoint"]), ["/nix/store/xtcp2/bin/xtcp2"]);
    assert_eq!(
        strings(&config["Healthcheck"]["Test"]),
        ["CMD", "/nix/store/xtcp2/bin/xtcp2", "-healthcheck"]
    );
    assert!(config["Healthcheck"]["Interval"].as_u64().unwrap() >= 1_000_000_000);
    assert!(
        strings(&config["Env"]).contains(&"SSL_CERT_FILE=/nix/store/cacert/etc/ssl/certs/ca-bundle.crt".to_string())
    );
    // -healthcheck probes the default listener: the port the image exposes.
    let exposed: Vec<String> = config["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(exposed, [format!("{}/tcp", default_listener_port())]);
}
