//! Issue 18 (drop-in for the Go daemon), its command line: the Go flags
//! are accepted in their Go spelling (one dash, camelCase) and those whose
//! effect a one-shot run shows are checked: `-modulus 2` halves the
//! records, `-conf` prints the value given, `-healthcheck` exits 1 with no
//! daemon and 0 with a ready one, `-ipv4Ttl` sets the TTL of the
//! listener's replies, `-d` the log level, `-v` the version.

mod netns_support;
mod observability_support;
mod support;

use std::process::Stdio;
use std::time::Duration;

use netns_support::{in_netns, parse_records, BindMountedNetns};
use observability_support::HttpDaemon;
use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};

/// Go flags this build accepts, each with a valid value, and the name
/// `-conf` shows it under.
const ACCEPTED: &[(&str, &str, &str)] = &[
    ("-nltimeout", "2000", "nltimeout"),
    ("-frequency", "20s", "frequency"),
    ("-timeout", "3s", "timeout"),
    ("-maxLoops", "3", "max-loops"),
    ("-netlinkers", "2", "netlinkers"),
    ("-nlmsgSeq", "1000", "nlmsg-seq"),
    ("-packetSize", "8192", "packet-size"),
    ("-packetSizeMply", "16", "packet-size-mply"),
    ("-modulus", "3", "modulus"),
    ("-writeFiles", "10", "write-files"),
    ("-capturePath", "/var/tmp", "capture-path"),
    ("-destWriteFiles", "2", "dest-write-files"),
    ("-marshal", "csv", "marshal"),
    ("-columns", "tcpi_rtt", "columns"),
    ("-envelopeFlushBytes", "100000", "envelope-flush-bytes"),
    ("-envelopeFlushRows", "500", "envelope-flush-rows"),
    ("-pollJitterPct", "35", "poll-jitter-pct"),
    ("-reconcileFrequency", "1h", "reconcile-frequency"),
    ("-reconcileBeforePoll=false", "", "reconcile-before-poll"),
    ("-dest", "null", "dest"),
    ("-produceTimeout", "7s", "produce-timeout"),
    ("-topic", "xtcp-test", "topic"),
    ("-kafkaCompression", "lz4", "kafka-compression"),
    ("-kafkaSchemaUrl", "http://registry:18081", "kafka-schema-url"),
    ("-xtcpProtoFile", "/xtcp_flat_record.proto", "xtcp-proto-file"),
    ("-label", "lbl", "label"),
    ("-tag", "tg", "tag"),
    ("-location", "pop-1", "location"),
    ("-hostname", "h-1", "hostname"),
    ("-ipv4Ttl", "9", "ipv4-ttl"),
    ("-ipv6HopLimit", "11", "ipv6-hop-limit"),
    ("-promListen", "127.0.0.1:9999", "prom-listen"),
    ("-promPath", "/m", "prom-path"),
    ("-goMaxProcs", "8", "go-max-procs"),
    ("-maxThreads", "100", "max-threads"),
    ("-profile.mode", "cpu", "profile-mode"),
    ("-pyroscopeUrl", "https://u:secret@pyro:4040", "pyroscope-url"),
    ("-pyroscopeAppName", "app", "pyroscope-app-name"),
    ("-pyroscopeSampleHz", "50", "pyroscope-sample-hz"),
    ("-pyroscopeUploadSec", "30", "pyroscope-upload-sec"),
    ("-d", "5", "debug-level"),
    ("-ioUring", "true", "io-uring"),
    ("-ioUringRecvBatch", "64", "io-uring-recv-batch"),
    ("-ioUringCqeBatch", "128", "io-uring-cqe-batch"),
    ("-deserializers", "all", "deserializers"),
    ("-resolveContainerId", "true", "resolve-container-id"),
    ("-enrichContainer", "true", "enrich-container"),
    ("-dockerSocket", "/var/run/docker.sock", "docker-socket"),
    ("-populateNsid", "true", "populate-nsid"),
    ("-enrichNic", "true", "enrich-nic"),
    ("-enrichLldp", "true", "enrich-lldp"),
    ("-lldpdSocket", "/run/lldpd/lldpd.socket", "lldpd-socket"),
    ("-lldpdVersionHint", "1.0.16", "lldpd-version-hint"),
    ("-uplinkCount", "1", "uplink-count"),
    ("-uplinkInterfaces", "eth0,eth1", "uplink-interfaces"),
    ("-grpcPort", "8889", "grpc-port"),
];

/// Go flags of features other issues add (Kafka 14, S3/Parquet 15,
/// attribution 16, gRPC 17, raw capture and debug output of this issue):
/// refused today, so that nobody believes they work. When one lands it
/// moves to [`ACCEPTED`].
const NOT_YET: &[&str] = &[
    "-s3Endpoint",
    "-s3Bucket",
    "-s3Prefix",
    "-s3AccessKey",
    "-s3SecretKey",
    "-s3Region",
    "-s3SkipBucketProbe",
    "-s3ParquetFlushBytes",
    "-s3FlushInterval",
    "-s3FlushJitterPct",
    "-s3FlushThresholdJitterPct",
    "-s3UploadMaxAttempts",
    "-s3UploadBackoffCap",
];

/// The flags whose effect is seen elsewhere: `-v`, `-conf`, `-healthcheck`.
const MODES: &[&str] = &["-v", "-conf", "-healthcheck"];

#[test]
fn every_go_flag_is_listed_once() {
    let mut all: Vec<&str> = ACCEPTED
        .iter()
        .map(|(f, ..)| f.split('=').next().unwrap())
        .chain(NOT_YET.iter().copied())
        .chain(MODES.iter().copied())
        .collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a flag listed twice");
    // flags.md of the Go daemon has 72.
    assert_eq!(count, 72);
}

/// Each accepted Go flag, in its Go spelling, is taken and shown by
/// `-conf` with the value given (credentials masked).
#[test]
fn go_flags_are_accepted_and_conf_prints_the_value_given() {
    for (flag, value, ours) in ACCEPTED {
        let mut args = vec!["-conf", flag];
        if !value.is_empty() {
            args.push(value);
        }
        let out = Xtcp2::new().args(&args).output();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{flag} {value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let shown = conf[*ours]
            .as_str()
            .unwrap_or_else(|| panic!("{ours} missing: {stdout}"));
        let expected = match *flag {
            "-reconcileBeforePoll=false" => "false",
            "-pyroscopeUrl" => "https://***@pyro:4040",
            _ => value,
        };
        assert_eq!(shown, expected, "{flag}");
        assert!(!stdout.contains("secret"), "a credential printed: {stdout}");
    }
    // The deadline -conf derives: auto is 90 % of the period.
    let out = Xtcp2::new().args(["-conf", "-frequency", "20s"]).output();
    let conf: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(conf["timeout_effective"], "18s");
}

/// `XTCP_CONFIG_JSON` (the Go daemon's pushed configuration, proto3 JSON
/// of `XtcpConfig`): each field it sets stands for its Go flag and replaces
/// the command line's value; fields it leaves out keep the command line's;
/// an unknown field or a bad value is exit 2 naming it.
#[test]
fn xtcp_config_json_replaces_the_flags_it_sets() {
    let json = r#"{"pollFrequency": "3s", "label": "from-json", "maxLoops": "1", "daemonVersion": "v0"}"#;
    let out = Xtcp2::new()
        .env("XTCP_CONFIG_JSON", json)
        .args(["-conf", "-frequency", "10s", "-label", "from-cli", "-tag", "kept"])
        .output();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let conf: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(conf["frequency"], "3000ms");
    assert_eq!(conf["label"], "from-json");
    assert_eq!(conf["max-loops"], "1");
    assert_eq!(conf["tag"], "kept");
    for (json, named) in [
        (r#"{"pollFrequncy": "3s"}"#, "pollFrequncy"),
        (r#"{"maxLoops": "many"}"#, "XTCP_CONFIG_JSON"),
        (r#"{"pollJitterPct": 500}"#, "500"),
        ("not json", "XTCP_CONFIG_JSON"),
    ] {
        let out = Xtcp2::new().env("XTCP_CONFIG_JSON", json).args(["-conf"]).output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{json}: {stderr}");
        assert!(stderr.contains(named), "{json}: {stderr}");
    }
    // A subcommand has flags of its own: the variable is the daemon's.
    let out = Xtcp2::new()
        .env("XTCP_CONFIG_JSON", "not json")
        .args(["decode", "--help"])
        .output();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn flags_of_later_issues_are_refused_for_now() {
    for flag in NOT_YET {
        let out = Xtcp2::new().args([flag, "1"]).output();
        assert_eq!(out.status.code(), Some(2), "{flag} was accepted but does nothing yet");
    }
}

#[test]
fn dash_v_prints_the_version() {
    let out = Xtcp2::new().arg("-v").output();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("xtcp2 {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `-healthcheck` probes /readyz: 1 with nothing listening, 0 once a
/// daemon is ready there; it starts nothing itself.
#[test]
fn healthcheck_exits_1_without_a_daemon_and_0_with_a_ready_one() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let out = Xtcp2::new().args(["-healthcheck", "-promListen", &addr]).output();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));

    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let mut daemon = HttpDaemon::start(
        &[
            "--frequency",
            "1s",
            "--dest",
            "null",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ],
        Stdio::null(),
    );
    daemon.wait_ready(Duration::from_secs(15));
    let addr = daemon.addr.to_string();
    let out = Xtcp2::new().args(["-healthcheck", "-promListen", &addr]).output();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ready");
    daemon.stop_cleanly(Duration::from_secs(15));
}

/// `-modulus 2` keeps every other socket: a namespace holding exactly N
/// listening sockets yields N records, then half of them (the count runs
/// across namespaces, so the half is rounded either way).
#[test]
fn modulus_2_halves_the_records() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    const LISTENERS: usize = 301;
    let dir = tempfile::tempdir().unwrap();
    let ns = BindMountedNetns::new(dir.path(), "modulus");
    let _held = in_netns(&ns.path, || {
        (0..LISTENERS)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
    });
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let ours = |modulus: &str| {
        let out = Xtcp2::new()
            .args([
                "-maxLoops",
                "1",
                "-netlinkers",
                "1",
                "-modulus",
                modulus,
                "--states",
                "listen",
                "-dest",
                "stdout",
                "-promListen",
                "",
                "--netns-proc-scan=false",
                "--netns-dirs",
                &dir_arg,
            ])
            .output();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        parse_records(&String::from_utf8_lossy(&out.stdout))
            .iter()
            .filter(|r| r["netns_name"] == "modulus")
            .count()
    };
    assert_eq!(ours("1"), LISTENERS);
    let half = ours("2");
    assert!(
        half == LISTENERS / 2 || half == LISTENERS.div_ceil(2),
        "{half} of {LISTENERS} with -modulus 2"
    );
}

/// `-writeFiles N -capturePath DIR` saves the raw replies of each
/// netlinker as a DLT_NETLINK pcap, and `xtcp2 decode --pcap` of it yields
/// the records the live run emitted (but for the stamps of the run:
/// time, poll, host and namespace).
#[test]
fn write_files_capture_decodes_to_the_records_the_run_emitted() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _held: Vec<_> = (0..50)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let live = Xtcp2::new()
        .args([
            "-maxLoops",
            "1",
            "-netlinkers",
            "1",
            "-writeFiles",
            "100000",
            "-capturePath",
            &dir_arg,
            "--states",
            "listen",
            "-dest",
            "stdout",
            "-promListen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ])
        .output();
    assert_eq!(live.status.code(), Some(0), "{}", String::from_utf8_lossy(&live.stderr));
    let captures: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(captures.len(), 1, "one capture per netlinker: {captures:?}");
    let name = captures[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("xtcp2-") && name.ends_with("-netlinker0.pcap"),
        "{name}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&captures[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let decoded = Xtcp2::new()
        .args(["decode", "--pcap", captures[0].to_str().unwrap()])
        .output();
    assert_eq!(
        decoded.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let strip = |text: &[u8]| {
        let mut records: Vec<String> = parse_records(&String::from_utf8_lossy(text))
            .into_iter()
            .map(|mut r| {
                let object = r.as_object_mut().unwrap();
                for stamp in [
                    "timestamp_ns",
                    "poll_seq",
                    "hostname",
                    "netns_inode",
                    "netns_name",
                    "netns_pid",
                ] {
                    object.remove(stamp);
                }
                r.to_string()
            })
            .collect();
        records.sort();
        records
    };
    let live_records = strip(&live.stdout);
    assert!(live_records.len() >= 50, "{} records", live_records.len());
    assert_eq!(strip(&decoded.stdout), live_records);
}

/// `-d 0` logs warnings only, `-d 500` debug lines too.
#[test]
fn dash_d_sets_the_log_level() {
    let run = |level: &str| {
        let out = Xtcp2::new()
            .args([
                "-d",
                level,
                "--skip-capability-check",
                "-maxLoops",
                "1",
                "-dest",
                "null",
                "-promListen",
                "",
                "--netns-proc-scan=false",
                "--netns-dirs",
                "",
            ])
            .env_remove("XTCP2_LOG")
            .output();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let quiet = run("0");
    assert!(!quiet.contains(" INFO "), "{quiet}");
    let verbose = run("500");
    assert!(verbose.contains(" DEBUG "), "{verbose}");
}

/// `-ipv4Ttl 7`: the listener's replies leave with TTL 7, seen by a packet
/// socket on the loopback interface.
#[test]
fn ipv4_ttl_is_the_ttl_of_the_listeners_replies() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let mut daemon = HttpDaemon::start(
        &[
            "-ipv4Ttl",
            "7",
            "--frequency",
            "1s",
            "--dest",
            "null",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ],
        Stdio::null(),
    );
    daemon.wait_healthy(Duration::from_secs(15));
    let port = daemon.addr.port();
    let sniffer = PacketSocket::on_loopback();
    let reply = observability_support::http_get(daemon.addr, "/healthz").expect("GET /healthz");
    assert_eq!(reply.status, 200);
    let ttls = sniffer.ipv4_ttls_from_port(port);
    daemon.stop_cleanly(Duration::from_secs(15));
    assert!(!ttls.is_empty(), "no packet from port {port} seen");
    assert!(ttls.iter().all(|&t| t == 7), "TTLs {ttls:?}");
}

/// An AF_PACKET socket receiving the IPv4 packets of `lo`.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    fn on_loopback() -> PacketSocket {
        use std::os::fd::FromRawFd;
        let eth_p_ip = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(eth_p_ip)) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new socket we own.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("lo").unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = eth_p_ip;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind to lo: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a valid timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        PacketSocket(owned)
    }

    /// The TTLs of the TCP packets from `port` received until a read times out.
    fn ipv4_ttls_from_port(&self, port: u16) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let mut ttls = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return ttls;
            }
            let packet = &buf[..n as usize];
            let header = usize::from(packet[0] & 0x0f) * 4;
            if packet.len() < header + 4 || packet[9] != libc::IPPROTO_TCP as u8 {
                continue;
            }
            let source_port = u16::from_be_bytes([packet[header], packet[header + 1]]);
            if source_port == port {
                ttls.push(packet[8]);
            }
        }
    }
}

/// `-destWriteFiles N` writes the first N envelopes, exactly as the
/// destination receives them, each to a file of its own in `-capturePath`:
/// their concatenation is the start of what the destination got.
#[test]
fn dest_write_files_copies_the_first_envelopes_as_sent() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _held: Vec<_> = (0..50)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let copies_dir = dir.path().join("copies");
    std::fs::create_dir(&copies_dir).unwrap();
    let out = dir.path().join("out.jsonl");
    let run = Xtcp2::new()
        .args([
            "-maxLoops",
            "1",
            "-destWriteFiles",
            "3",
            "-capturePath",
            copies_dir.to_str().unwrap(),
            "-envelopeFlushRows",
            "10",
            "-marshal",
            "jsonl",
            "--states",
            "listen",
            "-dest",
            &format!("file:{}", out.display()),
            "-promListen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ])
        .output();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let mut copies: Vec<_> = std::fs::read_dir(&copies_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    copies.sort();
    let names: Vec<String> = copies
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(copies.len(), 3, "{names:?}");
    for (i, name) in names.iter().enumerate() {
        assert!(
            name.starts_with("xtcp2-") && name.ends_with(&format!("-envelope{i}.jsonl")),
            "{name}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mut joined = Vec::new();
    for copy in &copies {
        assert_eq!(std::fs::metadata(copy).unwrap().permissions().mode() & 0o777, 0o600);
        let bytes = std::fs::read(copy).unwrap();
        assert_eq!(
            parse_records(&String::from_utf8_lossy(&bytes)).len(),
            10,
            "{}",
            copy.display()
        );
        joined.extend_from_slice(&bytes);
    }
    let sent = std::fs::read(&out).unwrap();
    assert!(
        sent.len() > joined.len(),
        "the destination got more than the three copies"
    );
    assert_eq!(&sent[..joined.len()], &joined[..]);
}
