//! The ClickHouse contract of our record: the DDL shipped in
//! `docs/clickhouse/` (a MergeTree table with a typed column per field, the
//! Kafka engine table reading `kafka_format = 'ProtobufList'`, and the
//! materialized view between them), generated from the field table so it
//! cannot drift from `proto/xtcp2.proto` (a test keeps the files equal to
//! this and runs the MergeTree DDL and the view's query in ClickHouse).
//!
//! This module only writes text; it never talks to ClickHouse.

use crate::record::{Column, FieldKind, FIELDS};

/// Days a row is kept before the TTL deletes it (edit in the DDL to taste).
pub const TTL_DAYS: u32 = 30;

/// The ClickHouse type of one of our record's columns. Every column is
/// non-Nullable: a field the kernel did not send reads as 0 or "" (the
/// protobuf default), which keeps the table compact and fast; `--deserializers`
/// says which groups are filled at all.
pub fn column_type(column: &Column) -> &'static str {
    match column.kind {
        FieldKind::TimestampNs => "DateTime64(9, 'UTC')",
        FieldKind::TcpState | FieldKind::Family => "UInt8",
        FieldKind::Enum => "UInt16",
        FieldKind::Uint => "UInt64",
        // Repeated across rows: host, labels, namespace and algorithm names.
        FieldKind::Str => "LowCardinality(String)",
        // The raw 4 or 16 bytes; IPv6NumToString / IPv4NumToString(reinterpretAsUInt32(reverse(...))) read them.
        FieldKind::Addr | FieldKind::AddrSlot => "String",
    }
}

/// The type a column has in the Kafka engine table, as the protobuf field
/// is read: ClickHouse reads an integer into a DateTime64 as *seconds*, so
/// the nanosecond timestamp is read as the integer it is and converted by
/// the view ([`ingest_select`]).
fn wire_type(column: &Column) -> &'static str {
    match column.kind {
        FieldKind::TimestampNs => "UInt64",
        _ => column_type(column),
    }
}

/// The column list, one `name Type` per line.
fn columns(type_of: fn(&Column) -> &'static str) -> String {
    FIELDS
        .iter()
        .map(|c| format!("    `{}` {}", c.name, type_of(c)))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// `docs/clickhouse/records.sql`: the database and the MergeTree table.
pub fn merge_tree_ddl() -> String {
    format!(
        "-- Generated from src/record/fields.rs (src/format/clickhouse.rs); do not edit by hand:\n\
         -- XTCP2_BLESS=1 cargo test --test kafka clickhouse_ddl_is_generated rewrites it.\n\
         --\n\
         -- One row per socket per poll. ORDER BY (hostname, timestamp_ns) keeps\n\
         -- each host's rows together in time order: \"host H between T1 and T2\"\n\
         -- reads one narrow range. Partitions are days, so the TTL drops whole parts.\n\
         CREATE DATABASE IF NOT EXISTS xtcp2;\n\
         \n\
         CREATE TABLE IF NOT EXISTS xtcp2.records\n(\n{columns}\n)\n\
         ENGINE = MergeTree\n\
         PARTITION BY toDate(timestamp_ns)\n\
         ORDER BY (hostname, timestamp_ns)\n\
         TTL toDateTime(timestamp_ns) + INTERVAL {TTL_DAYS} DAY;\n",
        columns = columns(column_type)
    )
}

/// The materialized view's SELECT, reading from `source` (the Kafka engine
/// table; the tests put a `file(...)` of consumed messages there).
pub fn ingest_select(source: &str) -> String {
    let names: Vec<String> = FIELDS
        .iter()
        .map(|c| match c.kind {
            FieldKind::TimestampNs => format!("fromUnixTimestamp64Nano(toInt64(`{0}`), 'UTC') AS `{0}`", c.name),
            _ => format!("`{}`", c.name),
        })
        .collect();
    format!("SELECT {} FROM {source}", names.join(", "))
}

/// `docs/clickhouse/kafka.sql`: the Kafka engine table and the view that
/// moves what it reads into `xtcp2.records`.
pub fn kafka_ddl() -> String {
    format!(
        "-- Generated from src/record/fields.rs (src/format/clickhouse.rs); do not edit by hand.\n\
         -- Run records.sql first. Put proto/xtcp2.proto in ClickHouse's format_schema_path\n\
         -- (/var/lib/clickhouse/format_schemas/ by default) and set the brokers and topic.\n\
         --\n\
         -- Each Kafka message is one xtcp2 envelope: one length-delimited Envelope of\n\
         -- many Records, exactly what kafka_format = 'ProtobufList' reads.\n\
         CREATE TABLE IF NOT EXISTS xtcp2.records_kafka\n(\n{columns}\n)\n\
         ENGINE = Kafka\n\
         SETTINGS\n    \
             kafka_broker_list = 'redpanda-0:9092',\n    \
             kafka_topic_list = 'xtcp',\n    \
             kafka_group_name = 'clickhouse-xtcp2',\n    \
             kafka_format = 'ProtobufList',\n    \
             kafka_schema = 'xtcp2.proto:Record',\n    \
             kafka_num_consumers = 1;\n\
         \n\
         CREATE MATERIALIZED VIEW IF NOT EXISTS xtcp2.records_mv TO xtcp2.records AS\n\
         {select};\n",
        columns = columns(wire_type),
        select = ingest_select("xtcp2.records_kafka")
    )
}
