//! A stub resolver for IPv4 addresses (A records) over UDP, in Rust: the agent is static, so
//! glibc's NSS-based `getaddrinfo` is not available, and there is no /etc/resolv.conf on a
//! read-only root anyway. The servers come from DHCP or `launch.toml`.
//!
//! Answers are hostile input: the parser is bounded, never panics, accepts only a reply to our
//! own query (id, flags, the question echoed back) and only the A records of the name asked
//! (directly or through CNAMEs in the same answer). A truncated reply is an error: KBS names do
//! not need more than 512 bytes of A records, and TCP fallback would only widen the surface.
//!
//! Why ours rather than hickory: `hickory-resolver` needs an async runtime, and `hickory-proto`
//! decodes every record type, EDNS and DNSSEC, none of which a stub asking for one A record
//! needs; this is about 300 lines with the bounds above. hickory-proto is the test oracle: our
//! queries parse in it, and its answers (name compression included) parse to the same addresses.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const DNS_PORT: u16 = 53;
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// A classic UDP DNS message; more means EDNS, which we never ask for.
const MAX_REPLY: usize = 512;
/// Compression pointers followed per name: a loop must not spin.
const MAX_POINTERS: usize = 16;
const MAX_CNAMES: usize = 8;
const MAX_ADDRESSES: usize = 16;
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const CLASS_IN: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0:?} is not a valid host name")]
    BadName(String),
    #[error("no DNS server is configured to resolve {0:?} (use an IP address in the URL)")]
    NoServer(String),
    #[error("{name:?}: no answer from {servers} within {}", crate::net::secs(.timeout))]
    Timeout {
        name: String,
        servers: String,
        timeout: Duration,
    },
    #[error("{name:?}: the server says {rcode}")]
    Rcode { name: String, rcode: &'static str },
    #[error("{name:?} has no IPv4 address")]
    NoAddress { name: String },
    #[error("{name:?}: malformed reply from {server}: {why}")]
    Malformed {
        name: String,
        server: std::net::IpAddr,
        why: &'static str,
    },
    #[error("DNS socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("random query id: {0}")]
    Random(String),
}

/// Resolve `name` to IPv4 addresses, asking `servers` in turn until `timeout` is spent.
pub fn resolve_a(
    name: &str,
    servers: &[Ipv4Addr],
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>, DnsError> {
    let servers: Vec<SocketAddr> = servers
        .iter()
        .map(|&s| SocketAddr::from((s, DNS_PORT)))
        .collect();
    resolve_a_at(name, &servers, timeout)
}

fn resolve_a_at(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let query_name = encode_name(&name)?;
    if servers.is_empty() {
        return Err(DnsError::NoServer(name));
    }
    let deadline = Instant::now() + timeout;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(DnsError::Socket)?;
    let mut last_malformed = None;
    // Each server gets a short try per round, so one dead server does not eat the whole budget.
    let per_try = (timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(2));
    while Instant::now() < deadline {
        for &server in servers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut id = [0u8; 2];
            getrandom::fill(&mut id).map_err(|e| DnsError::Random(e.to_string()))?;
            let id = u16::from_be_bytes(id);
            let query = build_query(id, &query_name);
            let addr = server;
            if socket.send_to(&query, addr).is_err() {
                continue;
            }
            let try_until = Instant::now() + per_try.min(left);
            let mut buf = [0u8; MAX_REPLY + 1];
            loop {
                let wait = try_until.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                socket
                    .set_read_timeout(Some(wait))
                    .map_err(DnsError::Socket)?;
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(_) => break,
                };
                // A reply from anywhere else, or to another query, is noise (or spoofing).
                if from != addr || n < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                    continue;
                }
                match parse_reply(&buf[..n], id, &query_name) {
                    Ok(Reply::Addresses(a)) => return Ok(a),
                    Ok(Reply::Rcode(rcode)) => return Err(DnsError::Rcode { name, rcode }),
                    Ok(Reply::Empty) => return Err(DnsError::NoAddress { name }),
                    Err(why) => {
                        last_malformed = Some(DnsError::Malformed {
                            name: name.clone(),
                            server: server.ip(),
                            why,
                        });
                        break;
                    }
                }
            }
        }
    }
    Err(last_malformed.unwrap_or_else(|| DnsError::Timeout {
        name,
        servers: servers
            .iter()
            .map(|s| s.ip().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        timeout,
    }))
}

/// `name` in wire form (length-prefixed labels, lowercase, root label included).
fn encode_name(name: &str) -> Result<Vec<u8>, DnsError> {
    let bad = || DnsError::BadName(name.chars().take(MAX_NAME_LEN + 1).collect());
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(out)
}

fn build_query(id: u16, qname: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    // Standard query, recursion desired.
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    q.extend_from_slice(qname);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Addresses(Vec<Ipv4Addr>),
    Rcode(&'static str),
    Empty,
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.msg.get(self.pos..end).ok_or("truncated message")?;
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A (possibly compressed) name, decoded to lowercase wire form.
    fn name(&mut self) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        let mut pos = self.pos;
        let mut jumped = false;
        let mut pointers = 0;
        loop {
            let len = *self.msg.get(pos).ok_or("truncated name")? as usize;
            match len & 0xc0 {
                0x00 => {
                    pos += 1;
                    if len == 0 {
                        out.push(0);
                        if !jumped {
                            self.pos = pos;
                        }
                        return Ok(out);
                    }
                    let label = self.msg.get(pos..pos + len).ok_or("truncated label")?;
                    out.push(len as u8);
                    out.extend(label.iter().map(u8::to_ascii_lowercase));
                    if out.len() > MAX_NAME_LEN + 2 {
                        return Err("name too long");
                    }
                    pos += len;
                }
                0xc0 => {
                    let low = *self.msg.get(pos + 1).ok_or("truncated pointer")? as usize;
                    if !jumped {
                        self.pos = pos + 2;
                    }
                    jumped = true;
                    pointers += 1;
                    if pointers > MAX_POINTERS {
                        return Err("compression loop");
                    }
                    pos = ((len & 0x3f) << 8) | low;
                }
                _ => return Err("reserved label type"),
            }
        }
    }
}

fn parse_reply(msg: &[u8], id: u16, qname: &[u8]) -> Result<Reply, &'static str> {
    if msg.len() > MAX_REPLY {
        return Err("longer than 512 bytes");
    }
    let mut r = Reader { msg, pos: 0 };
    if r.u16()? != id {
        return Err("wrong id");
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("not a response");
    }
    if (flags >> 11) & 0xf != 0 {
        return Err("not a standard query response");
    }
    if flags & 0x0200 != 0 {
        return Err("truncated (TC) reply");
    }
    let qd = r.u16()?;
    let an = r.u16()?;
    let _ns = r.u16()?;
    let _ar = r.u16()?;
    match flags & 0xf {
        0 => {}
        2 => return Ok(Reply::Rcode("SERVFAIL")),
        3 => return Ok(Reply::Rcode("NXDOMAIN (no such name)")),
        5 => return Ok(Reply::Rcode("REFUSED")),
        _ => return Ok(Reply::Rcode("an error")),
    }
    if qd != 1 {
        return Err("question count is not 1");
    }
    if r.name()? != qname || r.u16()? != TYPE_A || r.u16()? != CLASS_IN {
        return Err("the question is not ours");
    }
    let mut wanted = vec![qname.to_vec()];
    let mut addresses = Vec::new();
    for _ in 0..an {
        let owner = r.name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        let _ttl = r.take(4)?;
        let len = r.u16()? as usize;
        let start = r.pos;
        let data = r.take(len)?;
        if class != CLASS_IN || !wanted.contains(&owner) {
            continue;
        }
        match rtype {
            TYPE_A => {
                let octets: [u8; 4] = data.try_into().map_err(|_| "A record is not 4 bytes")?;
                let ip = Ipv4Addr::from(octets);
                if !addresses.contains(&ip) && addresses.len() < MAX_ADDRESSES {
                    addresses.push(ip);
                }
            }
            TYPE_CNAME => {
                if wanted.len() > MAX_CNAMES {
                    return Err("too many CNAMEs");
                }
                let mut sub = Reader { msg, pos: start };
                let target = sub.name()?;
                if sub.pos != start + len {
                    return Err("CNAME length mismatch");
                }
                wanted.push(target);
            }
            _ => {}
        }
    }
    Ok(if addresses.is_empty() {
        Reply::Empty
    } else {
        Reply::Addresses(addresses)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u16, qname: &[u8], records: &[(Vec<u8>, u16, Vec<u8>)], rcode: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(records.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(qname);
        m.extend_from_slice(&[0, 1, 0, 1]);
        for (owner, rtype, data) in records {
            m.extend_from_slice(owner);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn names() {
        assert_eq!(
            encode_name("kbs.example").unwrap(),
            b"\x03kbs\x07example\x00"
        );
        for bad in ["", "a..b", "-a", "a b", &"a".repeat(64), &"a.".repeat(130)] {
            assert!(encode_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_a_and_cname_with_compression() {
        let q = encode_name("kbs.example").unwrap();
        // CNAME kbs.example -> x.example (compressed: "x" + pointer to "example" at offset 16).
        let cname = vec![1, b'x', 0xc0, 16];
        let x_owner = {
            let mut o = vec![1, b'x'];
            o.extend_from_slice(&[0xc0, 16]);
            o
        };
        let msg = answer(
            7,
            &q,
            &[
                (vec![0xc0, 12], TYPE_CNAME, cname),
                (x_owner.clone(), TYPE_A, vec![10, 0, 2, 100]),
                // Not asked for: must be ignored.
                (b"\x05other\x00".to_vec(), TYPE_A, vec![6, 6, 6, 6]),
            ],
            0,
        );
        assert_eq!(
            parse_reply(&msg, 7, &q).unwrap(),
            Reply::Addresses(vec![Ipv4Addr::new(10, 0, 2, 100)])
        );
    }

    #[test]
    fn refuses_hostile_replies() {
        let q = encode_name("kbs.example").unwrap();
        let good = answer(7, &q, &[(vec![0xc0, 12], TYPE_A, vec![1, 2, 3, 4])], 0);
        assert!(parse_reply(&good, 8, &q).is_err(), "wrong id");
        let other_q = encode_name("evil.example").unwrap();
        let msg = answer(
            7,
            &other_q,
            &[(vec![0xc0, 12], TYPE_A, vec![1, 2, 3, 4])],
            0,
        );
        assert!(parse_reply(&msg, 7, &q).is_err(), "other question");
        let msg = answer(7, &q, &[(vec![0xc0, 12], TYPE_A, vec![1, 2, 3])], 0);
        assert!(parse_reply(&msg, 7, &q).is_err(), "short A");
        // A pointer to itself.
        let msg = answer(7, &q, &[(vec![0xc0, 29], TYPE_A, vec![1, 2, 3, 4])], 0);
        assert!(parse_reply(&msg, 7, &q).is_err(), "pointer loop");
        let mut tc = good.clone();
        tc[2] |= 0x02;
        assert!(parse_reply(&tc, 7, &q).is_err(), "truncated flag");
        assert_eq!(
            parse_reply(&answer(7, &q, &[], 3), 7, &q).unwrap(),
            Reply::Rcode("NXDOMAIN (no such name)")
        );
        assert_eq!(
            parse_reply(&answer(7, &q, &[], 0), 7, &q).unwrap(),
            Reply::Empty
        );
        for cut in 0..good.len() {
            let _ = parse_reply(&good[..cut], 7, &q);
        }
    }

    /// hickory-proto (the resolver most Rust programs use) as an oracle for the wire format: our
    /// queries are what it parses as a standard recursive A query for the name, and its answers,
    /// with its name compression, give us the addresses its own records say the name has.
    mod hickory_oracle {
        use super::*;
        use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
        use hickory_proto::rr::rdata::{A, AAAA, CNAME};
        use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9_]([a-z0-9_-]{0,8}[a-z0-9_])?"
        }

        fn host() -> impl Strategy<Value = String> {
            proptest::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
        }

        /// The same name as the server may spell it (DNS names are case-insensitive).
        fn spelled(name: &str, upper: &[bool]) -> Name {
            let mixed: String = name
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            Name::from_ascii(format!("{mixed}.")).unwrap()
        }

        fn record(owner: Name, data: RData) -> Record {
            Record::from_rdata(owner, 60, data)
        }

        /// The addresses an answer gives `qname`, read from hickory's own view of the records:
        /// A records of the name or of the CNAMEs it leads to, in order, each once.
        fn expected(msg: &Message, qname: &Name) -> Vec<Ipv4Addr> {
            let mut wanted = vec![qname.to_lowercase()];
            let mut out = Vec::new();
            for r in &msg.answers {
                if r.dns_class != DNSClass::IN || !wanted.contains(&r.name.to_lowercase()) {
                    continue;
                }
                match &r.data {
                    RData::A(a) if !out.contains(&a.0) => out.push(a.0),
                    RData::CNAME(c) => wanted.push(c.0.to_lowercase()),
                    _ => {}
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

            #[test]
            fn our_query_is_a_standard_a_query_in_hickory(id in any::<u16>(), name in host()) {
                let wire = build_query(id, &encode_name(&name).unwrap());
                let msg = Message::from_vec(&wire).expect("hickory parses our query");
                prop_assert_eq!(msg.metadata.id, id);
                prop_assert_eq!(msg.metadata.message_type, MessageType::Query);
                prop_assert_eq!(msg.metadata.op_code, OpCode::Query);
                prop_assert!(msg.metadata.recursion_desired);
                prop_assert_eq!(msg.queries.len(), 1);
                let q = &msg.queries[0];
                prop_assert_eq!(q.name(), &Name::from_ascii(format!("{name}.")).unwrap());
                prop_assert_eq!(q.query_type(), RecordType::A);
                prop_assert_eq!(q.query_class(), DNSClass::IN);
                prop_assert!(msg.answers.is_empty() && msg.additionals.is_empty());
                prop_assert!(msg.edns.is_none());
                // And hickory writes the same query back byte for byte.
                prop_assert_eq!(msg.to_vec().unwrap(), wire);
            }

            #[test]
            fn hickory_answers_parse_to_the_same_addresses(
                id in any::<u16>(),
                name in host(),
                upper in proptest::collection::vec(any::<bool>(), 1..8),
                chain in proptest::collection::vec(host(), 0..4),
                addrs in proptest::collection::vec(any::<[u8; 4]>(), 0..6),
                noise in proptest::collection::vec((0usize..12, host(), any::<[u8; 4]>(), any::<bool>()), 0..4),
            ) {
                let qname = Name::from_ascii(format!("{name}.")).unwrap();
                let mut msg = Message::response(id, OpCode::Query);
                msg.metadata.recursion_desired = true;
                msg.metadata.recursion_available = true;
                msg.add_query(Query::query(qname.clone(), RecordType::A));
                // qname -> chain[0] -> … -> last, then the A records of the last name.
                let mut owner = spelled(&name, &upper);
                let mut answers = Vec::new();
                for next in &chain {
                    let target = spelled(next, &upper);
                    answers.push(record(owner, RData::CNAME(CNAME(target.clone()))));
                    owner = target;
                }
                for a in &addrs {
                    answers.push(record(owner.clone(), RData::A(A(Ipv4Addr::from(*a)))));
                }
                // Records of other names, and an AAAA of the name itself, anywhere.
                for (at, other, a, v6) in noise {
                    let r = if v6 {
                        record(qname.clone(), RData::AAAA(AAAA(std::net::Ipv6Addr::LOCALHOST)))
                    } else {
                        record(Name::from_ascii(format!("{other}.noise.")).unwrap(), RData::A(A(Ipv4Addr::from(a))))
                    };
                    answers.insert(at.min(answers.len()), r);
                }
                msg.add_answers(answers);
                let wire = msg.to_vec().unwrap();
                prop_assume!(wire.len() <= MAX_REPLY);
                let want = expected(&msg, &qname);
                let got = parse_reply(&wire, id, &encode_name(&name).unwrap());
                if want.is_empty() {
                    prop_assert_eq!(got, Ok(Reply::Empty));
                } else {
                    prop_assert_eq!(got, Ok(Reply::Addresses(want)));
                }
            }
        }

        #[test]
        fn hickory_error_answers_are_the_same_rcodes() {
            let q = encode_name("kbs.example").unwrap();
            let qname = Name::from_ascii("kbs.example.").unwrap();
            for (code, want) in [
                (ResponseCode::ServFail, "SERVFAIL"),
                (ResponseCode::NXDomain, "NXDOMAIN (no such name)"),
                (ResponseCode::Refused, "REFUSED"),
                (ResponseCode::FormErr, "an error"),
            ] {
                let mut msg = Message::error_msg(9, OpCode::Query, code);
                msg.add_query(Query::query(qname.clone(), RecordType::A));
                assert_eq!(
                    parse_reply(&msg.to_vec().unwrap(), 9, &q),
                    Ok(Reply::Rcode(want)),
                    "{code:?}"
                );
            }
            // A truncated answer is refused, not half-read.
            let mut msg = Message::response(9, OpCode::Query);
            msg.metadata.truncation = true;
            msg.add_query(Query::query(qname, RecordType::A));
            assert!(parse_reply(&msg.to_vec().unwrap(), 9, &q).is_err());
        }
    }

    #[test]
    fn resolves_against_a_local_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let q = encode_name("kbs.test").unwrap();
            assert_eq!(&buf[12..12 + q.len()], &q[..]);
            // A spoofed reply with the wrong id first, then the real one.
            let wrong = answer(id ^ 1, &q, &[(vec![0xc0, 12], TYPE_A, vec![6, 6, 6, 6])], 0);
            server.send_to(&wrong, from).unwrap();
            let reply = answer(id, &q, &[(vec![0xc0, 12], TYPE_A, vec![127, 0, 0, 9])], 0);
            server.send_to(&reply, from).unwrap();
            n
        });
        // Nobody answers on a closed port: a timeout that names the server, within the budget.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let err = resolve_a_at(
            "kbs.test",
            &[silent.local_addr().unwrap()],
            Duration::from_millis(600),
        )
        .unwrap_err();
        assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let got = resolve_a_at("kbs.test", &[server], Duration::from_secs(5)).unwrap();
        assert_eq!(got, vec![Ipv4Addr::new(127, 0, 0, 9)]);
        assert!(handle.join().unwrap() > 12);
    }
}
