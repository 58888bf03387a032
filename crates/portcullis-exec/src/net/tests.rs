use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn refuses_every_non_public_range() {
    let table = [
        // IPv4
        ("0.0.0.0", "unspecified"),
        ("0.255.255.255", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.255", "shared address space"),
        ("169.254.169.254", "link-local"),
        ("192.0.0.8", "IETF protocol assignment"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.200", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("192.88.99.1", "6to4 relay anycast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.254", "reserved"),
        ("255.255.255.255", "broadcast"),
        // IPv6
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "discard-only"),
        ("2001:2::1", "IETF protocol assignment"),
        ("4000::1", "reserved"),
        ("::1:0:0:1", "reserved"),
        // Teredo is refused whatever it embeds.
        ("2001::1", "Teredo tunnel"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo tunnel"),
        // IPv4-mapped
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:0.0.0.0", "unspecified"),
        // IPv4-compatible
        ("::127.0.0.1", "loopback"),
        ("::192.168.0.1", "private"),
        ("::0.0.0.2", "unspecified"),
        // NAT64, well-known and local-use
        ("64:ff9b::127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("64:ff9b:1::10.0.0.1", "private"),
        ("64:ff9b:1::8.8.8.8", "local-use NAT64"),
        ("64:ff9b:1:ffff::808:808", "local-use NAT64"),
        // 6to4: the IPv4 address is bits 16..48
        ("2002:7f00:1::", "loopback"),
        ("2002:a00:1:1234::1", "private"),
        ("2002::1", "unspecified"),
        ("2002:c000:201::1", "documentation"),
    ];
    for (addr, reason) in table {
        assert_eq!(forbidden_reason(ip(addr)), Some(reason), "{addr}");
    }
}

#[test]
fn allows_public_unicast_including_embedded_public_ipv4() {
    for addr in [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "172.32.0.1",
        "100.128.0.1",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ] {
        assert_eq!(forbidden_reason(ip(addr)), None, "{addr}");
    }
}

#[test]
fn parses_and_displays_networks() {
    for (input, shown) in [
        ("127.0.0.1/32", "127.0.0.1/32"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::1/128", "::1/128"),
        ("fd00::/8", "fd00::/8"),
        ("127.0.0.1", "127.0.0.1/32"),
        ("::1", "::1/128"),
    ] {
        let net: IpNet = input.parse().unwrap();
        assert_eq!(net.to_string(), shown);
        assert_eq!(net.to_string().parse::<IpNet>().unwrap(), net);
    }
}

#[test]
fn refuses_malformed_networks_with_a_clear_message() {
    let cases = [
        (
            "10.0.0.0/33",
            "`10.0.0.0/33` has an invalid prefix length: expected 0 to 32",
        ),
        ("::/129", "`::/129` has an invalid prefix length: expected 0 to 128"),
        (
            "10.0.0.0/",
            "`10.0.0.0/` has an invalid prefix length: expected 0 to 32",
        ),
        (
            "10.0.0.0/+8",
            "`10.0.0.0/+8` has an invalid prefix length: expected 0 to 32",
        ),
        (
            "10.1.2.3/8",
            "`10.1.2.3/8` has host bits set: did you mean `10.0.0.0/8`?",
        ),
        ("0177.0.0.1/32", "`0177.0.0.1/32` is not an IP address or CIDR network"),
        ("127.1", "`127.1` is not an IP address or CIDR network"),
        ("localhost", "`localhost` is not an IP address or CIDR network"),
        ("", "`` is not an IP address or CIDR network"),
    ];
    for (input, message) in cases {
        let err = input.parse::<IpNet>().unwrap_err();
        assert_eq!(err.to_string(), message, "{input}");
    }
}

#[test]
fn contains_respects_prefix_and_family() {
    let net: IpNet = "10.0.0.0/8".parse().unwrap();
    assert!(net.contains(ip("10.255.0.1")));
    assert!(!net.contains(ip("11.0.0.0")));
    assert!(!net.contains(ip("::ffff:10.0.0.1")));

    let all: IpNet = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("203.0.113.9")));
    assert!(!all.contains(ip("::1")));

    let host: IpNet = "::1".parse().unwrap();
    assert!(host.contains(ip("::1")));
    assert!(!host.contains(ip("::2")));

    let v6: IpNet = "fe80::/10".parse().unwrap();
    assert!(v6.contains(ip("febf::1")));
    assert!(!v6.contains(ip("fec0::1")));
}

#[test]
fn built_in_tables_have_no_host_bits_set() {
    let nets = V4_RULES.iter().chain(V6_RULES).map(|(net, _)| *net);
    let extra = [
        V6_GLOBAL_UNICAST,
        V6_MAPPED,
        V6_COMPATIBLE,
        V6_NAT64,
        V6_NAT64_LOCAL,
        V6_6TO4,
    ];
    for net in nets.chain(extra) {
        assert_eq!(IpNet::new(net.addr(), net.prefix()), Ok(net), "{net}");
    }
}
