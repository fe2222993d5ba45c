//! The Go daemon's record, `xtcp_flat_record.v1.XtcpFlatRecord`, read from
//! ours: the one mapping table behind `--record-schema xtcp_flat_record.v1`.
//!
//! Each line of [`define_go_v1!`] below is one field of the Go record, as
//! `shared/upstream/record-v1.tsv` states it (name, protobuf type and
//! number), then its proto3 JSON name (the output name of jsonl, msgpack,
//! csv/tsv and `--columns` in this schema), how formats render it, and
//! where its value comes from:
//!
//! - `[field x]`: our field `x` as it is (numbers keep their value;
//!   addresses become the kernel's 16-byte `inet_diag_sockid` slot, the
//!   column's kind [`FieldKind::AddrSlot`] says so);
//! - `[with f(x, y)]`: the conversion `f` of our fields `x`, `y` (packing,
//!   an enum, or a constant of this daemon);
//! - `[unset]`: ours has nothing to fill it with, so it is never written
//!   (absent in JSON, an empty csv cell, no bytes in protobuf; not a zero).
//!
//! Every encoder, the `.proto` file (`proto/xtcp_flat_record_v1.proto`,
//! generated and checked by a test) and the mapping table of
//! `docs/record.md` come from this table, so no format spells a Go name.
//! Fields of ours that no line reads are left out of this schema.

use std::net::IpAddr;

use super::{AsValue, Column, EnumType, FieldKind, FieldVisitor, ProtoType, Record, Value};

/// `schema_version`: the major version of the Go record this schema writes
/// (`xtcp_flat_record.v1`).
pub const SCHEMA_VERSION: u64 = 1;

/// `daemon_version`: which daemon wrote the record, and its version.
pub const DAEMON_VERSION: &str = concat!("xtcp2-rs ", env!("CARGO_PKG_VERSION"));

/// `XtcpFlatRecord.CongestionAlgorithm`, values by number.
pub static CONGESTION_ALGORITHM: EnumType = EnumType {
    name: "CongestionAlgorithm",
    values: &[
        "CONGESTION_ALGORITHM_UNSPECIFIED",
        "CONGESTION_ALGORITHM_CUBIC",
        "CONGESTION_ALGORITHM_DCTCP",
        "CONGESTION_ALGORITHM_VEGAS",
        "CONGESTION_ALGORITHM_PRAGUE",
        "CONGESTION_ALGORITHM_BBR1",
        "CONGESTION_ALGORITHM_BBR2",
        "CONGESTION_ALGORITHM_BBR3",
    ],
};

/// The protobuf type of a table line.
macro_rules! proto_type {
    (uint32) => {
        ProtoType::Uint32
    };
    (uint64) => {
        ProtoType::Uint64
    };
    (int64) => {
        ProtoType::Int64
    };
    (string) => {
        ProtoType::String
    };
    (bytes) => {
        ProtoType::Bytes
    };
    (CongestionAlgorithm) => {
        ProtoType::Enum(&CONGESTION_ALGORITHM)
    };
}

/// The fields of ours a line reads, for the docs and the tests.
macro_rules! source_text {
    ([field $field:ident]) => {
        stringify!($field)
    };
    ([with $convert:ident()]) => {
        ""
    };
    // One stringify per name: stringify! of a long list breaks lines.
    ([with $convert:ident($first:ident $(, $field:ident)*)]) => {
        concat!(stringify!($first) $(, ", ", stringify!($field))*)
    };
    ([unset]) => {
        ""
    };
}

/// Reads one line's value from `record` and hands it to `visitor`.
macro_rules! read_source {
    ($record:ident, $visitor:ident, $column:expr, [field $field:ident]) => {
        if let Some(value) = &$record.$field {
            $visitor.field($column, value.as_value());
        }
    };
    ($record:ident, $visitor:ident, $column:expr, [with $convert:ident($($field:ident),*)]) => {
        if let Some(value) = $convert($record) {
            $visitor.field($column, value);
        }
    };
    ($record:ident, $visitor:ident, $column:expr, [unset]) => {};
}

macro_rules! define_go_v1 {
    ($( $(#[doc = $doc:literal])? $name:ident : $ptype:ident = $tag:literal, $json:literal, $kind:ident <- $source:tt; )*) => {
        /// Each column's position in [`COLUMNS`].
        #[allow(non_camel_case_types)]
        enum Position { $( $name, )* }

        #[allow(non_upper_case_globals)]
        mod meta {
            use super::*;
            $( pub static $name: Column = Column {
                name: $json,
                proto_name: stringify!($name),
                tag: $tag,
                index: Position::$name as u16,
                kind: FieldKind::$kind,
                proto_type: proto_type!($ptype),
                source: source_text!($source),
                unit: "",
                doc: concat!("" $(, $doc)?).trim_ascii(),
            }; )*
        }

        /// Every field of `XtcpFlatRecord`, in ascending number.
        pub static COLUMNS: &[&Column] = &[ $( &meta::$name, )* ];

        /// Hands every column of `record` that has a value to `visitor`.
        #[inline(always)]
        pub(crate) fn visit<V: FieldVisitor>(record: &Record, visitor: &mut V) {
            $( read_source!(record, visitor, &meta::$name, $source); )*
        }
    };
}

define_go_v1! {
    /// This daemon's record version, always 1.
    schema_version: uint32 = 1, "schemaVersion", Uint <- [with schema_version()];
    /// `xtcp2-rs` and this daemon's version.
    daemon_version: string = 2, "daemonVersion", Str <- [with daemon_version()];
    timestamp_ns: int64 = 10, "timestampNs", TimestampNs <- [field timestamp_ns];
    hostname: string = 20, "hostname", Str <- [field hostname];
    location: string = 21, "location", Str <- [field location];
    netns: string = 30, "netns", Str <- [field netns_name];
    netns_inode: uint64 = 31, "netnsInode", Uint <- [field netns_inode];
    nsid: uint32 = 32, "nsid", Uint <- [field nsid];
    container_id: string = 40, "containerId", Str <- [field container_id];
    container_runtime: string = 41, "containerRuntime", Str <- [field container_runtime];
    container_name: string = 42, "containerName", Str <- [field container_name];
    container_image: string = 43, "containerImage", Str <- [field container_image];
    label: string = 50, "label", Str <- [field label];
    tag: string = 51, "tag", Str <- [field tag];
    /// Unset: the Go daemon's count within one netlink read; ours numbers polls (`poll_seq`).
    record_counter: uint64 = 60, "recordCounter", Uint <- [unset];
    /// Unset: the Go daemon's netlink socket descriptor.
    socket_fd: uint64 = 61, "socketFd", Uint <- [unset];
    /// Unset: the Go daemon's reader number.
    netlinker_id: uint64 = 62, "netlinkerId", Uint <- [unset];
    uplink1_ifname: string = 100, "uplink1Ifname", Str <- [field uplink1_ifname];
    uplink1_nic_driver: string = 101, "uplink1NicDriver", Str <- [field uplink1_nic_driver];
    uplink1_nic_model: string = 102, "uplink1NicModel", Str <- [field uplink1_nic_model];
    uplink1_nic_pci_vendor: uint32 = 103, "uplink1NicPciVendor", Uint <- [field uplink1_nic_pci_vendor];
    uplink1_nic_pci_device: uint32 = 104, "uplink1NicPciDevice", Uint <- [field uplink1_nic_pci_device];
    uplink1_nic_bus_info: string = 105, "uplink1NicBusInfo", Str <- [field uplink1_nic_bus_info];
    uplink1_nic_speed_mbps: uint32 = 106, "uplink1NicSpeedMbps", Uint <- [field uplink1_nic_speed_mbps];
    uplink1_nic_fw_version: string = 107, "uplink1NicFwVersion", Str <- [field uplink1_nic_fw_version];
    uplink1_lldp_chassis_name: string = 120, "uplink1LldpChassisName", Str <- [field uplink1_lldp_chassis_name];
    uplink1_lldp_chassis_id: string = 121, "uplink1LldpChassisId", Str <- [field uplink1_lldp_chassis_id];
    uplink1_lldp_mgmt_ip: string = 122, "uplink1LldpMgmtIp", Str <- [field uplink1_lldp_mgmt_ip];
    uplink1_lldp_port_id: string = 123, "uplink1LldpPortId", Str <- [field uplink1_lldp_port_id];
    uplink1_lldp_port_descr: string = 124, "uplink1LldpPortDescr", Str <- [field uplink1_lldp_port_descr];
    uplink2_ifname: string = 200, "uplink2Ifname", Str <- [field uplink2_ifname];
    uplink2_nic_driver: string = 201, "uplink2NicDriver", Str <- [field uplink2_nic_driver];
    uplink2_nic_model: string = 202, "uplink2NicModel", Str <- [field uplink2_nic_model];
    uplink2_nic_pci_vendor: uint32 = 203, "uplink2NicPciVendor", Uint <- [field uplink2_nic_pci_vendor];
    uplink2_nic_pci_device: uint32 = 204, "uplink2NicPciDevice", Uint <- [field uplink2_nic_pci_device];
    uplink2_nic_bus_info: string = 205, "uplink2NicBusInfo", Str <- [field uplink2_nic_bus_info];
    uplink2_nic_speed_mbps: uint32 = 206, "uplink2NicSpeedMbps", Uint <- [field uplink2_nic_speed_mbps];
    uplink2_nic_fw_version: string = 207, "uplink2NicFwVersion", Str <- [field uplink2_nic_fw_version];
    uplink2_lldp_chassis_name: string = 220, "uplink2LldpChassisName", Str <- [field uplink2_lldp_chassis_name];
    uplink2_lldp_chassis_id: string = 221, "uplink2LldpChassisId", Str <- [field uplink2_lldp_chassis_id];
    uplink2_lldp_mgmt_ip: string = 222, "uplink2LldpMgmtIp", Str <- [field uplink2_lldp_mgmt_ip];
    uplink2_lldp_port_id: string = 223, "uplink2LldpPortId", Str <- [field uplink2_lldp_port_id];
    uplink2_lldp_port_descr: string = 224, "uplink2LldpPortDescr", Str <- [field uplink2_lldp_port_descr];
    inet_diag_msg_family: uint32 = 1001, "inetDiagMsgFamily", Family <- [field idiag_family];
    inet_diag_msg_state: uint32 = 1002, "inetDiagMsgState", TcpState <- [field idiag_state];
    inet_diag_msg_timer: uint32 = 1003, "inetDiagMsgTimer", Uint <- [field idiag_timer];
    inet_diag_msg_retrans: uint32 = 1004, "inetDiagMsgRetrans", Uint <- [field idiag_retrans];
    inet_diag_msg_socket_source_port: uint32 = 1005, "inetDiagMsgSocketSourcePort", Uint <- [field idiag_sport];
    inet_diag_msg_socket_destination_port: uint32 = 1006, "inetDiagMsgSocketDestinationPort", Uint <- [field idiag_dport];
    /// 16 bytes as in `inet_diag_sockid`: an IPv4 address in the first 4, zeros after.
    inet_diag_msg_socket_source: bytes = 1007, "inetDiagMsgSocketSource", AddrSlot <- [field idiag_src];
    /// 16 bytes as in `inet_diag_sockid`: an IPv4 address in the first 4, zeros after.
    inet_diag_msg_socket_destination: bytes = 1008, "inetDiagMsgSocketDestination", AddrSlot <- [field idiag_dst];
    inet_diag_msg_socket_interface: uint32 = 1009, "inetDiagMsgSocketInterface", Uint <- [field idiag_if];
    inet_diag_msg_socket_cookie: uint64 = 1010, "inetDiagMsgSocketCookie", Uint <- [field idiag_cookie];
    /// Unset: no ASN lookup.
    inet_diag_msg_socket_dest_asn: uint64 = 1011, "inetDiagMsgSocketDestAsn", Uint <- [unset];
    /// Unset: no ASN lookup.
    inet_diag_msg_socket_next_hop_asn: uint64 = 1012, "inetDiagMsgSocketNextHopAsn", Uint <- [unset];
    inet_diag_msg_expires: uint32 = 1013, "inetDiagMsgExpires", Uint <- [field idiag_expires];
    inet_diag_msg_rqueue: uint32 = 1014, "inetDiagMsgRqueue", Uint <- [field idiag_rqueue];
    inet_diag_msg_wqueue: uint32 = 1015, "inetDiagMsgWqueue", Uint <- [field idiag_wqueue];
    inet_diag_msg_uid: uint32 = 1016, "inetDiagMsgUid", Uint <- [field idiag_uid];
    inet_diag_msg_inode: uint32 = 1017, "inetDiagMsgInode", Uint <- [field idiag_inode];
    mem_info_rmem: uint32 = 1101, "memInfoRmem", Uint <- [field idiag_rmem];
    mem_info_wmem: uint32 = 1102, "memInfoWmem", Uint <- [field idiag_wmem];
    mem_info_fmem: uint32 = 1103, "memInfoFmem", Uint <- [field idiag_fmem];
    mem_info_tmem: uint32 = 1104, "memInfoTmem", Uint <- [field idiag_tmem];
    tcp_info_state: uint32 = 1201, "tcpInfoState", TcpState <- [field tcpi_state];
    tcp_info_ca_state: uint32 = 1202, "tcpInfoCaState", Uint <- [field tcpi_ca_state];
    tcp_info_retransmits: uint32 = 1203, "tcpInfoRetransmits", Uint <- [field tcpi_retransmits];
    tcp_info_probes: uint32 = 1204, "tcpInfoProbes", Uint <- [field tcpi_probes];
    tcp_info_backoff: uint32 = 1205, "tcpInfoBackoff", Uint <- [field tcpi_backoff];
    tcp_info_options: uint32 = 1206, "tcpInfoOptions", Uint <- [field tcpi_options];
    tcp_info_send_scale: uint32 = 1207, "tcpInfoSendScale", Uint <- [field tcpi_snd_wscale];
    tcp_info_rcv_scale: uint32 = 1208, "tcpInfoRcvScale", Uint <- [field tcpi_rcv_wscale];
    tcp_info_delivery_rate_app_limited: uint32 = 1209, "tcpInfoDeliveryRateAppLimited", Uint <- [field tcpi_delivery_rate_app_limited];
    tcp_info_fast_open_client_failed: uint32 = 1210, "tcpInfoFastOpenClientFailed", Uint <- [field tcpi_fastopen_client_fail];
    tcp_info_rto: uint32 = 1215, "tcpInfoRto", Uint <- [field tcpi_rto];
    tcp_info_ato: uint32 = 1216, "tcpInfoAto", Uint <- [field tcpi_ato];
    tcp_info_snd_mss: uint32 = 1217, "tcpInfoSndMss", Uint <- [field tcpi_snd_mss];
    tcp_info_rcv_mss: uint32 = 1218, "tcpInfoRcvMss", Uint <- [field tcpi_rcv_mss];
    tcp_info_unacked: uint32 = 1219, "tcpInfoUnacked", Uint <- [field tcpi_unacked];
    tcp_info_sacked: uint32 = 1220, "tcpInfoSacked", Uint <- [field tcpi_sacked];
    tcp_info_lost: uint32 = 1221, "tcpInfoLost", Uint <- [field tcpi_lost];
    tcp_info_retrans: uint32 = 1222, "tcpInfoRetrans", Uint <- [field tcpi_retrans];
    tcp_info_fackets: uint32 = 1223, "tcpInfoFackets", Uint <- [field tcpi_fackets];
    tcp_info_last_data_sent: uint32 = 1224, "tcpInfoLastDataSent", Uint <- [field tcpi_last_data_sent];
    tcp_info_last_ack_sent: uint32 = 1225, "tcpInfoLastAckSent", Uint <- [field tcpi_last_ack_sent];
    tcp_info_last_data_recv: uint32 = 1226, "tcpInfoLastDataRecv", Uint <- [field tcpi_last_data_recv];
    tcp_info_last_ack_recv: uint32 = 1227, "tcpInfoLastAckRecv", Uint <- [field tcpi_last_ack_recv];
    tcp_info_pmtu: uint32 = 1228, "tcpInfoPmtu", Uint <- [field tcpi_pmtu];
    tcp_info_rcv_ssthresh: uint32 = 1229, "tcpInfoRcvSsthresh", Uint <- [field tcpi_rcv_ssthresh];
    tcp_info_rtt: uint32 = 1230, "tcpInfoRtt", Uint <- [field tcpi_rtt];
    tcp_info_rtt_var: uint32 = 1231, "tcpInfoRttVar", Uint <- [field tcpi_rttvar];
    tcp_info_snd_ssthresh: uint32 = 1232, "tcpInfoSndSsthresh", Uint <- [field tcpi_snd_ssthresh];
    tcp_info_snd_cwnd: uint32 = 1233, "tcpInfoSndCwnd", Uint <- [field tcpi_snd_cwnd];
    tcp_info_adv_mss: uint32 = 1234, "tcpInfoAdvMss", Uint <- [field tcpi_advmss];
    tcp_info_reordering: uint32 = 1235, "tcpInfoReordering", Uint <- [field tcpi_reordering];
    tcp_info_rcv_rtt: uint32 = 1236, "tcpInfoRcvRtt", Uint <- [field tcpi_rcv_rtt];
    tcp_info_rcv_space: uint32 = 1237, "tcpInfoRcvSpace", Uint <- [field tcpi_rcv_space];
    tcp_info_total_retrans: uint32 = 1238, "tcpInfoTotalRetrans", Uint <- [field tcpi_total_retrans];
    tcp_info_pacing_rate: uint64 = 1239, "tcpInfoPacingRate", Uint <- [field tcpi_pacing_rate];
    tcp_info_max_pacing_rate: uint64 = 1240, "tcpInfoMaxPacingRate", Uint <- [field tcpi_max_pacing_rate];
    tcp_info_bytes_acked: uint64 = 1241, "tcpInfoBytesAcked", Uint <- [field tcpi_bytes_acked];
    tcp_info_bytes_received: uint64 = 1242, "tcpInfoBytesReceived", Uint <- [field tcpi_bytes_received];
    tcp_info_segs_out: uint32 = 1243, "tcpInfoSegsOut", Uint <- [field tcpi_segs_out];
    tcp_info_segs_in: uint32 = 1244, "tcpInfoSegsIn", Uint <- [field tcpi_segs_in];
    tcp_info_not_sent_bytes: uint32 = 1245, "tcpInfoNotSentBytes", Uint <- [field tcpi_notsent_bytes];
    tcp_info_min_rtt: uint32 = 1246, "tcpInfoMinRtt", Uint <- [field tcpi_min_rtt];
    tcp_info_data_segs_in: uint32 = 1247, "tcpInfoDataSegsIn", Uint <- [field tcpi_data_segs_in];
    tcp_info_data_segs_out: uint32 = 1248, "tcpInfoDataSegsOut", Uint <- [field tcpi_data_segs_out];
    tcp_info_delivery_rate: uint64 = 1249, "tcpInfoDeliveryRate", Uint <- [field tcpi_delivery_rate];
    tcp_info_busy_time: uint64 = 1250, "tcpInfoBusyTime", Uint <- [field tcpi_busy_time];
    tcp_info_rwnd_limited: uint64 = 1251, "tcpInfoRwndLimited", Uint <- [field tcpi_rwnd_limited];
    tcp_info_sndbuf_limited: uint64 = 1252, "tcpInfoSndbufLimited", Uint <- [field tcpi_sndbuf_limited];
    tcp_info_delivered: uint32 = 1253, "tcpInfoDelivered", Uint <- [field tcpi_delivered];
    tcp_info_delivered_ce: uint32 = 1254, "tcpInfoDeliveredCe", Uint <- [field tcpi_delivered_ce];
    tcp_info_bytes_sent: uint64 = 1255, "tcpInfoBytesSent", Uint <- [field tcpi_bytes_sent];
    tcp_info_bytes_retrans: uint64 = 1256, "tcpInfoBytesRetrans", Uint <- [field tcpi_bytes_retrans];
    tcp_info_dsack_dups: uint32 = 1257, "tcpInfoDsackDups", Uint <- [field tcpi_dsack_dups];
    tcp_info_reord_seen: uint32 = 1258, "tcpInfoReordSeen", Uint <- [field tcpi_reord_seen];
    tcp_info_rcv_ooopack: uint32 = 1259, "tcpInfoRcvOoopack", Uint <- [field tcpi_rcv_ooopack];
    tcp_info_snd_wnd: uint32 = 1260, "tcpInfoSndWnd", Uint <- [field tcpi_snd_wnd];
    tcp_info_rcv_wnd: uint32 = 1261, "tcpInfoRcvWnd", Uint <- [field tcpi_rcv_wnd];
    tcp_info_rehash: uint32 = 1262, "tcpInfoRehash", Uint <- [field tcpi_rehash];
    tcp_info_total_rto: uint32 = 1263, "tcpInfoTotalRto", Uint <- [field tcpi_total_rto];
    tcp_info_total_rto_recoveries: uint32 = 1264, "tcpInfoTotalRtoRecoveries", Uint <- [field tcpi_total_rto_recoveries];
    tcp_info_total_rto_time: uint32 = 1265, "tcpInfoTotalRtoTime", Uint <- [field tcpi_total_rto_time];
    congestion_algorithm_string: string = 1300, "congestionAlgorithmString", Str <- [field cong];
    /// The kernel's name: cubic, dctcp, vegas, prague, bbr (BBR1), bbr2, bbr3; unset for any other.
    congestion_algorithm_enum: CongestionAlgorithm = 1301, "congestionAlgorithmEnum", Enum <- [with congestion_algorithm(cong)];
    type_of_service: uint32 = 1401, "typeOfService", Uint <- [field tos];
    traffic_class: uint32 = 1402, "trafficClass", Uint <- [field tclass];
    sk_mem_info_rmem_alloc: uint32 = 1501, "skMemInfoRmemAlloc", Uint <- [field skmem_rmem_alloc];
    sk_mem_info_rcv_buf: uint32 = 1502, "skMemInfoRcvBuf", Uint <- [field skmem_rcvbuf];
    sk_mem_info_wmem_alloc: uint32 = 1503, "skMemInfoWmemAlloc", Uint <- [field skmem_wmem_alloc];
    sk_mem_info_snd_buf: uint32 = 1504, "skMemInfoSndBuf", Uint <- [field skmem_sndbuf];
    sk_mem_info_fwd_alloc: uint32 = 1505, "skMemInfoFwdAlloc", Uint <- [field skmem_fwd_alloc];
    sk_mem_info_wmem_queued: uint32 = 1506, "skMemInfoWmemQueued", Uint <- [field skmem_wmem_queued];
    sk_mem_info_optmem: uint32 = 1507, "skMemInfoOptmem", Uint <- [field skmem_optmem];
    sk_mem_info_backlog: uint32 = 1508, "skMemInfoBacklog", Uint <- [field skmem_backlog];
    sk_mem_info_drops: uint32 = 1509, "skMemInfoDrops", Uint <- [field skmem_drops];
    shutdown_state: uint32 = 1600, "shutdownState", Uint <- [field shutdown];
    vegas_info_enabled: uint32 = 1701, "vegasInfoEnabled", Uint <- [field tcpv_enabled];
    vegas_info_rtt_cnt: uint32 = 1702, "vegasInfoRttCnt", Uint <- [field tcpv_rttcnt];
    vegas_info_rtt: uint32 = 1703, "vegasInfoRtt", Uint <- [field tcpv_rtt];
    vegas_info_min_rtt: uint32 = 1704, "vegasInfoMinRtt", Uint <- [field tcpv_minrtt];
    dctcp_info_enabled: uint32 = 1801, "dctcpInfoEnabled", Uint <- [field dctcp_enabled];
    dctcp_info_ce_state: uint32 = 1802, "dctcpInfoCeState", Uint <- [field dctcp_ce_state];
    dctcp_info_alpha: uint32 = 1803, "dctcpInfoAlpha", Uint <- [field dctcp_alpha];
    dctcp_info_ab_ecn: uint32 = 1804, "dctcpInfoAbEcn", Uint <- [field dctcp_ab_ecn];
    dctcp_info_ab_tot: uint32 = 1805, "dctcpInfoAbTot", Uint <- [field dctcp_ab_tot];
    bbr_info_bw_lo: uint32 = 1901, "bbrInfoBwLo", Uint <- [field bbr_bw_lo];
    bbr_info_bw_hi: uint32 = 1902, "bbrInfoBwHi", Uint <- [field bbr_bw_hi];
    bbr_info_min_rtt: uint32 = 1903, "bbrInfoMinRtt", Uint <- [field bbr_min_rtt];
    bbr_info_pacing_gain: uint32 = 1904, "bbrInfoPacingGain", Uint <- [field bbr_pacing_gain];
    bbr_info_cwnd_gain: uint32 = 1905, "bbrInfoCwndGain", Uint <- [field bbr_cwnd_gain];
    class_id: uint32 = 2001, "classId", Uint <- [field class_id];
    /// The kernel's `struct inet_diag_sockopt` as a little-endian 16-bit word: bit 0 recverr, 1 is_icsk, 2 freebind, 3 hdrincl, 4 mc_loop, 5 transparent, 6 mc_all, 7 nodefrag, 8 bind_address_no_port, 9 recverr_rfc4884, 10 defer_connect.
    sock_opt: uint32 = 2002, "sockOpt", Uint <- [with sock_opt(sockopt_recverr, sockopt_is_icsk, sockopt_freebind, sockopt_hdrincl, sockopt_mc_loop, sockopt_transparent, sockopt_mc_all, sockopt_nodefrag, sockopt_bind_address_no_port, sockopt_recverr_rfc4884, sockopt_defer_connect)];
    c_group: uint64 = 2103, "cGroup", Uint <- [field cgroup_id];
}

/// `schema_version`: always [`SCHEMA_VERSION`].
#[inline(always)]
fn schema_version(_: &Record) -> Option<Value<'static>> {
    Some(Value::Uint(SCHEMA_VERSION))
}

/// `daemon_version`: always [`DAEMON_VERSION`].
#[inline(always)]
fn daemon_version(_: &Record) -> Option<Value<'static>> {
    Some(Value::Str(DAEMON_VERSION))
}

/// The enum number of the kernel's congestion control name, `None` for a
/// name the enum has no value for (reno, htcp, ...): the string field
/// still carries it.
#[inline]
fn congestion_algorithm(record: &Record) -> Option<Value<'static>> {
    let number = match record.cong.as_ref()?.as_str() {
        "cubic" => 1,
        "dctcp" => 2,
        "vegas" => 3,
        "prague" => 4,
        // Mainline Linux's `bbr` is BBR version 1.
        "bbr" => 5,
        "bbr2" => 6,
        "bbr3" => 7,
        _ => return None,
    };
    Some(Value::Uint(number))
}

/// The `INET_DIAG_SOCKOPT` bits packed back into the kernel's 16-bit
/// `struct inet_diag_sockopt` (bit-fields fill from the lowest bit on
/// little-endian Linux). The decoder sets all eleven or none.
#[inline]
fn sock_opt(record: &Record) -> Option<Value<'static>> {
    let bits = [
        record.sockopt_recverr?,
        record.sockopt_is_icsk?,
        record.sockopt_freebind?,
        record.sockopt_hdrincl?,
        record.sockopt_mc_loop?,
        record.sockopt_transparent?,
        record.sockopt_mc_all?,
        record.sockopt_nodefrag?,
        record.sockopt_bind_address_no_port?,
        record.sockopt_recverr_rfc4884?,
        record.sockopt_defer_connect?,
    ];
    let word = bits
        .iter()
        .enumerate()
        .fold(0u64, |word, (bit, &set)| word | (u64::from(set & 1) << bit));
    Some(Value::Uint(word))
}

/// An address as `inet_diag_sockid` holds it: 16 bytes, an IPv4 address
/// in the first four and zeros after, an IPv6 address whole.
#[inline]
pub(crate) fn address_slot(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut slot = [0u8; 16];
            slot[..4].copy_from_slice(&v4.octets());
            slot
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{proto3_json_name, ShortName, FIELDS};

    /// Every output name is the proto3 JSON name of the field, and every
    /// field of ours a line names exists.
    #[test]
    fn names_are_proto3_json_names_and_sources_exist() {
        for c in COLUMNS {
            assert_eq!(c.name, proto3_json_name(c.proto_name), "{}", c.proto_name);
            for source in c.source.split(", ").filter(|s| !s.is_empty()) {
                assert!(
                    FIELDS.iter().any(|f| f.name == source),
                    "{}: no field {source}",
                    c.proto_name
                );
            }
            let unset = c.source.is_empty() && !matches!(c.proto_name, "schema_version" | "daemon_version");
            assert_eq!(
                unset,
                c.doc.starts_with("Unset"),
                "{}: say why it is unset",
                c.proto_name
            );
        }
    }

    fn pairs(record: &Record) -> Vec<(&'static str, String)> {
        record.to_pairs_in(crate::record::RecordSchema::FlatRecordV1)
    }

    /// An empty record has only the two constants; unset fields never appear.
    #[test]
    fn empty_record_has_only_the_versions() {
        assert_eq!(
            pairs(&Record::default()),
            [
                ("schemaVersion", "1".to_string()),
                ("daemonVersion", DAEMON_VERSION.to_string())
            ]
        );
    }

    /// Known congestion names map to the enum, others leave it unset.
    #[test]
    fn congestion_names_map_to_the_enum() {
        for (name, number) in [("cubic", Some(1)), ("bbr", Some(5)), ("bbr3", Some(7)), ("reno", None)] {
            let record = Record {
                cong: Some(ShortName::from_c_bytes(name.as_bytes())),
                ..Record::default()
            };
            assert_eq!(congestion_algorithm(&record), number.map(Value::Uint), "{name}");
            let got: Vec<_> = pairs(&record)
                .into_iter()
                .filter(|(n, _)| n.starts_with("congestion"))
                .collect();
            assert_eq!(got.len(), 1 + usize::from(number.is_some()), "{name}: {got:?}");
        }
    }

    /// The sockopt bits pack in the kernel's bit order; absent stays absent.
    #[test]
    fn sockopt_bits_pack_in_kernel_order() {
        assert_eq!(sock_opt(&Record::default()), None);
        let record = Record {
            sockopt_recverr: Some(1),
            sockopt_is_icsk: Some(1),
            sockopt_freebind: Some(0),
            sockopt_hdrincl: Some(0),
            sockopt_mc_loop: Some(1),
            sockopt_transparent: Some(0),
            sockopt_mc_all: Some(1),
            sockopt_nodefrag: Some(0),
            sockopt_bind_address_no_port: Some(1),
            sockopt_recverr_rfc4884: Some(0),
            sockopt_defer_connect: Some(1),
            ..Record::default()
        };
        assert_eq!(sock_opt(&record), Some(Value::Uint(0b101_0101_0011)));
    }

    /// IPv4 takes the first four bytes of the slot; IPv6 all sixteen.
    #[test]
    fn address_slot_is_the_kernel_layout() {
        let v4 = address_slot("10.1.2.3".parse().unwrap());
        assert_eq!(v4, [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_slot(IpAddr::V6(v6)), v6.octets());
    }
}
