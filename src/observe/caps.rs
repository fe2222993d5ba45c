//! Capabilities: the start-up check, and the drop to what the
//! configuration needs.
//!
//! The check runs before anything else opens a socket, so an operator
//! learns at once, and precisely, why the daemon cannot work, instead of a
//! vague EPERM from the first dump. Hard requirements stop the process with
//! [`EXIT_MISSING_CAPABILITIES`]; soft ones only degrade it and are logged.
//!
//! The drop (`keep_only`) runs once, before the daemon starts its first
//! thread. Capabilities belong to a thread on Linux, and a new thread copies
//! its creator's: dropping them on the only thread there is drops them for
//! every thread the daemon will ever have (the async runtime, netlinkers,
//! setns helpers), while a drop after the runtime started would leave its
//! threads with everything. It keeps what `Needs` lists (the daemon
//! derives it from its configuration), removes every other capability from
//! every set (effective, permitted, inheritable, bounding, ambient), sets
//! `no_new_privs`, then reads the sets back and refuses to go on if they
//! are not what was asked. The uid is not changed. `docs/security.md` says
//! why each capability is kept.
//!
//! This module must not decide what the configuration needs (that is the
//! daemon's wiring, which knows the configuration) nor run after a second
//! thread exists.

use std::io;

use caps::{CapSet, Capability};

use crate::metrics::{CapabilityLabel, Metrics};

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

/// What the daemon will ask of the kernel after start-up, each field
/// keeping one capability. The daemon builds it from its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// Namespaces other than the daemon's own are collected (bind-mount
    /// directories or the /proc scan): `setns(CLONE_NEWNET)` into them.
    pub enter_namespaces: bool,
    /// The /proc scan reads `/proc/PID/ns/net` of every process, including
    /// other users' and root processes that hold more capabilities than the
    /// daemon keeps (the kernel's ptrace access check).
    pub proc_scan: bool,
    /// The `udp:` destination's raw socket, opened at the first send.
    pub raw_socket: bool,
    /// `--prom-listen` on a port below `net.ipv4.ip_unprivileged_port_start`:
    /// the listener is bound after the drop.
    pub privileged_port: bool,
    /// `--enrich-lldp` runs `lldpcli` and it connects to lldpd's socket;
    /// Debian makes both lldpd's own (`_lldpd`, modes 4750 and 0770), so
    /// uid 0 without CAP_DAC_OVERRIDE may neither run nor connect.
    pub lldp_client: bool,
}

/// A capability kept after start-up, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    pub capability: Capability,
    pub reason: &'static str,
}

impl Needs {
    /// The capabilities to keep, in capability-number order. CAP_NET_ADMIN
    /// is always kept: the kernel sends a socket's mark, class id and ULP
    /// name only to a dump requested with it, and the inet_diag socket of a
    /// namespace found later is opened later.
    pub fn kept(&self) -> Vec<Kept> {
        let wanted = [
            (
                self.lldp_client,
                Capability::CAP_DAC_OVERRIDE,
                "--enrich-lldp runs lldpcli and connects to lldpd's socket, both lldpd's user's",
            ),
            (
                self.privileged_port,
                Capability::CAP_NET_BIND_SERVICE,
                "--prom-listen binds a privileged port",
            ),
            (
                true,
                Capability::CAP_NET_ADMIN,
                "inet_diag dumps with socket marks, class ids and ULP names",
            ),
            (
                self.raw_socket,
                Capability::CAP_NET_RAW,
                "the udp: destination's raw socket, opened at the first send",
            ),
            (
                self.proc_scan,
                Capability::CAP_SYS_PTRACE,
                "the /proc scan reads other processes' /proc/PID/ns/net",
            ),
            (
                self.enter_namespaces,
                Capability::CAP_SYS_ADMIN,
                "setns(CLONE_NEWNET) into each namespace found",
            ),
        ];
        wanted
            .into_iter()
            .filter(|(needed, _, _)| *needed)
            .map(|(_, capability, reason)| Kept { capability, reason })
            .collect()
    }
}

/// The kernel's names of capabilities 0 to 40 (`capabilities(7)`), in
/// lower case as `capsh` and `/proc` tools print them; numbers the kernel
/// may add later are named by number.
const CAPABILITY_NAMES: [&str; 64] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
    "cap_41",
    "cap_42",
    "cap_43",
    "cap_44",
    "cap_45",
    "cap_46",
    "cap_47",
    "cap_48",
    "cap_49",
    "cap_50",
    "cap_51",
    "cap_52",
    "cap_53",
    "cap_54",
    "cap_55",
    "cap_56",
    "cap_57",
    "cap_58",
    "cap_59",
    "cap_60",
    "cap_61",
    "cap_62",
    "cap_63",
];

/// The lower-case kernel name of a capability (`cap_net_admin`).
pub(crate) fn capability_name(capability: Capability) -> &'static str {
    CAPABILITY_NAMES[usize::from(capability.index())]
}

/// A capability set as the kernel keeps it: bit N is capability N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CapabilityMask(pub u64);

impl CapabilityMask {
    pub fn of(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        CapabilityMask(capabilities.into_iter().fold(0, |mask, c| mask | c.bitmask()))
    }

    pub fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bitmask() != 0
    }

    /// The names of the capabilities in the set, in number order.
    pub fn names(self) -> Vec<&'static str> {
        (0..64)
            .filter(|bit| self.0 & (1u64 << bit) != 0)
            .map(|bit| CAPABILITY_NAMES[bit])
            .collect()
    }
}

/// Comma-separated names, or `none`.
impl std::fmt::Display for CapabilityMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.names().join(",") {
            names if names.is_empty() => f.write_str("none"),
            names => f.write_str(&names),
        }
    }
}

/// One thread's capability sets and `no_new_privs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Privileges {
    pub effective: CapabilityMask,
    pub permitted: CapabilityMask,
    pub inheritable: CapabilityMask,
    pub bounding: CapabilityMask,
    pub ambient: CapabilityMask,
    pub no_new_privs: bool,
}

impl Privileges {
    /// Reads the calling thread's sets from the kernel (capget and prctl,
    /// not /proc, so it works without /proc mounted).
    pub fn of_this_thread() -> Result<Self, DropError> {
        let base = |set: CapSet, name: &'static str| {
            caps::read(None, set)
                .map(CapabilityMask::of)
                .map_err(|source| DropError::Read { set: name, source })
        };
        Ok(Privileges {
            effective: base(CapSet::Effective, "effective")?,
            permitted: base(CapSet::Permitted, "permitted")?,
            inheritable: base(CapSet::Inheritable, "inheritable")?,
            bounding: bounding_set()?,
            ambient: ambient_set()?,
            no_new_privs: prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0).map_err(DropError::NoNewPrivs)? == 1,
        })
    }

    /// Each set with its name, as the `set` label of `xtcp2_capabilities`.
    pub fn sets(&self) -> [(&'static str, CapabilityMask); 5] {
        [
            ("effective", self.effective),
            ("permitted", self.permitted),
            ("inheritable", self.inheritable),
            ("bounding", self.bounding),
            ("ambient", self.ambient),
        ]
    }

    /// Sets `xtcp2_capabilities` (one sample per held capability and set)
    /// and `xtcp2_no_new_privs`.
    pub fn report_to(&self, metrics: &Metrics) {
        for (set, mask) in self.sets() {
            for capability in mask.names() {
                metrics
                    .privileges
                    .capabilities
                    .get_or_create(&CapabilityLabel { set, capability })
                    .set(1);
            }
        }
        metrics.privileges.no_new_privs.set(i64::from(self.no_new_privs));
    }
}

/// Why the capabilities could not be dropped, or were not dropped as asked.
/// Any of them stops the daemon: it does not run with more than it says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DropError {
    #[error("reading the {set} capability set: {source}")]
    Read {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("reading the bounding set: {0}")]
    ReadBounding(#[source] io::Error),
    #[error("reading the ambient set: {0}")]
    ReadAmbient(#[source] io::Error),
    #[error("removing {name} from the bounding set: {source}")]
    Bounding {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("clearing the ambient set: {0}")]
    Ambient(#[source] io::Error),
    #[error("setting the {set} set to {to}: {source}")]
    Set {
        set: &'static str,
        to: CapabilityMask,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("no_new_privs: {0}")]
    NoNewPrivs(#[source] io::Error),
    #[error("after the drop this thread still holds {found:?}, not {expected:?}")]
    NotDropped {
        expected: Box<Privileges>,
        found: Box<Privileges>,
    },
}

/// What [`keep_only`] did.
#[derive(Debug)]
pub(crate) struct Dropped {
    /// The capabilities kept: those asked for that the process had.
    pub kept: Vec<Kept>,
    /// The sets afterwards, read back from the kernel.
    pub privileges: Privileges,
    /// The bounding set was left as it was: without CAP_SETPCAP (an
    /// unprivileged user with ambient capabilities) it cannot shrink, and
    /// `no_new_privs` keeps exec from using it.
    pub bounding_unchanged: bool,
}

/// Keeps only what `needs` lists (of what the process has), on the calling
/// thread, and sets `no_new_privs`. Call it while the calling thread is the
/// only one: threads already running keep their sets.
pub(crate) fn keep_only(needs: &Needs) -> Result<Dropped, DropError> {
    let before = Privileges::of_this_thread()?;
    let kept: Vec<Kept> = needs
        .kept()
        .into_iter()
        .filter(|k| before.permitted.contains(k.capability))
        .collect();
    let keep = CapabilityMask::of(kept.iter().map(|k| k.capability));
    // The bounding set first: shrinking it needs CAP_SETPCAP, dropped below.
    let bounding_unchanged = !before.effective.contains(Capability::CAP_SETPCAP);
    if !bounding_unchanged {
        for bit in (0..64u8).filter(|bit| before.bounding.0 & (1 << bit) != 0 && keep.0 & (1 << bit) == 0) {
            prctl(libc::PR_CAPBSET_DROP, bit.into(), 0).map_err(|source| DropError::Bounding {
                name: CAPABILITY_NAMES[usize::from(bit)],
                source,
            })?;
        }
    }
    match prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0) {
        // EINVAL: a kernel before 4.3, which has no ambient set.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(DropError::Ambient(e)),
        Ok(_) => {}
    }
    let keep_set: caps::CapsHashSet = kept.iter().map(|k| k.capability).collect();
    // Effective before permitted: the kernel refuses an effective set that
    // is not within the permitted one.
    for (set, name, to) in [
        (CapSet::Inheritable, "inheritable", caps::CapsHashSet::new()),
        (CapSet::Effective, "effective", keep_set.clone()),
        (CapSet::Permitted, "permitted", keep_set),
    ] {
        caps::set(None, set, &to).map_err(|source| DropError::Set {
            set: name,
            to: CapabilityMask::of(to.iter().copied()),
            source,
        })?;
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(DropError::NoNewPrivs)?;

    let after = Privileges::of_this_thread()?;
    let expected = Privileges {
        effective: keep,
        permitted: keep,
        inheritable: CapabilityMask(0),
        bounding: if bounding_unchanged { before.bounding } else { keep },
        ambient: CapabilityMask(0),
        no_new_privs: true,
    };
    if after != expected {
        return Err(DropError::NotDropped {
            expected: Box::new(expected),
            found: Box::new(after),
        });
    }
    Ok(Dropped {
        kept,
        privileges: after,
        bounding_unchanged,
    })
}

/// The bounding set, probed capability by capability until the kernel says
/// the number is past its last capability.
fn bounding_set() -> Result<CapabilityMask, DropError> {
    let mut mask = 0u64;
    for bit in 0..64u8 {
        match prctl(libc::PR_CAPBSET_READ, bit.into(), 0) {
            Ok(1) => mask |= 1 << bit,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(DropError::ReadBounding(e)),
        }
    }
    Ok(CapabilityMask(mask))
}

/// The ambient set; empty on kernels without one (before 4.3).
fn ambient_set() -> Result<CapabilityMask, DropError> {
    let mut mask = 0u64;
    for bit in 0..64u8 {
        match prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
            bit.into(),
        ) {
            Ok(1) => mask |= 1 << bit,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(DropError::ReadAmbient(e)),
        }
    }
    Ok(CapabilityMask(mask))
}

/// `prctl(option, arg2, arg3, 0, 0)`, the error from errno.
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every option used here takes integer arguments only (no
    // pointers) and changes at most the calling thread's credentials.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
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

    /// Only CAP_NET_ADMIN is kept unconditionally; each need adds its own
    /// capability, and the list is in capability-number order.
    #[test]
    fn needs_keep_one_capability_each_in_number_order() {
        let names =
            |needs: Needs| -> Vec<&str> { needs.kept().iter().map(|k| capability_name(k.capability)).collect() };
        assert_eq!(names(Needs::default()), ["cap_net_admin"]);
        let all = Needs {
            enter_namespaces: true,
            proc_scan: true,
            raw_socket: true,
            privileged_port: true,
            lldp_client: true,
        };
        assert_eq!(
            names(all),
            [
                "cap_dac_override",
                "cap_net_bind_service",
                "cap_net_admin",
                "cap_net_raw",
                "cap_sys_ptrace",
                "cap_sys_admin"
            ]
        );
        let udp_only = Needs {
            raw_socket: true,
            ..Needs::default()
        };
        assert_eq!(names(udp_only), ["cap_net_admin", "cap_net_raw"]);
    }

    /// Our names are the kernel's (as the caps crate spells them, lower case),
    /// by number.
    #[test]
    fn capability_names_are_the_kernel_names() {
        for capability in caps::all() {
            assert_eq!(capability_name(capability), capability.to_string().to_lowercase());
        }
        assert_eq!(CapabilityMask(0).to_string(), "none");
        assert_eq!(
            CapabilityMask((1 << 12) | (1 << 21) | (1 << 63)).to_string(),
            "cap_net_admin,cap_sys_admin,cap_63"
        );
    }

    /// The drop changes the calling thread and the threads it starts
    /// afterwards, not threads that already exist: why the daemon drops
    /// before its runtime starts. Root or not, the thread ends with exactly
    /// the kept set (what was asked, of what it had) and no_new_privs.
    #[test]
    fn keep_only_changes_this_thread_and_the_threads_it_starts_not_others() {
        let outside_before = Privileges::of_this_thread().unwrap();
        let needs = Needs {
            enter_namespaces: true,
            ..Needs::default()
        };
        let (dropped, child) = std::thread::spawn(move || {
            let dropped = keep_only(&needs).unwrap();
            let child = std::thread::spawn(|| Privileges::of_this_thread().unwrap())
                .join()
                .unwrap();
            (dropped, child)
        })
        .join()
        .unwrap();
        let asked = CapabilityMask::of([Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN]);
        let kept = CapabilityMask(asked.0 & outside_before.permitted.0);
        assert_eq!(CapabilityMask::of(dropped.kept.iter().map(|k| k.capability)), kept);
        let p = dropped.privileges;
        assert_eq!((p.effective, p.permitted), (kept, kept));
        assert_eq!((p.inheritable, p.ambient), (CapabilityMask(0), CapabilityMask(0)));
        assert!(p.no_new_privs);
        let setpcap = outside_before.effective.contains(Capability::CAP_SETPCAP);
        assert_eq!(dropped.bounding_unchanged, !setpcap);
        assert_eq!(p.bounding, if setpcap { kept } else { outside_before.bounding });
        assert_eq!(child, p, "a thread started after the drop has the dropped sets");
        assert_eq!(
            Privileges::of_this_thread().unwrap(),
            outside_before,
            "other threads keep theirs"
        );
    }
}
