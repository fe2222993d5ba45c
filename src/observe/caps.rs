//! The startup capability check.
//!
//! Runs before anything else opens a socket, so an operator learns at once,
//! and precisely, why the daemon cannot work, instead of a vague EPERM from
//! the first dump. Hard requirements stop the process with
//! [`EXIT_MISSING_CAPABILITIES`]; soft ones only degrade it and are logged.

use caps::{CapSet, Capability};

/// Exit code when a required capability is missing (sysexits `EX_NOPERM`).
/// Restarting cannot fix it, so systemd units should not restart on it.
pub const EXIT_MISSING_CAPABILITIES: i32 = 77;

/// A capability and what the daemon loses without it.
pub struct Requirement {
    pub capability: Capability,
    pub name: &'static str,
    pub reason: &'static str,
    pub required: bool,
}

pub const REQUIREMENTS: [Requirement; 5] = [
    Requirement {
        capability: Capability::CAP_NET_ADMIN,
        name: "CAP_NET_ADMIN",
        reason: "required for netlink inet_diag queries",
        required: true,
    },
    Requirement {
        capability: Capability::CAP_SYS_ADMIN,
        name: "CAP_SYS_ADMIN",
        reason: "required for setns(CLONE_NEWNET) into each network namespace",
        required: true,
    },
    Requirement {
        capability: Capability::CAP_SYS_PTRACE,
        name: "CAP_SYS_PTRACE",
        reason: "the /proc scan sees only some namespaces (other users' /proc/PID/ns/net are unreadable)",
        required: false,
    },
    Requirement {
        capability: Capability::CAP_NET_RAW,
        name: "CAP_NET_RAW",
        reason: "a udp: destination fails at the first packet (it sends through a raw IP_HDRINCL socket)",
        required: false,
    },
    Requirement {
        capability: Capability::CAP_SYS_RESOURCE,
        name: "CAP_SYS_RESOURCE",
        reason: "RLIMIT_MEMLOCK cannot be raised (io_uring rings may not fit)",
        required: false,
    },
];

/// The outcome of the check.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CapabilityReport {
    pub missing_required: Vec<&'static Requirement>,
    pub missing_optional: Vec<&'static Requirement>,
}

impl std::fmt::Debug for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Requirement {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Requirement {}

/// Reads the effective set of this thread (= the process at startup).
pub fn check() -> Result<CapabilityReport, caps::errors::CapsError> {
    let effective = caps::read(None, CapSet::Effective)?;
    Ok(report_for(|c| effective.contains(&c)))
}

/// Builds the report from a predicate, so the logic is testable without
/// changing the process's capabilities.
pub fn report_for(has: impl Fn(Capability) -> bool) -> CapabilityReport {
    let mut report = CapabilityReport::default();
    for req in &REQUIREMENTS {
        if !has(req.capability) {
            if req.required {
                report.missing_required.push(req);
            } else {
                report.missing_optional.push(req);
            }
        }
    }
    report
}

/// The text printed on stderr when required capabilities are missing.
pub fn fatal_message(report: &CapabilityReport) -> String {
    let mut out = String::new();
    for req in &report.missing_required {
        out.push_str(&format!("xtcp2: missing capability {}: {}\n", req.name, req.reason));
    }
    let all: Vec<&str> = REQUIREMENTS.iter().map(|r| r.name).collect();
    out.push_str(&format!(
        "xtcp2: cannot start without them. Grant them, e.g. in the systemd unit:\n\
         \n\
         [Service]\n\
         AmbientCapabilities={all}\n\
         CapabilityBoundingSet={all}\n\
         \n\
         or run as root. Exiting with code {EXIT_MISSING_CAPABILITIES}.\n",
        all = all.join(" ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Missing both hard capabilities names both, with reasons, in order.
    #[test]
    fn fatal_message_names_each_missing_capability() {
        let report = report_for(|c| c != Capability::CAP_NET_ADMIN && c != Capability::CAP_SYS_ADMIN);
        let msg = fatal_message(&report);
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(
            lines[0],
            "xtcp2: missing capability CAP_NET_ADMIN: required for netlink inet_diag queries"
        );
        assert_eq!(
            lines[1],
            "xtcp2: missing capability CAP_SYS_ADMIN: required for setns(CLONE_NEWNET) into each network namespace"
        );
        assert!(
            msg.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_NET_RAW CAP_SYS_RESOURCE")
        );
        assert!(report.missing_optional.is_empty());
    }

    /// Soft capabilities only produce warnings.
    #[test]
    fn soft_capabilities_are_optional() {
        let report = report_for(|c| c == Capability::CAP_NET_ADMIN || c == Capability::CAP_SYS_ADMIN);
        assert!(report.missing_required.is_empty());
        let names: Vec<_> = report.missing_optional.iter().map(|r| r.name).collect();
        assert_eq!(names, ["CAP_SYS_PTRACE", "CAP_NET_RAW", "CAP_SYS_RESOURCE"]);
    }
}
