//! `--enrich-container`: the Docker Engine's containers, by network
//! namespace, from its API on a unix socket (`--docker-socket`).
//!
//! The follower first opens the events stream (`GET /events`, container
//! start/die/destroy), then lists the running containers and inspects each;
//! from then on every `start` is inspected as it comes, so a new container
//! is known before the next poll. A container is joined to sockets by its
//! sandbox (`NetworkSettings.SandboxKey`, a bind mount of its network
//! namespace, whose inode is the record's `netns_inode`). Containers with
//! the host's network (`--network host`) or another container's
//! (`container:ID`) own no namespace and are left out.
//!
//! An engine that cannot be reached is logged once per outage and counted,
//! and asked again with a backoff; nothing else waits for it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::cgroup::IdMap;
use super::Workload;
use crate::metrics::{KindLabel, Metrics};
use crate::shutdown::Shutdown;

/// Containers indexed at most: a host runs hundreds; the cap bounds memory
/// against an engine that reports without end.
pub const MAX_CONTAINERS: usize = 65_536;

/// Longest API reply read (an inspect is a few KiB; a list of thousands
/// of containers a few MiB).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// Longest single event line: events are a few hundred bytes.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Each API call (but the events stream) must finish within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits between attempts to reach the engine: from the first to the cap,
/// doubling.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{what}: HTTP status {status}")]
    Status { what: String, status: u16 },
    #[error("{0}: no answer within the call timeout")]
    Timeout(String),
    #[error("{what}: reply is not the JSON expected: {detail}")]
    Json { what: String, detail: String },
    #[error("{0}: reply larger than the limit")]
    TooLarge(String),
    #[error("the events stream ended")]
    EventsEnded,
}

impl DockerError {
    fn kind(&self) -> &'static str {
        match self {
            DockerError::Connect { .. } => "docker_connect",
            DockerError::Http(_) | DockerError::Request(_) | DockerError::EventsEnded => "docker_http",
            DockerError::Status { .. } => "docker_status",
            DockerError::Timeout(_) => "docker_timeout",
            DockerError::Json { .. } | DockerError::TooLarge(_) => "docker_reply",
        }
    }
}

/// Containers by the inode of their network namespace.
#[derive(Default)]
pub struct ContainerIndex {
    by_netns: RwLock<IdMap<Arc<Workload>>>,
    /// Set once the first list of containers is in.
    synced: tokio::sync::Notify,
    is_synced: std::sync::atomic::AtomicBool,
}

impl ContainerIndex {
    /// Returns once the running containers have been listed, or the first
    /// attempt failed (the first poll waits for it, bounded by its caller).
    pub async fn wait_synced(&self) {
        let notified = self.synced.notified();
        if self.is_synced.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// The container owning network namespace `inode`.
    pub fn by_netns(&self, inode: u64) -> Option<Arc<Workload>> {
        self.by_netns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&inode)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_netns.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, inode: u64, workload: Workload) -> bool {
        let mut map = self.by_netns.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CONTAINERS && !map.contains_key(&inode) {
            return false;
        }
        map.insert(inode, Arc::new(workload));
        true
    }

    fn remove_id(&self, id: &str) {
        let mut map = self.by_netns.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.container_id.as_deref() != Some(id));
    }

    fn replace_all(&self, entries: Vec<(u64, Workload)>) {
        let mut map = IdMap::default();
        for (inode, w) in entries.into_iter().take(MAX_CONTAINERS) {
            map.insert(inode, Arc::new(w));
        }
        *self.by_netns.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.settle();
    }

    /// The first attempt is over: whoever waits for it goes on.
    fn settle(&self) {
        self.is_synced.store(true, std::sync::atomic::Ordering::Release);
        self.synced.notify_waiters();
    }
}

/// One container as an inspect reply describes it: its workload and the
/// path of its network namespace (`None`: it owns none).
#[derive(Debug, PartialEq, Eq)]
pub struct Inspected {
    pub workload: Workload,
    pub sandbox: Option<PathBuf>,
}

/// Reads `GET /containers/{id}/json` (Engine API v1.24+): `Id`, `Name`
/// (with Docker's leading `/`), `Config.Image`, `NetworkSettings.SandboxKey`
/// and `HostConfig.NetworkMode`.
pub fn parse_inspect(body: &[u8]) -> Result<Inspected, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let id = v["Id"].as_str().filter(|s| !s.is_empty()).ok_or("no Id")?;
    let text = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(Arc::<str>::from);
    let name = text(v["Name"].as_str().map(|n| n.trim_start_matches('/')));
    let image = text(v["Config"]["Image"].as_str());
    let mode = v["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    let own_namespace = mode != "host" && !mode.starts_with("container:");
    let sandbox = v["NetworkSettings"]["SandboxKey"]
        .as_str()
        .filter(|s| !s.is_empty() && own_namespace)
        .map(PathBuf::from);
    Ok(Inspected {
        workload: Workload {
            container_id: Some(Arc::from(id)),
            container_runtime: Some(Arc::from("docker")),
            container_name: name,
            container_image: image,
            ..Workload::default()
        },
        sandbox,
    })
}

/// The container ids of a `GET /containers/json` reply.
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let list = v.as_array().ok_or("not a list")?;
    Ok(list
        .iter()
        .filter_map(|c| c["Id"].as_str().map(str::to_string))
        .collect())
}

/// A container event: its action (`start`, `die`, `destroy`) and the
/// container id; `None` for other events.
pub fn parse_event(line: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    if v["Type"].as_str() != Some("container") {
        return None;
    }
    let action = v["Action"].as_str().or(v["status"].as_str())?;
    let id = v["Actor"]["ID"].as_str().or(v["id"].as_str())?;
    Some((action.to_string(), id.to_string()))
}

/// The Engine API over its unix socket: one connection per call.
struct Engine {
    socket: PathBuf,
}

type Response = hyper::Response<hyper::body::Incoming>;

impl Engine {
    async fn get(&self, path: &str) -> Result<Response, DockerError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| DockerError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends with the response body (or the events stream).
            let _ = connection.await;
        });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            return Err(DockerError::Status {
                what: path.to_string(),
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// A whole reply body, bounded in size and time.
    async fn get_body(&self, path: &str) -> Result<Bytes, DockerError> {
        let call = async {
            let response = self.get(path).await?;
            let limited = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES);
            limited
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|_| DockerError::TooLarge(path.to_string()))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| DockerError::Timeout(path.to_string()))?
    }

    async fn inspect(&self, id: &str) -> Result<Inspected, DockerError> {
        let path = format!("/containers/{id}/json");
        let body = self.get_body(&path).await?;
        parse_inspect(&body).map_err(|detail| DockerError::Json { what: path, detail })
    }
}

/// The inode of a network namespace file (a sandbox's bind mount).
fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Follows the engine at `socket` into `index` until `shutdown`.
pub async fn follow(socket: PathBuf, index: Arc<ContainerIndex>, metrics: Arc<Metrics>, shutdown: Shutdown) {
    let engine = Engine { socket };
    let mut wait = RETRY_FIRST;
    let mut failing = false;
    loop {
        let error = tokio::select! {
            e = follow_once(&engine, &index, &metrics, &mut failing) => e,
            _ = shutdown.wait() => return,
        };
        // An engine that is down does not hold the first poll back.
        index.settle();
        metrics
            .attribution
            .source_failures
            .get_or_create(&KindLabel { kind: error.kind() })
            .inc();
        // Logged once per outage: the follower retries every minute at most.
        if !failing {
            tracing::warn!(socket = %engine.socket.display(), error = %error, "--enrich-container: the Docker Engine cannot be followed; container names stay unset until it can (retrying)");
            failing = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return,
        }
        wait = (wait * 2).min(RETRY_CAP);
    }
}

/// One session: events opened, containers listed, events applied until the
/// stream fails.
async fn follow_once(engine: &Engine, index: &ContainerIndex, metrics: &Metrics, failing: &mut bool) -> DockerError {
    // Opened before the list, so a container started in between is seen.
    let filters =
        "%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%2C%22destroy%22%5D%7D";
    let events = match engine.get(&format!("/events?filters={filters}")).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let ids = match engine.get_body("/containers/json").await {
        Ok(body) => match parse_list(&body) {
            Ok(ids) => ids,
            Err(detail) => {
                return DockerError::Json {
                    what: "/containers/json".into(),
                    detail,
                }
            }
        },
        Err(e) => return e,
    };
    let mut entries = Vec::with_capacity(ids.len());
    for id in &ids {
        match engine.inspect(id).await {
            Ok(inspected) => {
                if let Some(inode) = inspected.sandbox.as_deref().and_then(netns_inode) {
                    entries.push((inode, inspected.workload));
                }
            }
            // Gone since the list: its destroy event follows.
            Err(DockerError::Status { status: 404, .. }) => {}
            Err(e) => return e,
        }
    }
    index.replace_all(entries);
    metrics.attribution.containers.set(index.len() as i64);
    if *failing {
        tracing::info!(
            containers = index.len(),
            "--enrich-container: following the Docker Engine again"
        );
        *failing = false;
    } else {
        tracing::info!(
            containers = index.len(),
            "--enrich-container: following the Docker Engine"
        );
    }
    let mut body = events.into_body();
    let mut line: Vec<u8> = Vec::new();
    loop {
        let frame = match body.frame().await {
            None => return DockerError::EventsEnded,
            Some(Err(e)) => return DockerError::Http(e),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            line.extend_from_slice(chunk);
            if line.len() > MAX_EVENT_BYTES {
                return DockerError::TooLarge("/events".into());
            }
            if !line.ends_with(b"\n") {
                continue;
            }
            metrics.attribution.docker_events.inc();
            if let Some((action, id)) = parse_event(&line) {
                apply_event(engine, index, &action, &id).await;
                metrics.attribution.containers.set(index.len() as i64);
            }
            line.clear();
        }
    }
}

async fn apply_event(engine: &Engine, index: &ContainerIndex, action: &str, id: &str) {
    match action {
        "start" => match engine.inspect(id).await {
            Ok(inspected) => {
                if let Some(inode) = inspected.sandbox.as_deref().and_then(netns_inode) {
                    if !index.insert(inode, inspected.workload) {
                        tracing::debug!(cap = MAX_CONTAINERS, "container index full");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, id, "cannot inspect a started container"),
        },
        "die" | "destroy" => index.remove_id(id),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inspect reply as the Engine API documents it (trimmed to the
    /// keys read): name without its slash, image, sandbox path.
    #[test]
    fn inspect_reply_gives_name_image_and_sandbox() {
        let body = br#"{"Id":"8dfafdbc3a40","Name":"/web-1","Config":{"Image":"nginx:1.25"},
            "HostConfig":{"NetworkMode":"bridge"},
            "NetworkSettings":{"SandboxKey":"/var/run/docker/netns/3b8e1d0f6a2c"}}"#;
        let got = parse_inspect(body).unwrap();
        assert_eq!(got.workload.container_id.as_deref(), Some("8dfafdbc3a40"));
        assert_eq!(got.workload.container_runtime.as_deref(), Some("docker"));
        assert_eq!(got.workload.container_name.as_deref(), Some("web-1"));
        assert_eq!(got.workload.container_image.as_deref(), Some("nginx:1.25"));
        assert_eq!(got.sandbox, Some(PathBuf::from("/var/run/docker/netns/3b8e1d0f6a2c")));
    }

    /// Host-network and shared-network containers own no namespace.
    #[test]
    fn host_and_shared_network_containers_have_no_sandbox() {
        for mode in ["host", "container:8dfafdbc3a40"] {
            let body = format!(
                r#"{{"Id":"a","Name":"/x","HostConfig":{{"NetworkMode":"{mode}"}},"NetworkSettings":{{"SandboxKey":"/var/run/docker/netns/default"}}}}"#
            );
            assert_eq!(parse_inspect(body.as_bytes()).unwrap().sandbox, None, "{mode}");
        }
        assert!(parse_inspect(b"{}").is_err());
        assert!(parse_inspect(b"not json").is_err());
    }

    /// Events of both API spellings (Action/Actor and the old status/id).
    #[test]
    fn events_are_read() {
        let new = br#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"x"}},"time":1}"#;
        assert_eq!(parse_event(new), Some(("start".into(), "abc".into())));
        let old = br#"{"status":"die","id":"abc","Type":"container"}"#;
        assert_eq!(parse_event(old), Some(("die".into(), "abc".into())));
        assert_eq!(parse_event(br#"{"Type":"network","Action":"connect"}"#), None);
        assert_eq!(parse_event(b"{"), None);
    }

    /// The list gives ids; the index is bounded and removal is by id.
    #[test]
    fn list_and_index() {
        assert_eq!(parse_list(br#"[{"Id":"a"},{"Id":"b"},{}]"#).unwrap(), ["a", "b"]);
        let index = ContainerIndex::default();
        let w = |id: &str| Workload {
            container_id: Some(Arc::from(id)),
            ..Workload::default()
        };
        assert!(index.insert(7, w("a")));
        assert!(index.insert(8, w("b")));
        assert_eq!(index.by_netns(7).unwrap().container_id.as_deref(), Some("a"));
        index.remove_id("a");
        assert!(index.by_netns(7).is_none());
        assert_eq!(index.len(), 1);
    }
}
