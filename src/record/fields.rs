//! The one declaration of every record field.
//!
//! Each line: doc, `name: type = protobuf tag, kind, kernel source, unit`.
//! Tags are grouped in ranges per source so new fields can be added without
//! renumbering: 1-9 context, 10-29 `inet_diag_msg`, 30-39 meminfo, 40-49
//! skmem, 50-59 small attributes, 60-79 sockopt, 80-99 congestion control
//! info, 100-199 `tcp_info`, 200-219 workload attribution (`attribute`),
//! 220-229 namespace ids, 230-269 uplinks (`--enrich-nic`, `--enrich-lldp`).
//! 270-289 flow events and rates (`track`).

use std::net::IpAddr;
use std::sync::Arc;

use super::{AsValue, Column, FieldKind, FieldVisitor, ProtoType, ShortName};

macro_rules! define_record {
    ($( #[doc = $doc:literal] $name:ident : $ty:ty = $tag:literal, $kind:ident, $source:literal, $unit:literal; )*) => {
        /// Each field's position in [`FIELDS`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Position { $( $name, )* }

        /// One socket snapshot: context, `inet_diag_msg` header and every
        /// decoded attribute, flat. `None` means the kernel did not send it.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Record {
            $( #[doc = $doc] pub $name: Option<$ty>, )*
        }

        #[allow(non_upper_case_globals)]
        mod meta {
            use super::*;
            $( pub static $name: Column = Column {
                name: stringify!($name),
                proto_name: stringify!($name),
                tag: $tag,
                index: Position::$name as u16,
                kind: FieldKind::$kind,
                proto_type: ProtoType::of_xtcp2_kind(FieldKind::$kind),
                source: $source,
                unit: $unit,
                doc: $doc.trim_ascii(),
            }; )*
        }

        /// Every field, in declaration (and output) order.
        pub static FIELDS: &[&Column] = &[ $( &meta::$name, )* ];

        impl Record {
            /// Hands every present field to `visitor`, in declaration order.
            #[inline]
            pub(crate) fn visit<V: FieldVisitor>(&self, visitor: &mut V) {
                $( if let Some(value) = &self.$name {
                    visitor.field(&meta::$name, value.as_value());
                } )*
            }
        }
    };
}

define_record! {
    /// Wall-clock time of the dump, nanoseconds since the Unix epoch.
    timestamp_ns: u64 = 1, TimestampNs, "clock_gettime(CLOCK_REALTIME)", "ns";
    /// Host name of the collector (`-hostname`, `XTCP_HOSTNAME`, or uname).
    hostname: Arc<str> = 2, Str, "xtcp2 config", "";
    /// Poll cycle sequence number, starting at 1 for each daemon start.
    poll_seq: u64 = 3, Uint, "xtcp2 poll loop", "";
    /// Free-form label from `-label`.
    label: Arc<str> = 4, Str, "xtcp2 config", "";
    /// Free-form tag from `-tag`.
    tag: Arc<str> = 5, Str, "xtcp2 config", "";
    /// Location from `-location`.
    location: Arc<str> = 6, Str, "xtcp2 config", "";
    /// Inode number of the network namespace (`stat /proc/PID/ns/net`).
    netns_inode: u64 = 7, Uint, "nsfs inode", "";
    /// Namespace name: file name under /run/netns or the Docker sandbox id.
    netns_name: Arc<str> = 8, Str, "bind mount file name", "";
    /// A process holding the namespace, for namespaces found only via /proc.
    netns_pid: u32 = 9, Uint, "/proc/PID/ns/net", "";

    /// Address family: 2 = AF_INET, 10 = AF_INET6.
    idiag_family: u8 = 10, Family, "inet_diag_msg.idiag_family", "";
    /// TCP state (1 = ESTABLISHED ... 10 = LISTEN, 12 = NEW_SYN_RECV).
    idiag_state: u8 = 11, TcpState, "inet_diag_msg.idiag_state", "";
    /// Pending timer: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe.
    idiag_timer: u8 = 12, Uint, "inet_diag_msg.idiag_timer", "";
    /// Retransmits (for timer 1/4) or keepalive probes (timer 2) so far.
    idiag_retrans: u8 = 13, Uint, "inet_diag_msg.idiag_retrans", "";
    /// Local port.
    idiag_sport: u16 = 14, Uint, "inet_diag_sockid.idiag_sport", "";
    /// Remote port.
    idiag_dport: u16 = 15, Uint, "inet_diag_sockid.idiag_dport", "";
    /// Local address.
    idiag_src: IpAddr = 16, Addr, "inet_diag_sockid.idiag_src", "";
    /// Remote address.
    idiag_dst: IpAddr = 17, Addr, "inet_diag_sockid.idiag_dst", "";
    /// Bound interface index (0 = any).
    idiag_if: u32 = 18, Uint, "inet_diag_sockid.idiag_if", "";
    /// Kernel socket cookie (`ss` prints it as `sk:` in hex).
    idiag_cookie: u64 = 19, Uint, "inet_diag_sockid.idiag_cookie", "";
    /// Time until the pending timer fires.
    idiag_expires: u32 = 20, Uint, "inet_diag_msg.idiag_expires", "ms";
    /// Receive queue: unread bytes (established) or accept backlog (listen).
    idiag_rqueue: u32 = 21, Uint, "inet_diag_msg.idiag_rqueue", "bytes";
    /// Send queue: unacknowledged bytes (established) or max backlog (listen).
    idiag_wqueue: u32 = 22, Uint, "inet_diag_msg.idiag_wqueue", "bytes";
    /// Owner uid of the socket.
    idiag_uid: u32 = 23, Uint, "inet_diag_msg.idiag_uid", "";
    /// Socket inode (`ss` prints `ino:`); 0 for TIME-WAIT and request sockets.
    idiag_inode: u32 = 24, Uint, "inet_diag_msg.idiag_inode", "";

    /// Receive queue memory (INET_DIAG_MEMINFO).
    idiag_rmem: u32 = 30, Uint, "inet_diag_meminfo.idiag_rmem", "bytes";
    /// Write queue memory committed (INET_DIAG_MEMINFO).
    idiag_wmem: u32 = 31, Uint, "inet_diag_meminfo.idiag_wmem", "bytes";
    /// Forward-allocated memory (INET_DIAG_MEMINFO).
    idiag_fmem: u32 = 32, Uint, "inet_diag_meminfo.idiag_fmem", "bytes";
    /// Memory of the transmit queue (INET_DIAG_MEMINFO).
    idiag_tmem: u32 = 33, Uint, "inet_diag_meminfo.idiag_tmem", "bytes";

    /// Receive memory allocated (`skmem:(r..)`).
    skmem_rmem_alloc: u32 = 40, Uint, "SK_MEMINFO_RMEM_ALLOC", "bytes";
    /// Receive buffer size (`rb`).
    skmem_rcvbuf: u32 = 41, Uint, "SK_MEMINFO_RCVBUF", "bytes";
    /// Transmit memory allocated (`t`).
    skmem_wmem_alloc: u32 = 42, Uint, "SK_MEMINFO_WMEM_ALLOC", "bytes";
    /// Send buffer size (`tb`).
    skmem_sndbuf: u32 = 43, Uint, "SK_MEMINFO_SNDBUF", "bytes";
    /// Forward-allocated memory (`f`).
    skmem_fwd_alloc: u32 = 44, Uint, "SK_MEMINFO_FWD_ALLOC", "bytes";
    /// Memory queued for transmit (`w`).
    skmem_wmem_queued: u32 = 45, Uint, "SK_MEMINFO_WMEM_QUEUED", "bytes";
    /// Option memory (`o`).
    skmem_optmem: u32 = 46, Uint, "SK_MEMINFO_OPTMEM", "bytes";
    /// Backlog queue length (`bl`).
    skmem_backlog: u32 = 47, Uint, "SK_MEMINFO_BACKLOG", "bytes";
    /// Packets dropped (`d`).
    skmem_drops: u32 = 48, Uint, "SK_MEMINFO_DROPS", "packets";

    /// Congestion control algorithm name (INET_DIAG_CONG).
    cong: ShortName = 50, Str, "INET_DIAG_CONG", "";
    /// IPv4 TOS byte (INET_DIAG_TOS).
    tos: u8 = 51, Uint, "INET_DIAG_TOS", "";
    /// IPv6 traffic class (INET_DIAG_TCLASS).
    tclass: u8 = 52, Uint, "INET_DIAG_TCLASS", "";
    /// Shutdown state: bit 0 receive, bit 1 send (INET_DIAG_SHUTDOWN).
    shutdown: u8 = 53, Uint, "INET_DIAG_SHUTDOWN", "";
    /// Net classifier class id (INET_DIAG_CLASS_ID).
    class_id: u32 = 54, Uint, "INET_DIAG_CLASS_ID", "";
    /// cgroup v2 id of the socket (INET_DIAG_CGROUP_ID).
    cgroup_id: u64 = 55, Uint, "INET_DIAG_CGROUP_ID", "";
    /// Socket mark, SO_MARK (INET_DIAG_MARK; sent only to CAP_NET_ADMIN).
    mark: u32 = 56, Uint, "INET_DIAG_MARK", "";
    /// IPV6_V6ONLY: 1 when an IPv6 socket refuses IPv4-mapped peers (`ss -e` `v6only:`; sent for listening and closed IPv6 sockets).
    v6only: u8 = 57, Uint, "INET_DIAG_SKV6ONLY", "";
    /// Upper layer protocol on the socket, `tls` or `mptcp` (INET_DIAG_ULP_INFO; sent only to CAP_NET_ADMIN).
    ulp_name: ShortName = 58, Str, "INET_ULP_INFO_NAME", "";

    /// IP_RECVERR set (INET_DIAG_SOCKOPT bit).
    sockopt_recverr: u8 = 60, Uint, "inet_diag_sockopt.recverr", "";
    /// Connection-oriented (inet_connection_sock) socket.
    sockopt_is_icsk: u8 = 61, Uint, "inet_diag_sockopt.is_icsk", "";
    /// IP_FREEBIND set.
    sockopt_freebind: u8 = 62, Uint, "inet_diag_sockopt.freebind", "";
    /// IP_HDRINCL set.
    sockopt_hdrincl: u8 = 63, Uint, "inet_diag_sockopt.hdrincl", "";
    /// IP_MULTICAST_LOOP set.
    sockopt_mc_loop: u8 = 64, Uint, "inet_diag_sockopt.mc_loop", "";
    /// IP_TRANSPARENT set.
    sockopt_transparent: u8 = 65, Uint, "inet_diag_sockopt.transparent", "";
    /// IP_MULTICAST_ALL set.
    sockopt_mc_all: u8 = 66, Uint, "inet_diag_sockopt.mc_all", "";
    /// IP_NODEFRAG set.
    sockopt_nodefrag: u8 = 67, Uint, "inet_diag_sockopt.nodefrag", "";
    /// IP_BIND_ADDRESS_NO_PORT set.
    sockopt_bind_address_no_port: u8 = 68, Uint, "inet_diag_sockopt.bind_address_no_port", "";
    /// IP_RECVERR_RFC4884 set.
    sockopt_recverr_rfc4884: u8 = 69, Uint, "inet_diag_sockopt.recverr_rfc4884", "";
    /// Deferred connect (TCP fastopen connect).
    sockopt_defer_connect: u8 = 70, Uint, "inet_diag_sockopt.defer_connect", "";

    /// Vegas enabled (INET_DIAG_VEGASINFO).
    tcpv_enabled: u32 = 80, Uint, "tcpvegas_info.tcpv_enabled", "";
    /// Vegas RTT samples in the last RTT.
    tcpv_rttcnt: u32 = 81, Uint, "tcpvegas_info.tcpv_rttcnt", "";
    /// Vegas smoothed RTT.
    tcpv_rtt: u32 = 82, Uint, "tcpvegas_info.tcpv_rtt", "us";
    /// Vegas minimum RTT.
    tcpv_minrtt: u32 = 83, Uint, "tcpvegas_info.tcpv_minrtt", "us";
    /// DCTCP enabled (INET_DIAG_DCTCPINFO).
    dctcp_enabled: u16 = 85, Uint, "tcp_dctcp_info.dctcp_enabled", "";
    /// DCTCP CE state.
    dctcp_ce_state: u16 = 86, Uint, "tcp_dctcp_info.dctcp_ce_state", "";
    /// DCTCP alpha, scaled by 1024.
    dctcp_alpha: u32 = 87, Uint, "tcp_dctcp_info.dctcp_alpha", "1/1024";
    /// DCTCP bytes acked with ECE.
    dctcp_ab_ecn: u32 = 88, Uint, "tcp_dctcp_info.dctcp_ab_ecn", "bytes";
    /// DCTCP bytes acked in total.
    dctcp_ab_tot: u32 = 89, Uint, "tcp_dctcp_info.dctcp_ab_tot", "bytes";
    /// BBR bandwidth estimate, low 32 bits (INET_DIAG_BBRINFO).
    bbr_bw_lo: u32 = 90, Uint, "tcp_bbr_info.bbr_bw_lo", "bytes/s";
    /// BBR bandwidth estimate, high 32 bits.
    bbr_bw_hi: u32 = 91, Uint, "tcp_bbr_info.bbr_bw_hi", "bytes/s";
    /// BBR minimum RTT.
    bbr_min_rtt: u32 = 92, Uint, "tcp_bbr_info.bbr_min_rtt", "us";
    /// BBR pacing gain, scaled by 256.
    bbr_pacing_gain: u32 = 93, Uint, "tcp_bbr_info.bbr_pacing_gain", "1/256";
    /// BBR cwnd gain, scaled by 256.
    bbr_cwnd_gain: u32 = 94, Uint, "tcp_bbr_info.bbr_cwnd_gain", "1/256";

    /// TCP state as seen by tcp_info.
    tcpi_state: u8 = 100, TcpState, "tcp_info.tcpi_state", "";
    /// Congestion avoidance state (0 open, 1 disorder, 2 CWR, 3 recovery, 4 loss).
    tcpi_ca_state: u8 = 101, Uint, "tcp_info.tcpi_ca_state", "";
    /// Consecutive retransmits of the head segment.
    tcpi_retransmits: u8 = 102, Uint, "tcp_info.tcpi_retransmits", "";
    /// Zero-window or keepalive probes sent without answer.
    tcpi_probes: u8 = 103, Uint, "tcp_info.tcpi_probes", "";
    /// Exponential backoff count of the RTO.
    tcpi_backoff: u8 = 104, Uint, "tcp_info.tcpi_backoff", "";
    /// Negotiated options: 1 timestamps, 2 SACK, 4 wscale, 8 ECN, 16 ECN seen, 32 SYN data, 64 usec ts.
    tcpi_options: u8 = 105, Uint, "tcp_info.tcpi_options", "";
    /// Send window scale (low 4 bits).
    tcpi_snd_wscale: u8 = 106, Uint, "tcp_info.tcpi_snd_wscale:4", "";
    /// Receive window scale (high 4 bits).
    tcpi_rcv_wscale: u8 = 107, Uint, "tcp_info.tcpi_rcv_wscale:4", "";
    /// Delivery rate sample was application limited (1 bit).
    tcpi_delivery_rate_app_limited: u8 = 108, Uint, "tcp_info.tcpi_delivery_rate_app_limited:1", "";
    /// TCP fastopen client failure reason (2 bits).
    tcpi_fastopen_client_fail: u8 = 109, Uint, "tcp_info.tcpi_fastopen_client_fail:2", "";
    /// Retransmission timeout.
    tcpi_rto: u32 = 110, Uint, "tcp_info.tcpi_rto", "us";
    /// Delayed ACK timeout.
    tcpi_ato: u32 = 111, Uint, "tcp_info.tcpi_ato", "us";
    /// Send MSS.
    tcpi_snd_mss: u32 = 112, Uint, "tcp_info.tcpi_snd_mss", "bytes";
    /// Receive MSS estimate.
    tcpi_rcv_mss: u32 = 113, Uint, "tcp_info.tcpi_rcv_mss", "bytes";
    /// Unacknowledged segments (or accept backlog for listeners).
    tcpi_unacked: u32 = 114, Uint, "tcp_info.tcpi_unacked", "segments";
    /// SACKed segments (or max backlog for listeners).
    tcpi_sacked: u32 = 115, Uint, "tcp_info.tcpi_sacked", "segments";
    /// Segments considered lost.
    tcpi_lost: u32 = 116, Uint, "tcp_info.tcpi_lost", "segments";
    /// Retransmitted segments in flight.
    tcpi_retrans: u32 = 117, Uint, "tcp_info.tcpi_retrans", "segments";
    /// Forward-acked segments (always 0 since Linux 4.15).
    tcpi_fackets: u32 = 118, Uint, "tcp_info.tcpi_fackets", "segments";
    /// Time since the last data was sent.
    tcpi_last_data_sent: u32 = 119, Uint, "tcp_info.tcpi_last_data_sent", "ms";
    /// Time since the last ACK was sent (not implemented by Linux: 0).
    tcpi_last_ack_sent: u32 = 120, Uint, "tcp_info.tcpi_last_ack_sent", "ms";
    /// Time since the last data was received.
    tcpi_last_data_recv: u32 = 121, Uint, "tcp_info.tcpi_last_data_recv", "ms";
    /// Time since the last ACK was received.
    tcpi_last_ack_recv: u32 = 122, Uint, "tcp_info.tcpi_last_ack_recv", "ms";
    /// Path MTU.
    tcpi_pmtu: u32 = 123, Uint, "tcp_info.tcpi_pmtu", "bytes";
    /// Receive slow start threshold.
    tcpi_rcv_ssthresh: u32 = 124, Uint, "tcp_info.tcpi_rcv_ssthresh", "bytes";
    /// Smoothed RTT.
    tcpi_rtt: u32 = 125, Uint, "tcp_info.tcpi_rtt", "us";
    /// RTT variance.
    tcpi_rttvar: u32 = 126, Uint, "tcp_info.tcpi_rttvar", "us";
    /// Send slow start threshold (0x7fffffff = infinite).
    tcpi_snd_ssthresh: u32 = 127, Uint, "tcp_info.tcpi_snd_ssthresh", "segments";
    /// Congestion window.
    tcpi_snd_cwnd: u32 = 128, Uint, "tcp_info.tcpi_snd_cwnd", "segments";
    /// Advertised MSS.
    tcpi_advmss: u32 = 129, Uint, "tcp_info.tcpi_advmss", "bytes";
    /// Reordering metric.
    tcpi_reordering: u32 = 130, Uint, "tcp_info.tcpi_reordering", "segments";
    /// Receiver-side RTT estimate.
    tcpi_rcv_rtt: u32 = 131, Uint, "tcp_info.tcpi_rcv_rtt", "us";
    /// Receive space (auto-tuning).
    tcpi_rcv_space: u32 = 132, Uint, "tcp_info.tcpi_rcv_space", "bytes";
    /// Total retransmitted segments.
    tcpi_total_retrans: u32 = 133, Uint, "tcp_info.tcpi_total_retrans", "segments";
    /// Current pacing rate.
    tcpi_pacing_rate: u64 = 134, Uint, "tcp_info.tcpi_pacing_rate", "bytes/s";
    /// Maximum pacing rate (SO_MAX_PACING_RATE; u64::MAX = unlimited).
    tcpi_max_pacing_rate: u64 = 135, Uint, "tcp_info.tcpi_max_pacing_rate", "bytes/s";
    /// Bytes acknowledged (RFC 4898 tcpEStatsAppHCThruOctetsAcked).
    tcpi_bytes_acked: u64 = 136, Uint, "tcp_info.tcpi_bytes_acked", "bytes";
    /// Bytes received (RFC 4898 tcpEStatsAppHCThruOctetsReceived).
    tcpi_bytes_received: u64 = 137, Uint, "tcp_info.tcpi_bytes_received", "bytes";
    /// Segments sent.
    tcpi_segs_out: u32 = 138, Uint, "tcp_info.tcpi_segs_out", "segments";
    /// Segments received.
    tcpi_segs_in: u32 = 139, Uint, "tcp_info.tcpi_segs_in", "segments";
    /// Bytes written but not yet sent.
    tcpi_notsent_bytes: u32 = 140, Uint, "tcp_info.tcpi_notsent_bytes", "bytes";
    /// Minimum RTT seen.
    tcpi_min_rtt: u32 = 141, Uint, "tcp_info.tcpi_min_rtt", "us";
    /// Segments received with data.
    tcpi_data_segs_in: u32 = 142, Uint, "tcp_info.tcpi_data_segs_in", "segments";
    /// Segments sent with data.
    tcpi_data_segs_out: u32 = 143, Uint, "tcp_info.tcpi_data_segs_out", "segments";
    /// Most recent delivery rate sample.
    tcpi_delivery_rate: u64 = 144, Uint, "tcp_info.tcpi_delivery_rate", "bytes/s";
    /// Time spent busy sending.
    tcpi_busy_time: u64 = 145, Uint, "tcp_info.tcpi_busy_time", "us";
    /// Time limited by the receive window.
    tcpi_rwnd_limited: u64 = 146, Uint, "tcp_info.tcpi_rwnd_limited", "us";
    /// Time limited by the send buffer.
    tcpi_sndbuf_limited: u64 = 147, Uint, "tcp_info.tcpi_sndbuf_limited", "us";
    /// Segments delivered (including retransmits).
    tcpi_delivered: u32 = 148, Uint, "tcp_info.tcpi_delivered", "segments";
    /// Segments delivered with ECN CE marks.
    tcpi_delivered_ce: u32 = 149, Uint, "tcp_info.tcpi_delivered_ce", "segments";
    /// Bytes sent, including retransmits (RFC 4898 tcpEStatsPerfHCDataOctetsOut).
    tcpi_bytes_sent: u64 = 150, Uint, "tcp_info.tcpi_bytes_sent", "bytes";
    /// Bytes retransmitted (RFC 4898 tcpEStatsPerfOctetsRetrans).
    tcpi_bytes_retrans: u64 = 151, Uint, "tcp_info.tcpi_bytes_retrans", "bytes";
    /// DSACK blocks received.
    tcpi_dsack_dups: u32 = 152, Uint, "tcp_info.tcpi_dsack_dups", "";
    /// Reordering events seen.
    tcpi_reord_seen: u32 = 153, Uint, "tcp_info.tcpi_reord_seen", "";
    /// Out-of-order packets received.
    tcpi_rcv_ooopack: u32 = 154, Uint, "tcp_info.tcpi_rcv_ooopack", "packets";
    /// Peer's advertised receive window after scaling.
    tcpi_snd_wnd: u32 = 155, Uint, "tcp_info.tcpi_snd_wnd", "bytes";
    /// Local advertised receive window after scaling.
    tcpi_rcv_wnd: u32 = 156, Uint, "tcp_info.tcpi_rcv_wnd", "bytes";
    /// PLB or timeout-triggered rehash attempts.
    tcpi_rehash: u32 = 157, Uint, "tcp_info.tcpi_rehash", "";
    /// RTO timeouts.
    tcpi_total_rto: u16 = 158, Uint, "tcp_info.tcpi_total_rto", "";
    /// RTO recoveries (entries into loss state via RTO).
    tcpi_total_rto_recoveries: u16 = 159, Uint, "tcp_info.tcpi_total_rto_recoveries", "";
    /// Time spent in RTO recoveries.
    tcpi_total_rto_time: u32 = 160, Uint, "tcp_info.tcpi_total_rto_time", "ms";
    /// CE-marked segments received (AccECN).
    tcpi_received_ce: u32 = 161, Uint, "tcp_info.tcpi_received_ce", "segments";
    /// ECT(1) bytes delivered (AccECN).
    tcpi_delivered_e1_bytes: u32 = 162, Uint, "tcp_info.tcpi_delivered_e1_bytes", "bytes";
    /// ECT(0) bytes delivered (AccECN).
    tcpi_delivered_e0_bytes: u32 = 163, Uint, "tcp_info.tcpi_delivered_e0_bytes", "bytes";
    /// CE bytes delivered (AccECN).
    tcpi_delivered_ce_bytes: u32 = 164, Uint, "tcp_info.tcpi_delivered_ce_bytes", "bytes";
    /// ECT(1) bytes received (AccECN).
    tcpi_received_e1_bytes: u32 = 165, Uint, "tcp_info.tcpi_received_e1_bytes", "bytes";
    /// ECT(0) bytes received (AccECN).
    tcpi_received_e0_bytes: u32 = 166, Uint, "tcp_info.tcpi_received_e0_bytes", "bytes";
    /// CE bytes received (AccECN).
    tcpi_received_ce_bytes: u32 = 167, Uint, "tcp_info.tcpi_received_ce_bytes", "bytes";
    /// ECN mode (2 bits): 0 disabled, 1 RFC 3168, 2 AccECN, 3 pending.
    tcpi_ecn_mode: u8 = 168, Uint, "tcp_info.tcpi_ecn_mode:2", "";
    /// AccECN option seen (2 bits).
    tcpi_accecn_opt_seen: u8 = 169, Uint, "tcp_info.tcpi_accecn_opt_seen:2", "";
    /// AccECN failure mode (4 bits).
    tcpi_accecn_fail_mode: u8 = 170, Uint, "tcp_info.tcpi_accecn_fail_mode:4", "";
    /// More option flags (24 bits).
    tcpi_options2: u32 = 171, Uint, "tcp_info.tcpi_options2:24", "";

    /// Container id (64 hex digits for Docker, containerd, CRI-O and Podman), from the socket's cgroup path (`--resolve-container-id`) or the Docker Engine (`--enrich-container`).
    container_id: Arc<str> = 200, Str, "cgroup v2 path / Docker Engine API", "";
    /// Container runtime: `docker`, `containerd`, `crio` or `podman` (from the cgroup naming), `docker` for `--enrich-container`.
    container_runtime: Arc<str> = 201, Str, "cgroup v2 path / Docker Engine API", "";
    /// Container name without Docker's leading `/` (`--enrich-container`).
    container_name: Arc<str> = 202, Str, "Docker Engine API /containers/ID/json .Name", "";
    /// Image the container was created from, as its Config.Image says (`--enrich-container`).
    container_image: Arc<str> = 203, Str, "Docker Engine API /containers/ID/json .Config.Image", "";
    /// Kubernetes pod UID (with dashes), from a `kubepods` cgroup of either cgroup driver (`--resolve-container-id`).
    pod_uid: Arc<str> = 204, Str, "cgroup v2 path", "";
    /// systemd unit owning the socket's cgroup (`nginx.service`, `session-3.scope`), when it is not a container's scope (`--resolve-container-id`).
    systemd_unit: Arc<str> = 205, Str, "cgroup v2 path", "";

    /// Id of the socket's network namespace as the daemon's namespace knows it (`ip netns list-id`); absent when none is assigned (`--populate-nsid`, which never assigns one).
    nsid: u32 = 220, Uint, "rtnetlink RTM_GETNSID NETNSA_NSID", "";

    /// Interface name of uplink 1 (`--enrich-nic`: `--uplink-interfaces`, else the default routes' interfaces).
    uplink1_ifname: Arc<str> = 230, Str, "--uplink-interfaces / rtnetlink default routes", "";
    /// Kernel driver of uplink 1 (`veth`, `ixgbe`).
    uplink1_nic_driver: Arc<str> = 231, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .driver", "";
    /// Device name of uplink 1's PCI ids in the PCI id database; absent for virtual NICs.
    uplink1_nic_model: Arc<str> = 232, Str, "pci.ids", "";
    /// PCI vendor id of uplink 1; absent for virtual NICs.
    uplink1_nic_pci_vendor: u32 = 233, Uint, "/sys/class/net/IF/device/vendor", "";
    /// PCI device id of uplink 1; absent for virtual NICs.
    uplink1_nic_pci_device: u32 = 234, Uint, "/sys/class/net/IF/device/device", "";
    /// Bus address of uplink 1 (`0000:03:00.0`); absent for virtual NICs.
    uplink1_nic_bus_info: Arc<str> = 235, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .bus_info", "";
    /// Link speed of uplink 1; absent when the kernel reports none (down, or a driver without speed).
    uplink1_nic_speed_mbps: u32 = 236, Uint, "/sys/class/net/IF/speed", "Mb/s";
    /// Firmware version of uplink 1; absent when the driver reports none.
    uplink1_nic_fw_version: Arc<str> = 237, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .fw_version", "";
    /// System name of uplink 1's LLDP neighbour (the switch) (`--enrich-lldp`).
    uplink1_lldp_chassis_name: Arc<str> = 240, Str, "lldpd: lldpcli show neighbors .chassis.name", "";
    /// Chassis id of uplink 1's LLDP neighbour (often a MAC address).
    uplink1_lldp_chassis_id: Arc<str> = 241, Str, "lldpd: lldpcli show neighbors .chassis.id", "";
    /// First management address uplink 1's LLDP neighbour advertises.
    uplink1_lldp_mgmt_ip: Arc<str> = 242, Str, "lldpd: lldpcli show neighbors .chassis.mgmt-ip", "";
    /// Port id of the neighbour's port uplink 1 is plugged into (often its MAC or name).
    uplink1_lldp_port_id: Arc<str> = 243, Str, "lldpd: lldpcli show neighbors .port.id", "";
    /// Description of the neighbour's port uplink 1 is plugged into.
    uplink1_lldp_port_descr: Arc<str> = 244, Str, "lldpd: lldpcli show neighbors .port.descr", "";

    /// Interface name of uplink 2 (`--enrich-nic`: `--uplink-interfaces`, else the default routes' interfaces).
    uplink2_ifname: Arc<str> = 250, Str, "--uplink-interfaces / rtnetlink default routes", "";
    /// Kernel driver of uplink 2 (`veth`, `ixgbe`).
    uplink2_nic_driver: Arc<str> = 251, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .driver", "";
    /// Device name of uplink 2's PCI ids in the PCI id database; absent for virtual NICs.
    uplink2_nic_model: Arc<str> = 252, Str, "pci.ids", "";
    /// PCI vendor id of uplink 2; absent for virtual NICs.
    uplink2_nic_pci_vendor: u32 = 253, Uint, "/sys/class/net/IF/device/vendor", "";
    /// PCI device id of uplink 2; absent for virtual NICs.
    uplink2_nic_pci_device: u32 = 254, Uint, "/sys/class/net/IF/device/device", "";
    /// Bus address of uplink 2 (`0000:03:00.0`); absent for virtual NICs.
    uplink2_nic_bus_info: Arc<str> = 255, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .bus_info", "";
    /// Link speed of uplink 2; absent when the kernel reports none (down, or a driver without speed).
    uplink2_nic_speed_mbps: u32 = 256, Uint, "/sys/class/net/IF/speed", "Mb/s";
    /// Firmware version of uplink 2; absent when the driver reports none.
    uplink2_nic_fw_version: Arc<str> = 257, Str, "SIOCETHTOOL ETHTOOL_GDRVINFO .fw_version", "";
    /// System name of uplink 2's LLDP neighbour (the switch) (`--enrich-lldp`).
    uplink2_lldp_chassis_name: Arc<str> = 260, Str, "lldpd: lldpcli show neighbors .chassis.name", "";
    /// Chassis id of uplink 2's LLDP neighbour (often a MAC address).
    uplink2_lldp_chassis_id: Arc<str> = 261, Str, "lldpd: lldpcli show neighbors .chassis.id", "";
    /// First management address uplink 2's LLDP neighbour advertises.
    uplink2_lldp_mgmt_ip: Arc<str> = 262, Str, "lldpd: lldpcli show neighbors .chassis.mgmt-ip", "";
    /// Port id of the neighbour's port uplink 2 is plugged into (often its MAC or name).
    uplink2_lldp_port_id: Arc<str> = 263, Str, "lldpd: lldpcli show neighbors .port.id", "";
    /// Description of the neighbour's port uplink 2 is plugged into.
    uplink2_lldp_port_descr: Arc<str> = 264, Str, "lldpd: lldpcli show neighbors .port.descr", "";

    /// `open` on a socket's first record, `close` on the record of its end (`--flow-events`); absent otherwise.
    flow_event: Arc<str> = 270, Str, "xtcp2 socket tracking", "";
    /// Where a close came from: `destroy` (the kernel's notification, final counters) or `poll` (gone between two polls without one: identity only).
    flow_close_source: Arc<str> = 271, Str, "sock_diag destroy group / poll difference", "";
    /// On a close: time since the socket was first seen (absent when it never was: it lived less than one poll).
    flow_lifetime_ns: u64 = 272, Uint, "xtcp2 socket tracking", "ns";
    /// Bytes acked per second since the socket's previous poll (`--rates`).
    tcpi_bytes_acked_per_s: u64 = 275, Uint, "delta of tcp_info.tcpi_bytes_acked", "bytes/s";
    /// Bytes received per second since the socket's previous poll (`--rates`).
    tcpi_bytes_received_per_s: u64 = 276, Uint, "delta of tcp_info.tcpi_bytes_received", "bytes/s";
    /// Segments sent per second since the socket's previous poll (`--rates`).
    tcpi_segs_out_per_s: u64 = 277, Uint, "delta of tcp_info.tcpi_segs_out", "segments/s";
    /// Segments received per second since the socket's previous poll (`--rates`).
    tcpi_segs_in_per_s: u64 = 278, Uint, "delta of tcp_info.tcpi_segs_in", "segments/s";
    /// Retransmitted segments per second since the socket's previous poll (`--rates`).
    tcpi_total_retrans_per_s: u64 = 279, Uint, "delta of tcp_info.tcpi_total_retrans", "segments/s";
}
