//! `--enrich-lldp`: each uplink's LLDP neighbour (switch name and id,
//! management address, port id and description), from lldpd.
//!
//! lldpd's control socket speaks a private, version-specific protocol; its
//! own client, `lldpcli`, has a stable JSON output (`-f json0`, the same
//! shape across lldpd versions: every value is a list of objects). So the
//! uplink thread (`uplink`) runs `lldpcli -u SOCKET -f json0 show neighbors
//! details` at start and every [`REFRESH`], never per poll or per socket,
//! with a time limit and a bound on the output read. A missing `lldpcli`,
//! socket or daemon is logged once and counted, never fatal: the LLDP
//! fields are then absent.
//!
//! `--lldpd-version-hint` is accepted for the Go daemon's command lines and
//! logged; json0 makes it unnecessary here.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often neighbours are read again (LLDP's own default transmit
/// interval is 30 s, so a neighbour change shows up within two of them).
pub const REFRESH: Duration = Duration::from_secs(30);
/// lldpcli answers in milliseconds; one that hangs is killed after this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A neighbour is a few hundred bytes; a switch port with hundreds of
/// neighbours (a hub) fits in far less than this.
const MAX_OUTPUT_BYTES: u64 = 4 << 20;

/// Where lldpd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LldpConfig {
    /// `--lldpd-socket`.
    pub socket: PathBuf,
    /// `--lldpcli`: the client run (a bare name is looked up in PATH).
    pub lldpcli: PathBuf,
}

/// One interface's neighbour. `None`: it did not advertise that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbour {
    pub chassis_name: Option<Arc<str>>,
    pub chassis_id: Option<Arc<str>>,
    pub mgmt_ip: Option<Arc<str>>,
    pub port_id: Option<Arc<str>>,
    pub port_descr: Option<Arc<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LldpError {
    #[error("lldpd socket {0} does not exist (is lldpd running?)")]
    NoSocket(String),
    #[error("running {program}: {source}")]
    Exec { program: String, source: std::io::Error },
    #[error("lldpcli did not answer within {0:?}")]
    Timeout(Duration),
    #[error("lldpcli exited with {status}: {stderr}")]
    Status { status: String, stderr: String },
    #[error("lldpcli output is not the json0 shape: {0}")]
    Reply(String),
}

impl LldpError {
    /// Short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            LldpError::NoSocket(_) => "lldp_socket",
            LldpError::Exec { .. } => "lldp_exec",
            LldpError::Timeout(_) => "lldp_timeout",
            LldpError::Status { .. } => "lldp_status",
            LldpError::Reply(_) => "lldp_reply",
        }
    }
}

/// Every interface's neighbour, by local interface name.
pub fn neighbours(config: &LldpConfig) -> Result<HashMap<String, Neighbour>, LldpError> {
    if !config.socket.exists() {
        return Err(LldpError::NoSocket(config.socket.display().to_string()));
    }
    let program = config.lldpcli.display().to_string();
    let mut child = Command::new(&config.lldpcli)
        .arg("-u")
        .arg(&config.socket)
        .args(["-f", "json0", "show", "neighbors", "details"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LldpError::Exec {
            program: program.clone(),
            source,
        })?;
    // Read on threads: a full pipe would stop lldpcli before it exits.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_OUTPUT_BYTES).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LldpError::Timeout(TIMEOUT));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(LldpError::Status {
            status: status.to_string(),
            stderr: stderr.trim().chars().take(300).collect(),
        });
    }
    parse_json0(&stdout)
}

/// `[{"value": "x"}, ...]` → the first value, when not empty.
fn first_value(list: &serde_json::Value) -> Option<Arc<str>> {
    let value = list.get(0)?.get("value")?;
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then(|| Arc::from(text.as_str()))
}

/// The neighbours in `lldpcli -f json0 show neighbors details` output:
/// `{"lldp": [{"interface": [{"name": "eth0", "chassis": [...], "port": [...]}]}]}`.
/// The first neighbour of an interface wins.
pub fn parse_json0(output: &[u8]) -> Result<HashMap<String, Neighbour>, LldpError> {
    let root: serde_json::Value = serde_json::from_slice(output).map_err(|e| LldpError::Reply(e.to_string()))?;
    let lldp = root
        .get("lldp")
        .and_then(|l| l.as_array())
        .ok_or_else(|| LldpError::Reply("no \"lldp\" list".into()))?;
    let mut found = HashMap::new();
    let interfaces = lldp
        .iter()
        .filter_map(|l| l.get("interface").and_then(|i| i.as_array()))
        .flatten();
    for interface in interfaces {
        let Some(name) = interface.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        if found.contains_key(name) {
            continue;
        }
        let chassis = interface.get("chassis").and_then(|c| c.get(0));
        let port = interface.get("port").and_then(|p| p.get(0));
        let from = |part: Option<&serde_json::Value>, key: &str| part.and_then(|p| p.get(key)).and_then(first_value);
        found.insert(
            name.to_string(),
            Neighbour {
                chassis_name: from(chassis, "name"),
                chassis_id: from(chassis, "id"),
                mgmt_ip: from(chassis, "mgmt-ip"),
                port_id: from(port, "id"),
                port_descr: from(port, "descr"),
            },
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// json0 as lldpcli 1.0.16 prints it for a veth neighbour (trimmed).
    const REPLY: &str = r#"{"lldp": [{"interface": [{"name": "va", "via": "LLDP", "rid": "1",
      "chassis": [{"id": [{"type": "mac", "value": "d2:ea:15:fc:8b:fa"}],
                   "name": [{"value": "switch-b"}],
                   "mgmt-ip": [{"value": "10.202.0.2"}, {"value": "fe80::1"}]}],
      "port": [{"id": [{"type": "ifname", "value": "vb"}], "descr": [{"value": "uplink port"}],
                "ttl": [{"value": "4"}]}]}]}]}"#;

    /// Every field comes from its place; the first mgmt address wins.
    #[test]
    fn json0_neighbour_fields() {
        let found = parse_json0(REPLY.as_bytes()).unwrap();
        let n = &found["va"];
        assert_eq!(n.chassis_name.as_deref(), Some("switch-b"));
        assert_eq!(n.chassis_id.as_deref(), Some("d2:ea:15:fc:8b:fa"));
        assert_eq!(n.mgmt_ip.as_deref(), Some("10.202.0.2"));
        assert_eq!(n.port_id.as_deref(), Some("vb"));
        assert_eq!(n.port_descr.as_deref(), Some("uplink port"));
    }

    /// No neighbours, and fields missing, are not errors; garbage is.
    #[test]
    fn json0_without_neighbours_or_fields() {
        assert!(parse_json0(br#"{"lldp": [{}]}"#).unwrap().is_empty());
        let bare = parse_json0(br#"{"lldp": [{"interface": [{"name": "x"}]}]}"#).unwrap();
        assert_eq!(bare["x"], Neighbour::default());
        assert!(matches!(parse_json0(b"not json"), Err(LldpError::Reply(_))));
        assert!(matches!(parse_json0(b"{}"), Err(LldpError::Reply(_))));
    }

    /// A missing socket is said before anything runs.
    #[test]
    fn missing_socket_is_an_error_of_its_own() {
        let config = LldpConfig {
            socket: PathBuf::from("/nonexistent/lldpd.socket"),
            lldpcli: PathBuf::from("lldpcli"),
        };
        assert_eq!(neighbours(&config).unwrap_err().kind(), "lldp_socket");
    }
}
