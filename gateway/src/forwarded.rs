//! `X-Forwarded-For`, `-Proto` and `-Host`: the client addresses a request passed through,
//! the scheme and the host the client used. A client can write anything there, so what it
//! sends is believed only from a peer configured as a proxy in front of the gateway
//! (`VX11_TRUSTED_PROXIES`): its `X-Forwarded-For` lines are kept (joined, in order) and the
//! peer's address appended, its `X-Forwarded-Proto` and `X-Forwarded-Host` kept when present.
//! From any other peer they are replaced by what the gateway saw: the peer's address, the
//! connection's scheme ([`ClientScheme`]) and the request's `Host`.

use std::net::IpAddr;

use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use vx11_service::ClientScheme;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the gateway saw of a request's connection.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub peer: Option<IpAddr>,
    pub scheme: ClientScheme,
    /// The request's `Host` (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: Option<&'a HeaderValue>,
}

/// Sets the request's `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` for the
/// backend (see the module's doc).
pub fn set_forwarded(headers: &mut HeaderMap, seen: Seen<'_>, proxies: &TrustedProxies) {
    let trusted = seen.peer.is_some_and(|peer| proxies.trusts(peer));
    set_forwarded_for(headers, seen.peer, proxies);
    for (name, ours) in [
        (
            X_FORWARDED_PROTO,
            Some(HeaderValue::from_static(seen.scheme.as_str())),
        ),
        (X_FORWARDED_HOST, seen.host.cloned()),
    ] {
        let theirs = trusted.then(|| headers.get(&name).cloned()).flatten();
        headers.remove(&name);
        if let Some(value) = theirs.or(ours) {
            headers.insert(name, value);
        }
    }
}

/// The peers whose `X-Forwarded-For` is kept (and appended to): IPs and CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Range>);

/// `addr/prefix`: the addresses sharing `addr`'s first `prefix` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    addr: IpAddr,
    prefix: u8,
}

impl TrustedProxies {
    /// `ip` or `ip/prefix`, comma-separated (`10.0.0.0/8, 192.168.1.7, fd00::/8`); empty:
    /// none.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            ranges.push(Range::parse(item)?);
        }
        Ok(Self(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `peer` is one of the configured proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|range| range.contains(peer))
    }
}

impl Range {
    fn parse(item: &str) -> Result<Self, String> {
        let (addr, prefix) = match item.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (item, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| {
            format!("`{item}` is not an IP address or CIDR range (e.g. 10.0.0.0/8)")
        })?;
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`{item}`: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, peer: IpAddr) -> bool {
        match (self.addr, peer) {
            (IpAddr::V4(range), IpAddr::V4(peer)) => {
                same_prefix(&range.octets(), &peer.octets(), self.prefix)
            }
            (IpAddr::V6(range), IpAddr::V6(peer)) => {
                same_prefix(&range.octets(), &peer.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// Sets the request's `X-Forwarded-For` for the backend: the client's value followed by
/// `peer` when `peer` is a trusted proxy, else `peer` alone (the client's value dropped).
/// Without a known peer the header is dropped.
pub fn set_forwarded_for(headers: &mut HeaderMap, peer: Option<IpAddr>, proxies: &TrustedProxies) {
    let from_client = match peer {
        Some(peer) if proxies.trusts(peer) => joined(headers),
        _ => None,
    };
    headers.remove(&X_FORWARDED_FOR);
    if let Some(value) = peer.and_then(|peer| forwarded_for_value(from_client.as_deref(), peer)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The `X-Forwarded-For` the backend gets: the client's chain (from a trusted proxy) and
/// `peer`, or `peer` alone.
pub fn forwarded_for_value(chain: Option<&str>, peer: IpAddr) -> Option<HeaderValue> {
    let peer = PeerText::of(peer);
    match chain {
        Some(chain) => HeaderValue::from_str(&format!("{chain}, {}", peer.as_str())).ok(),
        None => HeaderValue::from_bytes(peer.as_bytes()).ok(),
    }
}

/// A peer's address as `X-Forwarded-For` names it (an IPv4-mapped IPv6 address as IPv4),
/// written without `fmt` or an allocation for IPv4: the express lane makes one for every
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerText {
    /// The longest IPv6 text is 45 bytes.
    bytes: [u8; 48],
    len: usize,
}

impl PeerText {
    pub fn of(peer: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; 48],
            len: 0,
        };
        match peer.to_canonical() {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut rest = &mut text.bytes[..];
                // 48 bytes hold any IPv6 address's text.
                let _ = write!(rest, "{v6}");
                text.len = 48 - rest.len();
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits, dots, colons and hex letters only.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

/// Every `X-Forwarded-For` line of the request, in order, as one list.
fn joined(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_is_written_as_std_writes_it() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1:2:3:4",
        ] {
            assert_eq!(PeerText::of(ip(text)).as_str(), text);
        }
        for octets in [[1, 2, 3, 4], [9, 99, 100, 199], [200, 201, 250, 0]] {
            let v4 = std::net::Ipv4Addr::from(octets);
            assert_eq!(PeerText::of(IpAddr::V4(v4)).as_str(), v4.to_string());
        }
    }

    #[test]
    fn an_ipv4_mapped_peer_is_written_as_ipv4() {
        assert_eq!(PeerText::of(ip("::ffff:10.0.0.7")).as_str(), "10.0.0.7");
        assert_eq!(
            forwarded_for_value(Some("203.0.113.9"), ip("::ffff:10.0.0.7")).unwrap(),
            "203.0.113.9, 10.0.0.7"
        );
        assert_eq!(forwarded_for_value(None, ip("::1")).unwrap(), "::1");
    }

    #[test]
    fn ranges_match_their_addresses_only() {
        let proxies =
            TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8,172.16.0.0/12").unwrap();
        for trusted in [
            "10.1.2.3",
            "192.168.1.7",
            "fd00::1",
            "172.31.255.255",
            "::ffff:10.0.0.1",
        ] {
            assert!(proxies.trusts(ip(trusted)), "{trusted}");
        }
        for other in [
            "11.0.0.1",
            "192.168.1.8",
            "fe80::1",
            "172.32.0.0",
            "127.0.0.1",
        ] {
            assert!(!proxies.trusts(ip(other)), "{other}");
        }
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .trusts(ip("8.8.8.8"))
        );
    }

    #[test]
    fn bad_ranges_are_clear_errors() {
        for (spec, expected) in [
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0/8", "not an IP address"),
            ("proxy.local", "not an IP address"),
            ("10.0.0.0/x", "prefix length"),
        ] {
            let error = TrustedProxies::parse(spec).unwrap_err();
            assert!(error.contains(expected), "{spec}: {error}");
        }
    }

    #[test]
    fn a_client_value_is_replaced_unless_the_peer_is_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        set_forwarded_for(&mut h, Some(ip("203.0.113.9")), &proxies);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        set_forwarded_for(&mut h, Some(ip("10.0.0.1")), &proxies);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.1");

        let mut h = HeaderMap::new();
        set_forwarded_for(&mut h, Some(ip("10.0.0.1")), &proxies);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        set_forwarded_for(&mut h, None, &proxies);
        assert!(!h.contains_key("x-forwarded-for"));
    }

    #[test]
    fn proto_and_host_are_the_gateways_unless_a_trusted_proxy_set_them() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let host = HeaderValue::from_static("gw.example:8000");
        let spoofed = || {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-proto", HeaderValue::from_static("https"));
            h.append("x-forwarded-proto", HeaderValue::from_static("ftp"));
            h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
            h
        };
        let seen = |peer| Seen {
            peer: Some(ip(peer)),
            scheme: ClientScheme::Http,
            host: Some(&host),
        };

        let mut h = spoofed();
        set_forwarded(&mut h, seen("203.0.113.9"), &proxies);
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw.example:8000");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");

        let mut h = spoofed();
        set_forwarded(&mut h, seen("10.1.1.1"), &proxies);
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");

        let mut h = HeaderMap::new();
        let https = Seen {
            scheme: ClientScheme::Https,
            ..seen("10.1.1.1")
        };
        set_forwarded(&mut h, https, &proxies);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw.example:8000");
        assert_eq!(h["x-forwarded-for"], "10.1.1.1");
    }
}
