//! A DHCPv4 client (RFC 2131) for one boot: DISCOVER → OFFER → REQUEST → ACK, nothing more
//! (no renewal: the agent holds the address for the VM's life and the kernel never expires it).
//!
//! Requests are built with `dhcproto`. Replies come from the host, which is hostile, so they are
//! parsed by the strict, bounded parser below rather than by `dhcproto`'s decoder, which stops
//! silently at the first malformed option (dropping everything after it) and whose `chaddr()`
//! indexes by the wire's `hlen`. Every reply is checked for our xid and MAC before anything else
//! and then refused as a whole if any option we use is malformed or insane.
//!
//! Routes: option 121 (RFC 3442 classless static routes, see `routes`) when the server sends it,
//! and then option 3 is ignored as §3 of that RFC requires; otherwise the first router of
//! option 3 becomes the default route. Option 26 sets the interface MTU (GCP sends 1460).
//!
//! Transport: a UDP socket on port 68 bound to the interface (SO_BINDTODEVICE). The interface has
//! no address yet, so we set the BROADCAST flag: the server then broadcasts its replies, which a
//! UDP socket receives without an address, whereas a unicast reply to the offered address would
//! be dropped by the IP layer (checked against dnsmasq in tests/net_dhcp.rs).

use super::routes::{self, Route};
use super::{NetError, validate_lease};
use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// First retransmission timeout. RFC 2131 §4.1 starts at 4 s; a VM on a virtual link either
/// gets an answer at once or has lost a packet, so we retry sooner and back off from there.
const INITIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// RFC 2131 §4.1: the backoff stops doubling at 64 s.
const MAX_TIMEOUT: Duration = Duration::from_secs(64);
/// REQUESTs sent for one OFFER before going back to DISCOVER (RFC 2131 §3.1.5 leaves the count
/// to the client; a server that offered and then stays silent is likely gone).
const MAX_REQUESTS: u32 = 4;
/// Pause after a NAK before starting over, so a server that NAKs every request cannot make us
/// spin until the deadline.
const NAK_PAUSE: Duration = Duration::from_millis(500);
/// Largest datagram we read. DHCP replies fit in 576 bytes unless the client raises the limit
/// (option 57, which we never send); a longer reply is truncated and then refused.
const RECV_BUF: usize = 1500;
/// Fixed BOOTP header (236) + magic cookie (4).
const HEADER_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// RFC 2131 BOOTP `op` for replies; `htype` and `hlen` for Ethernet.
const BOOTREPLY: u8 = 2;
const HTYPE_ETHER: u8 = 1;
/// The MTUs a lease may set (option 26). RFC 2132 allows down to 68, but below 576 (what every
/// IPv4 host must take, RFC 791) TLS to the KBS and registry crawls and IPv6 is off; above 9216
/// is no cloud's (GCP 1460-8896, Azure 1500-4088, AWS 9001). A host sending anything else is
/// refused rather than obeyed.
const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=9216;
/// Options asked for in the parameter request list. Servers (dnsmasq, the clouds') send
/// options 121 and 26 only when asked.
const WANTED: [OptionCode; 7] = [
    OptionCode::SubnetMask,
    OptionCode::ClasslessStaticRoute,
    OptionCode::Router,
    OptionCode::InterfaceMtu,
    OptionCode::DomainNameServer,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
];

/// A configured lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The default route's gateway, if there is a default route.
    pub gateway: Option<Ipv4Addr>,
    /// Option 121's routes, or a default route via option 3's first router, or nothing.
    pub routes: Vec<Route>,
    pub mtu: Option<u16>,
    pub dns: Vec<Ipv4Addr>,
    /// Seconds; `u32::MAX` is an infinite lease (RFC 2132 §9.2).
    pub lease_secs: u32,
    pub server: Ipv4Addr,
}

/// The options of a reply that the client uses, after strict parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub kind: u8,
    pub yiaddr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    /// Option 121, every instance concatenated (RFC 3396), still encoded.
    pub classless: Option<Vec<u8>>,
    pub mtu: Option<u16>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

/// What the client makes of one datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not a reply to us (other xid or MAC, not a BOOTREPLY), or not expected in this state.
    Ignored,
    /// Addressed to us but refused; the reason goes into the deadline error.
    Refused(String),
    /// An acceptable OFFER: the caller now sends `request()`.
    Offered {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    Bound(Lease),
    /// The server refused our REQUEST; the caller starts over with a new xid.
    Nak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Selecting,
    Requesting { address: Ipv4Addr, server: Ipv4Addr },
}

/// The client's state machine, free of I/O so it can be tested with canned packets.
pub(crate) struct Client {
    mac: [u8; 6],
    xid: u32,
    state: State,
}

impl Client {
    pub(crate) fn new(mac: [u8; 6], xid: u32) -> Self {
        Client {
            mac,
            xid,
            state: State::Selecting,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Back to SELECTING with a fresh transaction id (after a NAK or a silent server).
    pub(crate) fn restart(&mut self, xid: u32) {
        self.xid = xid;
        self.state = State::Selecting;
    }

    fn base(&self, kind: MessageType, secs: u16) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_xid(self.xid)
            .set_secs(secs)
            .set_flags(Flags::default().set_broadcast())
            .set_chaddr(&self.mac);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
        // Client identifier type 1 (Ethernet) + MAC, as most clients send: the server keys the
        // lease on it, so a reboot gets the same address back.
        let mut id = vec![HTYPE_ETHER];
        id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(id));
        m
    }

    /// The message to (re)send in the current state: DISCOVER, or REQUEST for the offer taken.
    pub(crate) fn message(&self, secs: u16) -> Vec<u8> {
        let m = match self.state {
            State::Selecting => self.base(MessageType::Discover, secs),
            State::Requesting { address, server } => {
                let mut m = self.base(MessageType::Request, secs);
                let opts = m.opts_mut();
                opts.insert(DhcpOption::RequestedIpAddress(address));
                opts.insert(DhcpOption::ServerIdentifier(server));
                m
            }
        };
        // Encoding a message we built into a Vec cannot fail: no field exceeds its size.
        m.to_vec().unwrap_or_default()
    }

    /// Feed one datagram received on port 68.
    pub(crate) fn handle(&mut self, packet: &[u8]) -> Step {
        if !is_for(packet, self.xid, &self.mac) {
            return Step::Ignored;
        }
        let reply = match parse_reply(packet) {
            Ok(r) => r,
            Err(why) => return Step::Refused(why),
        };
        match (self.state, reply.kind) {
            (State::Selecting, k) if k == u8::from(MessageType::Offer) => {
                match lease_from(&reply) {
                    Ok(lease) => {
                        self.state = State::Requesting {
                            address: lease.address,
                            server: lease.server,
                        };
                        Step::Offered {
                            address: lease.address,
                            server: lease.server,
                        }
                    }
                    Err(why) => Step::Refused(format!("DHCPOFFER refused: {why}")),
                }
            }
            (State::Requesting { address, server }, k) if k == u8::from(MessageType::Ack) => {
                // RFC 2131 §4.3.1: the ACK must carry the server identifier; it must be the
                // server we asked, and it must give us the address we asked for.
                if reply.server != Some(server) {
                    return Step::Ignored;
                }
                if reply.yiaddr != address {
                    return Step::Refused(format!(
                        "DHCPACK for {} but {address} was requested",
                        reply.yiaddr
                    ));
                }
                match lease_from(&reply) {
                    Ok(lease) => Step::Bound(lease),
                    Err(why) => Step::Refused(format!("DHCPACK refused: {why}")),
                }
            }
            (State::Requesting { server, .. }, k) if k == u8::from(MessageType::Nak) => {
                // Only the server we asked may NAK us (RFC 2131 §4.3.2 requires its identifier).
                if reply.server != Some(server) {
                    return Step::Ignored;
                }
                self.state = State::Selecting;
                Step::Nak
            }
            // Late offers from other servers, ACKs before we asked, …
            _ => Step::Ignored,
        }
    }
}

/// Whether a datagram is a BOOTREPLY for our transaction and our MAC. Only the fixed header is
/// read; a packet that is not for us is never judged further (it is just someone else's).
pub(crate) fn is_for(packet: &[u8], xid: u32, mac: &[u8; 6]) -> bool {
    let Some(h) = packet.get(..HEADER_LEN) else {
        return false;
    };
    h[0] == BOOTREPLY
        && h[1] == HTYPE_ETHER
        && h[2] == 6
        && h[4..8] == xid.to_be_bytes()
        && h[28..34] == mac[..]
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ip_list(code: u8, v: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(format!("option {code} has length {}", v.len()));
    }
    Ok(v.chunks_exact(4).map(ip).collect())
}

fn fixed<const N: usize>(code: u8, v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("option {code} has length {} (want {N})", v.len()))
}

/// Parse a BOOTREPLY strictly: header sizes, magic cookie, every option inside the datagram,
/// an END option, no duplicates of the options we use, exact lengths for them.
pub(crate) fn parse_reply(packet: &[u8]) -> Result<Reply, String> {
    if packet.len() < HEADER_LEN {
        return Err(format!("short packet ({} bytes)", packet.len()));
    }
    if packet[236..240] != MAGIC {
        return Err("no DHCP magic cookie".into());
    }
    let mut r = Reply {
        kind: 0,
        yiaddr: ip(&packet[16..20]),
        server: None,
        mask: None,
        routers: Vec::new(),
        classless: None,
        mtu: None,
        dns: Vec::new(),
        lease_secs: None,
    };
    let mut seen = [false; 256];
    let mut opts = &packet[HEADER_LEN..];
    let mut ended = false;
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => {
                ended = true;
                break;
            }
            _ => {}
        }
        let Some((&len, rest)) = rest.split_first() else {
            return Err(format!("option {code} truncated"));
        };
        let Some((v, rest)) = rest.split_at_checked(usize::from(len)) else {
            return Err(format!("option {code} runs past the packet"));
        };
        opts = rest;
        // Option 121 may be split into several instances (RFC 3396, for more than 255 bytes of
        // routes); every other option we use must appear once.
        let used = matches!(code, 1 | 3 | 6 | 26 | 51 | 52 | 53 | 54);
        if used && std::mem::replace(&mut seen[usize::from(code)], true) {
            return Err(format!("option {code} repeated"));
        }
        match code {
            1 => r.mask = Some(Ipv4Addr::from(fixed::<4>(code, v)?)),
            3 => r.routers = ip_list(code, v)?,
            6 => r.dns = ip_list(code, v)?,
            26 => r.mtu = Some(u16::from_be_bytes(fixed::<2>(code, v)?)),
            121 => r
                .classless
                .get_or_insert_with(Vec::new)
                .extend_from_slice(v),
            51 => r.lease_secs = Some(u32::from_be_bytes(fixed::<4>(code, v)?)),
            // Options continued in `sname`/`file` (RFC 2132 §9.3): servers only need it for
            // huge option sets, and honouring it would double the parsing surface.
            52 => return Err("option overload (52) is not supported".into()),
            53 => r.kind = fixed::<1>(code, v)?[0],
            54 => r.server = Some(Ipv4Addr::from(fixed::<4>(code, v)?)),
            _ => {}
        }
    }
    if !ended {
        return Err("options not terminated by END".into());
    }
    if !(1..=8).contains(&r.kind) {
        return Err(format!("bad or missing message type ({})", r.kind));
    }
    Ok(r)
}

/// The lease an OFFER or ACK describes, if it is sane.
fn lease_from(r: &Reply) -> Result<Lease, String> {
    let server = r.server.ok_or("no server identifier")?;
    if !super::unicast(server) {
        return Err(format!(
            "server identifier {server} is not a unicast address"
        ));
    }
    let mask = r.mask.ok_or("no subnet mask")?;
    let prefix = super::prefix_of(mask).ok_or(format!("subnet mask {mask} is not contiguous"))?;
    let lease_secs = r.lease_secs.ok_or("no lease time")?;
    if lease_secs == 0 {
        return Err("lease time 0".into());
    }
    if let Some(mtu) = r.mtu
        && !MTU_RANGE.contains(&mtu)
    {
        return Err(format!(
            "MTU {mtu} is outside {}..={}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ));
    }
    let routes = match &r.classless {
        Some(encoded) => routes::parse_classless(encoded)?,
        // Only the first router is used; the rest are fallbacks we do not implement.
        None => r
            .routers
            .first()
            .map(|&gw| Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(gw),
            })
            .into_iter()
            .collect(),
    };
    let gateway = routes
        .iter()
        .find(|r| r.is_default())
        .and_then(|r| r.gateway);
    validate_lease(r.yiaddr, prefix, gateway, &r.dns)?;
    routes::validate(r.yiaddr, &routes)?;
    Ok(Lease {
        address: r.yiaddr,
        prefix,
        gateway,
        routes,
        mtu: r.mtu,
        dns: r.dns.clone(),
        lease_secs,
        server,
    })
}

/// A fresh transaction id from the kernel's CSPRNG, so an off-path sender cannot guess it.
pub(crate) fn random_xid() -> Result<u32, NetError> {
    getrandom::u32().map_err(|e| NetError::Random(e.to_string()))
}

fn udp_socket(iface: &str) -> Result<UdpSocket, NetError> {
    let err = |op: &'static str| {
        move |e: nix::errno::Errno| NetError::Socket {
            iface: iface.to_string(),
            op,
            source: std::io::Error::from(e),
        }
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Udp,
    )
    .map_err(err("socket"))?;
    // Bound to the device before the port, so no datagram from another interface is queued.
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface))
        .map_err(err("SO_BINDTODEVICE"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(err("SO_BROADCAST"))?;
    let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
    bind(fd.as_raw_fd(), &any).map_err(err("bind to port 68"))?;
    Ok(UdpSocket::from(fd))
}

/// Refusals remembered for the deadline error: how many, and the last reason.
#[derive(Default)]
struct Refusals {
    count: u32,
    last: Option<String>,
}

impl Refusals {
    fn suffix(&self) -> String {
        match &self.last {
            None => String::new(),
            Some(why) => format!(" ({} replies refused, last: {why})", self.count),
        }
    }
}

/// Run the client on `iface` until bound or until `until`; `deadline` is only for the message.
pub(crate) fn obtain(
    iface: &str,
    mac: [u8; 6],
    until: Instant,
    deadline: Duration,
) -> Result<Lease, NetError> {
    let sock = udp_socket(iface)?;
    let io = |op: &'static str| {
        move |e: std::io::Error| NetError::Socket {
            iface: iface.to_string(),
            op,
            source: e,
        }
    };
    let started = Instant::now();
    let mut client = Client::new(mac, random_xid()?);
    let mut refused = Refusals::default();
    let mut timeout = INITIAL_TIMEOUT;
    let mut sends = 0u32;
    let mut next_send = started;
    let mut buf = vec![0u8; RECV_BUF];
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    loop {
        let now = Instant::now();
        if now >= until {
            let iface = iface.to_string();
            let refused = refused.suffix();
            return Err(match client.state() {
                State::Selecting => NetError::NoOffer {
                    iface,
                    deadline,
                    refused,
                },
                State::Requesting { address, server } => NetError::NoAck {
                    iface,
                    deadline,
                    address,
                    server,
                    refused,
                },
            });
        }
        if now >= next_send {
            if sends >= MAX_REQUESTS && matches!(client.state(), State::Requesting { .. }) {
                tracing::debug!(iface, "no DHCPACK after {sends} requests, back to DISCOVER");
                client.restart(random_xid()?);
                timeout = INITIAL_TIMEOUT;
                sends = 0;
            }
            let secs = u16::try_from(started.elapsed().as_secs()).unwrap_or(u16::MAX);
            sock.send_to(&client.message(secs), broadcast)
                .map_err(io("send"))?;
            sends += 1;
            next_send = now + timeout;
            timeout = (timeout * 2).min(MAX_TIMEOUT);
        }
        let wait = next_send.min(until).saturating_duration_since(now);
        // A zero timeout means "block forever" to the kernel (std refuses it outright).
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(io("SO_RCVTIMEO"))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("receive")(e)),
        };
        if from.port() != SERVER_PORT {
            continue;
        }
        match client.handle(&buf[..n]) {
            Step::Ignored => {}
            Step::Refused(why) => {
                // The host can send refusals as fast as it likes: warn about the first few only
                // so the console stays readable; the last reason goes into the deadline error.
                if refused.count < 3 {
                    tracing::warn!(iface, %from, "DHCP reply refused: {why}");
                } else {
                    tracing::debug!(iface, %from, "DHCP reply refused: {why}");
                }
                refused.count = refused.count.saturating_add(1);
                refused.last = Some(why);
            }
            Step::Offered { address, server } => {
                tracing::debug!(iface, %address, %server, "DHCPOFFER");
                next_send = Instant::now();
                timeout = INITIAL_TIMEOUT;
                sends = 0;
            }
            Step::Bound(lease) => return Ok(lease),
            Step::Nak => {
                tracing::warn!(iface, %from, "DHCPNAK, starting over");
                std::thread::sleep(NAK_PAUSE.min(until.saturating_duration_since(Instant::now())));
                client.restart(random_xid()?);
                next_send = Instant::now();
                timeout = INITIAL_TIMEOUT;
                sends = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0x1234_5678;
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    /// A server reply as dnsmasq would send it, built with dhcproto.
    fn reply(kind: MessageType, xid: u32, mac: &[u8]) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_xid(xid)
            .set_flags(Flags::default().set_broadcast())
            .set_yiaddr(OFFERED)
            .set_siaddr(SERVER)
            .set_chaddr(mac);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        if kind != MessageType::Nak {
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            o.insert(DhcpOption::Router(vec![SERVER]));
            o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 2, 3,
            )]));
            o.insert(DhcpOption::AddressLeaseTime(86400));
        }
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().expect("encode")
    }

    fn offer() -> Vec<u8> {
        bytes(&reply(MessageType::Offer, XID, &MAC))
    }

    fn ack() -> Vec<u8> {
        bytes(&reply(MessageType::Ack, XID, &MAC))
    }

    fn requesting() -> Client {
        let mut c = Client::new(MAC, XID);
        assert!(matches!(c.handle(&offer()), Step::Offered { .. }));
        c
    }

    fn with(kind: MessageType, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = reply(kind, XID, &MAC);
        edit(&mut m);
        bytes(&m)
    }

    #[test]
    fn discover_and_request_are_what_a_server_expects() {
        let mut c = Client::new(MAC, XID);
        let d = Message::decode(&mut Decoder::new(&c.message(3))).expect("decode discover");
        assert_eq!(d.opcode(), Opcode::BootRequest);
        assert_eq!(d.xid(), XID);
        assert_eq!(d.secs(), 3);
        assert!(d.flags().broadcast());
        assert_eq!(d.chaddr(), MAC);
        assert_eq!(d.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            d.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Discover))
        );
        assert!(d.opts().get(OptionCode::ServerIdentifier).is_none());

        assert_eq!(
            c.handle(&offer()),
            Step::Offered {
                address: OFFERED,
                server: SERVER
            }
        );
        let r = Message::decode(&mut Decoder::new(&c.message(0))).expect("decode request");
        assert_eq!(
            r.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Request))
        );
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(OFFERED))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(r.xid(), XID);
        let mut id = vec![1];
        id.extend(MAC);
        assert_eq!(
            r.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(id))
        );
    }

    #[test]
    fn offer_then_ack_binds() {
        let mut c = requesting();
        assert_eq!(
            c.handle(&ack()),
            Step::Bound(Lease {
                address: OFFERED,
                prefix: 24,
                gateway: Some(SERVER),
                routes: vec![Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(SERVER),
                }],
                mtu: None,
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                lease_secs: 86400,
                server: SERVER,
            })
        );
    }

    #[test]
    fn wrong_xid_or_chaddr_is_ignored() {
        let mut c = Client::new(MAC, XID);
        let other_xid = bytes(&reply(MessageType::Offer, XID + 1, &MAC));
        assert_eq!(c.handle(&other_xid), Step::Ignored);
        let other_mac = bytes(&reply(MessageType::Offer, XID, &[0x52, 0, 0, 0, 0, 1]));
        assert_eq!(c.handle(&other_mac), Step::Ignored);
        // A reply with a longer hardware address that starts with our MAC is not ours either.
        let mut long = MAC.to_vec();
        long.extend([0, 0]);
        assert_eq!(
            c.handle(&bytes(&reply(MessageType::Offer, XID, &long))),
            Step::Ignored
        );
        // Our own broadcast DISCOVER looped back is a BOOTREQUEST, not a reply.
        assert_eq!(c.handle(&c.message(0)), Step::Ignored);
        assert_eq!(c.state(), State::Selecting);
        // After all that noise the real offer still works.
        assert!(matches!(c.handle(&offer()), Step::Offered { .. }));
    }

    #[test]
    fn ack_while_selecting_and_offer_while_requesting_are_ignored() {
        let mut c = Client::new(MAC, XID);
        assert_eq!(c.handle(&ack()), Step::Ignored);
        let mut c = requesting();
        assert_eq!(c.handle(&offer()), Step::Ignored);
    }

    #[test]
    fn ack_from_another_server_is_ignored_and_other_address_refused() {
        let mut c = requesting();
        let other = with(MessageType::Ack, |m| {
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 9)));
        });
        assert_eq!(c.handle(&other), Step::Ignored);
        let moved = with(MessageType::Ack, |m| {
            m.set_yiaddr(Ipv4Addr::new(10, 0, 2, 16));
        });
        assert!(matches!(c.handle(&moved), Step::Refused(_)));
        assert!(matches!(c.handle(&ack()), Step::Bound(_)));
    }

    #[test]
    fn nak_restarts() {
        let mut c = requesting();
        let nak = bytes(&reply(MessageType::Nak, XID, &MAC));
        assert_eq!(c.handle(&nak), Step::Nak);
        assert_eq!(c.state(), State::Selecting);
        c.restart(XID + 7);
        let d = Message::decode(&mut Decoder::new(&c.message(0))).expect("decode");
        assert_eq!(d.xid(), XID + 7);
        // The old transaction's packets are now someone else's.
        assert_eq!(c.handle(&offer()), Step::Ignored);
    }

    #[test]
    fn nak_from_another_server_is_ignored() {
        let mut c = requesting();
        let nak = with(MessageType::Nak, |m| {
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 9, 9, 9)));
        });
        assert_eq!(c.handle(&nak), Step::Ignored);
        assert!(matches!(c.state(), State::Requesting { .. }));
    }

    fn refused(packet: &[u8]) -> String {
        match Client::new(MAC, XID).handle(packet) {
            Step::Refused(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A change to a canned reply, and the refusal it must cause.
    type Edit = Box<dyn FnOnce(&mut Message)>;

    #[test]
    fn insane_leases_are_refused() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "not contiguous",
                Box::new(|m| {
                    m.opts_mut()
                        .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
                }),
            ),
            (
                "no subnet mask",
                Box::new(|m| {
                    m.opts_mut().remove(OptionCode::SubnetMask);
                }),
            ),
            (
                "lease time 0",
                Box::new(|m| {
                    m.opts_mut().insert(DhcpOption::AddressLeaseTime(0));
                }),
            ),
            (
                "no lease time",
                Box::new(|m| {
                    m.opts_mut().remove(OptionCode::AddressLeaseTime);
                }),
            ),
            (
                "no server identifier",
                Box::new(|m| {
                    m.opts_mut().remove(OptionCode::ServerIdentifier);
                }),
            ),
            (
                "too many DNS servers",
                Box::new(|m| {
                    let nine = (1..=9).map(|i| Ipv4Addr::new(10, 0, 2, i)).collect();
                    m.opts_mut().insert(DhcpOption::DomainNameServer(nine));
                }),
            ),
            (
                "DNS server 0.0.0.0",
                Box::new(|m| {
                    m.opts_mut()
                        .insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::UNSPECIFIED]));
                }),
            ),
            (
                "gateway 10.0.2.15 is our own address",
                Box::new(|m| {
                    m.opts_mut().insert(DhcpOption::Router(vec![OFFERED]));
                }),
            ),
            (
                "gateway 224.0.0.1",
                Box::new(|m| {
                    m.opts_mut()
                        .insert(DhcpOption::Router(vec![Ipv4Addr::new(224, 0, 0, 1)]));
                }),
            ),
            (
                "gateway 10.0.2.255 is the subnet's broadcast",
                Box::new(|m| {
                    m.opts_mut()
                        .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 255)]));
                }),
            ),
            (
                "address 0.0.0.0",
                Box::new(|m| {
                    m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
                }),
            ),
            (
                "address 127.0.0.5",
                Box::new(|m| {
                    m.set_yiaddr(Ipv4Addr::new(127, 0, 0, 5));
                }),
            ),
            (
                "address 10.0.2.0 is the subnet's network",
                Box::new(|m| {
                    m.set_yiaddr(Ipv4Addr::new(10, 0, 2, 0));
                }),
            ),
            (
                "message type",
                Box::new(|m| {
                    m.opts_mut().remove(OptionCode::MessageType);
                }),
            ),
        ];
        for (want, edit) in cases {
            let why = refused(&with(MessageType::Offer, edit));
            assert!(why.contains(want), "{want:?} not in {why:?}");
        }
    }

    #[test]
    fn router_outside_the_subnet_is_on_link_and_accepted() {
        // GCP-style: a /32 address with the router outside it; the caller adds a link route.
        let p = with(MessageType::Offer, |m| {
            m.opts_mut()
                .insert(DhcpOption::SubnetMask(Ipv4Addr::BROADCAST));
        });
        assert!(matches!(
            Client::new(MAC, XID).handle(&p),
            Step::Offered { .. }
        ));
    }

    /// Byte offset of option `code` in an encoded reply (dhcproto writes options in code order).
    fn find_option(p: &[u8], code: u8) -> usize {
        let mut i = HEADER_LEN;
        while p[i] != code {
            i += 2 + usize::from(p[i + 1]);
        }
        i
    }

    #[test]
    fn malformed_options_are_refused() {
        // Subnet mask with length 3: dhcproto cannot encode it, so patch the bytes.
        let mut p = offer();
        let at = find_option(&p, 1);
        p[at + 1] = 3;
        p.remove(at + 5);
        assert!(refused(&p).contains("option 1 has length 3"));

        // DNS list that is not a multiple of 4.
        let mut p = offer();
        let at = find_option(&p, 6);
        p[at + 1] = 5;
        p.insert(at + 2, 10);
        assert!(refused(&p).contains("option 6 has length 5"));

        // An option running past the end of the packet.
        let mut p = offer();
        let at = find_option(&p, 255);
        p.truncate(at);
        p.extend([6, 200, 1, 2, 3]);
        assert!(refused(&p).contains("runs past"));

        // No END.
        let mut p = offer();
        let at = find_option(&p, 255);
        p.truncate(at);
        assert!(refused(&p).contains("END"));

        // A repeated option we use.
        let mut p = offer();
        let at = find_option(&p, 255);
        p.splice(at..at, [1, 4, 255, 255, 0, 0]);
        assert!(refused(&p).contains("repeated"));

        // Option overload.
        let p = with(MessageType::Offer, |m| {
            m.opts_mut().insert(DhcpOption::OptionOverload(3));
        });
        assert!(refused(&p).contains("overload"));

        // Bad magic cookie.
        let mut p = offer();
        p[236] = 0;
        assert!(refused(&p).contains("magic"));

        // Unknown message type.
        let mut p = offer();
        let at = find_option(&p, 53);
        p[at + 2] = 99;
        assert!(refused(&p).contains("message type (99)"));
    }

    /// `packet` with raw option bytes spliced in before END.
    fn with_raw(mut p: Vec<u8>, raw: &[u8]) -> Vec<u8> {
        let at = find_option(&p, 255);
        p.splice(at..at, raw.iter().copied());
        p
    }

    fn bound(packet: &[u8]) -> Lease {
        let mut c = requesting();
        match c.handle(packet) {
            Step::Bound(lease) => lease,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    /// GCP's shape: a /32, option 121 with the gateway on-link and a default route through it,
    /// option 3 naming another router (ignored), MTU 1460.
    #[test]
    fn classless_routes_take_precedence_over_the_router_option() {
        let gcp = with(MessageType::Ack, |m| {
            m.opts_mut()
                .insert(DhcpOption::SubnetMask(Ipv4Addr::BROADCAST));
            m.opts_mut()
                .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 99)]));
        });
        let gcp = with_raw(
            gcp,
            &[
                121, 14, 32, 10, 0, 2, 1, 0, 0, 0, 0, 0, 10, 0, 2, 1, // routes
                26, 2, 0x05, 0xb4, // MTU 1460
            ],
        );
        let lease = bound(&gcp);
        assert_eq!(lease.prefix, 32);
        assert_eq!(lease.gateway, Some(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(lease.mtu, Some(1460));
        assert_eq!(
            lease.routes,
            vec![
                Route {
                    dst: Ipv4Addr::new(10, 0, 2, 1),
                    prefix: 32,
                    gateway: None
                },
                Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 1))
                },
            ]
        );
    }

    #[test]
    fn classless_routes_without_a_default_leave_no_gateway() {
        // Option 3 is ignored even when 121 has no default route (RFC 3442 §3).
        let p = with_raw(ack(), &[121, 9, 32, 168, 63, 129, 16, 10, 0, 2, 2]);
        let lease = bound(&p);
        assert_eq!(lease.gateway, None);
        assert_eq!(lease.routes.len(), 1);
        assert_eq!(lease.routes[0].to_string(), "168.63.129.16/32 via 10.0.2.2");
    }

    #[test]
    fn split_classless_option_is_concatenated() {
        // RFC 3396: one long option sent as consecutive instances; the split falls inside a
        // route descriptor.
        let p = with_raw(
            ack(),
            &[
                121, 3, 0, 10, 0, //
                121, 11, 2, 2, 32, 169, 254, 169, 254, 10, 0, 2, 2,
            ],
        );
        let lease = bound(&p);
        assert_eq!(
            lease
                .routes
                .iter()
                .map(Route::to_string)
                .collect::<Vec<_>>(),
            ["default via 10.0.2.2", "169.254.169.254/32 via 10.0.2.2"]
        );
    }

    #[test]
    fn bad_mtu_and_bad_routes_refuse_the_lease() {
        let cases: [(&[u8], &str); 9] = [
            (&[26, 2, 0, 67], "MTU 67 is outside 576..=9216"),
            (&[26, 2, 2, 63], "MTU 575 is outside 576..=9216"),
            (&[26, 2, 0x24, 1], "MTU 9217 is outside 576..=9216"),
            (&[26, 1, 5], "option 26 has length 1"),
            (&[26, 2, 5, 0xb4, 26, 2, 5, 0xb4], "option 26 repeated"),
            (&[121, 4, 33, 0, 0, 0], "width 33"),
            (&[121, 4, 0, 10, 0, 2], "router of a /0 route runs past"),
            (&[121, 5, 0, 10, 0, 2, 15], "our own address"),
            (
                &[121, 10, 0, 10, 0, 2, 2, 0, 10, 0, 2, 3],
                "destination listed twice",
            ),
        ];
        for (raw, want) in cases {
            let why = refused(&with_raw(offer(), raw));
            assert!(why.contains(want), "{want:?} not in {why:?}");
        }
        // The range's ends are allowed.
        assert_eq!(bound(&with_raw(ack(), &[26, 2, 2, 64])).mtu, Some(576));
        assert_eq!(bound(&with_raw(ack(), &[26, 2, 0x24, 0])).mtu, Some(9216));
    }

    #[test]
    fn requests_ask_for_routes_and_mtu() {
        let c = Client::new(MAC, XID);
        let d = Message::decode(&mut Decoder::new(&c.message(0))).expect("decode");
        let Some(DhcpOption::ParameterRequestList(prl)) =
            d.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter request list");
        };
        assert!(prl.contains(&OptionCode::ClasslessStaticRoute));
        assert!(prl.contains(&OptionCode::InterfaceMtu));
    }

    #[test]
    fn unknown_options_and_padding_are_skipped() {
        let mut p = offer();
        let at = find_option(&p, 255);
        p.splice(at..at, [0, 0, 200, 3, 1, 2, 3, 0]);
        assert!(matches!(
            Client::new(MAC, XID).handle(&p),
            Step::Offered { .. }
        ));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let good = ack();
        // Every truncation and every single-byte corruption of a valid ACK, in both states.
        for n in 0..good.len() {
            let _ = Client::new(MAC, XID).handle(&good[..n]);
            let _ = requesting().handle(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 4, 0x7f, 0xff] {
                let mut p = good.clone();
                p[i] = v;
                let _ = Client::new(MAC, XID).handle(&p);
                let _ = requesting().handle(&p);
            }
        }
        // Pseudo-random garbage after a valid header.
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let mut p = good[..HEADER_LEN].to_vec();
            let len = (seed % 400) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                p.push(seed as u8);
            }
            let _ = requesting().handle(&p);
        }
    }
}
