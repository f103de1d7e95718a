//! A backend's `addr`: an IP literal with a port (`10.0.0.1:80`,
//! `[::1]:80`) or a host name with a port (`db-1.internal:5432`), as
//! HAProxy, Envoy and Toxiproxy accept. A name is resolved by the node that
//! connects to the backend, when the route is applied and again on an
//! interval; validation here only checks its syntax, so a name that does
//! not resolve never makes a route invalid.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Longest host name (RFC 1035 §2.3.4, without the trailing dot).
pub const MAX_HOST_LEN: usize = 253;
/// Longest label of a host name.
pub const MAX_LABEL_LEN: usize = 63;

/// A valid backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendAddr {
    /// An IP literal and a port: connected to as it is.
    Ip(SocketAddr),
    /// A host name (lower-cased: names are case-insensitive) and a port.
    Name(HostPort),
}

/// A host name and a port, as a backend's `addr` names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// An RFC 1123 host name, lower case, without a trailing dot.
    pub host: String,
    /// 1 ..= 65535.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl BackendAddr {
    /// Parses `IP:PORT` (`[IPv6]:PORT`) or `HOST:PORT`; the error says what
    /// is wrong, quoting the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return match addr.port() {
                0 => Err("port 0 is not a backend port".into()),
                _ => Ok(BackendAddr::Ip(addr)),
            };
        }
        let expected = "expected IP:PORT or HOST:PORT";
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => {
                return Err(format!("invalid address {s:?}: the port is missing ({expected})"));
            }
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "invalid address {s:?}: an IPv6 address needs brackets and a port, as [::1]:80"
                ));
            }
            Err(_) => {}
        }
        if s.starts_with('[') {
            return Err(format!("invalid address {s:?}: expected [IPv6]:PORT"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("invalid address {s:?}: the port is missing ({expected})"));
        };
        if host.contains(':') {
            return Err(format!("invalid address {s:?}: an IPv6 address needs brackets, as [::1]:80"));
        }
        // Digits only: `u16::from_str` would also take a leading `+`.
        let port = match port.parse::<u16>() {
            Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(format!("invalid port {port:?} in {s:?}: expected 1 to 65535")),
        };
        if port == 0 {
            return Err("port 0 is not a backend port".into());
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Err(why) = check_host_name(host) {
            return Err(format!("invalid host name {host:?} in {s:?}: {why}"));
        }
        Ok(BackendAddr::Name(HostPort { host: host.to_ascii_lowercase(), port }))
    }
}

/// Checks an RFC 1123 host name (without a trailing dot): dot-separated
/// labels of 1 to 63 letters, digits and hyphens, not starting or ending
/// with a hyphen, 253 characters in all. The last label may not be all
/// digits (RFC 3696 §2): `10.0.0.256` or `127.1` would otherwise reach
/// getaddrinfo(3), which reads some such strings as IPv4 addresses.
pub fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("longer than {MAX_HOST_LEN} characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(format!("each dot-separated label must have 1 to {MAX_LABEL_LEN} characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("use letters, digits, hyphens and dots".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with a hyphen".into());
        }
    }
    if host.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("not an IP address, and a host name's last label cannot be all digits".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str, port: u16) -> BackendAddr {
        BackendAddr::Name(HostPort { host: host.into(), port })
    }

    #[test]
    fn ip_literals_parse_as_before() {
        for s in ["127.0.0.1:9001", "[::1]:80", "[2001:db8::1]:443", "0.0.0.0:1"] {
            assert_eq!(BackendAddr::parse(s), Ok(BackendAddr::Ip(s.parse().expect("ip"))), "{s}");
        }
    }

    #[test]
    fn host_names_with_a_port_parse() {
        assert_eq!(BackendAddr::parse("db-1.internal:5432"), Ok(name("db-1.internal", 5432)));
        assert_eq!(BackendAddr::parse("localhost:9001"), Ok(name("localhost", 9001)));
        assert_eq!(BackendAddr::parse("DB.Example.COM.:65535"), Ok(name("db.example.com", 65535)));
        assert_eq!(BackendAddr::parse("1password.com:80"), Ok(name("1password.com", 80)));
        let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(BackendAddr::parse(&format!("{longest}:1")), Ok(name(&longest, 1)));
    }

    #[test]
    fn each_bad_address_says_why() {
        let cases = [
            ("x", "invalid address \"x\": the port is missing (expected IP:PORT or HOST:PORT)"),
            ("", "invalid address \"\": the port is missing (expected IP:PORT or HOST:PORT)"),
            (
                "127.0.0.1",
                "invalid address \"127.0.0.1\": the port is missing (expected IP:PORT or HOST:PORT)",
            ),
            ("host:0", "port 0 is not a backend port"),
            ("127.0.0.1:0", "port 0 is not a backend port"),
            ("host:", "invalid port \"\" in \"host:\": expected 1 to 65535"),
            ("host:+80", "invalid port \"+80\" in \"host:+80\": expected 1 to 65535"),
            ("host:65536", "invalid port \"65536\" in \"host:65536\": expected 1 to 65535"),
            (":80", "invalid host name \"\" in \":80\": the host is empty"),
            ("::1:80", "invalid address \"::1:80\": an IPv6 address needs brackets and a port, as [::1]:80"),
            ("::1", "invalid address \"::1\": an IPv6 address needs brackets and a port, as [::1]:80"),
            ("fe80::1:x", "invalid address \"fe80::1:x\": an IPv6 address needs brackets, as [::1]:80"),
            ("[::1]", "invalid address \"[::1]\": expected [IPv6]:PORT"),
            ("a_b:80", "invalid host name \"a_b\" in \"a_b:80\": use letters, digits, hyphens and dots"),
            (
                "a..b:80",
                "invalid host name \"a..b\" in \"a..b:80\": each dot-separated label must have 1 to 63 characters",
            ),
            ("-a:80", "invalid host name \"-a\" in \"-a:80\": a label cannot start or end with a hyphen"),
            (
                "10.0.0.256:80",
                "invalid host name \"10.0.0.256\" in \"10.0.0.256:80\": not an IP address, and a host name's last label cannot be all digits",
            ),
            (
                "127.1:80",
                "invalid host name \"127.1\" in \"127.1:80\": not an IP address, and a host name's last label cannot be all digits",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(BackendAddr::parse(input), Err(want.to_string()), "{input:?}");
        }
        let label = format!("{}:80", "a".repeat(64));
        assert!(BackendAddr::parse(&label).is_err_and(|e| e.contains("1 to 63")));
        let long =
            format!("{}:80", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join("."));
        assert!(BackendAddr::parse(&long).is_err_and(|e| e.contains("longer than 253")));
    }
}
