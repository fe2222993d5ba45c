//! The standard `process_*` metrics, read from `/proc/self` at scrape time.
//!
//! Prometheus client libraries agree on these names (unprefixed), so
//! dashboards built for any exporter work unchanged. They are read when a
//! scraper asks, never on a timer: a scrape costs four small file reads, an
//! idle daemon costs nothing. A file that cannot be read (no `/proc`, a
//! hardened kernel) drops only the metrics it feeds; the scrape still works.

use std::path::{Path, PathBuf};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Values read from one process's `/proc/PID` directory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Fields of `/proc/PID/stat` we use, counted after the `(comm)` field
/// (so `state` is index 0; see proc(5), where it is field 3).
mod stat_field {
    pub(crate) const UTIME: usize = 11; // field 14, clock ticks
    pub(crate) const STIME: usize = 12; // field 15, clock ticks
    pub(crate) const NUM_THREADS: usize = 17; // field 20
    pub(crate) const STARTTIME: usize = 19; // field 22, clock ticks since boot
    pub(crate) const VSIZE: usize = 20; // field 23, bytes
}

/// The parts of `/proc/PID/stat` that feed metrics, still in kernel units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatFields {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u64,
    pub start_ticks: u64,
    pub vsize_bytes: u64,
}

/// Parses `/proc/PID/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<StatFields> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_ascii_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(StatFields {
        utime_ticks: field(stat_field::UTIME)?,
        stime_ticks: field(stat_field::STIME)?,
        threads: field(stat_field::NUM_THREADS)?,
        start_ticks: field(stat_field::STARTTIME)?,
        vsize_bytes: field(stat_field::VSIZE)?,
    })
}

/// `VmRSS` from `/proc/PID/status`, in bytes (the file says kB).
pub(crate) fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft "Max open files" limit from `/proc/PID/limits`; `None` when
/// unlimited (no number to report).
pub(crate) fn parse_limits_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_ascii_whitespace().next()?;
    soft.parse().ok()
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub(crate) fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Clock ticks per second (`USER_HZ`), the unit of the stat times.
fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf takes a constant name and only reads a system value;
    // it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

/// Reads a sample of the process whose `/proc` directory is `proc_dir`
/// (`/proc/self` in production), with `/proc/stat` at `proc_stat`.
pub(crate) fn read_sample(proc_dir: &Path, proc_stat: &Path) -> ProcessSample {
    let read = |name: &str| std::fs::read_to_string(proc_dir.join(name)).ok();
    let mut sample = ProcessSample::default();
    let ticks = clock_ticks_per_second();
    if let (Some(stat), Some(ticks)) = (read("stat").as_deref().and_then(parse_stat), ticks) {
        sample.cpu_seconds = Some((stat.utime_ticks + stat.stime_ticks) as f64 / ticks);
        sample.threads = Some(stat.threads);
        sample.virtual_bytes = Some(stat.vsize_bytes);
        let boot = std::fs::read_to_string(proc_stat)
            .ok()
            .as_deref()
            .and_then(parse_boot_time);
        sample.start_time_seconds = boot.map(|b| b as f64 + stat.start_ticks as f64 / ticks);
    }
    sample.resident_bytes = read("status").as_deref().and_then(parse_status_rss);
    sample.max_fds = read("limits").as_deref().and_then(parse_limits_max_fds);
    sample.open_fds = std::fs::read_dir(proc_dir.join("fd"))
        .ok()
        .map(|dir| dir.count() as u64);
    sample
}

/// Encodes the `process_*` family on each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    proc_dir: PathBuf,
    proc_stat: PathBuf,
}

impl ProcessCollector {
    /// This process.
    pub(crate) fn this_process() -> Self {
        ProcessCollector {
            proc_dir: PathBuf::from("/proc/self"),
            proc_stat: PathBuf::from("/proc/stat"),
        }
    }
}

impl Collector for ProcessCollector {
    /// Every family is always described (so the set of families does not
    /// depend on the host); a value that cannot be read is left out.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read_sample(&self.proc_dir, &self.proc_stat);
        let cpu = ConstCounter::new(s.cpu_seconds.unwrap_or(0.0));
        let descriptor = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?;
        if s.cpu_seconds.is_some() {
            cpu.encode(descriptor)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 6] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                s.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                s.threads.map(|v| v as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let metric = ConstGauge::new(value.unwrap_or(0.0));
            let descriptor = encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            if value.is_some() {
                metric.encode(descriptor)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real stat line whose command name holds spaces and a `)` parses by
    /// counting from the last parenthesis.
    #[test]
    fn stat_with_parenthesis_in_command_name() {
        let line = "4242 (xtcp2 (x) y) S 1 4242 4242 0 -1 4194560 1029 0 0 0 \
                    37 12 0 0 20 0 6 0 81234 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let f = parse_stat(line).expect("parses");
        assert_eq!(
            f,
            StatFields {
                utime_ticks: 37,
                stime_ticks: 12,
                threads: 6,
                start_ticks: 81234,
                vsize_bytes: 123456789,
            }
        );
    }

    /// VmRSS is reported in kB and converted to bytes.
    #[test]
    fn status_rss_in_bytes() {
        let status = "Name:\txtcp2\nVmPeak:\t  10000 kB\nVmRSS:\t    5120 kB\nThreads:\t6\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
    }

    /// The soft open-files limit is taken; "unlimited" yields nothing.
    #[test]
    fn limits_soft_open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63429                63429                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limits_max_fds(limits), Some(1024));
        let unlimited = "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_limits_max_fds(unlimited), None);
    }

    /// Boot time comes from the btime line of /proc/stat.
    #[test]
    fn boot_time_from_proc_stat() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
    }

    /// Without /proc files every family is still described, with no samples.
    #[test]
    fn unreadable_proc_keeps_every_family_without_values() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector {
            proc_dir: PathBuf::from("/nonexistent/proc/self"),
            proc_stat: PathBuf::from("/nonexistent/proc/stat"),
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        assert_eq!(
            types,
            [
                "# TYPE process_cpu_seconds counter",
                "# TYPE process_resident_memory_bytes gauge",
                "# TYPE process_virtual_memory_bytes gauge",
                "# TYPE process_start_time_seconds gauge",
                "# TYPE process_open_fds gauge",
                "# TYPE process_max_fds gauge",
                "# TYPE process_threads gauge",
            ]
        );
        assert!(!text.lines().any(|l| l.starts_with("process_")), "{text}");
    }

    /// Reading this test process gives every value, with plausible sizes.
    #[test]
    fn this_process_has_every_value() {
        let s = read_sample(Path::new("/proc/self"), Path::new("/proc/stat"));
        assert!(s.cpu_seconds.is_some(), "{s:?}");
        assert!(s.resident_bytes.unwrap() > 1024 * 1024, "{s:?}");
        assert!(s.virtual_bytes.unwrap() >= s.resident_bytes.unwrap(), "{s:?}");
        assert!(s.threads.unwrap() >= 1, "{s:?}");
        assert!(s.open_fds.unwrap() >= 3, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86400.0 * 365.0,
            "{started} vs {now}"
        );
    }
}
