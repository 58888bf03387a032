//! IP networks, and the addresses the gateway refuses to call unless an operator allows them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use crate::error::NetParseError;

/// An IPv4 or IPv6 network in CIDR notation, e.g. `127.0.0.1/32`, `10.0.0.0/8`, `::1/128`;
/// a bare address means `/32` or `/128`.
///
/// Host bits must be zero (`10.1.0.0/8` is refused), so that what an operator wrote is exactly
/// what is matched. Addresses are parsed strictly: no octal, hex or shortened IPv4 forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Builds a network from its address and prefix length; refuses a prefix longer than the
    /// address and an address with host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, NetParseError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(NetParseError::InvalidPrefix {
                input: format!("{addr}/{prefix}"),
                max,
            });
        }
        let net = Self { addr, prefix };
        let network = net.network();
        if network != addr {
            return Err(NetParseError::HostBitsSet {
                input: net.to_string(),
                network: Self { addr: network, prefix }.to_string(),
            });
        }
        Ok(net)
    }

    /// An IPv4 network for the built-in tables; the caller guarantees host bits are zero.
    pub(crate) const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// An IPv6 network for the built-in tables; the caller guarantees host bits are zero.
    pub(crate) const fn v6(s: [u16; 8], prefix: u8) -> Self {
        let addr = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        Self {
            addr: IpAddr::V6(addr),
            prefix,
        }
    }

    /// The network address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. Families never mix: `127.0.0.0/8` does not contain
    /// `::ffff:127.0.0.1`; allow the IPv6 form explicitly if it is wanted.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The address with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) & mask32(self.prefix)).into(),
            IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) & mask128(self.prefix)).into(),
        }
    }
}

impl FromStr for IpNet {
    type Err = NetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| NetParseError::InvalidAddress(s.to_owned()))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            // `u8::from_str` accepts a leading `+`; a prefix is digits only.
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(NetParseError::InvalidPrefix {
                    input: s.to_owned(),
                    max,
                });
            }
            Some(p) => p.parse().map_err(|_| NetParseError::InvalidPrefix {
                input: s.to_owned(),
                max,
            })?,
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// IPv4 ranges that are not public unicast, most specific first.
const V4_RULES: &[(IpNet, &str)] = &[
    (IpNet::v4(0, 0, 0, 0, 8), "unspecified"),
    (IpNet::v4(127, 0, 0, 0, 8), "loopback"),
    (IpNet::v4(10, 0, 0, 0, 8), "private"),
    (IpNet::v4(172, 16, 0, 0, 12), "private"),
    (IpNet::v4(192, 168, 0, 0, 16), "private"),
    (IpNet::v4(100, 64, 0, 0, 10), "shared address space"),
    (IpNet::v4(169, 254, 0, 0, 16), "link-local"),
    (IpNet::v4(192, 0, 0, 0, 24), "IETF protocol assignment"),
    (IpNet::v4(192, 0, 2, 0, 24), "documentation"),
    (IpNet::v4(198, 51, 100, 0, 24), "documentation"),
    (IpNet::v4(203, 0, 113, 0, 24), "documentation"),
    (IpNet::v4(198, 18, 0, 0, 15), "benchmarking"),
    (IpNet::v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (IpNet::v4(224, 0, 0, 0, 4), "multicast"),
    (IpNet::v4(255, 255, 255, 255, 32), "broadcast"),
    (IpNet::v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges that neither embed an IPv4 address nor are public unicast. Anything outside
/// `2000::/3` (global unicast) that is not listed here is refused as reserved.
const V6_RULES: &[(IpNet, &str)] = &[
    (IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (IpNet::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo tunnel"),
    (IpNet::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (IpNet::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (IpNet::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "IETF protocol assignment"),
    (IpNet::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (IpNet::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (IpNet::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (IpNet::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (IpNet::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const V6_GLOBAL_UNICAST: IpNet = IpNet::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const V6_MAPPED: IpNet = IpNet::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
const V6_COMPATIBLE: IpNet = IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
const V6_NAT64: IpNet = IpNet::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const V6_NAT64_LOCAL: IpNet = IpNet::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48);
const V6_6TO4: IpNet = IpNet::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// Why an address is refused, or `None` if it is a public unicast address.
///
/// IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are
/// judged by the embedded address, so `::ffff:127.0.0.1` is refused as `loopback` and
/// `::ffff:8.8.8.8` is allowed. Teredo and the local-use NAT64 prefix `64:ff9b:1::/48` are
/// always refused.
#[must_use]
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => first_match(V4_RULES, v4.into()),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let addr = IpAddr::V6(ip);
    // `::` and `::1` sit inside `::/96` but are not IPv4-compatible addresses.
    if let Some(reason) = first_match(&V6_RULES[..2], addr) {
        return Some(reason);
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_reason(v4.into());
    }
    if V6_NAT64_LOCAL.contains(addr) {
        // The translator is operator-defined and so is where it puts the IPv4 address; judge
        // the usual /96 spelling, and refuse the rest anyway.
        return forbidden_reason(low_v4(ip).into()).or(Some("local-use NAT64"));
    }
    first_match(V6_RULES, addr).or_else(|| (!V6_GLOBAL_UNICAST.contains(addr)).then_some("reserved"))
}

/// The IPv4 address an IPv4-mapped, IPv4-compatible, NAT64 (`64:ff9b::/96`) or 6to4 address
/// stands for.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let addr = IpAddr::V6(ip);
    if [V6_MAPPED, V6_COMPATIBLE, V6_NAT64].iter().any(|n| n.contains(addr)) {
        return Some(low_v4(ip));
    }
    if V6_6TO4.contains(addr) {
        let s = ip.segments();
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    None
}

/// The last 32 bits of an IPv6 address as an IPv4 address.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let [.., a, b, c, d] = ip.octets();
    Ipv4Addr::new(a, b, c, d)
}

fn first_match(rules: &[(IpNet, &'static str)], ip: IpAddr) -> Option<&'static str> {
    rules
        .iter()
        .find(|(net, _)| net.contains(ip))
        .map(|(_, reason)| *reason)
}

#[cfg(test)]
mod tests;
