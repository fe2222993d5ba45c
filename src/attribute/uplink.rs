//! `--enrich-nic` and `--enrich-lldp`: which NIC the host's traffic
//! leaves by, and what it is plugged into, in up to two uplink slots
//! (`uplink1_*`, `uplink2_*`) stamped on every record.
//!
//! The uplinks are `--uplink-interfaces`, or else the interfaces of the
//! default routes of the daemon's own namespace (IPv4 then IPv6, lowest
//! metric first), from an rtnetlink route dump. Per interface:
//!
//! - driver, firmware version and bus address from the ethtool ioctl
//!   (`SIOCETHTOOL` `ETHTOOL_GDRVINFO`);
//! - PCI vendor and device ids from `/sys/class/net/IF/device/{vendor,device}`,
//!   the model from those ids' name in the PCI id database
//!   (`/usr/share/misc/pci.ids`, `/usr/share/hwdata/pci.ids`);
//! - speed (Mb/s) from `/sys/class/net/IF/speed`.
//!
//! A virtual NIC (veth, dummy, bridge, ...) has no PCI device: its ids,
//! model and bus address are absent (not zero), and so are a firmware
//! version and a speed the kernel does not report (empty, `-1`, or
//! unreadable while the link is down).
//!
//! With `--enrich-lldp`, each uplink's LLDP neighbour from lldpd
//! ([`super::lldp`]).
//!
//! Read at start and again on link or route change: a thread of its own
//! subscribes to rtnetlink's link and route multicast groups and re-reads
//! after any message (debounced), and every [`lldp::REFRESH`] with
//! `--enrich-lldp` (neighbours change without local news). Never per
//! socket or per poll: netlinkers take the current [`Uplinks`] once per
//! namespace.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::lldp::{self, LldpConfig, Neighbour};
use crate::metrics::{KindLabel, Metrics};
use crate::record::Record;

/// Uplink slots in the record (the Go record has two).
pub const MAX_UPLINKS: usize = 2;
/// Link and route changes come in bursts (a link going down drops its
/// routes too): wait this long for the burst to end before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the refresh thread wakes without news, to notice that the
/// daemon dropped the index and it should exit.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Largest PCI id database read (hwdata's is about 1.4 MB).
const MAX_PCI_IDS_BYTES: u64 = 16 << 20;
const PCI_IDS: [&str; 2] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// What is known of one uplink. `None`: the interface does not have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    pub ifname: Option<Arc<str>>,
    pub driver: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub pci_vendor: Option<u32>,
    pub pci_device: Option<u32>,
    pub bus_info: Option<Arc<str>>,
    pub speed_mbps: Option<u32>,
    pub fw_version: Option<Arc<str>>,
    pub lldp: Neighbour,
}

impl Nic {
    fn private_copy(&self) -> Nic {
        let copy = |s: &Option<Arc<str>>| s.as_deref().map(Arc::from);
        Nic {
            ifname: copy(&self.ifname),
            driver: copy(&self.driver),
            model: copy(&self.model),
            pci_vendor: self.pci_vendor,
            pci_device: self.pci_device,
            bus_info: copy(&self.bus_info),
            speed_mbps: self.speed_mbps,
            fw_version: copy(&self.fw_version),
            lldp: Neighbour {
                chassis_name: copy(&self.lldp.chassis_name),
                chassis_id: copy(&self.lldp.chassis_id),
                mgmt_ip: copy(&self.lldp.mgmt_ip),
                port_id: copy(&self.lldp.port_id),
                port_descr: copy(&self.lldp.port_descr),
            },
        }
    }
}

/// The uplink slots, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uplinks {
    pub slots: Vec<Nic>,
}

impl Uplinks {
    /// A copy with strings of its own (see `collect::private_copy`).
    pub(crate) fn private_copy(&self) -> Uplinks {
        Uplinks {
            slots: self.slots.iter().map(Nic::private_copy).collect(),
        }
    }

    /// Stamps the slots on `record`.
    #[inline]
    pub fn apply(&self, record: &mut Record) {
        if let Some(n) = self.slots.first() {
            record.uplink1_ifname = n.ifname.clone();
            record.uplink1_nic_driver = n.driver.clone();
            record.uplink1_nic_model = n.model.clone();
            record.uplink1_nic_pci_vendor = n.pci_vendor;
            record.uplink1_nic_pci_device = n.pci_device;
            record.uplink1_nic_bus_info = n.bus_info.clone();
            record.uplink1_nic_speed_mbps = n.speed_mbps;
            record.uplink1_nic_fw_version = n.fw_version.clone();
            record.uplink1_lldp_chassis_name = n.lldp.chassis_name.clone();
            record.uplink1_lldp_chassis_id = n.lldp.chassis_id.clone();
            record.uplink1_lldp_mgmt_ip = n.lldp.mgmt_ip.clone();
            record.uplink1_lldp_port_id = n.lldp.port_id.clone();
            record.uplink1_lldp_port_descr = n.lldp.port_descr.clone();
        }
        if let Some(n) = self.slots.get(1) {
            record.uplink2_ifname = n.ifname.clone();
            record.uplink2_nic_driver = n.driver.clone();
            record.uplink2_nic_model = n.model.clone();
            record.uplink2_nic_pci_vendor = n.pci_vendor;
            record.uplink2_nic_pci_device = n.pci_device;
            record.uplink2_nic_bus_info = n.bus_info.clone();
            record.uplink2_nic_speed_mbps = n.speed_mbps;
            record.uplink2_nic_fw_version = n.fw_version.clone();
            record.uplink2_lldp_chassis_name = n.lldp.chassis_name.clone();
            record.uplink2_lldp_chassis_id = n.lldp.chassis_id.clone();
            record.uplink2_lldp_mgmt_ip = n.lldp.mgmt_ip.clone();
            record.uplink2_lldp_port_id = n.lldp.port_id.clone();
            record.uplink2_lldp_port_descr = n.lldp.port_descr.clone();
        }
    }
}

/// Which interfaces are uplinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// `--uplink-count`: slots filled, 1 or 2.
    pub count: usize,
    /// `--uplink-interfaces`; empty: the default routes' interfaces.
    pub interfaces: Vec<String>,
    /// `--enrich-nic`: the NICs' identity (without it, only their names).
    pub nic: bool,
    /// `--enrich-lldp`: where lldpd is.
    pub lldp: Option<LldpConfig>,
}

/// The current uplinks, replaced whole by the refresh thread.
pub struct UplinkIndex {
    current: RwLock<(u64, Arc<Uplinks>)>,
}

impl UplinkIndex {
    /// The uplinks and their generation (changes on every re-read that
    /// found something different).
    pub fn snapshot(&self) -> (u64, Arc<Uplinks>) {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, uplinks: Uplinks) -> bool {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *g.1 == uplinks {
            return false;
        }
        *g = (g.0 + 1, Arc::new(uplinks));
        true
    }

    /// Reads the uplinks once and starts the thread that re-reads them on
    /// link and route changes. The thread exits once the index is dropped.
    pub fn start(config: UplinkConfig, metrics: Arc<Metrics>) -> Arc<UplinkIndex> {
        let index = Arc::new(UplinkIndex {
            current: RwLock::new((0, Arc::new(Uplinks::default()))),
        });
        // Subscribe before the first read, so no change between is missed.
        let events = subscribe();
        let mut reader = Reader::default();
        index.replace(reader.read(&config, &metrics));
        match events {
            Ok(socket) => {
                let weak = Arc::downgrade(&index);
                let spawned = std::thread::Builder::new()
                    .name("xtcp2-uplinks".into())
                    .spawn(move || follow(socket, weak, config, metrics, reader));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "--enrich-nic: no refresh thread; uplinks read once");
                }
            }
            Err(e) => {
                metrics
                    .attribution
                    .source_failures
                    .get_or_create(&KindLabel { kind: "nic_subscribe" })
                    .inc();
                tracing::warn!(error = %e, "--enrich-nic: cannot follow link changes; uplinks read once");
            }
        }
        index
    }
}

/// rtnetlink multicast groups: links, IPv4 and IPv6 routes.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

fn subscribe() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))?;
    crate::kernel::set_recv_timeout(&socket, IDLE_WAKE)?;
    Ok(socket)
}

/// The refresh thread: re-reads after each burst of link or route news.
fn follow(socket: Socket, index: Weak<UplinkIndex>, config: UplinkConfig, metrics: Arc<Metrics>, mut reader: Reader) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_read = Instant::now();
    loop {
        let mut window: &mut [u8] = &mut buf[..];
        let news = match socket.recv(&mut window, 0) {
            Ok(_) => true,
            // ENOBUFS: news were lost, so re-read to be sure.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => true,
            Err(_) => false,
        };
        let Some(index) = index.upgrade() else {
            return;
        };
        if !news && config.lldp.is_some() && last_read.elapsed() >= lldp::REFRESH {
            last_read = Instant::now();
            index.replace(reader.read(&config, &metrics));
        }
        if news {
            std::thread::sleep(DEBOUNCE);
            // Drain the burst without blocking.
            loop {
                let mut window: &mut [u8] = &mut buf[..];
                if socket.recv(&mut window, libc::MSG_DONTWAIT).is_err() {
                    break;
                }
            }
            last_read = Instant::now();
            if index.replace(reader.read(&config, &metrics)) {
                tracing::info!(uplinks = ?index.snapshot().1.slots.iter().map(|n| n.ifname.as_deref().unwrap_or("")).collect::<Vec<_>>(),
                    "--enrich-nic: uplinks re-read after a link or route change");
            }
        }
    }
}

/// Reads the uplinks; failures are counted and logged once per kind.
#[derive(Default)]
struct Reader {
    logged: Vec<&'static str>,
}

impl Reader {
    fn fail(&mut self, metrics: &Metrics, kind: &'static str, error: &dyn std::fmt::Display) {
        metrics
            .attribution
            .source_failures
            .get_or_create(&KindLabel { kind })
            .inc();
        if !self.logged.contains(&kind) {
            self.logged.push(kind);
            tracing::warn!(error = %error, kind, "uplink enrichment source failed; its fields stay unset (further failures only counted)");
        }
    }

    fn read(&mut self, config: &UplinkConfig, metrics: &Metrics) -> Uplinks {
        let names = if config.interfaces.is_empty() {
            match default_route_interfaces() {
                Ok(names) => names,
                Err(e) => {
                    self.fail(metrics, "nic_routes", &e);
                    Vec::new()
                }
            }
        } else {
            config.interfaces.clone()
        };
        let pci_ids = PCI_IDS.iter().find(|p| Path::new(p).exists()).copied();
        let mut neighbours = match &config.lldp {
            Some(lldp) => match lldp::neighbours(lldp) {
                Ok(found) => found,
                Err(e) => {
                    self.fail(metrics, e.kind(), &e);
                    Default::default()
                }
            },
            None => Default::default(),
        };
        let slots = names
            .iter()
            .take(config.count.min(MAX_UPLINKS))
            .map(|name| {
                let mut nic = Nic {
                    ifname: Some(Arc::from(name.as_str())),
                    lldp: neighbours.remove(name).unwrap_or_default(),
                    ..Nic::default()
                };
                if !config.nic {
                    return nic;
                }
                match drvinfo(name) {
                    Ok(info) => {
                        nic.driver = info.driver;
                        nic.fw_version = info.fw_version;
                        nic.bus_info = info.bus_info;
                    }
                    Err(e) => self.fail(metrics, "nic_ethtool", &format!("{name}: {e}")),
                }
                let sys = Path::new("/sys/class/net").join(name);
                if let Some(pci) = pci_device_dir(&sys) {
                    nic.pci_vendor = read_hex(&pci.join("vendor"));
                    nic.pci_device = read_hex(&pci.join("device"));
                }
                nic.speed_mbps = std::fs::read_to_string(sys.join("speed"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .and_then(|s| u32::try_from(s).ok());
                if let (Some(v), Some(d), Some(db)) = (nic.pci_vendor, nic.pci_device, pci_ids) {
                    nic.model = pci_model(Path::new(db), v, d).map(Arc::from);
                }
                nic
            })
            .collect();
        Uplinks { slots }
    }
}

/// The PCI device behind interface directory `sys`: its `device`, or an
/// ancestor of it for drivers layered on a PCI function (virtio-net's
/// `device` is a virtio device, whose `vendor`/`device` are virtio ids).
/// `None` for a virtual NIC, which has no `device`.
fn pci_device_dir(sys: &Path) -> Option<std::path::PathBuf> {
    let mut dir = std::fs::canonicalize(sys.join("device")).ok()?;
    for _ in 0..3 {
        let subsystem = std::fs::read_link(dir.join("subsystem")).ok();
        if subsystem.as_deref().and_then(Path::file_name) == Some(std::ffi::OsStr::new("pci")) {
            return Some(dir);
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

fn read_hex(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The device's name in a PCI id database (`pci.ids` format: a vendor line
/// `1af4  Red Hat, Inc.`, its devices below as `\t1000  Virtio network device`).
fn pci_model(db: &Path, vendor: u32, device: u32) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(db)
        .ok()?
        .take(MAX_PCI_IDS_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    model_in(&text, vendor, device)
}

fn model_in(db: &str, vendor: u32, device: u32) -> Option<String> {
    let vendor_key = format!("{vendor:04x}  ");
    let device_key = format!("\t{device:04x}  ");
    let mut in_vendor = false;
    for line in db.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            if in_vendor {
                return None;
            }
            in_vendor = line.starts_with(&vendor_key);
        } else if in_vendor {
            if let Some(name) = line.strip_prefix(&device_key) {
                return Some(name.trim().to_string());
            }
        }
    }
    None
}

/// What `ETHTOOL_GDRVINFO` says; empty strings and "N/A" are `None`.
#[derive(Debug, Default, PartialEq, Eq)]
struct DrvInfo {
    driver: Option<Arc<str>>,
    fw_version: Option<Arc<str>>,
    bus_info: Option<Arc<str>>,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union, padded to the
/// union's full size (24 bytes on 64-bit).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    pad: [u8; 16],
}

fn c_text(bytes: &[u8]) -> Option<Arc<str>> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let text = text.trim();
    // Drivers without the thing say "N/A" (bridge, tun) or leave it empty.
    (!text.is_empty() && text != "N/A").then(|| Arc::from(text))
}

fn drvinfo(ifname: &str) -> io::Result<DrvInfo> {
    let name = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let name = name.as_bytes_with_nul();
    if name.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut request = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut info as *mut EthtoolDrvinfo).cast(),
        pad: [0; 16],
    };
    request.name[..name.len()].copy_from_slice(name);
    // SAFETY: `request` is a valid ifreq whose name is NUL-terminated and
    // whose data points at `info`, a live ethtool_drvinfo of the size the
    // kernel writes for ETHTOOL_GDRVINFO; both outlive the call, and the
    // socket is open.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &mut request as *mut IfreqData) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(DrvInfo {
        driver: c_text(&info.driver),
        fw_version: c_text(&info.fw_version),
        bus_info: c_text(&info.bus_info),
    })
}

const RTM_GETROUTE: u16 = 26;
const RTM_NEWROUTE: u16 = 24;
use crate::decode::netlink::{NLMSG_DONE, NLMSG_ERROR, NLM_F_REQUEST};
const NLM_F_DUMP: u16 = 0x300;
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_MULTIPATH: u16 = 9;
const RT_TABLE_MAIN: u32 = 254;
/// A route dump of a host with a full table is large; the uplinks are
/// among the default routes, so a bound keeps a huge table from costing
/// more than this.
const MAX_ROUTE_DUMP_BYTES: usize = 64 << 20;

/// A default route: family, metric and the interfaces it leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DefaultRoute {
    family: u8,
    metric: u32,
    ifindexes: Vec<u32>,
}

/// The interfaces of the main table's default routes: IPv4 first, then
/// IPv6, lowest metric first, each interface once.
fn default_route_interfaces() -> io::Result<Vec<String>> {
    let mut routes = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        routes.extend(dump_default_routes(family)?);
    }
    routes.sort_by_key(|r| (r.family != libc::AF_INET as u8, r.metric));
    let mut names: Vec<String> = Vec::new();
    for index in routes.iter().flat_map(|r| r.ifindexes.iter()) {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes.
        let name = unsafe { libc::if_indextoname(*index, buf.as_mut_ptr()) };
        if name.is_null() {
            continue;
        }
        // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

fn dump_default_routes(family: u8) -> io::Result<Vec<DefaultRoute>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    crate::kernel::set_recv_timeout(&socket, Duration::from_secs(2))?;
    // nlmsghdr + struct rtmsg (12 bytes).
    let mut m = Vec::with_capacity(28);
    m.extend_from_slice(&28u32.to_ne_bytes());
    m.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.extend_from_slice(&[0u8; 11]);
    socket.send(&m, 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut routes = Vec::new();
    let mut total = 0usize;
    loop {
        let mut window: &mut [u8] = &mut buf[..];
        let n = socket.recv(&mut window, 0)?;
        total += n;
        if total > MAX_ROUTE_DUMP_BYTES {
            return Err(io::Error::other("route dump larger than its bound"));
        }
        let (done, found) = parse_routes(buf.get(..n).unwrap_or_default())?;
        routes.extend(found);
        if done {
            return Ok(routes);
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The default routes of one datagram of a route dump, and whether it
/// ended the dump.
fn parse_routes(datagram: &[u8]) -> io::Result<(bool, Vec<DefaultRoute>)> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed route dump");
    let mut routes = Vec::new();
    let mut at = 0usize;
    while at + 16 <= datagram.len() {
        let len = u32_at(datagram, at).ok_or_else(malformed)? as usize;
        let kind = u16_at(datagram, at + 4).ok_or_else(malformed)?;
        if len < 16 || at + len > datagram.len() {
            return Err(malformed());
        }
        let msg = &datagram[at..at + len];
        match kind {
            NLMSG_DONE => return Ok((true, routes)),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 16).ok_or_else(malformed)? as i32;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            RTM_NEWROUTE => {
                if let Some(route) = default_route(msg) {
                    routes.push(route);
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok((false, routes))
}

/// The route in `msg` (header included) if it is a main-table default.
fn default_route(msg: &[u8]) -> Option<DefaultRoute> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let family = *msg.get(16)?;
    let dst_len = *msg.get(17)?;
    let mut table = u32::from(*msg.get(20)?);
    let rtype = *msg.get(23)?;
    if dst_len != 0 || rtype != libc::RTN_UNICAST {
        return None;
    }
    let mut route = DefaultRoute {
        family,
        metric: 0,
        ifindexes: Vec::new(),
    };
    let mut at = 16 + 12;
    while at + 4 <= msg.len() {
        let len = usize::from(u16_at(msg, at)?);
        let kind = u16_at(msg, at + 2)? & 0x3fff;
        if len < 4 || at + len > msg.len() {
            return None;
        }
        let value = &msg[at + 4..at + len];
        match kind {
            RTA_OIF => route.ifindexes.push(u32_at(value, 0)?),
            RTA_PRIORITY => route.metric = u32_at(value, 0)?,
            RTA_TABLE => table = u32_at(value, 0)?,
            RTA_MULTIPATH => {
                // struct rtnexthop: len u16, flags u8, hops u8, ifindex i32.
                let mut hop = 0usize;
                while hop + 8 <= value.len() {
                    let hop_len = usize::from(u16_at(value, hop)?);
                    route.ifindexes.push(u32_at(value, hop + 4)?);
                    if hop_len < 8 {
                        break;
                    }
                    hop += (hop_len + 3) & !3;
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    (table == RT_TABLE_MAIN && !route.ifindexes.is_empty()).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model is the device's line under its vendor, not another
    /// vendor's device of the same id.
    #[test]
    fn pci_model_is_found_under_its_vendor() {
        let db = "# comment\n1234  Other\n\t1000  Not this\n1af4  Red Hat, Inc.\n\t1000  Virtio network device\n\t\t1af4 0001  Subsystem\n8086  Intel\n";
        assert_eq!(model_in(db, 0x1af4, 0x1000).as_deref(), Some("Virtio network device"));
        assert_eq!(model_in(db, 0x1af4, 0x1001), None);
        assert_eq!(model_in(db, 0x8086, 0x1000), None);
    }

    fn route(family: u8, dst_len: u8, table: u8, attrs: &[(u16, u32)]) -> Vec<u8> {
        let mut m = Vec::new();
        let len = 16 + 12 + 8 * attrs.len();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&[family, dst_len, 0, 0, table, 3, 0, libc::RTN_UNICAST, 0, 0, 0, 0]);
        for (kind, value) in attrs {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&value.to_ne_bytes());
        }
        m
    }

    /// Only main-table default routes count; a datagram cut anywhere is an
    /// error or nothing, never a panic.
    #[test]
    fn default_routes_are_picked_from_a_dump() {
        let mut dump = route(2, 0, 254, &[(RTA_OIF, 3), (RTA_PRIORITY, 100)]);
        dump.extend(route(2, 24, 254, &[(RTA_OIF, 4)]));
        dump.extend(route(2, 0, 255, &[(RTA_OIF, 5)]));
        let (done, routes) = parse_routes(&dump).unwrap();
        assert!(!done);
        assert_eq!(
            routes,
            vec![DefaultRoute {
                family: 2,
                metric: 100,
                ifindexes: vec![3]
            }]
        );
        for cut in 0..dump.len() {
            let _ = parse_routes(&dump[..cut]);
        }
    }

    /// The loopback interface answers ETHTOOL_GDRVINFO or refuses it; a
    /// name too long is refused before any system call.
    #[test]
    fn drvinfo_of_a_too_long_name_is_an_error() {
        assert!(drvinfo("an-interface-name-far-too-long").is_err());
        assert!(drvinfo("bad\0name").is_err());
    }
}
