//! A second, independent decoder for the same bytes: the
//! `netlink-packet-sock-diag` crate (with `rich_nlas`, so it decodes
//! `tcp_info` itself). Every field both decoders know must agree.
//!
//! The crate only knows `tcp_info` up to `tcpi_snd_wnd` (232 bytes) and
//! refuses shorter ones; it has no BBR/DCTCP/Vegas/cgroup/sockopt decoding,
//! so those are proven by the `ss` comparison and the attribute fixtures.

#![allow(dead_code)]

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::Timer;
use netlink_packet_sock_diag::SockDiagMessage;
use xtcp2::record::Record;

/// Decodes `payload` (an `inet_diag_msg` with attributes, the bytes after
/// `nlmsghdr`) with the crate and compares it with `rec`, our decoding of
/// the same bytes. Returns how many fields were compared, or every
/// disagreement.
pub fn compare(payload: &[u8], rec: &Record) -> Result<usize, Vec<String>> {
    let mut header = NetlinkHeader::default();
    header.message_type = netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;
    let message = SockDiagMessage::deserialize(&header, payload)
        .map_err(|e| vec![format!("netlink-packet-sock-diag refused the bytes: {e:#}")])?;
    let SockDiagMessage::InetResponse(response) = message else {
        return Err(vec![format!(
            "netlink-packet-sock-diag did not see an inet response: {message:?}"
        )]);
    };
    let mut check = Check::default();
    let h = &response.header;
    let id = &h.socket_id;
    check.eq("idiag_family", rec.idiag_family.map(u64::from), Some(h.family.into()));
    check.eq("idiag_state", rec.idiag_state.map(u64::from), Some(h.state.into()));
    check.eq(
        "idiag_sport",
        rec.idiag_sport.map(u64::from),
        Some(id.source_port.into()),
    );
    check.eq(
        "idiag_dport",
        rec.idiag_dport.map(u64::from),
        Some(id.destination_port.into()),
    );
    check.eq_text(
        "idiag_src",
        rec.idiag_src.map(|a| a.to_string()),
        Some(id.source_address.to_string()),
    );
    check.eq_text(
        "idiag_dst",
        rec.idiag_dst.map(|a| a.to_string()),
        Some(id.destination_address.to_string()),
    );
    check.eq("idiag_if", rec.idiag_if.map(u64::from), Some(id.interface_id.into()));
    // The crate keeps the cookie as 8 raw bytes: `__u32 idiag_cookie[2]`, low word first.
    let c = id.cookie;
    let cookie = u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        | (u64::from(u32::from_ne_bytes([c[4], c[5], c[6], c[7]])) << 32);
    check.eq("idiag_cookie", rec.idiag_cookie, Some(cookie));
    check.eq(
        "idiag_rqueue",
        rec.idiag_rqueue.map(u64::from),
        Some(h.recv_queue.into()),
    );
    check.eq(
        "idiag_wqueue",
        rec.idiag_wqueue.map(u64::from),
        Some(h.send_queue.into()),
    );
    check.eq("idiag_uid", rec.idiag_uid.map(u64::from), Some(h.uid.into()));
    check.eq("idiag_inode", rec.idiag_inode.map(u64::from), Some(h.inode.into()));
    let timer_kind = |kind: u64| rec.idiag_timer.map(u64::from) == Some(kind);
    match &h.timer {
        Some(Timer::Retransmit(expires, retransmits)) => {
            check.truth("idiag_timer", timer_kind(1));
            check.eq(
                "idiag_expires",
                rec.idiag_expires.map(u64::from),
                Some(expires.as_millis() as u64),
            );
            check.eq(
                "idiag_retrans",
                rec.idiag_retrans.map(u64::from),
                Some((*retransmits).into()),
            );
        }
        Some(Timer::KeepAlive(expires)) => {
            check.truth("idiag_timer", timer_kind(2));
            check.eq(
                "idiag_expires",
                rec.idiag_expires.map(u64::from),
                Some(expires.as_millis() as u64),
            );
        }
        Some(Timer::TimeWait) => check.truth("idiag_timer", timer_kind(3)),
        Some(Timer::Probe(expires)) => {
            check.truth("idiag_timer", timer_kind(4));
            check.eq(
                "idiag_expires",
                rec.idiag_expires.map(u64::from),
                Some(expires.as_millis() as u64),
            );
        }
        None => check.truth("idiag_timer", !matches!(rec.idiag_timer, Some(1..=4))),
    }

    for nla in &response.nlas {
        match nla {
            Nla::TcpInfo(t) => {
                let u8s = [
                    ("tcpi_state", rec.tcpi_state, t.state),
                    ("tcpi_ca_state", rec.tcpi_ca_state, t.ca_state),
                    ("tcpi_retransmits", rec.tcpi_retransmits, t.retransmits),
                    ("tcpi_probes", rec.tcpi_probes, t.probes),
                    ("tcpi_backoff", rec.tcpi_backoff, t.backoff),
                    ("tcpi_options", rec.tcpi_options, t.options),
                ];
                for (name, ours, theirs) in u8s {
                    check.eq(name, ours.map(u64::from), Some(theirs.into()));
                }
                // The crate keeps the two bit-field bytes whole.
                check.eq(
                    "tcpi_snd_wscale|tcpi_rcv_wscale<<4",
                    rec.tcpi_snd_wscale
                        .zip(rec.tcpi_rcv_wscale)
                        .map(|(s, r)| u64::from(s | (r << 4))),
                    Some(t.wscale.into()),
                );
                check.eq(
                    "tcpi_delivery_rate_app_limited|tcpi_fastopen_client_fail<<1",
                    rec.tcpi_delivery_rate_app_limited
                        .zip(rec.tcpi_fastopen_client_fail)
                        .map(|(a, f)| u64::from(a | (f << 1))),
                    // Bits 3..8 of byte 7 are padding the kernel leaves zero.
                    Some(u64::from(t.delivery_rate_app_limited & 0x07)),
                );
                let u32s = [
                    ("tcpi_rto", rec.tcpi_rto, t.rto),
                    ("tcpi_ato", rec.tcpi_ato, t.ato),
                    ("tcpi_snd_mss", rec.tcpi_snd_mss, t.snd_mss),
                    ("tcpi_rcv_mss", rec.tcpi_rcv_mss, t.rcv_mss),
                    ("tcpi_unacked", rec.tcpi_unacked, t.unacked),
                    ("tcpi_sacked", rec.tcpi_sacked, t.sacked),
                    ("tcpi_lost", rec.tcpi_lost, t.lost),
                    ("tcpi_retrans", rec.tcpi_retrans, t.retrans),
                    ("tcpi_fackets", rec.tcpi_fackets, t.fackets),
                    ("tcpi_last_data_sent", rec.tcpi_last_data_sent, t.last_data_sent),
                    ("tcpi_last_ack_sent", rec.tcpi_last_ack_sent, t.last_ack_sent),
                    ("tcpi_last_data_recv", rec.tcpi_last_data_recv, t.last_data_recv),
                    ("tcpi_last_ack_recv", rec.tcpi_last_ack_recv, t.last_ack_recv),
                    ("tcpi_pmtu", rec.tcpi_pmtu, t.pmtu),
                    ("tcpi_rcv_ssthresh", rec.tcpi_rcv_ssthresh, t.rcv_ssthresh),
                    ("tcpi_rtt", rec.tcpi_rtt, t.rtt),
                    ("tcpi_rttvar", rec.tcpi_rttvar, t.rttvar),
                    ("tcpi_snd_ssthresh", rec.tcpi_snd_ssthresh, t.snd_ssthresh),
                    ("tcpi_snd_cwnd", rec.tcpi_snd_cwnd, t.snd_cwnd),
                    ("tcpi_advmss", rec.tcpi_advmss, t.advmss),
                    ("tcpi_reordering", rec.tcpi_reordering, t.reordering),
                    ("tcpi_rcv_rtt", rec.tcpi_rcv_rtt, t.rcv_rtt),
                    ("tcpi_rcv_space", rec.tcpi_rcv_space, t.rcv_space),
                    ("tcpi_total_retrans", rec.tcpi_total_retrans, t.total_retrans),
                    ("tcpi_segs_out", rec.tcpi_segs_out, t.segs_out),
                    ("tcpi_segs_in", rec.tcpi_segs_in, t.segs_in),
                    ("tcpi_notsent_bytes", rec.tcpi_notsent_bytes, t.notsent_bytes),
                    ("tcpi_min_rtt", rec.tcpi_min_rtt, t.min_rtt),
                    ("tcpi_data_segs_in", rec.tcpi_data_segs_in, t.data_segs_in),
                    ("tcpi_data_segs_out", rec.tcpi_data_segs_out, t.data_segs_out),
                    ("tcpi_delivered", rec.tcpi_delivered, t.delivered),
                    ("tcpi_delivered_ce", rec.tcpi_delivered_ce, t.delivered_ce),
                    ("tcpi_dsack_dups", rec.tcpi_dsack_dups, t.dsack_dups),
                    ("tcpi_reord_seen", rec.tcpi_reord_seen, t.reord_seen),
                    ("tcpi_rcv_ooopack", rec.tcpi_rcv_ooopack, t.rcv_ooopack),
                    ("tcpi_snd_wnd", rec.tcpi_snd_wnd, t.snd_wnd),
                ];
                for (name, ours, theirs) in u32s {
                    check.eq(name, ours.map(u64::from), Some(theirs.into()));
                }
                let u64s = [
                    ("tcpi_pacing_rate", rec.tcpi_pacing_rate, t.pacing_rate),
                    ("tcpi_max_pacing_rate", rec.tcpi_max_pacing_rate, t.max_pacing_rate),
                    ("tcpi_bytes_acked", rec.tcpi_bytes_acked, t.bytes_acked),
                    ("tcpi_bytes_received", rec.tcpi_bytes_received, t.bytes_received),
                    ("tcpi_delivery_rate", rec.tcpi_delivery_rate, t.delivery_rate),
                    ("tcpi_busy_time", rec.tcpi_busy_time, t.busy_time),
                    ("tcpi_rwnd_limited", rec.tcpi_rwnd_limited, t.rwnd_limited),
                    ("tcpi_sndbuf_limited", rec.tcpi_sndbuf_limited, t.sndbuf_limited),
                    ("tcpi_bytes_sent", rec.tcpi_bytes_sent, t.bytes_sent),
                    ("tcpi_bytes_retrans", rec.tcpi_bytes_retrans, t.bytes_retrans),
                ];
                for (name, ours, theirs) in u64s {
                    check.eq(name, ours, Some(theirs));
                }
            }
            Nla::Congestion(name) => {
                check.eq_text("cong", rec.cong.map(|c| c.as_str().to_string()), Some(name.clone()))
            }
            Nla::Tos(v) => check.eq("tos", rec.tos.map(u64::from), Some((*v).into())),
            Nla::Tc(v) => check.eq("tclass", rec.tclass.map(u64::from), Some((*v).into())),
            Nla::Shutdown(v) => check.eq("shutdown", rec.shutdown.map(u64::from), Some((*v).into())),
            Nla::Mark(v) => check.eq("mark", rec.mark.map(u64::from), Some((*v).into())),
            Nla::ClassId(v) => check.eq("class_id", rec.class_id.map(u64::from), Some((*v).into())),
            Nla::LegacyMemInfo(m) => {
                check.eq(
                    "idiag_rmem",
                    rec.idiag_rmem.map(u64::from),
                    Some(m.receive_queue.into()),
                );
                check.eq(
                    "idiag_wmem",
                    rec.idiag_wmem.map(u64::from),
                    Some(m.bottom_send_queue.into()),
                );
                check.eq("idiag_fmem", rec.idiag_fmem.map(u64::from), Some(m.cache.into()));
                check.eq("idiag_tmem", rec.idiag_tmem.map(u64::from), Some(m.send_queue.into()));
            }
            Nla::MemInfo(m) => {
                // The crate's names, by offset: SK_MEMINFO_RMEM_ALLOC, RCVBUF,
                // WMEM_ALLOC, SNDBUF, FWD_ALLOC, WMEM_QUEUED, OPTMEM, BACKLOG, DROPS.
                let pairs = [
                    ("skmem_rmem_alloc", rec.skmem_rmem_alloc, m.receive_queue),
                    ("skmem_rcvbuf", rec.skmem_rcvbuf, m.receive_queue_max),
                    ("skmem_wmem_alloc", rec.skmem_wmem_alloc, m.bottom_send_queues),
                    ("skmem_sndbuf", rec.skmem_sndbuf, m.send_queue_max),
                    ("skmem_fwd_alloc", rec.skmem_fwd_alloc, m.cache),
                    ("skmem_wmem_queued", rec.skmem_wmem_queued, m.send_queue),
                    ("skmem_optmem", rec.skmem_optmem, m.options),
                    ("skmem_backlog", rec.skmem_backlog, m.backlog_queue_length),
                    ("skmem_drops", rec.skmem_drops, m.drops),
                ];
                for (name, ours, theirs) in pairs {
                    check.eq(name, ours.map(u64::from), Some(theirs.into()));
                }
            }
            Nla::SkV6Only(v) => check.eq("v6only", rec.v6only.map(u64::from), Some(u64::from(*v))),
            // Not carried by the record (PROTOCOL), or opaque to the crate
            // (CGROUP_ID, SOCKOPT, ULP_INFO, BBR/DCTCP/VEGAS info): nothing
            // to compare.
            Nla::Protocol(_) | Nla::Other(_) => {}
            // The enum is not exhaustive across versions of the crate.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    if check.mismatches.is_empty() {
        Ok(check.compared)
    } else {
        Err(check.mismatches)
    }
}

#[derive(Default)]
struct Check {
    compared: usize,
    mismatches: Vec<String>,
}

impl Check {
    fn eq(&mut self, name: &str, ours: Option<u64>, theirs: Option<u64>) {
        self.compared += 1;
        if ours != theirs {
            self.mismatches.push(format!(
                "{name}: xtcp2 decoded {ours:?}, netlink-packet-sock-diag {theirs:?}"
            ));
        }
    }

    fn eq_text(&mut self, name: &str, ours: Option<String>, theirs: Option<String>) {
        self.compared += 1;
        if ours != theirs {
            self.mismatches.push(format!(
                "{name}: xtcp2 decoded {ours:?}, netlink-packet-sock-diag {theirs:?}"
            ));
        }
    }

    fn truth(&mut self, name: &str, agrees: bool) {
        self.compared += 1;
        if !agrees {
            self.mismatches.push(format!("{name}: the two decoders disagree"));
        }
    }
}
