//! The fence around a `bridge` container: policy routing rules of type `prohibit` in its
//! network namespace, installed after pasta configured it and before the container starts,
//! for every address of the host, every subnet attached to the host's interfaces, and
//! link-local space (where cloud metadata services answer). A connection there fails at
//! once with `EACCES`, inside the container's namespace: no packet reaches pasta, so none
//! leaves through the host.
//!
//! Why rules, and why here:
//! - pasta relays the container's connections as ordinary sockets of the host, so without
//!   the fence a container reaches whatever the host reaches: its own services bound to
//!   any address but loopback (`--no-map-gw` already keeps loopback out), the machines of
//!   its LAN, and `169.254.169.254`. pasta has no outbound filter of its own.
//! - A rule (not a route) because pasta gives the namespace a copy of the host's address
//!   and routes: a `prohibit` route for an attached subnet would collide with the
//!   connected route pasta installed. Rules are looked up before the `main` table, and the
//!   `local` table (the container's own addresses) comes first of all.
//! - The container cannot remove them: that needs `CAP_NET_ADMIN`, which it never has.
//! - pasta's DNS forwarder sits at a link-local address: a rule of higher priority sends
//!   it to the `main` table as usual.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::CloneFlags;

use super::HostError;
use super::network::DNS_FORWARD;

/// An address range: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Link-local space, v4 and v6: cloud metadata (169.254.169.254, and AWS's v6
/// `fd00:ec2::254`, listed on its own below), and whatever else the host's links offer.
const LINK_LOCAL: [Prefix; 3] = [
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
        len: 16,
    },
    Prefix {
        addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        len: 10,
    },
    Prefix {
        addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254)),
        len: 128,
    },
];

/// The rules' priorities: before `main` (32766), after `local` (0).
const ALLOW_PRIORITY: u32 = 100;
const PROHIBIT_PRIORITY: u32 = 110;

/// The `main` routing table.
const RT_TABLE_MAIN: u8 = 254;

/// What a fenced container may not reach, given the host's interface addresses (each with
/// its prefix length): every address but loopback, the subnet around it, and link-local
/// space; sorted, each range once.
pub fn fenced(host: &[Prefix]) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = LINK_LOCAL.to_vec();
    for p in host.iter().filter(|p| !p.addr.is_loopback()) {
        let full = if p.addr.is_ipv4() { 32 } else { 128 };
        out.push(Prefix {
            addr: p.addr,
            len: full,
        });
        let len = p.len.min(full);
        out.push(Prefix {
            addr: network_of(p.addr, len),
            len,
        });
    }
    out.sort();
    out.dedup();
    out
}

/// `addr` with every bit past the first `len` cleared.
fn network_of(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The host's interface addresses, with their prefix lengths (from the namespace berth
/// runs in: the host's, for root and rootless operators alike).
pub fn host_addresses() -> io::Result<Vec<Prefix>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let len = u8::try_from(m.ip().to_bits().count_ones()).unwrap_or(32);
            out.push(Prefix {
                addr: IpAddr::V4(a.ip()),
                len,
            });
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let len = u8::try_from(m.ip().to_bits().count_ones()).unwrap_or(128);
            out.push(Prefix {
                addr: IpAddr::V6(a.ip()),
                len,
            });
        }
    }
    Ok(out)
}

/// Installs the fence in the network namespace of `pid` (a created container's init, not
/// started yet): `prohibit` rules for `ranges`, and pasta's DNS forwarder let through.
pub fn install(pid: i32, ranges: &[Prefix]) -> Result<(), HostError> {
    let err = |source: io::Error| HostError::Fence { pid, source };
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(err)?;
    let mut rules = vec![allow_rule(Prefix {
        addr: IpAddr::V4(DNS_FORWARD),
        len: 32,
    })];
    rules.extend(ranges.iter().map(|r| prohibit_rule(*r)));
    // setns moves only the calling thread: a short-lived one, joined before the container
    // starts (as for `lo`), so libcontainer never clones while it exists.
    std::thread::spawn(move || -> io::Result<()> {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
        send_all(&rules)
    })
    .join()
    .map_err(|_| err(io::Error::other("fence thread panicked")))?
    .map_err(err)?;
    tracing::debug!("fenced the network of pid {pid}: {} ranges", ranges.len());
    Ok(())
}

fn rule_for(range: Prefix, action: RuleAction, priority: u32) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = match range.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    rule.header.dst_len = range.len;
    rule.header.action = action;
    rule.attributes.push(RuleAttribute::Priority(priority));
    rule.attributes.push(RuleAttribute::Destination(range.addr));
    rule
}

fn prohibit_rule(range: Prefix) -> RuleMessage {
    rule_for(range, RuleAction::Prohibit, PROHIBIT_PRIORITY)
}

/// Look `range` up in the `main` table, before any `prohibit` rule.
fn allow_rule(range: Prefix) -> RuleMessage {
    let mut rule = rule_for(range, RuleAction::ToTable, ALLOW_PRIORITY);
    rule.header.table = RT_TABLE_MAIN;
    rule
}

/// Sends each rule over rtnetlink in the calling thread's namespace, waiting for each
/// acknowledgement.
fn send_all(rules: &[RuleMessage]) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    for (seq, rule) in (1u32..).zip(rules) {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::NewRule(rule.clone())),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        socket.send(&buf, 0)?;
        wait_ack(&socket, seq)?;
    }
    Ok(())
}

/// Reads until the kernel acknowledges request `seq`, or refuses it.
fn wait_ack(socket: &Socket, seq: u32) -> io::Result<()> {
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = usize::try_from(msg.header.length).unwrap_or(usize::MAX);
            if len == 0 || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a netlink message longer than what was read",
                ));
            }
            rest = &rest[len..];
            if let NetlinkPayload::Error(e) = msg.payload
                && msg.header.sequence_number == seq
            {
                return match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn the_hosts_addresses_their_subnets_and_link_local_space_are_fenced() {
        let host = [
            p("127.0.0.1/8"),
            p("::1/128"),
            p("192.0.2.2/24"),
            p("10.213.7.1/24"),
            p("fd00::2/64"),
            p("fe80::fc:ff:fe00:1/64"),
        ];
        let got: Vec<String> = fenced(&host).iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "10.213.7.0/24",
                "10.213.7.1/32",
                "169.254.0.0/16",
                "192.0.2.0/24",
                "192.0.2.2/32",
                "fd00::/64",
                "fd00::2/128",
                "fd00:ec2::254/128",
                "fe80::/10",
                "fe80::/64",
                "fe80::fc:ff:fe00:1/128",
            ]
        );
        // Loopback stays: pasta never maps it (`--no-map-gw`), and it is the container's own.
        assert!(!got.iter().any(|g| g.starts_with("127.") || g == "::1/128"));
        // A host without addresses still fences link-local space.
        assert_eq!(fenced(&[]).len(), 3);
    }

    #[test]
    fn networks_keep_only_their_prefix_bits() {
        assert_eq!(
            network_of("10.213.7.77".parse().unwrap(), 20),
            "10.213.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("10.1.2.3".parse().unwrap(), 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("2001:db8::1".parse().unwrap(), 32),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn rules_prohibit_each_range_and_let_the_dns_forwarder_through() {
        let r = prohibit_rule(p("10.213.7.0/24"));
        assert_eq!(r.header.action, RuleAction::Prohibit);
        assert_eq!(r.header.family, AddressFamily::Inet);
        assert_eq!(r.header.dst_len, 24);
        assert!(
            r.attributes
                .contains(&RuleAttribute::Destination("10.213.7.0".parse().unwrap()))
        );
        let a = allow_rule(p("169.254.1.1/32"));
        assert_eq!(a.header.action, RuleAction::ToTable);
        assert_eq!(a.header.table, RT_TABLE_MAIN);
        assert!(
            a.attributes
                .contains(&RuleAttribute::Priority(ALLOW_PRIORITY))
        );
        const { assert!(ALLOW_PRIORITY < PROHIBIT_PRIORITY) };
        let v6 = prohibit_rule(p("fe80::/10"));
        assert_eq!(v6.header.family, AddressFamily::Inet6);
    }
}
