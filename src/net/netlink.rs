//! The few rtnetlink requests the agent needs (link up, add an IPv4 address, add a route), built
//! by hand over a `NETLINK_ROUTE` socket. The message layouts are tiny and fixed, so a
//! hand-rolled encoder is smaller than a netlink crate and keeps every byte we send auditable;
//! the unit tests check them against the kernel's struct layouts.
//!
//! Every request carries `NLM_F_ACK`, and the matching `NLMSG_ERROR` ack is awaited with a
//! bounded receive, so a refused request becomes an error naming the operation.

use super::NetError;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recvfrom, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

// <linux/netlink.h>
pub(crate) const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

// <linux/rtnetlink.h>
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RT_TABLE_MAIN: u8 = 254;
pub(crate) const RTPROT_STATIC: u8 = 4;
pub(crate) const RTPROT_DHCP: u8 = 16;
pub(crate) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(crate) const RT_SCOPE_LINK: u8 = 253;
pub(crate) const RT_SCOPE_HOST: u8 = 254;
pub(crate) const RTN_UNICAST: u8 = 1;
pub(crate) const RTA_DST: u16 = 1;
pub(crate) const RTA_OIF: u16 = 4;
pub(crate) const RTA_GATEWAY: u16 = 5;

// <linux/if_addr.h>
pub(crate) const IFA_ADDRESS: u16 = 1;
pub(crate) const IFA_LOCAL: u16 = 2;
pub(crate) const IFA_BROADCAST: u16 = 4;

// <linux/if.h>, <linux/socket.h>
pub(crate) const IFF_UP: u32 = 0x1;
pub(crate) const AF_INET: u8 = 2;

/// How long the kernel gets to acknowledge one request. It answers synchronously, so this only
/// matters if something is badly wrong; the bound keeps PID 1 from hanging on it.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Acks are small (error code + our request echoed back); anything bigger is not ours.
const RECV_BUF: usize = 8192;
/// Datagrams read while waiting for one ack before giving up (nothing else should arrive: the
/// socket joins no multicast group).
const MAX_RECVS: usize = 64;

/// One netlink message under construction: header, fixed struct, then attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0 lets the kernel fill it in
        Msg(buf)
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// An rtattr: u16 length (header + payload, unpadded), u16 type, payload padded to 4.
    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// RTM_NEWLINK setting IFF_UP (and only it: `ifi_change` masks every other flag).
pub(crate) fn link_up(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    // struct ifinfomsg { u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change; }
    m.bytes(&[0, 0])
        .bytes(&0u16.to_ne_bytes())
        .bytes(&ifindex.to_ne_bytes())
        .bytes(&IFF_UP.to_ne_bytes())
        .bytes(&IFF_UP.to_ne_bytes());
    m.finish()
}

/// RTM_NEWADDR for `address/prefix`. CREATE|REPLACE makes it idempotent: the kernel already
/// gives `lo` 127.0.0.1/8 when it comes up, and a retried boot step must not fail on EEXIST.
pub(crate) fn new_addr(seq: u32, ifindex: u32, address: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let scope = if address.is_loopback() {
        RT_SCOPE_HOST
    } else {
        RT_SCOPE_UNIVERSE
    };
    let mut m = Msg::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    );
    // struct ifaddrmsg { u8 family; u8 prefixlen; u8 flags; u8 scope; u32 index; }
    m.bytes(&[AF_INET, prefix, 0, scope])
        .bytes(&ifindex.to_ne_bytes())
        .attr(IFA_LOCAL, &address.octets())
        .attr(IFA_ADDRESS, &address.octets());
    // /31 and /32 have no broadcast address (RFC 3021); `ip addr add … brd +` does the same.
    if prefix <= 30 {
        let bcast = u32::from(address) | !super::mask(prefix);
        m.attr(IFA_BROADCAST, &bcast.to_be_bytes());
    }
    m.finish()
}

/// RTM_NEWROUTE in the main table: `dst/dst_len` via `gateway` (scope universe) or, without a
/// gateway, directly on the link (scope link), out of `ifindex`.
pub(crate) fn new_route(
    seq: u32,
    ifindex: u32,
    dst: Ipv4Addr,
    dst_len: u8,
    gateway: Option<Ipv4Addr>,
    protocol: u8,
) -> Vec<u8> {
    let scope = if gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    let mut m = Msg::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    );
    // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags; }
    m.bytes(&[
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        protocol,
        scope,
        RTN_UNICAST,
    ])
    .bytes(&0u32.to_ne_bytes());
    if dst_len > 0 {
        m.attr(RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        m.attr(RTA_GATEWAY, &gw.octets());
    }
    m.attr(RTA_OIF, &ifindex.to_ne_bytes());
    m.finish()
}

/// What one received datagram says about the request with sequence number `seq`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    /// No message in the datagram answers `seq`.
    NotOurs,
    Ok,
    Refused(Errno),
    Malformed(&'static str),
}

/// Walk the messages in one datagram (bounded by the datagram) and find the ack for `seq`.
pub(crate) fn parse_ack(mut buf: &[u8], seq: u32) -> Ack {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Ack::Malformed("message length out of bounds");
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let msg_seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if kind == NLMSG_ERROR && msg_seq == seq {
            // struct nlmsgerr { int error; struct nlmsghdr msg; … }
            let Some(code) = buf.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4) else {
                return Ack::Malformed("short NLMSG_ERROR");
            };
            let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            return match code {
                0 => Ack::Ok,
                c if c < 0 => Ack::Refused(Errno::from_raw(c.saturating_neg())),
                _ => Ack::Malformed("positive error code"),
            };
        }
        let aligned = len.div_ceil(4) * 4;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    Ack::NotOurs
}

/// A NETLINK_ROUTE socket that sends one request at a time and waits for its ack.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub(crate) fn open() -> Result<Self, NetError> {
        let io = |op: &'static str| move |e: Errno| NetError::NetlinkSocket { op, errno: e };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io("socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io("bind"))?;
        Ok(Netlink { fd, seq: 1 })
    }

    /// Send the request `build(seq)` and wait for its ack; `op` names it in errors
    /// ("RTM_NEWADDR 10.0.2.15/24 on eth0").
    pub(crate) fn request(
        &mut self,
        op: &str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), NetError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        let kernel = NetlinkAddr::new(0, 0);
        let fail = |errno: Errno| NetError::Netlink {
            op: op.to_string(),
            errno,
        };
        let sent = sendto(self.fd.as_raw_fd(), &msg, &kernel, MsgFlags::empty()).map_err(fail)?;
        if sent != msg.len() {
            return Err(NetError::NetlinkReply {
                op: op.to_string(),
                why: "short send",
            });
        }
        let until = Instant::now() + ACK_TIMEOUT;
        let mut buf = vec![0u8; RECV_BUF];
        for _ in 0..MAX_RECVS {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let tv = TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
            setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(fail)?;
            let (n, from) = match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut buf) {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(fail(e)),
            };
            // Only the kernel (port id 0) may answer; another process on the host side of a
            // shared namespace could otherwise forge an ack.
            if from.is_none_or(|a| a.pid() != 0) {
                continue;
            }
            match parse_ack(&buf[..n], seq) {
                Ack::NotOurs => continue,
                Ack::Ok => return Ok(()),
                Ack::Refused(errno) => return Err(fail(errno)),
                Ack::Malformed(why) => {
                    return Err(NetError::NetlinkReply {
                        op: op.to_string(),
                        why,
                    });
                }
            }
        }
        Err(NetError::NetlinkReply {
            op: op.to_string(),
            why: "no acknowledgement from the kernel",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct nlmsghdr` as the kernel lays it out: len, type, flags, seq, pid (native endian).
    fn nlmsghdr(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(len.to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend(flags.to_ne_bytes());
        v.extend(seq.to_ne_bytes());
        v.extend(0u32.to_ne_bytes());
        v
    }

    /// `struct rtattr` + payload, padded to RTA_ALIGNTO (4).
    fn rtattr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(((4 + payload.len()) as u16).to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn link_up_matches_ifinfomsg_layout() {
        let got = link_up(7, 3);
        // nlmsghdr (16) + ifinfomsg (16), no attributes.
        let mut want = nlmsghdr(32, 16, 0x1 | 0x4, 7);
        want.extend([0u8, 0]); // ifi_family AF_UNSPEC, pad
        want.extend(0u16.to_ne_bytes()); // ifi_type
        want.extend(3i32.to_ne_bytes()); // ifi_index
        want.extend(1u32.to_ne_bytes()); // ifi_flags IFF_UP
        want.extend(1u32.to_ne_bytes()); // ifi_change IFF_UP
        assert_eq!(got, want);
    }

    #[test]
    fn new_addr_matches_ifaddrmsg_layout() {
        let got = new_addr(9, 2, Ipv4Addr::new(192, 168, 77, 53), 24);
        let mut body = vec![2u8, 24, 0, 0]; // AF_INET, prefixlen, flags, RT_SCOPE_UNIVERSE
        body.extend(2u32.to_ne_bytes()); // ifa_index
        body.extend(rtattr(2, &[192, 168, 77, 53])); // IFA_LOCAL
        body.extend(rtattr(1, &[192, 168, 77, 53])); // IFA_ADDRESS
        body.extend(rtattr(4, &[192, 168, 77, 255])); // IFA_BROADCAST
        let flags = 0x1 | 0x4 | 0x400 | 0x100; // REQUEST|ACK|CREATE|REPLACE
        let mut want = nlmsghdr((16 + body.len()) as u32, 20, flags, 9);
        want.extend(body);
        assert_eq!(want.len(), 16 + 8 + 3 * 8);
        assert_eq!(got, want);
    }

    #[test]
    fn new_addr_loopback_is_host_scope_and_slash32_has_no_broadcast() {
        let lo = new_addr(1, 1, Ipv4Addr::LOCALHOST, 8);
        assert_eq!(lo[16..20], [2, 8, 0, 254]);
        assert_eq!(lo[lo.len() - 4..], [127, 255, 255, 255]);
        let host = new_addr(1, 5, Ipv4Addr::new(10, 1, 2, 3), 32);
        assert_eq!(host.len(), 16 + 8 + 2 * 8);
    }

    #[test]
    fn default_route_matches_rtmsg_layout() {
        let got = new_route(
            4,
            2,
            Ipv4Addr::UNSPECIFIED,
            0,
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            16,
        );
        // rtm_family, dst_len, src_len, tos, table MAIN, protocol DHCP, scope UNIVERSE, RTN_UNICAST
        let mut body = vec![2u8, 0, 0, 0, 254, 16, 0, 1];
        body.extend(0u32.to_ne_bytes()); // rtm_flags
        body.extend(rtattr(5, &[10, 0, 0, 1])); // RTA_GATEWAY
        body.extend(rtattr(4, &2u32.to_ne_bytes())); // RTA_OIF
        let mut want = nlmsghdr((16 + body.len()) as u32, 24, 0x1 | 0x4 | 0x400 | 0x100, 4);
        want.extend(body);
        assert_eq!(got, want);
    }

    #[test]
    fn link_route_has_dst_and_link_scope() {
        let got = new_route(4, 6, Ipv4Addr::new(10, 0, 0, 1), 32, None, 4);
        let mut body = vec![2u8, 32, 0, 0, 254, 4, 253, 1];
        body.extend(0u32.to_ne_bytes());
        body.extend(rtattr(1, &[10, 0, 0, 1])); // RTA_DST
        body.extend(rtattr(4, &6u32.to_ne_bytes())); // RTA_OIF
        let mut want = nlmsghdr((16 + body.len()) as u32, 24, 0x1 | 0x4 | 0x400 | 0x100, 4);
        want.extend(body);
        assert_eq!(got, want);
    }

    /// The real kernel refuses a request and the error names the operation. Link index
    /// 0x7fff_fff0 does not exist, so nothing on the machine changes (ENODEV as root, EPERM
    /// otherwise).
    #[test]
    fn kernel_refusal_names_the_operation() {
        let mut nl = Netlink::open().expect("netlink socket");
        let err = nl
            .request("RTM_NEWLINK nosuch up", |seq| link_up(seq, 0x7fff_fff0))
            .expect_err("no such link");
        match &err {
            NetError::Netlink { op, errno } => {
                assert_eq!(op, "RTM_NEWLINK nosuch up");
                assert!(matches!(errno, Errno::ENODEV | Errno::EPERM), "{errno}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("netlink RTM_NEWLINK nosuch up: E")
        );
        // The socket stays usable after a refusal (the ack was consumed, seq moved on).
        assert!(
            nl.request("again", |seq| link_up(seq, 0x7fff_fff0))
                .is_err()
        );
    }

    fn nlmsgerr(seq: u32, code: i32) -> Vec<u8> {
        let mut v = nlmsghdr(36, 2, 0, seq);
        v.extend(code.to_ne_bytes());
        v.extend(nlmsghdr(16, 20, 5, seq)); // the echoed request header
        v
    }

    #[test]
    fn acks_are_matched_by_sequence_and_decoded() {
        assert_eq!(parse_ack(&nlmsgerr(5, 0), 5), Ack::Ok);
        assert_eq!(parse_ack(&nlmsgerr(5, -17), 5), Ack::Refused(Errno::EEXIST));
        assert_eq!(parse_ack(&nlmsgerr(4, 0), 5), Ack::NotOurs);
        // Two messages in one datagram: the second is ours.
        let mut two = nlmsgerr(4, -1);
        two.extend(nlmsgerr(5, -19));
        assert_eq!(parse_ack(&two, 5), Ack::Refused(Errno::ENODEV));
    }

    #[test]
    fn hostile_acks_never_panic() {
        assert_eq!(parse_ack(&[], 1), Ack::NotOurs);
        let mut bad_len = nlmsgerr(1, 0);
        bad_len[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(parse_ack(&bad_len, 1), Ack::Malformed(_)));
        let mut zero_len = nlmsgerr(1, 0);
        zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(parse_ack(&zero_len, 1), Ack::Malformed(_)));
        let short = nlmsghdr(16, 2, 0, 1);
        assert!(matches!(parse_ack(&short, 1), Ack::Malformed(_)));
        assert!(matches!(parse_ack(&nlmsgerr(1, 5), 1), Ack::Malformed(_)));
        assert_eq!(
            parse_ack(&nlmsgerr(1, i32::MIN), 1),
            Ack::Refused(Errno::from_raw(i32::MAX))
        );
        let full = nlmsgerr(1, -1);
        for n in 0..=full.len() {
            let _ = parse_ack(&full[..n], 1);
        }
    }
}
