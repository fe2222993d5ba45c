//! `struct tcp_info` (`include/uapi/linux/tcp.h`), any length.
//!
//! The struct only ever grows at its end, so the kernel's length says which
//! fields exist: 224 bytes on 4.19, 232 on 5.4-6.1, 240 on 6.6, 248 on
//! 6.7-6.x, 280 on 7.0 (AccECN). A field is decoded when it fits entirely
//! in what was sent and is absent otherwise; bytes past the last known field
//! (a newer kernel) are ignored.

use super::bytes::{u16_at, u32_at, u64_at, u8_at};
use crate::record::Record;

/// Length of the largest layout this decoder knows (Linux 7.0).
#[cfg(test)]
pub(crate) const TCP_INFO_KNOWN_LEN: usize = 280;

macro_rules! plain_fields {
    ($rec:ident, $buf:ident; $( $field:ident : $read:ident @ $off:literal ),* $(,)?) => {
        $( $rec.$field = $read($buf, $off); )*
    };
}

/// Fills every `tcpi_*` field of `rec` from `buf`, leaving absent the fields
/// that do not fit.
pub(crate) fn decode_tcp_info(buf: &[u8], rec: &mut Record) {
    plain_fields!(rec, buf;
        tcpi_state: u8_at @ 0,
        tcpi_ca_state: u8_at @ 1,
        tcpi_retransmits: u8_at @ 2,
        tcpi_probes: u8_at @ 3,
        tcpi_backoff: u8_at @ 4,
        tcpi_options: u8_at @ 5,
        tcpi_rto: u32_at @ 8,
        tcpi_ato: u32_at @ 12,
        tcpi_snd_mss: u32_at @ 16,
        tcpi_rcv_mss: u32_at @ 20,
        tcpi_unacked: u32_at @ 24,
        tcpi_sacked: u32_at @ 28,
        tcpi_lost: u32_at @ 32,
        tcpi_retrans: u32_at @ 36,
        tcpi_fackets: u32_at @ 40,
        tcpi_last_data_sent: u32_at @ 44,
        tcpi_last_ack_sent: u32_at @ 48,
        tcpi_last_data_recv: u32_at @ 52,
        tcpi_last_ack_recv: u32_at @ 56,
        tcpi_pmtu: u32_at @ 60,
        tcpi_rcv_ssthresh: u32_at @ 64,
        tcpi_rtt: u32_at @ 68,
        tcpi_rttvar: u32_at @ 72,
        tcpi_snd_ssthresh: u32_at @ 76,
        tcpi_snd_cwnd: u32_at @ 80,
        tcpi_advmss: u32_at @ 84,
        tcpi_reordering: u32_at @ 88,
        tcpi_rcv_rtt: u32_at @ 92,
        tcpi_rcv_space: u32_at @ 96,
        tcpi_total_retrans: u32_at @ 100,
        tcpi_pacing_rate: u64_at @ 104,
        tcpi_max_pacing_rate: u64_at @ 112,
        tcpi_bytes_acked: u64_at @ 120,
        tcpi_bytes_received: u64_at @ 128,
        tcpi_segs_out: u32_at @ 136,
        tcpi_segs_in: u32_at @ 140,
        tcpi_notsent_bytes: u32_at @ 144,
        tcpi_min_rtt: u32_at @ 148,
        tcpi_data_segs_in: u32_at @ 152,
        tcpi_data_segs_out: u32_at @ 156,
        tcpi_delivery_rate: u64_at @ 160,
        tcpi_busy_time: u64_at @ 168,
        tcpi_rwnd_limited: u64_at @ 176,
        tcpi_sndbuf_limited: u64_at @ 184,
        tcpi_delivered: u32_at @ 192,
        tcpi_delivered_ce: u32_at @ 196,
        tcpi_bytes_sent: u64_at @ 200,
        tcpi_bytes_retrans: u64_at @ 208,
        tcpi_dsack_dups: u32_at @ 216,
        tcpi_reord_seen: u32_at @ 220,
        tcpi_rcv_ooopack: u32_at @ 224,
        tcpi_snd_wnd: u32_at @ 228,
        tcpi_rcv_wnd: u32_at @ 232,
        tcpi_rehash: u32_at @ 236,
        tcpi_total_rto: u16_at @ 240,
        tcpi_total_rto_recoveries: u16_at @ 242,
        tcpi_total_rto_time: u32_at @ 244,
        tcpi_received_ce: u32_at @ 248,
        tcpi_delivered_e1_bytes: u32_at @ 252,
        tcpi_delivered_e0_bytes: u32_at @ 256,
        tcpi_delivered_ce_bytes: u32_at @ 260,
        tcpi_received_e1_bytes: u32_at @ 264,
        tcpi_received_e0_bytes: u32_at @ 268,
        tcpi_received_ce_bytes: u32_at @ 272,
    );

    // Byte 6: `__u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4;` — the first
    // declared bit field takes the low bits on every Linux ABI.
    let wscale = u8_at(buf, 6);
    rec.tcpi_snd_wscale = wscale.map(|b| b & 0x0f);
    rec.tcpi_rcv_wscale = wscale.map(|b| b >> 4);
    // Byte 7: `__u8 tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2;`
    let flags = u8_at(buf, 7);
    rec.tcpi_delivery_rate_app_limited = flags.map(|b| b & 0x01);
    rec.tcpi_fastopen_client_fail = flags.map(|b| (b >> 1) & 0x03);
    // Bytes 276..280 (7.0): `__u32 tcpi_ecn_mode:2, tcpi_accecn_opt_seen:2,
    // tcpi_accecn_fail_mode:4, tcpi_options2:24;`
    let ecn = u32_at(buf, 276);
    rec.tcpi_ecn_mode = ecn.map(|w| (w & 0x3) as u8);
    rec.tcpi_accecn_opt_seen = ecn.map(|w| ((w >> 2) & 0x3) as u8);
    rec.tcpi_accecn_fail_mode = ecn.map(|w| ((w >> 4) & 0xf) as u8);
    rec.tcpi_options2 = ecn.map(|w| w >> 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4.19-sized (224-byte) tcp_info decodes up to tcpi_reord_seen and
    /// leaves every later field absent, not zero.
    #[test]
    fn short_tcp_info_leaves_later_fields_absent() {
        let mut buf = vec![0u8; 224];
        buf[68..72].copy_from_slice(&1234u32.to_ne_bytes());
        buf[220..224].copy_from_slice(&9u32.to_ne_bytes());
        let mut rec = Record::default();
        decode_tcp_info(&buf, &mut rec);
        assert_eq!(rec.tcpi_rtt, Some(1234));
        assert_eq!(rec.tcpi_reord_seen, Some(9));
        assert_eq!(rec.tcpi_rcv_ooopack, None);
        assert_eq!(rec.tcpi_snd_wnd, None);
        assert_eq!(rec.tcpi_ecn_mode, None);
    }

    /// The bit fields unpack as the kernel packs them.
    #[test]
    fn bit_fields_unpack_low_bits_first() {
        let mut buf = vec![0u8; TCP_INFO_KNOWN_LEN];
        buf[6] = 0x97; // snd_wscale 7, rcv_wscale 9
        buf[7] = 0b101; // app_limited 1, fastopen_client_fail 2
        let word: u32 = 0x3 | (0x2 << 2) | (0xA << 4) | (0x123456 << 8);
        buf[276..280].copy_from_slice(&word.to_ne_bytes());
        let mut rec = Record::default();
        decode_tcp_info(&buf, &mut rec);
        assert_eq!(rec.tcpi_snd_wscale, Some(7));
        assert_eq!(rec.tcpi_rcv_wscale, Some(9));
        assert_eq!(rec.tcpi_delivery_rate_app_limited, Some(1));
        assert_eq!(rec.tcpi_fastopen_client_fail, Some(2));
        assert_eq!(rec.tcpi_ecn_mode, Some(3));
        assert_eq!(rec.tcpi_accecn_opt_seen, Some(2));
        assert_eq!(rec.tcpi_accecn_fail_mode, Some(0xA));
        assert_eq!(rec.tcpi_options2, Some(0x123456));
    }

    /// A tcp_info cut in the middle of a field leaves that field absent.
    #[test]
    fn field_cut_in_half_is_absent() {
        let buf = vec![1u8; 70];
        let mut rec = Record::default();
        decode_tcp_info(&buf, &mut rec);
        assert_eq!(rec.tcpi_rcv_ssthresh, Some(0x01010101));
        assert_eq!(rec.tcpi_rtt, None);
    }
}
