//! Who may talk to the server: client IP allow-list (with X-Forwarded-For believed only from
//! trusted proxies), and the Host and Origin checks that keep a web page from reaching the
//! server through DNS rebinding (a name the attacker controls re-pointed at 127.0.0.1 or at the
//! server's address; the browser then sends that name as Host and the page's origin as Origin).
//!
//! Host, when `allowed_hosts` is empty: loopback names (`localhost`, `*.localhost`), any IP
//! literal (an address cannot be rebound, and it may be a NAT or elastic IP the host does not
//! see itself), the configured `--host`, and the system hostname. A non-empty `allowed_hosts`
//! replaces these defaults; `*` in it accepts any Host.
//! Origin, when present: same-origin with the Host, or listed in `allowed_origins` (`*` = any).

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

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
        // One colon: name:port. More than one without brackets: a bare IPv6 literal.
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        _ => host,
    }
}

/// The request's Host header or, for HTTP/2 (which carries no Host header), the `:authority`
/// pseudo-header that hyper puts in the request URI.
fn request_host<'a>(headers: &'a HeaderMap, authority: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority)
}

/// The machine's hostname, read once.
fn system_hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .unwrap_or_default()
    })
}

/// The Host names accepted without an allow-list (see the module comment).
fn default_host(name: &str, configured_host: &str) -> bool {
    let name = name.trim_end_matches('.');
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case(configured_host)
        || (!system_hostname().is_empty() && name.eq_ignore_ascii_case(system_hostname()))
}

/// Checks the Host (or HTTP/2 `:authority`) against `allowed_hosts`, or against the defaults
/// when that list is empty. `configured_host` is the `--host` the server was started with.
pub fn host_allowed(
    settings: &AccessSettings,
    configured_host: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> bool {
    let Some(host) = request_host(headers, authority) else {
        return false;
    };
    if settings.allowed_hosts.is_empty() {
        return default_host(host_name(host), configured_host);
    }
    settings.allowed_hosts.iter().any(|a| {
        a == "*" || a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(host_name(host))
    })
}

/// `host[:port]` with the port made explicit (`default_port` when absent), lower-cased.
fn with_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    Some((
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(default_port),
    ))
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the request's Host.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return false,
    };
    let Some(origin_authority) = uri.authority() else {
        return false;
    };
    // The Host header has no scheme: a port-less Host takes the Origin scheme's default port.
    match (
        with_port(origin_authority.as_str(), default_port),
        with_port(host, default_port),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A request without Origin (every non-browser client) passes; a present Origin must be
/// same-origin with the request's Host or listed in `allowed_origins`.
pub fn origin_allowed(
    settings: &AccessSettings,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or("");
    same_origin(origin, request_host(headers, authority))
        || settings
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
        assert!(host_allowed(&s, "127.0.0.1", &h, None));
        h.insert("host", HeaderValue::from_static("evil.example.net"));
        assert!(!host_allowed(&s, "127.0.0.1", &h, None));
        // HTTP/2: no Host header, the authority comes from the URI.
        assert!(host_allowed(
            &s,
            "127.0.0.1",
            &HeaderMap::new(),
            Some("mcp.example.com:7140")
        ));
        assert!(!host_allowed(
            &s,
            "127.0.0.1",
            &HeaderMap::new(),
            Some("evil.example.net")
        ));
        assert!(!host_allowed(&s, "127.0.0.1", &HeaderMap::new(), None));
        h.insert("host", HeaderValue::from_static("mcp.example.com:7140"));
        assert!(origin_allowed(&s, &h, None));
        h.insert(
            "origin",
            HeaderValue::from_static("https://evil.example.net"),
        );
        assert!(!origin_allowed(&s, &h, None));
        h.insert(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(origin_allowed(&s, &h, None));
        // No Host at all (HTTP/1.0 without Host) is refused.
        assert!(!host_allowed(
            &AccessSettings::default(),
            "127.0.0.1",
            &HeaderMap::new(),
            None
        ));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn default_hosts_reject_rebound_names() {
        let s = AccessSettings::default();
        let ok = |host: &'static str, configured: &str| {
            host_allowed(&s, configured, &headers(&[("host", host)]), None)
        };
        for host in [
            "127.0.0.1:7140",
            "localhost:7140",
            "LOCALHOST",
            "app.localhost:1",
            "[::1]:7140",
            "10.1.2.3:7140",
            "[fd00::5]",
        ] {
            assert!(ok(host, "127.0.0.1"), "{host}");
        }
        for host in [
            "evil.example.com",
            "evil.example.com:7140",
            "127.0.0.1.evil.example.com",
            "localhost.evil.example.com",
        ] {
            assert!(!ok(host, "127.0.0.1"), "{host}");
        }
        // The name the server was told to listen on is accepted; other names are not.
        assert!(ok("mcp.internal:7140", "mcp.internal"));
        assert!(!ok("other.internal:7140", "mcp.internal"));
        // The system hostname works out of the box.
        let own: &'static str = Box::leak(format!("{}:7140", system_hostname()).into_boxed_str());
        if !system_hostname().is_empty() {
            assert!(ok(own, "0.0.0.0"));
        }
        // `*` in the list accepts any Host.
        let any = AccessSettings {
            allowed_hosts: vec!["*".into()],
            ..Default::default()
        };
        assert!(host_allowed(
            &any,
            "127.0.0.1",
            &headers(&[("host", "evil.example.com")]),
            None
        ));
    }

    #[test]
    fn present_origin_must_be_same_origin_or_listed() {
        let s = AccessSettings::default();
        let ok = |pairs: &[(&'static str, &'static str)]| origin_allowed(&s, &headers(pairs), None);
        assert!(
            ok(&[("host", "evil.example.com")]),
            "no Origin: not a browser"
        );
        assert!(ok(&[
            ("host", "127.0.0.1:7140"),
            ("origin", "http://127.0.0.1:7140")
        ]));
        assert!(ok(&[("host", "localhost"), ("origin", "http://localhost")]));
        assert!(ok(&[
            ("host", "mcp.example.com"),
            ("origin", "https://mcp.example.com:443")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:7140"),
            ("origin", "http://evil.example.com")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:7140"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:7140"), ("origin", "null")]));
        // HTTP/2: the authority stands in for Host.
        assert!(origin_allowed(
            &s,
            &headers(&[("origin", "https://mcp.example.com:7140")]),
            Some("mcp.example.com:7140")
        ));
        let listed = AccessSettings {
            allowed_origins: vec!["http://localhost:3000/".into()],
            ..Default::default()
        };
        assert!(origin_allowed(
            &listed,
            &headers(&[
                ("host", "127.0.0.1:7140"),
                ("origin", "http://localhost:3000")
            ]),
            None
        ));
    }
}
