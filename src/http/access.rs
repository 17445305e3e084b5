//! Who may talk to the server: client IP allow-list (with X-Forwarded-For believed only from
//! trusted proxies), Host allow-list and Origin allow-list. Empty lists allow everything, so
//! remote clients work out of the box; the bearer token is what keeps strangers out.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::AccessSettings;

/// The client's address: the peer, or the last untrusted hop of X-Forwarded-For when the peer
/// is a trusted proxy.
pub fn client_ip(
    settings: &AccessSettings,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| canonical(p.ip()))?;
    if !settings
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer_ip))
    {
        return Some(peer_ip);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    // Walk from the nearest hop outwards, skipping our own proxies.
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !settings.trusted_proxies.iter().any(|n| n.contains(*ip)))
            .copied()
            .unwrap_or(peer_ip),
    )
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub fn client_allowed(settings: &AccessSettings, ip: Option<IpAddr>) -> bool {
    if settings.allowed_clients.is_empty() {
        return true;
    }
    // Unix-socket clients have no IP; the socket's file mode already decides who connects.
    ip.is_none_or(|ip| settings.allowed_clients.iter().any(|n| n.contains(&ip)))
}

/// The Host header without its port (brackets of IPv6 literals removed).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Checks the Host header or, for HTTP/2 (which carries no Host header), the `:authority`
/// pseudo-header that hyper puts in the request URI.
pub fn host_allowed(
    settings: &AccessSettings,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> bool {
    if settings.allowed_hosts.is_empty() {
        return true;
    }
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority)
    else {
        return false;
    };
    settings
        .allowed_hosts
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(host_name(host)))
}

pub fn origin_allowed(settings: &AccessSettings, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true; // non-browser clients send none
    };
    if settings.allowed_origins.is_empty() {
        return true;
    }
    let origin = origin.to_str().unwrap_or("");
    settings
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn settings(clients: &[&str], proxies: &[&str]) -> AccessSettings {
        AccessSettings {
            allowed_clients: clients.iter().map(|s| s.parse().unwrap()).collect(),
            trusted_proxies: proxies.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let s = settings(&[], &[]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        let ip = client_ip(&s, Some("192.0.2.7:1234".parse().unwrap()), &h);
        assert_eq!(ip, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_used_from_trusted_proxies() {
        let s = settings(&[], &["127.0.0.1/32"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 127.0.0.1"),
        );
        let ip = client_ip(&s, Some("127.0.0.1:1".parse().unwrap()), &h);
        assert_eq!(ip, Some("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn allow_list_checks_v4_v6_and_mapped_addresses() {
        let s = settings(&["10.0.0.0/8", "fd00::/8"], &[]);
        assert!(client_allowed(&s, Some("10.1.2.3".parse().unwrap())));
        assert!(client_allowed(&s, Some("fd00::1".parse().unwrap())));
        assert!(!client_allowed(&s, Some("192.0.2.1".parse().unwrap())));
        let mapped = client_ip(
            &s,
            Some("[::ffff:10.0.0.1]:5".parse().unwrap()),
            &HeaderMap::new(),
        );
        assert!(client_allowed(&s, mapped));
    }

    #[test]
    fn host_and_origin_lists() {
        let s = AccessSettings {
            allowed_hosts: vec!["mcp.example.com".into()],
            allowed_origins: vec!["https://app.example.com".into()],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("mcp.example.com:7140"));
        assert!(host_allowed(&s, &h, None));
        h.insert("host", HeaderValue::from_static("evil.example.net"));
        assert!(!host_allowed(&s, &h, None));
        // HTTP/2: no Host header, the authority comes from the URI.
        assert!(host_allowed(
            &s,
            &HeaderMap::new(),
            Some("mcp.example.com:7140")
        ));
        assert!(!host_allowed(
            &s,
            &HeaderMap::new(),
            Some("evil.example.net")
        ));
        assert!(!host_allowed(&s, &HeaderMap::new(), None));
        assert!(origin_allowed(&s, &h));
        h.insert(
            "origin",
            HeaderValue::from_static("https://evil.example.net"),
        );
        assert!(!origin_allowed(&s, &h));
        h.insert(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(origin_allowed(&s, &h));
        assert!(host_allowed(
            &AccessSettings::default(),
            &HeaderMap::new(),
            None
        ));
    }
}
