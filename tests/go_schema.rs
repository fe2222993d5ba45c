//! `--record-schema xtcp_flat_record.v1`: every format speaks the Go
//! daemon's record, and the protobuf formats read back with Google's own
//! protobuf library and with ClickHouse.
//!
//! - proto/xtcp_flat_record_v1.proto is generated from the mapping table
//!   (src/record/go_v1.rs), and what protoc makes of it states exactly what
//!   the facts about the Go daemon (`shared/upstream/record-v1.tsv`) state:
//!   messages, field names, numbers and types, the enum, the service.
//! - A capture decoded (`xtcp2 decode --pcap`) in that schema as
//!   protobufList, read by Python `protobuf` with classes protoc generated
//!   from that file, carries for every socket the values our own record of
//!   the same socket (jsonl of the same capture) has, converted as the
//!   table says, and nothing for the fields we cannot fill; protoJson
//!   (`json_format`) and protoText (`text_format`) read back to the very
//!   same messages, in both schemas.
//! - chdb (ClickHouse) reads the file with that `.proto`, from a capture
//!   and from a one-shot daemon run over real loopback sockets.
//!
//! Needs Python with protobuf and grpcio-tools (and chdb for ClickHouse):
//! ci/install-deps.sh installs them into /var/cache/xtcp2-ci/venv; outside
//! CI the tests skip saying why when they are missing, under CI they fail.

mod sinks_support;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use support::{
    clickhouse, fixtures_dir, python, require, require_python_module, run_python_json, upstream_dir, Need, Xtcp2,
    DAEMON_CAPABILITIES,
};
use xtcp2::record::go_v1::COLUMNS;
use xtcp2::record::RecordSchema;

/// Context strings that need escaping in every text format.
const STAMPS: [&str; 8] = [
    "--hostname",
    "go-host",
    "--label",
    "rack 7, \"blue\"",
    "--tag",
    "tab\there\\back",
    "--location",
    "line\nbreak",
];

/// The Go record's `.proto` and ours.
fn proto(schema: RecordSchema) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto")
        .join(schema.proto_file())
}

/// True when Python can generate and use protobuf classes.
fn protobuf_available() -> bool {
    let python = python();
    require_python_module(&python, "google.protobuf", "Google's protobuf reads our output")
        && require_python_module(&python, "grpc_tools.protoc", "protoc generates the Python classes")
}

/// `read_protobuf.py describe`: the FileDescriptorProto protoc makes of `proto`.
fn describe(proto: &Path) -> Value {
    run_python_json(
        "protobuf/read_protobuf.py",
        &[OsStr::new("describe"), proto.as_os_str()],
        b"",
    )
}

/// One record as Python protobuf sees it: every field the message has set.
type Message = serde_json::Map<String, Value>;

/// `read_protobuf.py read`: the rows of each output, by format name.
fn read_protobuf(schema: RecordSchema, outputs: &[(&str, &Path)]) -> HashMap<String, Vec<Message>> {
    let mut args = vec![OsStr::new("read").to_owned(), proto(schema).into_os_string()];
    for (format, path) in outputs {
        let mut spec = std::ffi::OsString::from(format!("{format}="));
        spec.push(path.as_os_str());
        args.push(spec);
    }
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let answer = run_python_json("protobuf/read_protobuf.py", &args, b"");
    serde_json::from_value(answer).expect("{format: [row]}")
}

/// `xtcp2 decode --pcap capture` with every decoder, the stamps and `flags`: its stdout.
fn decode(capture: &Path, flags: &[&str]) -> Vec<u8> {
    let output = Xtcp2::new()
        .stdout(Stdio::piped())
        .args(["decode", "--deserializers", "all"])
        .arg("--pcap")
        .arg(capture)
        .args(STAMPS)
        .args(flags)
        .output();
    assert!(
        output.status.success(),
        "decode {flags:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Our own records (jsonl, our schema) of a decode's output.
fn our_records(jsonl: &[u8]) -> Vec<Message> {
    std::str::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// The 16 bytes the Go record holds for an address (the kernel's
/// `inet_diag_sockid` slot: IPv4 in the first four), as hex.
fn address_slot_hex(text: &str) -> String {
    let bytes: Vec<u8> = match text.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().into_iter().chain([0; 12]).collect(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Raw bytes of an address as our schema holds it (4 or 16), as hex.
fn address_hex(text: &str) -> String {
    let bytes: Vec<u8> = match text.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the Go record must hold in `field` for our record `ours`: `None`
/// when it must be unset. Written from the facts and the kernel's layouts,
/// not from the encoder: the mapping of names comes from the table, the
/// conversions are spelled out here.
fn expected(field: &str, source: &str, ours: &Message) -> Option<Value> {
    let number = |name: &str| {
        ours.get(name)
            .map(|v| v.as_u64().unwrap_or_else(|| panic!("{name}: {v}")))
    };
    match field {
        "schema_version" => Some(Value::from(1)),
        "daemon_version" => Some(Value::from(concat!("xtcp2-rs ", env!("CARGO_PKG_VERSION")))),
        "congestion_algorithm_enum" => {
            let names = ["", "cubic", "dctcp", "vegas", "prague", "bbr", "bbr2", "bbr3"];
            let cong = ours.get("cong")?.as_str().unwrap();
            names.iter().position(|n| *n == cong).map(Value::from)
        }
        "sock_opt" => {
            // struct inet_diag_sockopt, bit-fields from the lowest bit.
            let bits = [
                "sockopt_recverr",
                "sockopt_is_icsk",
                "sockopt_freebind",
                "sockopt_hdrincl",
                "sockopt_mc_loop",
                "sockopt_transparent",
                "sockopt_mc_all",
                "sockopt_nodefrag",
                "sockopt_bind_address_no_port",
                "sockopt_recverr_rfc4884",
                "sockopt_defer_connect",
            ];
            let mut word = 0u64;
            for (bit, name) in bits.iter().enumerate() {
                word |= number(name)? << bit;
            }
            Some(Value::from(word))
        }
        "inet_diag_msg_socket_source" | "inet_diag_msg_socket_destination" => {
            Some(Value::from(address_slot_hex(ours.get(source)?.as_str().unwrap())))
        }
        _ if source.is_empty() => None,
        _ => ours.get(source).cloned(),
    }
}

/// proto/xtcp_flat_record_v1.proto is exactly the text generated from the
/// mapping table (run with XTCP2_BLESS=1 to rewrite it after changing
/// src/record/go_v1.rs).
#[test]
fn go_proto_file_matches_the_mapping_table() {
    let path = proto(RecordSchema::FlatRecordV1);
    let generated = xtcp2::format::protobuf::schema_text(RecordSchema::FlatRecordV1);
    if std::env::var_os("XTCP2_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "proto/xtcp_flat_record_v1.proto is stale: run `XTCP2_BLESS=1 cargo test --test go_schema` and commit the result"
    );
}

/// prost, built from proto/xtcp_flat_record_v1.proto, decodes the
/// hand-written protobufList of every record of the known collection in
/// the Go schema and re-encodes it to the very same bytes (prost drops
/// unknown fields, so every number and wire type we write is the
/// file's), with our values in the Go fields.
#[test]
fn go_protobuf_list_equals_prost() {
    use prost::Message as _;
    use xtcp2::format::protobuf::flat_record_v1;
    let Some(records) = sinks_support::known_collection() else {
        return;
    };
    let stream = xtcp2::format::StreamFormat::in_schema("protobufList", RecordSchema::FlatRecordV1, &[]).unwrap();
    let mut encoder = stream.encoder();
    for chunk in records.chunks(250) {
        let envelope = xtcp2::batch::Envelope::from_records(encoder.as_mut(), chunk, std::sync::Arc::from("h"), 1);
        let decoded = flat_record_v1::Envelope::decode_length_delimited(envelope.payload()).expect("prost decodes it");
        assert_eq!(decoded.encode_length_delimited_to_vec(), envelope.payload());
        assert_eq!(decoded.row.len(), chunk.len());
        for (ours, go) in chunk.iter().zip(&decoded.row) {
            assert_eq!(go.schema_version, Some(1));
            assert_eq!(go.timestamp_ns, ours.timestamp_ns.map(|t| t as i64));
            assert_eq!(go.inet_diag_msg_socket_source_port, ours.idiag_sport.map(u32::from));
            assert_eq!(go.tcp_info_rtt, ours.tcpi_rtt);
            assert_eq!(go.tcp_info_bytes_acked, ours.tcpi_bytes_acked);
            assert_eq!(go.label.as_deref(), ours.label.as_deref());
            assert_eq!(
                go.inet_diag_msg_socket_source.as_ref().map(Vec::len),
                ours.idiag_src.map(|_| 16)
            );
            assert_eq!(go.nsid, None);
            assert_eq!(go.container_id, None);
        }
    }
}

/// protoc's view of proto/xtcp_flat_record_v1.proto states every row of
/// record-v1.tsv (message, number, type, name; enum values; the service's
/// RPCs) and nothing more.
#[test]
fn go_proto_states_what_record_v1_tsv_states() {
    let Some(upstream) = upstream_dir() else { return };
    if !protobuf_available() {
        return;
    }
    let file = describe(&proto(RecordSchema::FlatRecordV1));
    assert_eq!(file["package"], "xtcp_flat_record.v1");
    let messages: HashMap<&str, &Value> = file["messageType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m))
        .collect();
    // "uint32", "repeated XtcpFlatRecord", "CongestionAlgorithm": as the tsv spells a field's type.
    let type_of = |f: &Value| -> String {
        let base = match f["type"].as_str().unwrap() {
            "TYPE_MESSAGE" | "TYPE_ENUM" => f["typeName"].as_str().unwrap().rsplit('.').next().unwrap().to_string(),
            t => t.trim_start_matches("TYPE_").to_lowercase(),
        };
        if f["label"] == "LABEL_REPEATED" {
            format!("repeated {base}")
        } else {
            base
        }
    };
    // (message, number) -> (type, name), for every field protoc saw.
    let mut fields: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for (name, m) in &messages {
        for f in m["field"].as_array().into_iter().flatten() {
            let key = (name.to_string(), f["number"].to_string());
            fields.insert(key, (type_of(f), f["name"].as_str().unwrap().to_string()));
        }
        for e in m["enumType"].as_array().into_iter().flatten() {
            for v in e["value"].as_array().unwrap() {
                let message = format!("{name}.{} (enum)", e["name"].as_str().unwrap());
                let number = v.get("number").cloned().unwrap_or(Value::from(0)).to_string();
                fields.insert((message, number), ("value".into(), v["name"].as_str().unwrap().into()));
            }
        }
    }
    for s in file["service"].as_array().unwrap() {
        for m in s["method"].as_array().unwrap() {
            let side = |ty: &str, streaming: &str| {
                let name = m[ty].as_str().unwrap().rsplit('.').next().unwrap();
                if m[streaming] == true {
                    format!("stream {name}")
                } else {
                    name.to_string()
                }
            };
            let rpc = format!(
                "{}({}) -> {}",
                m["name"].as_str().unwrap(),
                side("inputType", "clientStreaming"),
                side("outputType", "serverStreaming")
            );
            let key = (format!("{} (service)", s["name"].as_str().unwrap()), rpc.clone());
            fields.insert(key, ("rpc".into(), rpc));
        }
    }
    let tsv = std::fs::read_to_string(upstream.join("record-v1.tsv")).unwrap();
    let mut stated = 0;
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let [message, number, ty, name] = cells[..] else {
            panic!("not a 4-column row: {line:?}")
        };
        let key = if ty == "rpc" {
            (message.to_string(), name.to_string())
        } else {
            (message.to_string(), number.to_string())
        };
        let ours = fields
            .remove(&key)
            .unwrap_or_else(|| panic!("our .proto lacks {line:?}"));
        assert_eq!(ours, (ty.to_string(), name.to_string()), "{line:?}");
        stated += 1;
    }
    assert!(fields.is_empty(), "our .proto has more than record-v1.tsv: {fields:?}");
    assert!(stated > 150, "{stated} rows");
    // Every scalar of the record is optional (presence on the wire and in readers).
    for f in messages["XtcpFlatRecord"]["field"].as_array().unwrap() {
        assert_eq!(f["proto3Optional"], true, "{}", f["name"]);
    }
}

/// Python protobuf, with classes generated from our Go `.proto`, reads the
/// protobufList of real captures in `xtcp_flat_record.v1`; every socket's
/// message holds exactly the values our own record of it has (names and
/// conversions as the mapping table says), nothing for the fields we
/// cannot fill; its protoJson and protoText read back to the same messages.
#[test]
fn python_protobuf_reads_our_records_in_the_go_schema() {
    let Some(fixtures) = fixtures_dir() else { return };
    if !protobuf_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let go = ["--record-schema", "xtcp_flat_record.v1"];
    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sockets = 0;
    for (n, capture) in sinks_support::COLLECTION.iter().enumerate() {
        let pcap = fixtures.join(capture);
        let ours = our_records(&decode(&pcap, &["--marshal", "jsonl"]));
        // Python's text format parser takes seconds per thousand records:
        // protoJson and protoText are read for two captures (dctcp and the
        // 7.0 kernel's), protobufList for all.
        let formats: &[&str] = if n % 2 == 1 {
            &["protobufList", "protoJson", "protoText"]
        } else {
            &["protobufList"]
        };
        let mut outputs = Vec::new();
        for &format in formats {
            let path = dir.path().join(format!("{}.{format}", capture.replace('/', "_")));
            std::fs::write(&path, decode(&pcap, &[&go[..], &["--marshal", format]].concat())).unwrap();
            outputs.push((format, path));
        }
        let outputs: Vec<(&str, &Path)> = outputs.iter().map(|(f, p)| (*f, p.as_path())).collect();
        let read = read_protobuf(RecordSchema::FlatRecordV1, &outputs);
        let messages = &read["protobufList"];
        assert_eq!(messages.len(), ours.len(), "{capture}: one message per socket");
        for format in &formats[1..] {
            assert_eq!(&read[*format], messages, "{capture}: {format} reads to other messages");
        }
        for (i, (message, ours)) in messages.iter().zip(&ours).enumerate() {
            for column in COLUMNS {
                let want = expected(column.proto_name, column.source, ours);
                assert_eq!(
                    message.get(column.proto_name),
                    want.as_ref(),
                    "{capture} socket {i}: {} (from {:?})",
                    column.proto_name,
                    column.source
                );
                if want.is_some() {
                    *compared.entry(column.proto_name).or_default() += 1;
                }
            }
            assert!(
                message.keys().all(|k| COLUMNS.iter().any(|c| c.proto_name == k)),
                "{capture} socket {i}: a field outside the table: {message:?}"
            );
        }
        sockets += ours.len();
    }
    println!("{sockets} sockets; fields compared: {compared:?}");
    // The captures exercise every kind of line: plain numbers, strings, the
    // address slots, both conversions, the constants.
    for field in [
        "schema_version",
        "daemon_version",
        "timestamp_ns",
        "hostname",
        "label",
        "tag",
        "location",
        "inet_diag_msg_family",
        "inet_diag_msg_socket_source",
        "inet_diag_msg_socket_destination",
        "inet_diag_msg_socket_source_port",
        "inet_diag_msg_socket_cookie",
        "tcp_info_rtt",
        "tcp_info_bytes_acked",
        "tcp_info_total_rto_time",
        "congestion_algorithm_string",
        "congestion_algorithm_enum",
        "vegas_info_rtt",
        "dctcp_info_alpha",
        "sk_mem_info_rcv_buf",
        "c_group",
    ] {
        assert!(
            compared.get(field).copied().unwrap_or(0) > 0,
            "{field} was never present"
        );
    }
}

/// In our own schema too, Python protobuf (classes from proto/xtcp2.proto)
/// reads protobufList, protoJson and protoText to the same messages, and
/// they are our jsonl records field for field.
#[test]
fn python_protobuf_reads_our_schema_in_every_protobuf_format() {
    let Some(fixtures) = fixtures_dir() else { return };
    if !protobuf_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = fixtures.join(sinks_support::COLLECTION[1]);
    let ours = our_records(&decode(&pcap, &["--marshal", "jsonl"]));
    let mut outputs = Vec::new();
    for format in ["protobufList", "protoJson", "protoText"] {
        let path = dir.path().join(format);
        std::fs::write(&path, decode(&pcap, &["--marshal", format])).unwrap();
        outputs.push((format, path));
    }
    let outputs: Vec<(&str, &Path)> = outputs.iter().map(|(f, p)| (*f, p.as_path())).collect();
    let read = read_protobuf(RecordSchema::Xtcp2, &outputs);
    let messages = &read["protobufList"];
    assert_eq!(&read["protoJson"], messages, "protoJson");
    assert_eq!(&read["protoText"], messages, "protoText");
    assert_eq!(messages.len(), ours.len());
    for (message, ours) in messages.iter().zip(&ours) {
        let mut want = ours.clone();
        for address in ["idiag_src", "idiag_dst"] {
            if let Some(text) = want.get(address).and_then(|v| v.as_str()) {
                let hex = address_hex(text);
                want.insert(address.to_string(), Value::from(hex));
            }
        }
        assert_eq!(message, &want);
    }
}

/// The interpreter and SQL that read a Go-schema protobufList file with
/// ClickHouse: `ProtobufList` with our `.proto` when it holds one envelope.
fn go_protobuf_list_sql(path: &Path, select: &str, filter: &str) -> String {
    format!(
        "SELECT {select} FROM file('{}', 'ProtobufList') {filter} SETTINGS format_schema = '{}:{}'",
        path.display(),
        proto(RecordSchema::FlatRecordV1).display(),
        RecordSchema::FlatRecordV1.row_message()
    )
}

/// What ClickHouse must answer for the aggregate query over `ours`.
const AGGREGATES: &str = "count(), sum(inet_diag_msg_socket_source_port), sum(tcp_info_rtt), \
     countIf(congestion_algorithm_enum = 'CONGESTION_ALGORITHM_DCTCP'), sum(schema_version), \
     min(timestamp_ns), countIf(hostname = 'go-host' AND label = 'rack 7, \"blue\"' AND location = 'line\\nbreak'), \
     countIf(length(inet_diag_msg_socket_source) = 16)";

/// chdb reads a capture's protobufList in `xtcp_flat_record.v1` with our
/// `.proto` (`format_schema = 'xtcp_flat_record_v1.proto:XtcpFlatRecord'`)
/// and agrees with our records of the same sockets: counts, sums, the enum
/// by name, stamps, and the IPv4 addresses read from the 16-byte slot.
#[test]
fn clickhouse_reads_the_go_record_of_a_capture() {
    let Some(fixtures) = fixtures_dir() else { return };
    if !require_python_module(&python(), "chdb", "ClickHouse reads the Go record") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = fixtures.join(sinks_support::COLLECTION[1]);
    let ours = our_records(&decode(&pcap, &["--marshal", "jsonl"]));
    let path = dir.path().join("go.protobufList");
    let bytes = decode(
        &pcap,
        &["--record-schema", "xtcp_flat_record.v1", "--marshal", "protobufList"],
    );
    std::fs::write(&path, bytes).unwrap();
    let sum = |name: &str| ours.iter().filter_map(|r| r.get(name)?.as_u64()).sum::<u64>();
    let n = ours.len();
    let dctcp = ours
        .iter()
        .filter(|r| r.get("cong").and_then(|c| c.as_str()) == Some("dctcp"))
        .count();
    let min_ts = ours.iter().filter_map(|r| r["timestamp_ns"].as_u64()).min().unwrap();
    let with_source = ours.iter().filter(|r| r.contains_key("idiag_src")).count();
    let ipv4: Vec<&str> = ours
        .iter()
        .filter(|r| r["idiag_family"] == 2)
        .map(|r| r["idiag_src"].as_str().unwrap())
        .collect();
    assert!(!ipv4.is_empty() && dctcp > 0, "the capture has IPv4 dctcp sockets");
    let results = clickhouse(&[
        go_protobuf_list_sql(&path, AGGREGATES, ""),
        go_protobuf_list_sql(
            &path,
            "IPv4NumToString(reinterpretAsUInt32(reverse(substring(inet_diag_msg_socket_source, 1, 4))))",
            "WHERE inet_diag_msg_family = 2",
        ),
    ]);
    assert_eq!(
        results[0],
        format!(
            "{n}\t{}\t{}\t{dctcp}\t{n}\t{min_ts}\t{n}\t{with_source}",
            sum("idiag_sport"),
            sum("tcpi_rtt")
        )
    );
    assert_eq!(results[1], ipv4.join("\n"));
}

/// A one-shot daemon run over real loopback sockets, in
/// `xtcp_flat_record.v1` protobufList (one envelope): chdb reads it with
/// our `.proto`, and ClickHouse, Python protobuf and the daemon's own count
/// agree; our listener is there, its address in the 16-byte slot.
#[test]
fn clickhouse_reads_the_go_record_the_daemon_wrote() {
    if !require(Need::Root, DAEMON_CAPABILITIES)
        || !protobuf_available()
        || !require_python_module(&python(), "chdb", "ClickHouse reads the Go record")
    {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dirs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("daemon.protobufList");
    let output = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netlinkers",
            "1",
            "-recordSchema",
            "xtcp_flat_record.v1",
            "--marshal",
            "protobufList",
            "--envelope-flush-rows",
            "1000000",
            "--envelope-flush-bytes",
            "1000000000",
        ])
        .arg("--netns-dirs")
        .arg(dirs.path())
        .arg("--dest")
        .arg(format!("file:{}", path.display()))
        .env("XTCP2_LOG", "info")
        .output();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let rows_sent: usize = log
        .lines()
        .find(|l| l.contains("delivery finished"))
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("rows_sent=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rows_sent in\n{log}"));
    let messages = &read_protobuf(RecordSchema::FlatRecordV1, &[("protobufList", &path)])["protobufList"];
    assert_eq!(messages.len(), rows_sent, "Python protobuf and the daemon disagree");
    let ours = messages
        .iter()
        .find(|m| {
            m.get("inet_diag_msg_socket_source_port") == Some(&Value::from(port))
                && m.get("inet_diag_msg_state") == Some(&Value::from(10))
        })
        .expect("our listener");
    assert_eq!(ours["inet_diag_msg_socket_source"], address_slot_hex("127.0.0.1"));
    assert_eq!(ours["schema_version"], 1);
    let sum = |name: &str| messages.iter().filter_map(|m| m.get(name)?.as_u64()).sum::<u64>();
    let results = clickhouse(&[go_protobuf_list_sql(
        &path,
        &format!(
            "count(), sum(inet_diag_msg_socket_source_port), sum(tcp_info_segs_out), \
             countIf(inet_diag_msg_socket_source_port = {port} AND inet_diag_msg_state = 10)"
        ),
        "",
    )]);
    assert_eq!(
        results[0],
        format!(
            "{rows_sent}\t{}\t{}\t1",
            sum("inet_diag_msg_socket_source_port"),
            sum("tcp_info_segs_out")
        )
    );
    drop(listener);
}

/// csv and jsonl in `xtcp_flat_record.v1` use the Go record's proto3 JSON
/// names, `--columns` takes them, the unset fields stay empty or absent,
/// and the enum reads as its name in csv.
#[test]
fn text_formats_use_the_go_names() {
    let Some(fixtures) = fixtures_dir() else { return };
    let pcap = fixtures.join(sinks_support::COLLECTION[1]);
    let go = ["--record-schema", "xtcp_flat_record.v1"];
    let ours = our_records(&decode(&pcap, &["--marshal", "jsonl"]));
    let jsonl = our_records(&decode(&pcap, &[&go[..], &["--marshal", "jsonl"]].concat()));
    assert_eq!(jsonl.len(), ours.len());
    for (go, ours) in jsonl.iter().zip(&ours) {
        assert_eq!(go["inetDiagMsgSocketSourcePort"], ours["idiag_sport"]);
        assert_eq!(go["inetDiagMsgSocketSource"], ours["idiag_src"]);
        assert_eq!(go.get("tcpInfoRtt"), ours.get("tcpi_rtt"));
        assert_eq!(go["schemaVersion"], 1);
        assert!(!go.contains_key("nsid") && !go.contains_key("uplink1Ifname"), "{go:?}");
        assert!(!go.contains_key("idiag_sport") && !go.contains_key("pollSeq"));
    }
    let csv = decode(
        &pcap,
        &[
            &go[..],
            &[
                "--marshal",
                "csv",
                "--columns",
                "inetDiagMsgSocketSourcePort,congestionAlgorithmEnum,inetDiagMsgState,nsid",
            ],
        ]
        .concat(),
    );
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("inetDiagMsgSocketSourcePort,congestionAlgorithmEnum,inetDiagMsgState,nsid")
    );
    let first_dctcp = ours
        .iter()
        .position(|r| r.get("cong").and_then(|c| c.as_str()) == Some("dctcp") && r["idiag_state"] == 1)
        .expect("an established dctcp socket");
    assert_eq!(
        lines.nth(first_dctcp),
        Some(format!("{},CONGESTION_ALGORITHM_DCTCP,ESTAB,", ours[first_dctcp]["idiag_sport"]).as_str())
    );
}

/// `--record-schema` is an output flag like `--marshal`: the Go spelling
/// `-recordSchema` and `XTCP2_RECORD_SCHEMA` choose it too, and a wrong
/// value is a usage error (exit 2) naming the valid ones.
#[test]
fn record_schema_takes_its_go_spelling_and_environment() {
    let Some(fixtures) = fixtures_dir() else { return };
    let pcap = fixtures.join(sinks_support::COLLECTION[0]);
    let first_line = |out: &[u8]| -> Message {
        let text = std::str::from_utf8(out).unwrap();
        serde_json::from_str(text.lines().next().expect("a record")).unwrap()
    };
    let go = first_line(&decode(&pcap, &["-recordSchema", "xtcp_flat_record.v1"]));
    assert_eq!(go["schemaVersion"], 1, "{go:?}");
    let output = Xtcp2::new()
        .stdout(Stdio::piped())
        .env("XTCP2_RECORD_SCHEMA", "xtcp_flat_record.v1")
        .arg("decode")
        .arg("--pcap")
        .arg(&pcap)
        .output();
    assert!(output.status.success());
    assert_eq!(first_line(&output.stdout)["schemaVersion"], 1);
    let output = Xtcp2::new()
        .args(["decode", "--record-schema", "v1", "--pcap"])
        .arg(&pcap)
        .output();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown --record-schema \"v1\"; valid: xtcp2, xtcp_flat_record.v1"),
        "{stderr}"
    );
}
