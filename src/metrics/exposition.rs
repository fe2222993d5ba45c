//! The two text formats a scraper may ask for.
//!
//! prometheus-client writes OpenMetrics only. Prometheus itself asks for
//! OpenMetrics, but `curl`, `promtool check metrics` and older scrapers
//! expect the classic text format (0.0.4), which differs in three ways that
//! matter here: a counter's `# HELP`/`# TYPE` lines carry the `_total`
//! sample name, there is no `# UNIT` line, and no `# EOF`. [`to_prometheus_text`]
//! rewrites exactly those, so both formats come from one registry.

/// Content type of the OpenMetrics text exposition.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text exposition.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    OpenMetrics,
    Prometheus,
}

impl ExpositionFormat {
    /// OpenMetrics when the `Accept` header lists it (with any non-zero
    /// quality), else the classic format every scraper understands.
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return ExpositionFormat::Prometheus;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants_openmetrics {
            ExpositionFormat::OpenMetrics
        } else {
            ExpositionFormat::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            ExpositionFormat::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// Rewrites an OpenMetrics exposition (as prometheus-client writes it) into
/// the classic Prometheus text format.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes `# HELP` immediately before `# TYPE`; the
    // HELP line must be renamed too once TYPE says "counter", so hold it.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take(), "");
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (suffix, classic_kind) = match kind {
                "counter" => ("_total", "counter"),
                "gauge" | "histogram" | "summary" => ("", kind),
                // An info metric's sample is `NAME_info 1`: a gauge in classic terms.
                "info" => ("_info", "gauge"),
                // Other OpenMetrics-only types have no classic equivalent.
                _ => ("", "untyped"),
            };
            match pending_help.take() {
                Some((help_name, help)) if help_name == name => flush_help(&mut out, Some((help_name, help)), suffix),
                other => flush_help(&mut out, other, ""),
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(classic_kind);
            out.push('\n');
            continue;
        }
        flush_help(&mut out, pending_help.take(), "");
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, pending_help.take(), "");
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: &str) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push_str(suffix);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus's own Accept header selects OpenMetrics; curl's `*/*`
    /// and a missing header select the classic format; q=0 refuses.
    #[test]
    fn accept_header_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            ExpositionFormat::negotiate(Some(prometheus)),
            ExpositionFormat::OpenMetrics
        );
        assert_eq!(ExpositionFormat::negotiate(Some("*/*")), ExpositionFormat::Prometheus);
        assert_eq!(ExpositionFormat::negotiate(None), ExpositionFormat::Prometheus);
        assert_eq!(
            ExpositionFormat::negotiate(Some("text/plain;version=0.0.4")),
            ExpositionFormat::Prometheus
        );
        assert_eq!(
            ExpositionFormat::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            ExpositionFormat::Prometheus
        );
    }

    /// Counters get `_total` on HELP and TYPE, UNIT and EOF go, samples
    /// and other families pass through unchanged.
    #[test]
    fn openmetrics_to_classic_text() {
        let om = "# HELP xtcp2_netlink_recv_bytes Bytes received from inet_diag sockets\n\
                  # TYPE xtcp2_netlink_recv_bytes counter\n\
                  # UNIT xtcp2_netlink_recv_bytes bytes\n\
                  xtcp2_netlink_recv_bytes_total 123\n\
                  # HELP xtcp2_netns_active Network namespaces currently collected\n\
                  # TYPE xtcp2_netns_active gauge\n\
                  xtcp2_netns_active 1\n\
                  # HELP xtcp2_poll_duration_seconds Duration of a poll cycle\n\
                  # TYPE xtcp2_poll_duration_seconds histogram\n\
                  # UNIT xtcp2_poll_duration_seconds seconds\n\
                  xtcp2_poll_duration_seconds_sum 0.5\n\
                  xtcp2_poll_duration_seconds_count 2\n\
                  xtcp2_poll_duration_seconds_bucket{le=\"+Inf\"} 2\n\
                  # EOF\n";
        let classic = "# HELP xtcp2_netlink_recv_bytes_total Bytes received from inet_diag sockets\n\
                       # TYPE xtcp2_netlink_recv_bytes_total counter\n\
                       xtcp2_netlink_recv_bytes_total 123\n\
                       # HELP xtcp2_netns_active Network namespaces currently collected\n\
                       # TYPE xtcp2_netns_active gauge\n\
                       xtcp2_netns_active 1\n\
                       # HELP xtcp2_poll_duration_seconds Duration of a poll cycle\n\
                       # TYPE xtcp2_poll_duration_seconds histogram\n\
                       xtcp2_poll_duration_seconds_sum 0.5\n\
                       xtcp2_poll_duration_seconds_count 2\n\
                       xtcp2_poll_duration_seconds_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(to_prometheus_text(om), classic);
    }

    /// An OpenMetrics info metric becomes the gauge its sample already is.
    #[test]
    fn info_type_becomes_gauge() {
        let om = "# HELP x_build Build\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_build_info Build\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n"
        );
    }
}
