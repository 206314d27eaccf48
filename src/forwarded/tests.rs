use super::*;
use http::HeaderValue;

fn trusted(list: &[&str]) -> TrustedProxies {
    TrustedProxies::new(list.iter().map(|s| TrustedProxies::parse_entry(s).unwrap()).collect())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `derive` for a plain-HTTP request to `app.test:8080` from `peer`.
fn from(peer: &str, t: &TrustedProxies, pairs: &[(&str, &str)]) -> Origin {
    derive(Some(ip(peer)), false, "app.test:8080", &headers(pairs), t, None)
}

const SPOOF: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.test"),
    ("x-forwarded-port", "443"),
    ("forwarded", "for=203.0.113.9;proto=https;host=evil.test"),
    ("x-real-ip", "203.0.113.9"),
];

#[test]
fn untrusted_peers_are_not_believed() {
    for (name, t) in [("no trusted proxies", trusted(&[])), ("peer outside the CIDRs", trusted(&["10.0.0.0/8", "fd00::/8"]))] {
        let o = from("192.0.2.1", &t, SPOOF);
        assert!(!o.peer_trusted, "{name}");
        assert_eq!(o.client_ip, Some(ip("192.0.2.1")), "{name}");
        assert!(!o.https, "{name}");
        assert_eq!(o.authority, "app.test:8080", "{name}");
        assert_eq!(o.origin(), "http://app.test:8080", "{name}");
        assert_eq!(o.x_forwarded_for().as_deref(), Some("192.0.2.1"), "{name}: the client's chain is replaced by the peer");
    }
    // Only the `Forwarded` family, also ignored.
    let o = from("192.0.2.1", &trusted(&[]), &[("forwarded", "for=203.0.113.9;proto=https")]);
    assert_eq!((o.client_ip, o.https), (Some(ip("192.0.2.1")), false));
}

#[test]
fn tls_and_host_of_the_connection_stand_without_a_proxy() {
    let o = derive(Some(ip("192.0.2.1")), true, "app.test", &HeaderMap::new(), &trusted(&[]), None);
    assert_eq!((o.scheme(), o.host(), o.port()), ("https", "app.test", 443));
    let o = derive(None, false, "app.test:8080", &headers(SPOOF), &trusted(&["0.0.0.0/0"]), None);
    assert!(!o.peer_trusted, "a Unix-socket peer is never trusted");
    assert_eq!((o.client_ip, o.x_forwarded_for()), (None, None));
}

#[test]
fn one_trusted_proxy_is_believed() {
    let t = trusted(&["10.0.0.0/8"]);
    let o = from(
        "10.1.2.3",
        &t,
        &[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com")],
    );
    assert!(o.peer_trusted);
    assert_eq!(o.client_ip, Some(ip("198.51.100.7")));
    assert_eq!(o.origin(), "https://app.example.com");
    assert_eq!((o.host(), o.port()), ("app.example.com", 443));
    assert_eq!(o.x_forwarded_for().as_deref(), Some("198.51.100.7, 10.1.2.3"));
    let up: Vec<(&str, String)> = o.upstream_headers().map(|(n, v)| (n, v.to_str().unwrap().to_string())).collect();
    assert_eq!(
        up,
        [
            ("x-forwarded-for", "198.51.100.7, 10.1.2.3".to_string()),
            ("x-forwarded-proto", "https".to_string()),
            ("x-forwarded-host", "app.example.com".to_string())
        ]
    );
    // A direct client: its address alone (formatted on the stack), IPv6 too.
    for (peer, want) in [("198.51.100.9", "198.51.100.9"), ("2001:db8::1", "2001:db8::1")] {
        let o = from(peer, &trusted(&[]), &[]);
        let up: Vec<(&str, String)> = o.upstream_headers().map(|(n, v)| (n, v.to_str().unwrap().to_string())).collect();
        assert_eq!(up[0], ("x-forwarded-for", want.to_string()));
        assert_eq!(up[1], ("x-forwarded-proto", "http".to_string()));
    }
}

#[test]
fn chains_are_walked_from_the_right() {
    let t = trusted(&["10.0.0.0/8", "192.0.2.10"]);
    let cases: &[(&str, &[&str], &str, &str)] = &[
        // name, X-Forwarded-For lines, client, chain kept for the upstream (peer 10.0.0.1)
        ("client then two trusted hops", &["198.51.100.7, 192.0.2.10, 10.9.9.9"], "198.51.100.7", "198.51.100.7, 192.0.2.10, 10.9.9.9, 10.0.0.1"),
        ("a spoofed prefix is dropped", &["6.6.6.6, 198.51.100.7, 10.9.9.9"], "198.51.100.7", "198.51.100.7, 10.9.9.9, 10.0.0.1"),
        ("the list spans header lines", &["6.6.6.6, 198.51.100.7", "10.9.9.9"], "198.51.100.7", "198.51.100.7, 10.9.9.9, 10.0.0.1"),
        ("all trusted: the leftmost", &["10.3.3.3, 10.9.9.9"], "10.3.3.3", "10.3.3.3, 10.9.9.9, 10.0.0.1"),
        ("ports are tolerated", &["198.51.100.7:5000, [2001:db8::7]:443"], "2001:db8::7", "2001:db8::7, 10.0.0.1"),
        ("bracketed IPv6", &["[2001:db8::7]"], "2001:db8::7", "2001:db8::7, 10.0.0.1"),
        ("IPv4-mapped is IPv4", &["::ffff:198.51.100.7"], "198.51.100.7", "198.51.100.7, 10.0.0.1"),
        ("garbage ends the walk at the last trusted hop", &["198.51.100.7, not-an-ip, 10.9.9.9"], "10.9.9.9", "10.9.9.9, 10.0.0.1"),
        ("unknown ends the walk", &["unknown"], "10.0.0.1", "10.0.0.1"),
        ("an empty entry ends the walk", &["198.51.100.7,"], "10.0.0.1", "10.0.0.1"),
        ("an empty header", &[""], "10.0.0.1", "10.0.0.1"),
    ];
    for (name, lines, client, chain) in cases {
        let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("x-forwarded-for", *l)).collect();
        let o = from("10.0.0.1", &t, &pairs);
        assert_eq!(o.client_ip, Some(ip(client)), "{name}");
        assert_eq!(o.x_forwarded_for().as_deref(), Some(*chain), "{name}");
    }
}

#[test]
fn long_trusted_chains_stop_at_max_hops() {
    let t = trusted(&["10.0.0.0/8"]);
    let chain: Vec<String> = (0..100).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)).collect();
    let o = from("10.0.0.1", &t, &[("x-forwarded-for", &chain.join(", "))]);
    assert_eq!(o.client_ip, Some(ip(&chain[100 - MAX_HOPS])));
}

#[test]
fn proto_host_and_port_come_from_the_nearest_proxy() {
    let t = trusted(&["10.0.0.0/8"]);
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        ("appended values: the rightmost", &[("x-forwarded-proto", "http, https"), ("x-forwarded-host", "evil.test, app.example.com")], "https://app.example.com"),
        ("case-insensitive scheme", &[("x-forwarded-proto", "HTTPS")], "https://app.test:8080"),
        ("an unknown scheme is ignored", &[("x-forwarded-proto", "wss")], "http://app.test:8080"),
        ("the port replaces the host's", &[("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com:8443"), ("x-forwarded-port", "9443")], "https://app.example.com:9443"),
        ("the port alone applies to Host", &[("x-forwarded-port", "9000")], "http://app.test:9000"),
        ("the default port is left out", &[("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com:443")], "https://app.example.com"),
        ("a bad port is ignored", &[("x-forwarded-port", "99999")], "http://app.test:8080"),
        ("a host with user info is ignored", &[("x-forwarded-host", "user@evil.test")], "http://app.test:8080"),
        ("a host with a path is ignored", &[("x-forwarded-host", "evil.test/x")], "http://app.test:8080"),
        ("a host with a bad port is ignored", &[("x-forwarded-host", "evil.test:99999")], "http://app.test:8080"),
        ("an IPv6 host", &[("x-forwarded-host", "[2001:db8::1]:8443")], "http://[2001:db8::1]:8443"),
        ("a host with odd characters is ignored", &[("x-forwarded-host", "evil.test;x")], "http://app.test:8080"),
        ("a host with a quote is ignored", &[("x-forwarded-host", "evil\"test")], "http://app.test:8080"),
    ];
    for (name, pairs, origin) in cases {
        let o = from("10.0.0.1", &t, pairs);
        assert_eq!(o.origin(), *origin, "{name}");
    }
    let o = from("10.0.0.1", &t, &[("x-forwarded-host", "[2001:db8::1]:8443")]);
    assert_eq!((o.host(), o.port()), ("[2001:db8::1]", 8443));
}

#[test]
fn forwarded_rfc7239() {
    let t = trusted(&["10.0.0.0/8", "2001:db8:f::/48"]);
    let cases: &[(&str, &[&str], Option<&str>, &str)] = &[
        // name, Forwarded lines, client (None: the peer), origin
        ("RFC 7239 example", &["for=192.0.2.60;proto=http;by=203.0.113.43"], Some("192.0.2.60"), "http://app.test:8080"),
        ("proto and host", &["for=198.51.100.7;proto=https;host=app.example.com"], Some("198.51.100.7"), "https://app.example.com"),
        ("quoted IPv6 with port", &["for=\"[2001:db8:cafe::17]:4711\";proto=https"], Some("2001:db8:cafe::17"), "https://app.test:8080"),
        ("names are case-insensitive", &["For=198.51.100.7;PROTO=https"], Some("198.51.100.7"), "https://app.test:8080"),
        ("quoted host", &["for=198.51.100.7;host=\"app.example.com:8443\";proto=https"], Some("198.51.100.7"), "https://app.example.com:8443"),
        ("walked from the right over trusted hops", &["for=6.6.6.6;proto=http, for=198.51.100.7;proto=https;host=app.example.com, for=10.9.9.9;proto=http"], Some("198.51.100.7"), "https://app.example.com"),
        ("across header lines", &["for=198.51.100.7;proto=https", "for=\"[2001:db8:f::1]\""], Some("198.51.100.7"), "https://app.test:8080"),
        ("obfuscated client: the nearest address, its proxy's proto", &["for=_hidden;proto=https, for=10.9.9.9"], Some("10.9.9.9"), "https://app.test:8080"),
        ("unknown client", &["for=unknown;proto=https"], None, "https://app.test:8080"),
        ("obfuscated port", &["for=\"198.51.100.7:_p1\""], Some("198.51.100.7"), "http://app.test:8080"),
        ("unquoted port is not a token", &["for=198.51.100.7:80;proto=https"], None, "http://app.test:8080"),
        ("unbracketed IPv6 is malformed", &["for=\"2001:db8::1\""], None, "http://app.test:8080"),
        ("a repeated parameter spoils the element", &["for=198.51.100.7;proto=https;proto=http"], None, "http://app.test:8080"),
        ("an unterminated quote", &["for=\"198.51.100.7;proto=https"], None, "http://app.test:8080"),
        ("a comma inside quotes", &["for=198.51.100.7;by=\"x,y\";proto=https"], Some("198.51.100.7"), "https://app.test:8080"),
        ("garbage", &[";;==,,\"\\"], None, "http://app.test:8080"),
    ];
    for (name, lines, client, origin) in cases {
        let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("forwarded", *l)).collect();
        let o = from("10.0.0.1", &t, &pairs);
        assert_eq!(o.client_ip, Some(ip(client.unwrap_or("10.0.0.1"))), "{name}");
        assert_eq!(o.origin(), *origin, "{name}");
    }
}

#[test]
fn x_forwarded_wins_over_forwarded() {
    // nginx passes a client's `Forwarded` through untouched while it appends to
    // X-Forwarded-For: with both present the X-Forwarded family is read.
    let t = trusted(&["127.0.0.1"]);
    let o = from(
        "127.0.0.1",
        &t,
        &[("forwarded", "for=6.6.6.6;proto=http;host=evil.test"), ("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https")],
    );
    assert_eq!((o.client_ip, o.origin().as_str()), (Some(ip("198.51.100.7")), "https://app.test:8080"));
}

#[test]
fn public_url_wins() {
    let t = trusted(&["10.0.0.0/8"]);
    let p = PublicUrl::parse("https://app.example.com:8443/").unwrap();
    let h = headers(&[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "http"), ("x-forwarded-host", "evil.test")]);
    let o = derive(Some(ip("10.0.0.1")), false, "internal:8080", &h, &t, Some(&p));
    assert_eq!(o.origin(), "https://app.example.com:8443");
    assert_eq!(o.client_ip, Some(ip("198.51.100.7")), "the client address still comes from the trusted chain");
    let o = derive(Some(ip("192.0.2.1")), false, "internal:8080", &h, &trusted(&[]), Some(&p));
    assert_eq!((o.origin().as_str(), o.client_ip), ("https://app.example.com:8443", Some(ip("192.0.2.1"))));
}

#[test]
fn mapped_peers_compare_as_ipv4() {
    let o = from("::ffff:10.0.0.1", &trusted(&["10.0.0.0/8"]), &[("x-forwarded-for", "198.51.100.7")]);
    assert!(o.peer_trusted);
    assert_eq!(o.x_forwarded_for().as_deref(), Some("198.51.100.7, 10.0.0.1"));
}

#[test]
fn trusted_proxy_entries() {
    for ok in ["10.0.0.0/8", "192.0.2.7", "192.0.2.7/32", "::1", "fd00::/8", "2001:db8::/32", " 10.0.0.0/8 ", "0.0.0.0/0"] {
        assert!(TrustedProxies::parse_entry(ok).is_ok(), "{ok}");
    }
    for (bad, why) in [
        ("10.0.0.1/8", "host bits"),
        ("10.0.0.0/33", "not an IP"),
        ("example.com", "not an IP"),
        ("", "not an IP"),
        ("10.0.0.0/8/8", "not an IP"),
        ("::ffff:10.0.0.0/104", "IPv4-mapped"),
        ("10.0.0.0-10.0.0.9", "not an IP"),
    ] {
        let e = TrustedProxies::parse_entry(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert!(trusted(&["10.0.0.0/8"]).contains(ip("::ffff:10.1.1.1")));
    assert!(!trusted(&["10.0.0.0/8"]).contains(ip("11.0.0.1")));
}

#[test]
fn public_urls() {
    for (ok, https, authority) in [
        ("https://app.example.com", true, "app.example.com"),
        ("https://app.example.com/", true, "app.example.com"),
        ("https://App.Example.com:443", true, "app.example.com"),
        ("https://app.example.com:8443", true, "app.example.com:8443"),
        ("http://localhost:8080", false, "localhost:8080"),
        ("https://[2001:db8::1]:8443", true, "[2001:db8::1]:8443"),
    ] {
        let p = PublicUrl::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!((p.is_https(), p.authority()), (https, authority), "{ok}");
    }
    for (bad, why) in [
        ("app.example.com", "absolute URL"),
        ("ftp://app.example.com", "scheme"),
        ("https://app.example.com/app", "path"),
        ("https://app.example.com/?a=1", "query"),
        ("https://app.example.com#x", "fragment"),
        ("https://user:pw@app.example.com", "user info"),
        ("https://", "absolute URL"),
        ("file:///etc/passwd", "scheme"),
    ] {
        let e = PublicUrl::parse(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn forwarding_header_names() {
    for n in ["forwarded", "Forwarded", "x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip"] {
        assert!(is_forwarding_header(n), "{n}");
    }
    for n in ["x-forwarded-", "x-forwarded", "forwarded-for", "x-request-id", "x-original-uri"] {
        assert!(!is_forwarding_header(n), "{n}");
    }
}

#[test]
fn non_ascii_header_values_are_ignored() {
    let t = trusted(&["10.0.0.0/8"]);
    let mut h = HeaderMap::new();
    h.append("x-forwarded-for", HeaderValue::from_bytes(b"198.51.100.7, \xff").unwrap());
    h.append("x-forwarded-proto", HeaderValue::from_bytes(b"https\xff").unwrap());
    h.append("forwarded", HeaderValue::from_bytes(b"for=\xff").unwrap());
    let o = derive(Some(ip("10.0.0.1")), false, "app.test", &h, &t, None);
    assert_eq!((o.client_ip, o.https), (Some(ip("10.0.0.1")), false));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header value from a trusted peer: no panic, and the client is the peer or
        /// an address the headers named.
        #[test]
        fn never_panics(xff in "[ -~]{0,80}", fwd in "[ -~]{0,80}", proto in "[ -~]{0,12}", host in "[ -~]{0,40}", port in "[ -~]{0,8}") {
            let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
            for (name, value) in [("x-forwarded-for", &xff), ("forwarded", &fwd)] {
                let Ok(v) = HeaderValue::from_str(value) else { continue };
                let mut h = HeaderMap::new();
                h.append(name, v);
                for (n, v) in [("x-forwarded-proto", &proto), ("x-forwarded-host", &host), ("x-forwarded-port", &port)] {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        if name == "x-forwarded-for" {
                            h.append(n, v);
                        }
                    }
                }
                let o = derive(Some(ip("10.0.0.1")), false, "app.test", &h, &t, None);
                let _ = (o.origin(), o.host(), o.port(), o.x_forwarded_for());
                prop_assert!(o.authority.parse::<http::uri::Authority>().is_ok(), "{}", o.authority);
            }
        }
    }
}
