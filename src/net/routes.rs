//! Routes from DHCP: RFC 3442 classless static routes (option 121) and the order in which they
//! reach the kernel.
//!
//! Clouds lean on option 121. GCP leases a /32 whose gateway is therefore never "in the subnet"
//! and comes with a 121 default route; Azure adds host routes to its platform addresses
//! (168.63.129.16, 169.254.169.254) through the subnet's gateway. RFC 3442 §3: when a server
//! sends option 121 the client ignores option 3 (Router), so the routes come from one place.
//!
//! The option comes from the host and is hostile: every descriptor is bounded by the option,
//! a width above 32 or bits set past the width refuse the whole lease (a half-read route table
//! is worse than none), and the number of routes is capped.

use super::{in_subnet, mask, unicast};
use std::net::Ipv4Addr;

/// More routes than any cloud sends (Azure: three); a longer list is a hostile server.
pub(crate) const MAX_ROUTES: usize = 32;

/// One route to install: `dst/prefix` via `gateway`, or directly on the link without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// `None`: on-link (RFC 3442 router 0.0.0.0, as GCP and others use for the gateway itself).
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.is_default(), self.gateway) {
            (true, Some(gw)) => write!(f, "default via {gw}"),
            (true, None) => write!(f, "default on-link"),
            (false, Some(gw)) => write!(f, "{}/{} via {gw}", self.dst, self.prefix),
            (false, None) => write!(f, "{}/{} on-link", self.dst, self.prefix),
        }
    }
}

/// Decode option 121's compact encoding: per route one width byte (0..=32), the `ceil(width/8)`
/// significant octets of the destination, then the router's four octets.
pub(crate) fn parse_classless(v: &[u8]) -> Result<Vec<Route>, String> {
    if v.is_empty() {
        // RFC 3442 §2: the minimum length is 5 (one default route).
        return Err("option 121 is empty".into());
    }
    let mut routes = Vec::new();
    let mut rest = v;
    while let Some((&width, tail)) = rest.split_first() {
        if width > 32 {
            return Err(format!("option 121: prefix width {width} is above 32"));
        }
        let octets = usize::from(width).div_ceil(8);
        let Some((dst_bytes, tail)) = tail.split_at_checked(octets) else {
            return Err(format!(
                "option 121: the /{width} destination runs past the option"
            ));
        };
        let Some((router, tail)) = tail.split_at_checked(4) else {
            return Err(format!(
                "option 121: the router of a /{width} route runs past the option"
            ));
        };
        let mut dst = [0u8; 4];
        dst[..octets].copy_from_slice(dst_bytes);
        let dst = Ipv4Addr::from(dst);
        if u32::from(dst) & !mask(width) != 0 {
            return Err(format!(
                "option 121: destination {dst} has bits set past /{width}"
            ));
        }
        let router = Ipv4Addr::new(router[0], router[1], router[2], router[3]);
        if routes.len() == MAX_ROUTES {
            return Err(format!("option 121: more than {MAX_ROUTES} routes"));
        }
        routes.push(Route {
            dst,
            prefix: width,
            gateway: (!router.is_unspecified()).then_some(router),
        });
        rest = tail;
    }
    Ok(routes)
}

/// The sanity rules for a route list against the address it is installed with.
pub(crate) fn validate(address: Ipv4Addr, routes: &[Route]) -> Result<(), String> {
    for (i, r) in routes.iter().enumerate() {
        if !r.is_default() && !unicast(r.dst) {
            return Err(format!("route {r}: not a unicast destination"));
        }
        if let Some(gw) = r.gateway {
            if !unicast(gw) {
                return Err(format!("route {r}: gateway is not a unicast address"));
            }
            if gw == address {
                return Err(format!("route {r}: gateway is our own address"));
            }
        }
        // Two routes for one destination: the kernel would keep whichever came last, so the
        // server's intent is unclear.
        if routes[..i]
            .iter()
            .any(|o| o.dst == r.dst && o.prefix == r.prefix)
        {
            return Err(format!("route {r}: destination listed twice"));
        }
    }
    Ok(())
}

/// The routes in the order the kernel accepts them: on-link routes first, then for each gateway
/// not yet reachable (outside the address's subnet and every on-link route so far) an on-link
/// /32 to it, then the route via it. Without that host route the kernel refuses a gateway
/// outside every connected prefix (ENETUNREACH), which is exactly GCP's /32 lease.
pub(crate) fn plan(address: Ipv4Addr, prefix: u8, routes: &[Route]) -> Vec<Route> {
    let mut out: Vec<Route> = routes
        .iter()
        .filter(|r| r.gateway.is_none())
        .copied()
        .collect();
    for r in routes.iter().filter(|r| r.gateway.is_some()) {
        let Some(gw) = r.gateway else { continue };
        let reachable = in_subnet(gw, address, prefix)
            || out
                .iter()
                .any(|o| o.gateway.is_none() && in_subnet(gw, o.dst, o.prefix));
        if !reachable {
            out.push(Route {
                dst: gw,
                prefix: 32,
                gateway: None,
            });
        }
        out.push(*r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], prefix: u8, gw: Option<[u8; 4]>) -> Route {
        Route {
            dst: Ipv4Addr::from(dst),
            prefix,
            gateway: gw.map(Ipv4Addr::from),
        }
    }

    #[test]
    fn rfc3442_examples_decode() {
        // RFC 3442 §2's table: widths 0, 8, 9, 24, 25, 32 with 0, 1, 2, 3, 4, 4 octets.
        let v = [
            0, 10, 0, 0, 1, // 0.0.0.0/0 via 10.0.0.1
            8, 10, 10, 0, 0, 2, // 10.0.0.0/8 via 10.0.0.2
            9, 10, 128, 10, 0, 0, 3, // 10.128.0.0/9
            24, 192, 168, 7, 10, 0, 0, 4, // 192.168.7.0/24
            25, 192, 168, 7, 128, 10, 0, 0, 5, // 192.168.7.128/25
            32, 168, 63, 129, 16, 10, 0, 0, 6, // 168.63.129.16/32
        ];
        let got = parse_classless(&v).unwrap();
        assert_eq!(
            got,
            vec![
                route([0, 0, 0, 0], 0, Some([10, 0, 0, 1])),
                route([10, 0, 0, 0], 8, Some([10, 0, 0, 2])),
                route([10, 128, 0, 0], 9, Some([10, 0, 0, 3])),
                route([192, 168, 7, 0], 24, Some([10, 0, 0, 4])),
                route([192, 168, 7, 128], 25, Some([10, 0, 0, 5])),
                route([168, 63, 129, 16], 32, Some([10, 0, 0, 6])),
            ]
        );
        assert!(got[0].is_default());
        assert_eq!(got[0].to_string(), "default via 10.0.0.1");
    }

    #[test]
    fn router_zero_is_on_link() {
        // GCP: the gateway itself on-link, then the default route through it.
        let v = [32, 10, 128, 0, 1, 0, 0, 0, 0, 0, 10, 128, 0, 1];
        assert_eq!(
            parse_classless(&v).unwrap(),
            vec![
                route([10, 128, 0, 1], 32, None),
                route([0, 0, 0, 0], 0, Some([10, 128, 0, 1])),
            ]
        );
    }

    #[test]
    fn hostile_encodings_are_refused() {
        let cases: [(&[u8], &str); 7] = [
            (&[], "empty"),
            (&[33, 1, 2, 3, 4, 5, 10, 0, 0, 1], "width 33"),
            (&[24, 10, 0], "destination runs past"),
            (&[24, 10, 0, 0, 10, 0, 0], "router of a /24 route runs past"),
            (&[0, 10, 0, 0], "router of a /0 route runs past"),
            // 10.0.1.0/23: a bit of the last significant octet set past the width.
            (&[23, 10, 0, 1, 10, 0, 0, 1], "bits set past /23"),
            (&[9, 10, 192, 10, 0, 0, 1], "bits set past /9"),
        ];
        for (v, want) in cases {
            let err = parse_classless(v).unwrap_err();
            assert!(err.contains(want), "{v:?}: {want:?} not in {err:?}");
        }
        // A valid route followed by one stray byte.
        let err = parse_classless(&[0, 10, 0, 0, 1, 8]).unwrap_err();
        assert!(err.contains("destination runs past"), "{err}");
        // The cap: 32 default-length routes fit, 33 do not.
        let one = [32u8, 10, 0, 0, 9, 10, 0, 0, 1];
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 33).collect();
        assert!(
            parse_classless(&many[..one.len() * 32]).is_ok(),
            "32 routes"
        );
        assert!(parse_classless(&many).unwrap_err().contains("more than 32"));
    }

    #[test]
    fn every_truncation_and_corruption_is_handled() {
        let good = [
            0u8, 10, 0, 0, 1, 32, 168, 63, 129, 16, 10, 0, 0, 1, 25, 192, 168, 7, 128, 10, 0, 0, 1,
        ];
        for n in 0..good.len() {
            let _ = parse_classless(&good[..n]);
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 7, 8, 31, 32, 33, 0x80, 0xff] {
                let mut v = good;
                v[i] = b;
                if let Ok(routes) = parse_classless(&v) {
                    assert!(routes.iter().all(|r| r.prefix <= 32));
                }
            }
        }
    }

    #[test]
    fn validation() {
        let me = Ipv4Addr::new(10, 128, 0, 5);
        assert!(validate(me, &[route([0, 0, 0, 0], 0, Some([10, 128, 0, 1]))]).is_ok());
        let bad = [
            (
                route([0, 0, 0, 0], 0, Some([10, 128, 0, 5])),
                "our own address",
            ),
            (
                route([0, 0, 0, 0], 0, Some([224, 0, 0, 1])),
                "not a unicast address",
            ),
            (
                route([127, 0, 0, 0], 8, Some([10, 128, 0, 1])),
                "not a unicast destination",
            ),
            (route([224, 0, 0, 0], 4, None), "not a unicast destination"),
        ];
        for (r, want) in bad {
            let err = validate(me, &[r]).unwrap_err();
            assert!(err.contains(want), "{r}: {err}");
        }
        let twice = [
            route([0, 0, 0, 0], 0, Some([10, 128, 0, 1])),
            route([0, 0, 0, 0], 0, Some([10, 128, 0, 2])),
        ];
        assert!(validate(me, &twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn slash32_gateway_gets_a_host_route_first() {
        let me = Ipv4Addr::new(10, 128, 0, 5);
        let default = route([0, 0, 0, 0], 0, Some([10, 128, 0, 1]));
        assert_eq!(
            plan(me, 32, &[default]),
            vec![route([10, 128, 0, 1], 32, None), default]
        );
        // The same gateway inside a /20: reachable, no host route.
        assert_eq!(plan(me, 20, &[default]), vec![default]);
    }

    #[test]
    fn server_sent_on_link_routes_go_first_and_are_not_doubled() {
        let me = Ipv4Addr::new(10, 128, 0, 5);
        let default = route([0, 0, 0, 0], 0, Some([10, 128, 0, 1]));
        let onlink = route([10, 128, 0, 1], 32, None);
        // Listed after the route that needs it, as a careless server might.
        assert_eq!(plan(me, 32, &[default, onlink]), vec![onlink, default]);
    }

    #[test]
    fn azure_platform_routes_share_the_subnet_gateway() {
        let me = Ipv4Addr::new(10, 0, 0, 4);
        let routes = [
            route([0, 0, 0, 0], 0, Some([10, 0, 0, 1])),
            route([168, 63, 129, 16], 32, Some([10, 0, 0, 1])),
            route([169, 254, 169, 254], 32, Some([10, 0, 0, 1])),
        ];
        assert_eq!(plan(me, 24, &routes), routes.to_vec());
        // Two gateways outside a /32: one host route each, each right before its first use.
        let two = [
            route([0, 0, 0, 0], 0, Some([10, 0, 0, 1])),
            route([192, 168, 0, 0], 16, Some([10, 0, 0, 2])),
            route([172, 16, 0, 0], 12, Some([10, 0, 0, 1])),
        ];
        assert_eq!(
            plan(me, 32, &two),
            vec![
                route([10, 0, 0, 1], 32, None),
                two[0],
                route([10, 0, 0, 2], 32, None),
                two[1],
                two[2],
            ]
        );
    }
}
