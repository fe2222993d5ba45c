//! `ss -tiaemn -o` text, both ways: a parser for what iproute2's `ss`
//! printed, and a renderer that prints a decoded [`Record`] the way `ss.c`
//! does (same conditions for omitting a field, same unit conversions, same
//! `%g` / `%.0f` / `%#x` formatting).
//!
//! The fixture test compares the two token by token, so a field counts as
//! proven only when the text `ss` rendered from the kernel's bytes is the
//! text we render from our decoding of the same bytes. The renderer follows
//! `iproute2/misc/ss.c` (`inet_show_sock`, `tcp_timer_print`,
//! `sock_details_print`, `print_skmeminfo`, `tcp_show_info`,
//! `tcp_stats_print`, `sprint_bw` with `-n`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use xtcp2::record::{tcp_state_name, Record};

/// One socket as `ss` printed it (or as we render it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsSocket {
    /// 1-based line of the socket's first line in the text (0 when rendered).
    pub line: usize,
    pub state: String,
    pub recv_q: String,
    pub send_q: String,
    /// `addr:port` exactly as printed (`[v6]:port`, `*` for a zero port).
    pub local: String,
    pub peer: String,
    /// Every other token, keyed by its `ss` name: `timer`, `uid`, `ino`,
    /// `sk`, `shutdown` (`<->`), `tos`, `skmem`, `cong`, `rtt`, `send`, ...
    /// Bare flags (`ts`, `sack`, `app_limited`) map to an empty value.
    pub fields: BTreeMap<String, String>,
    /// Tokens that do not come from inet_diag and are not compared:
    /// `users:` (from /proc), `cgroup:` (a path resolved by ss).
    pub not_compared: Vec<String>,
}

/// Which `ss` options produced the text: they decide which tokens exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// `-o`: timers and the `ts sack ecn ecnseen fastopen` option flags.
    pub options: bool,
    /// `-e`: `uid`, `ino`, `sk`, `fwmark`, `v6only`, shutdown arrows.
    pub details: bool,
    /// `tos:`, `tclass:`, `class_id:` (printed by ss builds that show TOS).
    pub tos: bool,
}

impl Shown {
    /// `ss -tiaemn -o` with TOS shown: the big fixture texts.
    pub const ALL: Shown = Shown {
        options: true,
        details: true,
        tos: true,
    };
    /// `ss -tin`.
    pub const INFO_ONLY: Shown = Shown {
        options: false,
        details: false,
        tos: false,
    };
}

/// Bare words `tcp_stats_print` emits that are not the congestion name.
const FLAG_WORDS: [&str; 7] = ["ts", "sack", "ecn", "ecnseen", "fastopen", "app_limited", "bidir"];
/// Words followed by a separate value token (`send 123bps`).
const SPACED_KEYS: [&str; 3] = ["send", "pacing_rate", "delivery_rate"];

/// Parses the whole output of `ss -ti...`: a `State ...` title line, then
/// per socket one line of columns and one tab-indented line of details.
pub fn parse(text: &str) -> Result<Vec<SsSocket>, String> {
    if text.bytes().any(|b| b == 0) {
        return Err("not ss output: the text contains NUL bytes".to_string());
    }
    let mut lines = text.lines().enumerate().peekable();
    match lines.next() {
        Some((_, title)) if title.starts_with("State") => {}
        Some((_, other)) => {
            return Err(format!(
                "not ss output: first line does not start with \"State\": {:?}",
                other.chars().take(40).collect::<String>()
            ))
        }
        None => return Err("not ss output: the text is empty".to_string()),
    }
    let mut sockets = Vec::new();
    while let Some((index, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') {
            return Err(format!("line {}: detail line without a socket line", index + 1));
        }
        let mut socket = parse_socket_line(line).map_err(|e| format!("line {}: {e}", index + 1))?;
        socket.line = index + 1;
        if let Some((detail_index, detail)) = lines.next_if(|(_, l)| l.starts_with('\t')) {
            parse_detail_line(detail, &mut socket).map_err(|e| format!("line {}: {e}", detail_index + 1))?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Splits on spaces but keeps parenthesised groups whole, because a process
/// name in `users:(("a b",pid=1,fd=3))` may contain spaces.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    for c in line.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth == 0 {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {line:?}"));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

fn parse_socket_line(line: &str) -> Result<SsSocket, String> {
    let toks = tokens(line)?;
    if toks.len() < 5 {
        return Err(format!("expected at least 5 columns, got {}: {line:?}", toks.len()));
    }
    let mut socket = SsSocket {
        line: 0,
        state: toks[0].clone(),
        recv_q: toks[1].clone(),
        send_q: toks[2].clone(),
        local: toks[3].clone(),
        peer: toks[4].clone(),
        fields: BTreeMap::new(),
        not_compared: Vec::new(),
    };
    for tok in &toks[5..] {
        if tok.starts_with("users:") || tok.starts_with("cgroup:") {
            socket.not_compared.push(tok.clone());
            continue;
        }
        let (key, value) = if is_shutdown_arrows(tok) {
            ("shutdown", tok.as_str())
        } else {
            tok.split_once(':').ok_or_else(|| format!("unexpected token {tok:?}"))?
        };
        insert(&mut socket, key, value)?;
    }
    Ok(socket)
}

/// `<->`, `--->`-style arrows: `%c-%c` from the shutdown mask.
fn is_shutdown_arrows(tok: &str) -> bool {
    let b = tok.as_bytes();
    b.len() == 3 && (b[0] == b'<' || b[0] == b'-') && b[1] == b'-' && (b[2] == b'>' || b[2] == b'-')
}

fn insert(socket: &mut SsSocket, key: &str, value: &str) -> Result<(), String> {
    if socket.fields.insert(key.to_string(), value.to_string()).is_some() {
        return Err(format!("token {key:?} printed twice"));
    }
    Ok(())
}

fn parse_detail_line(line: &str, socket: &mut SsSocket) -> Result<(), String> {
    let toks = tokens(line)?;
    let mut it = toks.iter();
    while let Some(tok) = it.next() {
        if SPACED_KEYS.contains(&tok.as_str()) {
            let value = it.next().ok_or_else(|| format!("{tok} without a value"))?;
            insert(socket, tok, value)?;
        } else if let Some((key, value)) = tok.split_once(':') {
            insert(socket, key, value)?;
        } else if FLAG_WORDS.contains(&tok.as_str()) {
            insert(socket, tok, "")?;
        } else if tok.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // The one bare word that is not a flag: the congestion control name.
            insert(socket, "cong", tok)?;
        } else {
            return Err(format!("unexpected token {tok:?}"));
        }
    }
    Ok(())
}

/// C's `%g` (precision 6): `%e` or `%f`, whichever is shorter for the
/// exponent, trailing zeros removed.
pub fn fmt_g(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exponent) = sci.split_once('e').expect("Rust's {:e} always has an exponent");
    let exponent: i32 = exponent.parse().expect("Rust's exponent is an integer");
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_fraction_zeros(mantissa), exponent.abs())
    } else {
        let precision = (5 - exponent) as usize;
        strip_fraction_zeros(&format!("{x:.precision$}")).to_string()
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// `%#x`: `0` for zero, `0x..` otherwise.
fn alt_hex(v: u64) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

/// `print_ms_timer`: `48sec`, `6.950ms`, `1min23sec`, `12min`.
pub fn ms_timer(timeout: u32) -> String {
    let mut secs = timeout / 1000;
    let minutes = secs / 60;
    secs %= 60;
    let mut msecs = timeout % 1000;
    let mut buf = String::new();
    if minutes > 0 {
        msecs = 0;
        let _ = write!(buf, "{minutes}min");
        if minutes > 9 {
            secs = 0;
        }
    }
    if secs > 0 {
        if secs > 9 {
            msecs = 0;
        }
        let _ = write!(buf, "{secs}{}", if msecs > 0 { "." } else { "sec" });
    }
    if msecs > 0 {
        let _ = write!(buf, "{msecs:03}ms");
    }
    buf
}

/// `sprint_bw` with `-n`: `%.0f` and the `bps` suffix.
fn bps(bits_per_second: f64) -> String {
    format!("{bits_per_second:.0}bps")
}

/// `inet_addr_print` with `-n`: the unspecified IPv6 address is printed
/// `*` unless the socket is v6only.
fn address(ip: Option<IpAddr>, port: Option<u16>, v6only: bool) -> String {
    let host = match ip {
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) if a.is_unspecified() && !v6only => "*".to_string(),
        Some(IpAddr::V6(a)) => format!("[{a}]"),
        None => "?".to_string(),
    };
    match port {
        Some(0) => format!("{host}:*"),
        Some(p) => format!("{host}:{p}"),
        None => format!("{host}:?"),
    }
}

fn n<T: Into<u64> + Copy>(v: Option<T>) -> u64 {
    v.map(Into::into).unwrap_or(0)
}

/// The socket as `ss` would print it from the attributes decoded into `rec`.
pub fn render(rec: &Record, shown: Shown) -> SsSocket {
    // ss reads INET_DIAG_SKV6ONLY as 0 when the kernel did not send it.
    let v6only = n(rec.v6only) != 0;
    let mut s = SsSocket {
        line: 0,
        state: tcp_state_name(n(rec.idiag_state)).to_string(),
        recv_q: n(rec.idiag_rqueue).to_string(),
        send_q: n(rec.idiag_wqueue).to_string(),
        local: address(rec.idiag_src, rec.idiag_sport, v6only),
        peer: address(rec.idiag_dst, rec.idiag_dport, v6only),
        fields: BTreeMap::new(),
        not_compared: Vec::new(),
    };
    let mut put = |k: &str, v: String| {
        s.fields.insert(k.to_string(), v);
    };

    // inet_show_sock → tcp_timer_print
    if shown.options {
        let timer = n(rec.idiag_timer);
        if timer != 0 {
            const NAMES: [&str; 6] = ["off", "on", "keepalive", "timewait", "persist", "unknown"];
            let name = NAMES[timer.min(5) as usize];
            put(
                "timer",
                format!(
                    "({name},{},{})",
                    ms_timer(rec.idiag_expires.unwrap_or(0)),
                    n(rec.idiag_retrans)
                ),
            );
        }
    }
    // sock_details_print and the shutdown arrows
    if shown.details {
        if n(rec.idiag_uid) != 0 {
            put("uid", n(rec.idiag_uid).to_string());
        }
        put("ino", n(rec.idiag_inode).to_string());
        put("sk", format!("{:x}", n(rec.idiag_cookie)));
        if n(rec.mark) != 0 {
            put("fwmark", format!("{:#x}", n(rec.mark)));
        }
        // inet_show_sock: only for IPv6 sockets, only when sent.
        if rec.idiag_family == Some(10) {
            if let Some(v) = rec.v6only {
                put("v6only", v.to_string());
            }
        }
        if let Some(mask) = rec.shutdown {
            let arrows = format!(
                "{}-{}",
                if mask & 1 != 0 { '-' } else { '<' },
                if mask & 2 != 0 { '-' } else { '>' }
            );
            put("shutdown", arrows);
        }
    }
    if shown.tos {
        if let Some(v) = rec.tos {
            put("tos", alt_hex(v.into()));
        }
        if let Some(v) = rec.tclass {
            put("tclass", alt_hex(v.into()));
        }
        if let Some(v) = rec.class_id {
            put("class_id", alt_hex(v.into()));
        }
    }

    // tcp_show_info → print_skmeminfo
    if rec.skmem_rmem_alloc.is_some() {
        let mut text = format!(
            "(r{},rb{},t{},tb{},f{},w{},o{}",
            n(rec.skmem_rmem_alloc),
            n(rec.skmem_rcvbuf),
            n(rec.skmem_wmem_alloc),
            n(rec.skmem_sndbuf),
            n(rec.skmem_fwd_alloc),
            n(rec.skmem_wmem_queued),
            n(rec.skmem_optmem)
        );
        if let Some(bl) = rec.skmem_backlog {
            let _ = write!(text, ",bl{bl}");
        }
        if let Some(d) = rec.skmem_drops {
            let _ = write!(text, ",d{d}");
        }
        text.push(')');
        put("skmem", text);
    } else if rec.idiag_rmem.is_some() {
        put(
            "mem",
            format!(
                "(r{},w{},f{},t{})",
                n(rec.idiag_rmem),
                n(rec.idiag_wmem),
                n(rec.idiag_fmem),
                n(rec.idiag_tmem)
            ),
        );
    }

    // tcp_show_info: only when INET_DIAG_INFO came (its first byte is tcpi_state).
    if rec.tcpi_state.is_some() {
        render_tcp_info(rec, shown, &mut put);
    }
    s
}

/// `tcp_show_info` + `tcp_stats_print`, field by field in ss's order. ss
/// zero-fills a tcp_info shorter than its own struct, hence `n(..)`.
fn render_tcp_info(rec: &Record, shown: Shown, put: &mut impl FnMut(&str, String)) {
    let options = n(rec.tcpi_options);
    let has = |bit: u64| options & bit != 0;
    if shown.options {
        for (bit, word) in [(1, "ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen")] {
            if has(bit) {
                put(word, String::new());
            }
        }
    }
    if let Some(cong) = &rec.cong {
        if !cong.as_str().is_empty() {
            put("cong", cong.as_str().to_string());
        }
    }
    if has(4) {
        put(
            "wscale",
            format!("{},{}", n(rec.tcpi_snd_wscale), n(rec.tcpi_rcv_wscale)),
        );
    }
    let rto = n(rec.tcpi_rto);
    if rto != 0 && rto != 3_000_000 {
        put("rto", fmt_g(rto as f64 / 1000.0));
    }
    if n(rec.tcpi_backoff) != 0 {
        put("backoff", n(rec.tcpi_backoff).to_string());
    }
    let rtt_us = n(rec.tcpi_rtt);
    if rtt_us != 0 {
        put(
            "rtt",
            format!(
                "{}/{}",
                fmt_g(rtt_us as f64 / 1000.0),
                fmt_g(n(rec.tcpi_rttvar) as f64 / 1000.0)
            ),
        );
    }
    if n(rec.tcpi_ato) != 0 {
        put("ato", fmt_g(n(rec.tcpi_ato) as f64 / 1000.0));
    }
    let plain: [(&str, u64); 5] = [
        ("mss", n(rec.tcpi_snd_mss)),
        ("pmtu", n(rec.tcpi_pmtu)),
        ("rcvmss", n(rec.tcpi_rcv_mss)),
        ("advmss", n(rec.tcpi_advmss)),
        ("cwnd", n(rec.tcpi_snd_cwnd)),
    ];
    for (key, v) in plain {
        if v != 0 {
            put(key, v.to_string());
        }
    }
    let ssthresh = n(rec.tcpi_snd_ssthresh);
    if ssthresh < 0xFFFF && ssthresh != 0 {
        put("ssthresh", ssthresh.to_string());
    }
    let counters: [(&str, u64); 8] = [
        ("bytes_sent", n(rec.tcpi_bytes_sent)),
        ("bytes_retrans", n(rec.tcpi_bytes_retrans)),
        ("bytes_acked", n(rec.tcpi_bytes_acked)),
        ("bytes_received", n(rec.tcpi_bytes_received)),
        ("segs_out", n(rec.tcpi_segs_out)),
        ("segs_in", n(rec.tcpi_segs_in)),
        ("data_segs_out", n(rec.tcpi_data_segs_out)),
        ("data_segs_in", n(rec.tcpi_data_segs_in)),
    ];
    for (key, v) in counters {
        if v != 0 {
            put(key, v.to_string());
        }
    }
    if rec.dctcp_enabled.is_some() {
        if n(rec.dctcp_enabled) != 0 {
            put(
                "dctcp",
                format!(
                    "(ce_state:{},alpha:{},ab_ecn:{},ab_tot:{})",
                    n(rec.dctcp_ce_state),
                    n(rec.dctcp_alpha),
                    n(rec.dctcp_ab_ecn),
                    n(rec.dctcp_ab_tot)
                ),
            );
        } else {
            put("dctcp", "fallback_mode".to_string());
        }
    }
    if rec.bbr_bw_lo.is_some() {
        let bw = (n(rec.bbr_bw_hi) << 32) | n(rec.bbr_bw_lo);
        let mut text = format!(
            "(bw:{},mrtt:{}",
            bps(bw as f64 * 8.0),
            fmt_g(n(rec.bbr_min_rtt) as f64 / 1000.0)
        );
        if n(rec.bbr_pacing_gain) != 0 {
            let _ = write!(text, ",pacing_gain:{}", fmt_g(n(rec.bbr_pacing_gain) as f64 / 256.0));
        }
        if n(rec.bbr_cwnd_gain) != 0 {
            let _ = write!(text, ",cwnd_gain:{}", fmt_g(n(rec.bbr_cwnd_gain) as f64 / 256.0));
        }
        text.push(')');
        put("bbr", text);
    }
    // send: cwnd * mss * 8 / rtt, where a running Vegas' own RTT replaces tcpi_rtt.
    let mut rtt = rtt_us as f64;
    if rec.tcpv_enabled.is_some() {
        let vrtt = n(rec.tcpv_rtt);
        if n(rec.tcpv_enabled) != 0 && vrtt != 0 && vrtt != 0x7fff_ffff {
            rtt = vrtt as f64;
        }
    }
    let (mss, cwnd) = (n(rec.tcpi_snd_mss), n(rec.tcpi_snd_cwnd));
    if rtt > 0.0 && mss != 0 && cwnd != 0 {
        put("send", bps(cwnd as f64 * mss as f64 * 8_000_000.0 / rtt));
    }
    for (key, v) in [
        ("lastsnd", n(rec.tcpi_last_data_sent)),
        ("lastrcv", n(rec.tcpi_last_data_recv)),
        ("lastack", n(rec.tcpi_last_ack_recv)),
    ] {
        if v != 0 {
            put(key, v.to_string());
        }
    }
    let pacing = n(rec.tcpi_pacing_rate);
    if pacing != 0 && pacing != u64::MAX {
        let mut text = bps(pacing as f64 * 8.0);
        let max = n(rec.tcpi_max_pacing_rate);
        if max != 0 && max != u64::MAX {
            let _ = write!(text, "/{}", bps(max as f64 * 8.0));
        }
        put("pacing_rate", text);
    }
    let delivery = n(rec.tcpi_delivery_rate);
    if delivery != 0 {
        put("delivery_rate", bps(delivery as f64 * 8.0));
    }
    if n(rec.tcpi_delivered) != 0 {
        put("delivered", n(rec.tcpi_delivered).to_string());
    }
    if n(rec.tcpi_delivered_ce) != 0 {
        put("delivered_ce", n(rec.tcpi_delivered_ce).to_string());
    }
    if n(rec.tcpi_delivery_rate_app_limited) != 0 {
        put("app_limited", String::new());
    }
    let busy = n(rec.tcpi_busy_time);
    if busy != 0 {
        put("busy", format!("{}ms", busy / 1000));
        for (key, v) in [
            ("rwnd_limited", n(rec.tcpi_rwnd_limited)),
            ("sndbuf_limited", n(rec.tcpi_sndbuf_limited)),
        ] {
            if v != 0 {
                put(key, format!("{}ms({:.1}%)", v / 1000, 100.0 * v as f64 / busy as f64));
            }
        }
    }
    if n(rec.tcpi_unacked) != 0 {
        put("unacked", n(rec.tcpi_unacked).to_string());
    }
    let (retrans, total) = (n(rec.tcpi_retrans), n(rec.tcpi_total_retrans));
    if retrans != 0 || total != 0 {
        put("retrans", format!("{retrans}/{total}"));
    }
    if n(rec.tcpi_lost) != 0 {
        put("lost", n(rec.tcpi_lost).to_string());
    }
    if n(rec.tcpi_sacked) != 0 && n(rec.idiag_state) != 10 {
        put("sacked", n(rec.tcpi_sacked).to_string());
    }
    if n(rec.tcpi_dsack_dups) != 0 {
        put("dsack_dups", n(rec.tcpi_dsack_dups).to_string());
    }
    if n(rec.tcpi_fackets) != 0 {
        put("fackets", n(rec.tcpi_fackets).to_string());
    }
    if n(rec.tcpi_reordering) != 3 {
        put("reordering", n(rec.tcpi_reordering).to_string());
    }
    if n(rec.tcpi_reord_seen) != 0 {
        put("reord_seen", n(rec.tcpi_reord_seen).to_string());
    }
    if n(rec.tcpi_rcv_rtt) != 0 {
        put("rcv_rtt", fmt_g(n(rec.tcpi_rcv_rtt) as f64 / 1000.0));
    }
    for (key, v) in [
        ("rcv_space", n(rec.tcpi_rcv_space)),
        ("rcv_ssthresh", n(rec.tcpi_rcv_ssthresh)),
        ("notsent", n(rec.tcpi_notsent_bytes)),
    ] {
        if v != 0 {
            put(key, v.to_string());
        }
    }
    if n(rec.tcpi_min_rtt) != 0 {
        put("minrtt", fmt_g(n(rec.tcpi_min_rtt) as f64 / 1000.0));
    }
    for (key, v) in [
        ("rcv_ooopack", n(rec.tcpi_rcv_ooopack)),
        ("snd_wnd", n(rec.tcpi_snd_wnd)),
        ("rcv_wnd", n(rec.tcpi_rcv_wnd)),
    ] {
        if v != 0 {
            put(key, v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `%g` matches C for the shapes ss prints.
    #[test]
    fn fmt_g_matches_c() {
        assert_eq!(fmt_g(1.996), "1.996");
        assert_eq!(fmt_g(202.0), "202");
        assert_eq!(fmt_g(0.035), "0.035");
        assert_eq!(fmt_g(34.749), "34.749");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.00001), "1e-05");
        assert_eq!(fmt_g(120000.0), "120000");
    }

    /// Timer text matches ss's `print_ms_timer`.
    #[test]
    fn ms_timer_matches_ss() {
        assert_eq!(ms_timer(48_000), "48sec");
        assert_eq!(ms_timer(6_950), "6.950ms");
        assert_eq!(ms_timer(83_500), "1min23sec");
        assert_eq!(ms_timer(725_000), "12min");
        assert_eq!(ms_timer(200), "200ms");
    }
}
