//! Stage 6: bring up the guest's network with no udev, systemd-networkd or busybox.
//!
//! Loopback first (127.0.0.1/8), then one ethernet interface: link up over rtnetlink, a bounded
//! wait for carrier, an address from DHCP or from a static config, and a default route. DNS
//! servers are returned rather than written to /etc/resolv.conf, because the root is read-only;
//! the resolver uses them directly.
//!
//! The host runs the network, so its DHCP replies are hostile input: they are parsed with a
//! bounded parser that never panics, and a lease that makes no sense is refused (see `dhcp`).

mod dhcp;
pub mod dns;
mod netlink;
pub mod retry;
mod routes;
pub mod tls;

use netlink::{Netlink, RouteProtocol};
use nix::errno::Errno;
pub use routes::Route;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
    /// Loopback only.
    None,
}

/// What was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetUp {
    pub interface: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The routes installed, in order, including the on-link host routes added for gateways
    /// outside the subnet.
    pub routes: Vec<Route>,
    /// The MTU set from DHCP option 26; `None`: the driver's default was left alone.
    pub mtu: Option<u16>,
    pub dns: Vec<Ipv4Addr>,
    /// The DHCP lease in seconds (`u32::MAX`: infinite); `None` for a static config.
    pub lease_secs: Option<u32>,
    /// From the start of `bring_up` to the default route being in place.
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no ethernet interface with a device in {}", .0.display())]
    NoInterface(PathBuf),
    #[error("invalid interface name {0:?}")]
    BadInterfaceName(String),
    #[error("reading {}: {source}", .path.display())]
    Sysfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{iface} is not an ethernet interface ({what})")]
    NotEthernet { iface: String, what: String },
    #[error("no carrier on {iface} within {}", secs(.deadline))]
    NoCarrier { iface: String, deadline: Duration },
    #[error("netlink socket: {op}: {errno}")]
    NetlinkSocket { op: &'static str, errno: Errno },
    #[error("netlink {op}: {errno}")]
    Netlink { op: String, errno: Errno },
    #[error("netlink {op}: {why}")]
    NetlinkReply { op: String, why: &'static str },
    #[error("DHCP socket on {iface}: {op}")]
    Socket {
        iface: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("no DHCPOFFER on {iface} within {}{refused}", secs(.deadline))]
    NoOffer {
        iface: String,
        deadline: Duration,
        refused: String,
    },
    #[error("no DHCPACK on {iface} within {} for {address} from {server}{refused}", secs(.deadline))]
    NoAck {
        iface: String,
        deadline: Duration,
        address: Ipv4Addr,
        server: Ipv4Addr,
        refused: String,
    },
    #[error("invalid static network config: {0}")]
    BadStatic(String),
    #[error("random DHCP transaction id: {0}")]
    Random(String),
}

/// "10 s", "2.5 s": deadlines are read by people on a console.
pub(crate) fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// How often the carrier is polled. Drivers raise it within milliseconds on a virtual NIC.
const CARRIER_POLL: Duration = Duration::from_millis(20);
/// Interfaces scanned at most in sysfs (the host decides how many NICs exist).
const MAX_INTERFACES: usize = 1024;
/// RFC 2131 leaves the count open; more than this is a broken or hostile server.
const MAX_DNS: usize = 8;

/// Bring up `lo`, then (unless `config` is `None`) `interface` or the first ethernet interface,
/// configured by `config`, all within `deadline`.
pub fn bring_up(
    config: &NetConfig,
    interface: Option<&str>,
    deadline: Duration,
) -> Result<Option<NetUp>, NetError> {
    bring_up_in(Path::new("/sys"), config, interface, deadline)
}

fn bring_up_in(
    sys: &Path,
    config: &NetConfig,
    interface: Option<&str>,
    deadline: Duration,
) -> Result<Option<NetUp>, NetError> {
    let started = Instant::now();
    let until = started + deadline;
    // Refuse a bad static config before touching any interface.
    if let NetConfig::Static {
        address,
        prefix,
        gateway,
        dns,
    } = config
    {
        validate_lease(*address, *prefix, *gateway, dns).map_err(NetError::BadStatic)?;
    }
    let mut nl = Netlink::open()?;

    // Loopback always: workloads expect 127.0.0.1 even when the VM has no network.
    let lo = ifindex(sys, "lo")?;
    nl.request("RTM_NEWLINK lo up", netlink::link_up(lo))?;
    nl.request(
        "RTM_NEWADDR 127.0.0.1/8 on lo",
        netlink::new_addr(lo, Ipv4Addr::LOCALHOST, 8),
    )?;
    if *config == NetConfig::None {
        return Ok(None);
    }

    let iface = match interface {
        Some(name) => {
            if !valid_ifname(name) {
                return Err(NetError::BadInterfaceName(name.to_string()));
            }
            name.to_string()
        }
        None => first_ethernet(sys)?.ok_or_else(|| NetError::NoInterface(sys.join("class/net")))?,
    };
    let index = ifindex(sys, &iface)?;
    let mac = ethernet_mac(sys, &iface)?;
    nl.request(&format!("RTM_NEWLINK {iface} up"), netlink::link_up(index))?;
    wait_carrier(sys, &iface, until, deadline)?;

    let (address, prefix, gateway, routes, mtu, dns, lease_secs, protocol) = match config {
        NetConfig::Dhcp => {
            let lease = dhcp::obtain(&iface, mac, until, deadline)?;
            tracing::info!(
                iface,
                address = %lease.address,
                prefix = lease.prefix,
                server = %lease.server,
                lease_secs = lease.lease_secs,
                mtu = lease.mtu,
                routes = %lease.routes.iter().map(Route::to_string).collect::<Vec<_>>().join(", "),
                "DHCP lease"
            );
            (
                lease.address,
                lease.prefix,
                lease.gateway,
                lease.routes,
                lease.mtu,
                lease.dns,
                Some(lease.lease_secs),
                RouteProtocol::Dhcp,
            )
        }
        NetConfig::Static {
            address,
            prefix,
            gateway,
            dns,
        } => (
            *address,
            *prefix,
            *gateway,
            gateway
                .map(|gw| Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(gw),
                })
                .into_iter()
                .collect(),
            None,
            dns.clone(),
            None,
            RouteProtocol::Static,
        ),
        NetConfig::None => return Ok(None),
    };

    // Before the address, so no packet leaves with the driver's default MTU once the
    // interface is addressed (GCP's 1460 is below ethernet's 1500).
    if let Some(mtu) = mtu {
        nl.request(
            &format!("RTM_NEWLINK {iface} mtu {mtu}"),
            netlink::set_mtu(index, mtu),
        )?;
    }
    nl.request(
        &format!("RTM_NEWADDR {address}/{prefix} on {iface}"),
        netlink::new_addr(index, address, prefix),
    )?;
    let routes = routes::plan(address, prefix, &routes);
    for r in &routes {
        nl.request(
            &format!("RTM_NEWROUTE {r} dev {iface}"),
            netlink::new_route(index, r.dst, r.prefix, r.gateway, protocol),
        )?;
    }
    Ok(Some(NetUp {
        interface: iface,
        mac,
        address,
        prefix,
        gateway,
        routes,
        mtu,
        dns,
        lease_secs,
        elapsed: started.elapsed(),
    }))
}

/// The driver Hyper-V's synthetic NIC binds to (Azure).
const NETVSC_DRIVER: &str = "hv_netvsc";

/// The first interface, by name, that is ethernet (`type` 1), not loopback, backed by a device
/// (a `device` link: veth, bridges, tunnels and other virtual interfaces have none), and not
/// the accelerated-networking VF of an Azure synthetic NIC.
///
/// With Azure accelerated networking each NIC shows up twice: the synthetic `hv_netvsc`
/// interface and a PCI VF (Mellanox `mlx5_core` or `mana`) with the same MAC, which
/// `hv_netvsc` enslaves and steers traffic through. Only the synthetic interface may be
/// configured: it stays when the host revokes the VF (maintenance, live migration), and an
/// address on the VF would bypass it. So an interface whose MAC equals that of an `hv_netvsc`
/// interface but whose own driver (`device/driver` in sysfs) is another one is skipped. Sorting
/// by name alone would pick the VF on Azure, whose kernel name may sort first.
pub fn first_ethernet(sys: &Path) -> Result<Option<String>, NetError> {
    let dir = sys.join("class/net");
    let entries = std::fs::read_dir(&dir).map_err(|source| NetError::Sysfs {
        path: dir.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .take(MAX_INTERFACES)
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo" && valid_ifname(n))
        .collect();
    names.sort();
    let candidates: Vec<(String, Option<String>, Option<String>)> = names
        .into_iter()
        .filter(|n| {
            let base = dir.join(n);
            read_small(&base.join("type")).is_ok_and(|t| t == "1")
                && std::fs::symlink_metadata(base.join("device")).is_ok()
        })
        .map(|n| {
            let base = dir.join(&n);
            let mac = read_small(&base.join("address")).ok();
            let driver = driver_of(&base);
            (n, mac, driver)
        })
        .collect();
    let netvsc_macs: Vec<&str> = candidates
        .iter()
        .filter(|(_, _, driver)| driver.as_deref() == Some(NETVSC_DRIVER))
        .filter_map(|(_, mac, _)| mac.as_deref())
        .collect();
    Ok(candidates
        .iter()
        .find(|(name, mac, driver)| {
            let vf = driver.as_deref() != Some(NETVSC_DRIVER)
                && mac.as_deref().is_some_and(|m| netvsc_macs.contains(&m));
            if vf {
                tracing::info!(
                    iface = name.as_str(),
                    driver = driver.as_deref().unwrap_or("none"),
                    "skipped: the accelerated-networking VF of an hv_netvsc interface"
                );
            }
            !vf
        })
        .map(|(name, _, _)| name.clone()))
}

/// The name of the driver bound to an interface's device (the last part of the
/// `device/driver` link), if any.
fn driver_of(iface_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(iface_dir.join("device/driver")).ok()?;
    target.file_name()?.to_str().map(str::to_string)
}

/// The kernel's rule (`dev_valid_name`): 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
/// Checked here too because the name is joined into sysfs paths.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// A sysfs attribute, trimmed, read with a size bound.
fn read_small(path: &Path) -> Result<String, NetError> {
    let err = |source| NetError::Sysfs {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(256)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text.trim().to_string())
}

fn ifindex(sys: &Path, iface: &str) -> Result<u32, NetError> {
    let path = sys.join("class/net").join(iface).join("ifindex");
    let text = read_small(&path)?;
    text.parse().map_err(|_| NetError::Sysfs {
        path,
        source: std::io::Error::other(format!("bad ifindex {text:?}")),
    })
}

/// The MAC of an ethernet interface; DHCP's `chaddr` is defined for 6-byte addresses only.
fn ethernet_mac(sys: &Path, iface: &str) -> Result<[u8; 6], NetError> {
    let base = sys.join("class/net").join(iface);
    let kind = read_small(&base.join("type"))?;
    if kind != "1" {
        return Err(NetError::NotEthernet {
            iface: iface.to_string(),
            what: format!("ARPHRD type {kind}"),
        });
    }
    let text = read_small(&base.join("address"))?;
    parse_mac(&text).ok_or_else(|| NetError::NotEthernet {
        iface: iface.to_string(),
        what: format!("address {text:?}"),
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        // from_str_radix alone would also take "+5".
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn wait_carrier(
    sys: &Path,
    iface: &str,
    until: Instant,
    deadline: Duration,
) -> Result<(), NetError> {
    let base = sys.join("class/net").join(iface);
    loop {
        // Reading `carrier` fails (EINVAL) while the link is still down; that is "not yet".
        // Carrier alone is not quite enough: when carrier comes on after the link is opened,
        // the kernel activates the real qdisc from its linkwatch work, a little later; until
        // then the noop qdisc drops what we send (a lost first DISCOVER costs a retransmit).
        // Linkwatch updates `operstate` in the same pass, so wait for that too.
        let carrier = read_small(&base.join("carrier")).is_ok_and(|c| c == "1");
        let oper = read_small(&base.join("operstate")).is_ok_and(|s| s == "up" || s == "unknown");
        if carrier && oper {
            return Ok(());
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::NoCarrier {
                iface: iface.to_string(),
                deadline,
            });
        }
        std::thread::sleep(CARRIER_POLL.min(left));
    }
}

/// The netmask of a prefix length, as a host-order integer.
fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The prefix length of a contiguous, non-zero netmask.
fn prefix_of(netmask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(netmask);
    let p = m.leading_ones() as u8;
    (p > 0 && mask(p) == m).then_some(p)
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    (u32::from(a) ^ u32::from(net)) & mask(prefix) == 0
}

/// An address a host, gateway or DNS server can have: not 0/8, loopback, multicast, class E
/// or broadcast.
fn unicast(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first != 0 && !a.is_loopback() && !a.is_multicast() && first < 240
}

/// The sanity rules shared by DHCP leases and static configs.
/// The clouds' link-local services: the metadata service and Azure's WireServer.
const PLATFORM_ADDRESSES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(168, 63, 129, 16),
];

fn validate_lease(
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
) -> Result<(), String> {
    if !(1..=32).contains(&prefix) {
        return Err(format!("prefix /{prefix} is not in 1..=32"));
    }
    if !unicast(address) {
        return Err(format!("address {address} is not a unicast host address"));
    }
    let host_bits = !mask(prefix);
    // /31 and /32 have no network or broadcast address (RFC 3021).
    let special = |a: Ipv4Addr| match u32::from(a) & host_bits {
        _ if prefix > 30 => None,
        0 => Some("network"),
        h if h == host_bits => Some("broadcast"),
        _ => None,
    };
    if let Some(what) = special(address) {
        return Err(format!("address {address} is the subnet's {what}"));
    }
    // The agent talks to these after the lease (metadata, Azure's WireServer); taking one as
    // its own address would make it talk to itself, or to a workload listening there.
    if PLATFORM_ADDRESSES.contains(&address) {
        return Err(format!(
            "address {address} is a cloud platform service's address"
        ));
    }
    if let Some(gw) = gateway {
        if !unicast(gw) {
            return Err(format!("gateway {gw} is not a unicast address"));
        }
        if gw == address {
            return Err(format!("gateway {gw} is our own address"));
        }
        if in_subnet(gw, address, prefix)
            && let Some(what) = special(gw)
        {
            return Err(format!("gateway {gw} is the subnet's {what}"));
        }
    }
    if dns.len() > MAX_DNS {
        return Err(format!("too many DNS servers ({} > {MAX_DNS})", dns.len()));
    }
    if let Some(bad) = dns.iter().find(|d| !unicast(**d)) {
        return Err(format!("DNS server {bad} is not a unicast address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(128, 0, 0, 0)), Some(1));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), None);
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 1)), None);
        assert!(in_subnet(
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::new(10, 0, 2, 15),
            24
        ));
        assert!(!in_subnet(
            Ipv4Addr::new(10, 0, 3, 2),
            Ipv4Addr::new(10, 0, 2, 15),
            24
        ));
    }

    #[test]
    fn static_configs_are_validated() {
        let a = Ipv4Addr::new(10, 1, 0, 5);
        let gw = Some(Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(validate_lease(a, 24, gw, &[]), Ok(()));
        assert_eq!(validate_lease(a, 32, gw, &[]), Ok(()));
        assert_eq!(
            validate_lease(Ipv4Addr::new(10, 1, 0, 0), 31, None, &[]),
            Ok(())
        );
        assert!(validate_lease(a, 0, gw, &[]).is_err());
        assert!(validate_lease(a, 33, gw, &[]).is_err());
        assert!(validate_lease(Ipv4Addr::new(10, 1, 0, 255), 24, gw, &[]).is_err());
        assert!(validate_lease(Ipv4Addr::new(240, 0, 0, 1), 24, None, &[]).is_err());
        for platform in PLATFORM_ADDRESSES {
            let err = validate_lease(platform, 16, None, &[]).unwrap_err();
            assert!(err.contains("cloud platform service"), "{err}");
        }
        assert!(validate_lease(a, 24, Some(Ipv4Addr::BROADCAST), &[]).is_err());
        assert!(validate_lease(a, 24, gw, &[Ipv4Addr::new(1, 1, 1, 1); 9]).is_err());
        assert!(validate_lease(a, 24, gw, &[Ipv4Addr::LOCALHOST]).is_err());
    }

    #[test]
    fn interface_names() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("enp0s1f2np3abcd"));
        for bad in ["", ".", "..", "a/b", "a:1", "a b", "enp0s1f2np3abcde"] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:ab:CD:0f"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5:54:00:ab:cd:0f0",
            "+5:54:00:ab:cd:0f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    fn fake_if(sys: &Path, name: &str, kind: &str, device: bool) {
        let dir = sys.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        if device {
            std::os::unix::fs::symlink("../../devices/fake", dir.join("device")).unwrap();
        }
    }

    #[test]
    fn first_ethernet_skips_loopback_virtual_and_non_ethernet() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        fs::create_dir_all(sys.join("class/net")).unwrap();
        assert_eq!(first_ethernet(sys).unwrap(), None);
        fake_if(sys, "lo", "772", false);
        fake_if(sys, "docker0", "1", false);
        fake_if(sys, "veth1", "1", false);
        fake_if(sys, "ib0", "32", true);
        fake_if(sys, "eth1", "1", true);
        fake_if(sys, "eth0", "1", true);
        assert_eq!(first_ethernet(sys).unwrap().as_deref(), Some("eth0"));
        assert!(first_ethernet(&sys.join("missing")).is_err());
    }

    /// An interface backed by a device bound to `driver`, laid out as sysfs does it:
    /// `class/net/X/device` → `devices/<bus>/<dev>`, whose `driver` → `bus/<bus>/drivers/<drv>`.
    fn fake_nic(sys: &Path, name: &str, mac: &str, bus: &str, driver: &str) {
        let dev = sys.join("devices").join(bus).join(name);
        let drv = sys.join("bus").join(bus).join("drivers").join(driver);
        fs::create_dir_all(&dev).unwrap();
        fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
        let dir = sys.join("class/net").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), "1\n").unwrap();
        fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        std::os::unix::fs::symlink(&dev, dir.join("device")).unwrap();
    }

    #[test]
    fn accelerated_networking_vf_is_skipped_for_its_netvsc_twin() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        // The VF's name sorts before the synthetic NIC's and shares its MAC.
        fake_nic(sys, "eth1", "00:0d:3a:11:22:33", "vmbus", "hv_netvsc");
        fake_nic(sys, "enP30832s1", "00:0d:3a:11:22:33", "pci", "mlx5_core");
        assert_eq!(first_ethernet(sys).unwrap().as_deref(), Some("eth1"));

        // A MANA VF, same rule.
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        fake_nic(sys, "eth0", "60:45:bd:01:02:03", "pci", "mana");
        fake_nic(sys, "eth9", "60:45:bd:01:02:03", "vmbus", "hv_netvsc");
        assert_eq!(first_ethernet(sys).unwrap().as_deref(), Some("eth9"));

        // A PCI NIC with its own MAC next to a synthetic one is a NIC of its own: name order.
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        fake_nic(sys, "eth1", "00:0d:3a:11:22:33", "vmbus", "hv_netvsc");
        fake_nic(sys, "eth0", "00:0d:3a:44:55:66", "pci", "mlx5_core");
        assert_eq!(first_ethernet(sys).unwrap().as_deref(), Some("eth0"));

        // Without any hv_netvsc interface (GCP gve, AWS ena) nothing is skipped.
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        fake_nic(sys, "eth0", "42:01:0a:80:00:05", "pci", "gve");
        assert_eq!(first_ethernet(sys).unwrap().as_deref(), Some("eth0"));
        assert_eq!(
            driver_of(&sys.join("class/net/eth0")).as_deref(),
            Some("gve")
        );
    }

    #[test]
    fn errors_read_well() {
        let e = NetError::NoOffer {
            iface: "eth0".into(),
            deadline: Duration::from_secs(10),
            refused: String::new(),
        };
        assert_eq!(e.to_string(), "no DHCPOFFER on eth0 within 10 s");
        let e = NetError::Netlink {
            op: "RTM_NEWADDR 10.0.0.2/24 on eth0".into(),
            errno: Errno::EPERM,
        };
        assert_eq!(
            e.to_string(),
            "netlink RTM_NEWADDR 10.0.0.2/24 on eth0: EPERM: Operation not permitted"
        );
        assert_eq!(secs(&Duration::from_millis(2500)), "2.5 s");
    }
}
