//! How many TCP sockets a namespace holds, from `/proc/PID/net/sockstat`
//! and `sockstat6`: the estimate a cut-short dump reports of what it missed.
//! Cheap (two small reads) and only read after a dump failed.

use std::path::Path;

/// TCP sockets in the network namespace of process `pid` (`None`: this
/// process's): hashed IPv4 (`TCP: inuse`) and IPv6 (`TCP6: inuse`) sockets
/// plus TIME-WAIT ones (`tw`, shared by both families). `None` when the
/// files cannot be read (the process is gone).
pub fn tcp_sockets(pid: Option<u32>) -> Option<u64> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/net"),
        None => "/proc/self/net".to_string(),
    };
    let dir = Path::new(&dir);
    let v4 = std::fs::read_to_string(dir.join("sockstat")).ok()?;
    // A kernel without IPv6 has no sockstat6.
    let v6 = std::fs::read_to_string(dir.join("sockstat6")).unwrap_or_default();
    parse(&v4, &v6)
}

/// `TCP: inuse` + `tw` of sockstat, + `TCP6: inuse` of sockstat6.
fn parse(sockstat: &str, sockstat6: &str) -> Option<u64> {
    let field = |text: &str, line: &str, name: &str| -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(line))?;
        let mut words = rest.split_whitespace();
        while let Some(word) = words.next() {
            if word == name {
                return words.next()?.parse().ok();
            }
        }
        None
    };
    let inuse = field(sockstat, "TCP:", "inuse")?;
    let tw = field(sockstat, "TCP:", "tw").unwrap_or(0);
    let inuse6 = field(sockstat6, "TCP6:", "inuse").unwrap_or(0);
    Some(inuse + tw + inuse6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines as a 6.x kernel writes them.
    #[test]
    fn sums_tcp_tcp6_and_time_wait() {
        let v4 = "sockets: used 1204\nTCP: inuse 217003 orphan 0 tw 12 alloc 217010 mem 3\nUDP: inuse 4 mem 2\n";
        let v6 = "TCP6: inuse 40\nUDP6: inuse 2\n";
        assert_eq!(parse(v4, v6), Some(217_055));
        assert_eq!(parse(v4, ""), Some(217_015));
        assert_eq!(parse("UDP: inuse 4\n", v6), None);
        assert_eq!(parse("TCP: inuse x\n", v6), None);
    }

    /// This process's namespace has a readable sockstat.
    #[test]
    fn reads_this_namespace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(tcp_sockets(None).is_some_and(|n| n >= 1));
        drop(listener);
    }
}
