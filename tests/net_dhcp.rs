//! Stage 6 end to end: our DHCP client and rtnetlink code against a real DHCP server (dnsmasq)
//! and the real kernel, inside two network namespaces this test creates and always deletes.
//!
//! Namespace A runs dnsmasq on one end of a veth pair; namespace B holds the other end and runs
//! `bring_up`. All traffic stays on that veth pair. Our code reads sysfs, which shows the network
//! namespace of whoever mounted it, so the client side re-executes this test binary under
//! `ip netns exec B` (which mounts a fresh /sys for B) and runs the ignored `inner` test there;
//! it prints one result line that the outer test checks, together with `ip -n B addr/route`.
//!
//! Needs root, iproute2, dnsmasq (Debian `dnsmasq-base`) and ping (`iputils-ping`). A missing
//! tool fails the test on purpose: a silently skipped network test would let a broken client
//! through CI.

use cvm_agent::net::{NetConfig, NetError, bring_up};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set in the environment of the re-executed binary: what `inner` should do there.
const INNER_MODE: &str = "CVM_NET_TEST_INNER";
const INNER_IFACE: &str = "CVM_NET_TEST_IFACE";

fn find_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: this test needs it; install the `{package}` package")
        })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> String {
    let out = run(Command::new(find_tool("ip", "iproute2")).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Effective uid 0, from /proc (the second field of `Uid:`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Two namespaces joined by a veth pair, both ends up, the server end addressed. Dropping it
/// deletes both namespaces, which also removes the veth pair.
struct Topology {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
}

impl Topology {
    /// `tag` keeps the tests of one run apart; the pid keeps concurrent runs apart. Interface
    /// names stay within the kernel's 15 bytes (pid ≤ 7 digits).
    fn new(tag: char) -> Self {
        assert!(
            is_root(),
            "this test creates network namespaces and needs root"
        );
        let pid = std::process::id();
        let t = Topology {
            server_ns: format!("cvm-net-{tag}a-{pid}"),
            client_ns: format!("cvm-net-{tag}b-{pid}"),
            server_if: format!("v{tag}a{pid}"),
            client_if: format!("v{tag}b{pid}"),
        };
        // From here on Drop cleans up, even if one of the steps below fails.
        ip(&["netns", "add", &t.server_ns]);
        ip(&["netns", "add", &t.client_ns]);
        ip(&[
            "link",
            "add",
            &t.server_if,
            "netns",
            &t.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &t.client_if,
            "netns",
            &t.client_ns,
        ]);
        ip(&[
            "-n",
            &t.server_ns,
            "addr",
            "add",
            "192.168.77.1/24",
            "dev",
            &t.server_if,
        ]);
        ip(&["-n", &t.server_ns, "link", "set", &t.server_if, "up"]);
        ip(&["-n", &t.server_ns, "link", "set", "lo", "up"]);
        t
    }

    /// Run the `inner` test in the client namespace and return its result line.
    fn inner(&self, mode: &str) -> String {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(find_tool("ip", "iproute2"))
            .args(["netns", "exec", &self.client_ns])
            .arg(exe)
            .args([
                "--exact",
                "inner",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INNER_MODE, mode)
            .env(INNER_IFACE, &self.client_if)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        // bring_up is bounded by its own deadline; this only catches a hang in the harness.
        let until = Instant::now() + Duration::from_secs(90);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("inner test in {} hung", self.client_ns);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("inner output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "inner test failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            // The harness prints "test inner ... " on the same line before our output.
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no RESULT line from the inner test:\n{stdout}"))
            .to_string()
    }

    fn client(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.client_ns];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let ip = find_tool("ip", "iproute2");
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new(&ip)
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// dnsmasq serving DHCP (DNS off) on the server end; killed when dropped, before the
/// namespaces go (fields drop after the guard declared later in the test).
struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// The plain server of a QEMU-like network: a /24, option 3 router and DNS.
    fn start(t: &Topology) -> Self {
        Self::start_with(
            t,
            &[
                "--dhcp-option=option:router,192.168.77.1",
                "--dhcp-option=option:dns-server,192.168.77.1",
            ],
        )
    }

    /// A server with the pool 192.168.77.50-60 and the given `--dhcp-option`s.
    fn start_with(t: &Topology, options: &[&str]) -> Self {
        let dnsmasq = find_tool("dnsmasq", "dnsmasq-base");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log file");
        let child = Command::new(find_tool("ip", "iproute2"))
            .args(["netns", "exec", &t.server_ns])
            .arg(dnsmasq)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--bind-interfaces",
                "--log-dhcp",
                "--log-facility=-",
                "--pid-file=",
                // dnsmasq pings an address before offering it, which costs ~3 s per lease.
                "--no-ping",
            ])
            .arg(format!("--interface={}", t.server_if))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg("--dhcp-range=192.168.77.50,192.168.77.60,12h")
            .args(options)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn dnsmasq");
        let d = Dnsmasq { child, dir };
        d.wait_listening(t);
        d
    }

    /// Wait until UDP port 67 (0x0043) is bound in the server namespace. The client would
    /// retransmit anyway; waiting keeps the timing of the test honest.
    fn wait_listening(&self, t: &Topology) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let udp = ip(&["netns", "exec", &t.server_ns, "cat", "/proc/net/udp"]);
            if udp.lines().any(|l| l.contains(":0043 ")) {
                return;
            }
            assert!(
                Instant::now() < until,
                "dnsmasq did not bind port 67:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse "k=v k=v …" from the inner test's RESULT line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn dhcp_lease_from_dnsmasq_is_applied() {
    let t = Topology::new('d');
    let server = Dnsmasq::start(&t);
    let line = t.inner("dhcp");
    eprintln!("client: {line}");
    let log = server.log();
    assert!(line.starts_with("ok "), "{line}\ndnsmasq:\n{log}");

    let address: Ipv4Addr = field(&line, "address").parse().expect("address");
    let last = address.octets()[3];
    assert_eq!(address.octets()[..3], [192, 168, 77]);
    assert!((50..=60).contains(&last), "{address} outside the pool");
    assert_eq!(field(&line, "prefix"), "24");
    assert_eq!(field(&line, "gateway"), "192.168.77.1");
    assert_eq!(field(&line, "dns"), "192.168.77.1");
    assert_eq!(field(&line, "lease"), "43200");
    assert_eq!(field(&line, "interface"), t.client_if);

    // The kernel state, as iproute2 sees it.
    let addrs = t.client(&["-4", "addr", "show", "dev", &t.client_if]);
    assert!(
        addrs.contains(&format!("inet {address}/24 brd 192.168.77.255")),
        "{addrs}"
    );
    let routes = t.client(&["-4", "route", "show"]);
    assert!(
        routes.contains(&format!(
            "default via 192.168.77.1 dev {} proto dhcp",
            t.client_if
        )),
        "{routes}"
    );
    let lo = t.client(&["-4", "addr", "show", "dev", "lo"]);
    assert!(
        lo.contains("inet 127.0.0.1/8") && lo.contains(",UP"),
        "{lo}"
    );

    // And the server's view: it handed out exactly this address to our MAC.
    let mac = field(&line, "mac");
    assert!(
        log.contains(&format!("DHCPACK({}) {address} {mac}", t.server_if)),
        "{log}"
    );
    assert!(
        server.leases().contains(&format!("{mac} {address}")),
        "{}",
        server.leases()
    );
}

/// Ping the server end from the client namespace: the routes carry real traffic.
fn ping_server(t: &Topology) {
    run(Command::new(find_tool("ip", "iproute2")).args([
        "netns",
        "exec",
        &t.client_ns,
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "192.168.77.1",
    ]));
}

/// GCP's lease shape: a /32 address, the gateway only reachable through option 121 (the gateway
/// on-link, then the default route through it), MTU 1460 in option 26. Option 3 names another
/// router, which the client must ignore because option 121 is present (RFC 3442 §3).
#[test]
fn gcp_slash32_lease_with_classless_routes_and_mtu() {
    let t = Topology::new('g');
    let server = Dnsmasq::start_with(
        &t,
        &[
            "--dhcp-option=option:netmask,255.255.255.255",
            "--dhcp-option=option:router,192.168.77.254",
            "--dhcp-option=option:classless-static-route,192.168.77.1/32,0.0.0.0,0.0.0.0/0,192.168.77.1",
            "--dhcp-option=option:mtu,1460",
            "--dhcp-option=option:dns-server,192.168.77.1",
        ],
    );
    let line = t.inner("dhcp");
    eprintln!("client: {line}");
    let log = server.log();
    assert!(line.starts_with("ok "), "{line}\ndnsmasq:\n{log}");
    let address: Ipv4Addr = field(&line, "address").parse().expect("address");
    assert_eq!(field(&line, "prefix"), "32");
    assert_eq!(field(&line, "gateway"), "192.168.77.1");
    assert_eq!(field(&line, "mtu"), "1460");
    assert_eq!(
        field(&line, "routes"),
        "192.168.77.1/32_on-link,default_via_192.168.77.1"
    );
    // The server did send what the client was asked to honour and to ignore.
    assert!(log.contains("option:121"), "{log}");
    assert!(log.contains("option: 26"), "{log}");
    assert!(log.contains("option:  3"), "{log}");

    let addrs = t.client(&["-4", "addr", "show", "dev", &t.client_if]);
    assert!(addrs.contains(&format!("inet {address}/32 ")), "{addrs}");
    let link = t.client(&["link", "show", "dev", &t.client_if]);
    assert!(link.contains(" mtu 1460 "), "{link}");
    let routes = t.client(&["-4", "route", "show"]);
    assert!(
        routes.contains(&format!(
            "192.168.77.1 dev {} proto dhcp scope link",
            t.client_if
        )),
        "{routes}"
    );
    assert!(
        routes.contains(&format!(
            "default via 192.168.77.1 dev {} proto dhcp",
            t.client_if
        )),
        "{routes}"
    );
    assert!(!routes.contains("192.168.77.254"), "{routes}");
    ping_server(&t);
}

/// Azure's lease shape: a /24 with option 3, and option 121 carrying the default route plus
/// host routes to the platform's wire server and metadata addresses through the same gateway.
/// No option 26: the driver's MTU stays.
#[test]
fn azure_lease_with_platform_host_routes() {
    let t = Topology::new('z');
    let server = Dnsmasq::start_with(
        &t,
        &[
            "--dhcp-option=option:router,192.168.77.1",
            "--dhcp-option=option:classless-static-route,0.0.0.0/0,192.168.77.1,168.63.129.16/32,192.168.77.1,169.254.169.254/32,192.168.77.1",
            "--dhcp-option=option:dns-server,168.63.129.16",
        ],
    );
    let line = t.inner("dhcp");
    eprintln!("client: {line}");
    let log = server.log();
    assert!(line.starts_with("ok "), "{line}\ndnsmasq:\n{log}");
    assert_eq!(field(&line, "prefix"), "24");
    assert_eq!(field(&line, "gateway"), "192.168.77.1");
    assert_eq!(field(&line, "dns"), "168.63.129.16");
    assert_eq!(field(&line, "mtu"), "none");
    assert_eq!(
        field(&line, "routes"),
        "default_via_192.168.77.1,168.63.129.16/32_via_192.168.77.1,\
         169.254.169.254/32_via_192.168.77.1"
    );
    let routes = t.client(&["-4", "route", "show"]);
    for want in [
        "default via 192.168.77.1",
        "168.63.129.16 via 192.168.77.1",
        "169.254.169.254 via 192.168.77.1",
    ] {
        assert!(
            routes.contains(&format!("{want} dev {} proto dhcp", t.client_if)),
            "{want}: {routes}"
        );
    }
    let link = t.client(&["link", "show", "dev", &t.client_if]);
    assert!(link.contains(" mtu 1500 "), "{link}");
    // The kernel picks the platform route for the wire server.
    let get = t.client(&["route", "get", "168.63.129.16"]);
    assert!(get.contains("via 192.168.77.1"), "{get}");
    ping_server(&t);
}

#[test]
fn no_dhcp_server_hits_the_deadline() {
    let t = Topology::new('n');
    let line = t.inner("dhcp-timeout");
    assert_eq!(
        field(&line, "error").replace('_', " "),
        format!("no DHCPOFFER on {} within 3 s", t.client_if)
    );
    let ms: u64 = field(&line, "elapsed_ms").parse().expect("elapsed");
    assert!((3000..6000).contains(&ms), "gave up after {ms} ms");
    // Nothing was configured on the interface.
    let addrs = t.client(&["-4", "addr", "show", "dev", &t.client_if]);
    assert!(!addrs.contains("inet "), "{addrs}");
}

#[test]
fn static_config_is_applied() {
    let t = Topology::new('s');
    let line = t.inner("static");
    assert!(line.starts_with("ok "), "{line}");
    assert_eq!(field(&line, "address"), "192.168.77.9");
    assert_eq!(field(&line, "lease"), "none");
    let addrs = t.client(&["-4", "addr", "show", "dev", &t.client_if]);
    assert!(
        addrs.contains("inet 192.168.77.9/24 brd 192.168.77.255"),
        "{addrs}"
    );
    let routes = t.client(&["-4", "route", "show"]);
    assert!(
        routes.contains(&format!(
            "default via 192.168.77.1 dev {} proto static",
            t.client_if
        )),
        "{routes}"
    );
    // Applying the same config again succeeds (a retried stage must not trip over EEXIST).
    let again = t.inner("static");
    assert!(again.starts_with("ok "), "{again}");
    // A gateway outside a /32 gets an on-link host route first (the cloud /32 case), and the
    // new default route replaces the old one.
    let line = t.inner("static-onlink");
    assert!(line.starts_with("ok "), "{line}");
    let routes = t.client(&["-4", "route", "show"]);
    assert!(
        routes.contains(&format!(
            "10.99.0.1 dev {} proto static scope link",
            t.client_if
        )),
        "{routes}"
    );
    assert!(
        routes.contains(&format!(
            "default via 10.99.0.1 dev {} proto static",
            t.client_if
        )),
        "{routes}"
    );
    // The interface can actually reach the server end over the veth.
    let reach = t.client(&["route", "get", "192.168.77.1"]);
    assert!(reach.contains(&format!("dev {}", t.client_if)), "{reach}");

    // Errors the caller sees for bad input, from inside the namespace too.
    assert_eq!(t.inner("bad"), "ok");
}

fn describe(up: &cvm_agent::net::NetUp) -> String {
    let mac: Vec<String> = up.mac.iter().map(|b| format!("{b:02x}")).collect();
    let dns: Vec<String> = up.dns.iter().map(Ipv4Addr::to_string).collect();
    format!(
        "ok interface={} mac={} address={} prefix={} gateway={} dns={} lease={} mtu={} routes={} \
         elapsed_ms={}",
        up.interface,
        mac.join(":"),
        up.address,
        up.prefix,
        up.gateway.map_or("none".into(), |g| g.to_string()),
        dns.join(","),
        up.lease_secs.map_or("none".into(), |l| l.to_string()),
        up.mtu.map_or("none".into(), |m| m.to_string()),
        up.routes
            .iter()
            .map(|r| r.to_string().replace(' ', "_"))
            .collect::<Vec<_>>()
            .join(","),
        up.elapsed.as_millis()
    )
}

/// The client half, run by the tests above inside the client namespace. Outside of that (a
/// plain `cargo test -- --ignored`) it does nothing.
#[test]
#[ignore = "run by the other tests inside a network namespace"]
fn inner() {
    let (Ok(mode), Ok(iface)) = (std::env::var(INNER_MODE), std::env::var(INNER_IFACE)) else {
        return;
    };
    let iface = Some(iface.as_str());
    let result = match mode.as_str() {
        "dhcp" => match bring_up(&NetConfig::Dhcp, iface, Duration::from_secs(30)) {
            Ok(Some(up)) => describe(&up),
            other => format!("failed {other:?}"),
        },
        "dhcp-timeout" => {
            let started = Instant::now();
            match bring_up(&NetConfig::Dhcp, iface, Duration::from_secs(3)) {
                Err(e @ NetError::NoOffer { .. }) => format!(
                    "error={} elapsed_ms={}",
                    e.to_string().replace(' ', "_"),
                    started.elapsed().as_millis()
                ),
                other => format!("failed {other:?}"),
            }
        }
        "static" | "static-onlink" => {
            let config = if mode == "static" {
                NetConfig::Static {
                    address: Ipv4Addr::new(192, 168, 77, 9),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(192, 168, 77, 1)),
                    dns: vec![Ipv4Addr::new(192, 168, 77, 1)],
                }
            } else {
                NetConfig::Static {
                    address: Ipv4Addr::new(10, 99, 5, 5),
                    prefix: 32,
                    gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
                    dns: vec![],
                }
            };
            match bring_up(&config, iface, Duration::from_secs(10)) {
                Ok(Some(up)) => describe(&up),
                other => format!("failed {other:?}"),
            }
        }
        "bad" => {
            let none = bring_up(&NetConfig::None, iface, Duration::from_secs(5));
            let missing = bring_up(&NetConfig::Dhcp, Some("nosuch0"), Duration::from_secs(5));
            let bad_static = bring_up(
                &NetConfig::Static {
                    address: Ipv4Addr::new(192, 168, 77, 255),
                    prefix: 24,
                    gateway: None,
                    dns: vec![],
                },
                iface,
                Duration::from_secs(5),
            );
            match (&none, &missing, &bad_static) {
                (Ok(None), Err(NetError::Sysfs { .. }), Err(NetError::BadStatic(_))) => {
                    "ok".to_string()
                }
                _ => format!("failed {none:?} {missing:?} {bad_static:?}"),
            }
        }
        other => format!("failed unknown mode {other}"),
    };
    println!("RESULT {result}");
}
