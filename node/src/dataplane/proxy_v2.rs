//! The PROXY protocol v2 header that opens a peer hop
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>), encoded
//! and parsed without I/O but for [`read_header`].
//!
//! # Layout
//! ```text
//! 0..12   signature \r\n\r\n\0\r\nQUIT\n
//! 12      0x21: version 2, command PROXY
//! 13      0x11 TCP over IPv4 | 0x21 TCP over IPv6
//! 14..16  length of what follows, big-endian (at most MAX_PAYLOAD)
//! 16..    src addr, dst addr, src port, dst port (12 or 36 bytes)
//!         TLVs: type u8, length u16 big-endian, value
//! ```
//! `src` is the original client, `dst` the address it connected to on the
//! forwarding node. Three TLVs of the custom range (0xE0..=0xEF) are
//! required, once each: [`TLV_ROUTE`], [`TLV_BACKEND`] and [`TLV_CLUSTER`],
//! each a valid name. Other TLV types are skipped, as the spec asks.
//!
//! Parsing is strict and bounded: a bad signature, version, command or
//! family, a length above [`MAX_PAYLOAD`], a truncated address block or TLV,
//! a duplicate or missing TLV, or a value that is not a valid name are all
//! [`ProxyV2Error`]s. No input panics (see the fuzz test).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// Names of routes and backends as stored: a route written before `.` and
// `..` were refused as new names must still hop.
use ferry_client::route::valid_stored_name;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family and length.
pub const PREFIX_LEN: usize = 16;
/// Longest address block plus TLVs accepted. Ours need at most 36 + 3 × 67.
pub const MAX_PAYLOAD: usize = 512;
/// TLV: the route name.
pub const TLV_ROUTE: u8 = 0xE0;
/// TLV: the backend id within the route.
pub const TLV_BACKEND: u8 = 0xE1;
/// TLV: the sender's cluster id.
pub const TLV_CLUSTER: u8 = 0xE2;

const VERSION_2_PROXY: u8 = 0x21;
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const TCP4_ADDRS: usize = 12;
const TCP6_ADDRS: usize = 36;

/// What a hop header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopHeader {
    /// The original client.
    pub src: SocketAddr,
    /// The address the client connected to, on the forwarding node.
    pub dst: SocketAddr,
    /// The route's name.
    pub route: String,
    /// The backend's id within the route.
    pub backend: String,
    /// The forwarding node's cluster id.
    pub cluster_id: String,
}

/// Why bytes are not a hop header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyV2Error {
    #[error("not a PROXY v2 signature")]
    Signature,
    #[error("version/command byte {0:#04x}: only 0x21 (v2 PROXY) is accepted")]
    VersionCommand(u8),
    #[error("address family {0:#04x}: only TCP4 (0x11) and TCP6 (0x21) are accepted")]
    Family(u8),
    #[error("header length {0} exceeds the maximum of {MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("header ends before its {0}")]
    Truncated(&'static str),
    #[error("TLV {0:#04x} appears twice")]
    DuplicateTlv(u8),
    #[error("TLV {0:#04x} ({1}) is missing")]
    MissingTlv(u8, &'static str),
    #[error("TLV {0:#04x} ({1}) is not a valid name")]
    BadValue(u8, &'static str),
}

/// Why [`read_header`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(#[from] ProxyV2Error),
}

impl HopHeader {
    /// The header's bytes. Fails only when a value is not a valid name
    /// (which would make the receiver refuse it anyway).
    pub fn encode(&self) -> Result<Vec<u8>, ProxyV2Error> {
        for (t, what, v) in self.tlvs() {
            if !valid_stored_name(v) {
                return Err(ProxyV2Error::BadValue(t, what));
            }
        }
        let (family, src, dst) = match (unmap(self.src.ip()), unmap(self.dst.ip())) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (TCP4, s.octets().to_vec(), d.octets().to_vec()),
            (s, d) => (TCP6, v6(s).octets().to_vec(), v6(d).octets().to_vec()),
        };
        let mut payload = Vec::with_capacity(TCP6_ADDRS + 3 * 67);
        payload.extend_from_slice(&src);
        payload.extend_from_slice(&dst);
        payload.extend_from_slice(&self.src.port().to_be_bytes());
        payload.extend_from_slice(&self.dst.port().to_be_bytes());
        for (t, _, v) in self.tlvs() {
            payload.push(t);
            // Valid names are at most 64 bytes.
            payload.extend_from_slice(&(v.len() as u16).to_be_bytes());
            payload.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + payload.len());
        out.extend_from_slice(&SIGNATURE);
        out.push(VERSION_2_PROXY);
        out.push(family);
        // At most 36 + 3 * 67 bytes: fits u16 and MAX_PAYLOAD.
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    fn tlvs(&self) -> [(u8, &'static str, &str); 3] {
        [
            (TLV_ROUTE, "route", &self.route),
            (TLV_BACKEND, "backend", &self.backend),
            (TLV_CLUSTER, "cluster id", &self.cluster_id),
        ]
    }

    /// Checks the fixed 16 bytes; returns the family and the payload length.
    pub fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<(u8, usize), ProxyV2Error> {
        if prefix[..12] != SIGNATURE {
            return Err(ProxyV2Error::Signature);
        }
        if prefix[12] != VERSION_2_PROXY {
            return Err(ProxyV2Error::VersionCommand(prefix[12]));
        }
        let family = prefix[13];
        if family != TCP4 && family != TCP6 {
            return Err(ProxyV2Error::Family(family));
        }
        let len = usize::from(u16::from_be_bytes([prefix[14], prefix[15]]));
        if len > MAX_PAYLOAD {
            return Err(ProxyV2Error::TooLong(len));
        }
        Ok((family, len))
    }

    /// Parses the addresses and TLVs that follow a prefix of `family`.
    pub fn parse_payload(family: u8, payload: &[u8]) -> Result<Self, ProxyV2Error> {
        let (src, dst, rest) = match family {
            TCP4 => {
                let Some((a, rest)) = payload.split_first_chunk::<TCP4_ADDRS>() else {
                    return Err(ProxyV2Error::Truncated("addresses"));
                };
                let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)), rest)
            }
            TCP6 => {
                let Some((a, rest)) = payload.split_first_chunk::<TCP6_ADDRS>() else {
                    return Err(ProxyV2Error::Truncated("addresses"));
                };
                let ip = |i: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&a[i..i + 16]);
                    unmap(IpAddr::V6(Ipv6Addr::from(o)))
                };
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)), rest)
            }
            other => return Err(ProxyV2Error::Family(other)),
        };
        let mut found: [Option<&[u8]>; 3] = [None; 3];
        let mut rest = rest;
        while !rest.is_empty() {
            let Some((&[t, hi, lo], tail)) = rest.split_first_chunk::<3>() else {
                return Err(ProxyV2Error::Truncated("TLV header"));
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let Some((value, tail)) = tail.split_at_checked(len) else {
                return Err(ProxyV2Error::Truncated("TLV value"));
            };
            let slot = match t {
                TLV_ROUTE => Some(0),
                TLV_BACKEND => Some(1),
                TLV_CLUSTER => Some(2),
                _ => None,
            };
            if let Some(i) = slot
                && found[i].replace(value).is_some()
            {
                return Err(ProxyV2Error::DuplicateTlv(t));
            }
            rest = tail;
        }
        let name = |i: usize, t: u8, what: &'static str| -> Result<String, ProxyV2Error> {
            let v = found[i].ok_or(ProxyV2Error::MissingTlv(t, what))?;
            std::str::from_utf8(v)
                .ok()
                .filter(|s| valid_stored_name(s))
                .map(str::to_string)
                .ok_or(ProxyV2Error::BadValue(t, what))
        };
        Ok(HopHeader {
            src,
            dst,
            route: name(0, TLV_ROUTE, "route")?,
            backend: name(1, TLV_BACKEND, "backend")?,
            cluster_id: name(2, TLV_CLUSTER, "cluster id")?,
        })
    }

    /// Parses a whole header at the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), ProxyV2Error> {
        let Some(prefix) = bytes.first_chunk::<PREFIX_LEN>() else {
            if !SIGNATURE.starts_with(&bytes[..bytes.len().min(SIGNATURE.len())]) {
                return Err(ProxyV2Error::Signature);
            }
            return Err(ProxyV2Error::Truncated("prefix"));
        };
        let (family, len) = Self::parse_prefix(prefix)?;
        let payload =
            bytes.get(PREFIX_LEN..PREFIX_LEN + len).ok_or(ProxyV2Error::Truncated("declared length"))?;
        Ok((Self::parse_payload(family, payload)?, PREFIX_LEN + len))
    }
}

/// Reads exactly one header from `r`, and not a byte more: what follows is
/// the proxied stream. At most `PREFIX_LEN + MAX_PAYLOAD` bytes are read.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<HopHeader, ReadError> {
    let mut prefix = [0u8; PREFIX_LEN];
    r.read_exact(&mut prefix).await?;
    let (family, len) = HopHeader::parse_prefix(&prefix)?;
    let mut payload = [0u8; MAX_PAYLOAD];
    r.read_exact(&mut payload[..len]).await?;
    Ok(HopHeader::parse_payload(family, &payload[..len])?)
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(src: &str, dst: &str) -> HopHeader {
        HopHeader {
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            route: "web".into(),
            backend: "b-1".into(),
            cluster_id: "ferry".into(),
        }
    }

    #[test]
    fn round_trip_v4_and_v6() {
        for h in [
            header("10.1.2.3:40000", "127.0.0.1:7000"),
            header("[2001:db8::1]:5", "[::1]:7000"),
            header("10.1.2.3:1", "[::1]:7000"),
        ] {
            let bytes = h.encode().expect("encode");
            assert_eq!(&bytes[..12], &SIGNATURE);
            assert_eq!(bytes[12], 0x21);
            let (back, n) = HopHeader::decode(&bytes).expect("decode");
            assert_eq!((back, n), (h, bytes.len()));
        }
        let bytes = header("10.1.2.3:40000", "127.0.0.1:7000").encode().expect("encode");
        assert_eq!(bytes[13], TCP4);
        assert_eq!(usize::from(u16::from_be_bytes([bytes[14], bytes[15]])), bytes.len() - PREFIX_LEN);
        // A mixed pair goes as TCP6 with the IPv4 side mapped.
        assert_eq!(header("10.1.2.3:1", "[::1]:7000").encode().expect("encode")[13], TCP6);
    }

    /// The address block of a v4 header, byte for byte (the spec's layout).
    #[test]
    fn tcp4_layout() {
        let bytes = header("10.1.2.3:40000", "127.0.0.1:7000").encode().expect("encode");
        assert_eq!(&bytes[16..28], &[10, 1, 2, 3, 127, 0, 0, 1, 0x9c, 0x40, 0x1b, 0x58]);
        assert_eq!(&bytes[28..34], &[TLV_ROUTE, 0, 3, b'w', b'e', b'b']);
    }

    #[tokio::test]
    async fn read_header_stops_at_the_header() {
        let h = header("10.1.2.3:40000", "127.0.0.1:7000");
        let mut bytes = h.encode().expect("encode");
        bytes.extend_from_slice(b"client bytes");
        let mut input: &[u8] = &bytes;
        assert_eq!(read_header(&mut input).await.expect("read"), h);
        assert_eq!(input, b"client bytes");
    }

    #[test]
    fn bad_signature_version_family_and_length() {
        let good = header("10.1.2.3:40000", "127.0.0.1:7000").encode().expect("encode");
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            HopHeader::decode(&v)
        };
        assert_eq!(with(0, 0), Err(ProxyV2Error::Signature));
        assert_eq!(HopHeader::decode(b"PROXY TCP4 1.2.3.4"), Err(ProxyV2Error::Signature));
        assert_eq!(HopHeader::decode(&[0, 0, 0, 8]), Err(ProxyV2Error::Signature), "a cluster frame");
        assert_eq!(with(12, 0x20), Err(ProxyV2Error::VersionCommand(0x20)), "LOCAL is refused");
        assert_eq!(with(12, 0x11), Err(ProxyV2Error::VersionCommand(0x11)));
        assert_eq!(with(13, 0x12), Err(ProxyV2Error::Family(0x12)), "UDP is refused");
        assert_eq!(with(13, 0x00), Err(ProxyV2Error::Family(0x00)));
        // Oversize: refused from the prefix alone, before the payload is read.
        let mut big = good[..PREFIX_LEN].to_vec();
        big[14..16].copy_from_slice(&(MAX_PAYLOAD as u16 + 1).to_be_bytes());
        assert_eq!(HopHeader::decode(&big), Err(ProxyV2Error::TooLong(MAX_PAYLOAD + 1)));
        let mut big = good[..PREFIX_LEN].to_vec();
        big[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(HopHeader::decode(&big), Err(ProxyV2Error::TooLong(65535)));
    }

    #[test]
    fn truncated_missing_duplicate_and_bad_tlvs() {
        let good = header("10.1.2.3:40000", "127.0.0.1:7000").encode().expect("encode");
        for cut in 0..good.len() {
            assert!(HopHeader::decode(&good[..cut]).is_err(), "a prefix of {cut} bytes decoded");
        }
        // Rebuild with a hand-made TLV list after the v4 addresses.
        let with_tlvs = |tlvs: &[u8]| {
            let mut v = good[..PREFIX_LEN + TCP4_ADDRS].to_vec();
            v.extend_from_slice(tlvs);
            let len = (v.len() - PREFIX_LEN) as u16;
            v[14..16].copy_from_slice(&len.to_be_bytes());
            HopHeader::decode(&v).map(|(h, _)| h)
        };
        let tlv = |t: u8, v: &[u8]| [&[t, 0, v.len() as u8][..], v].concat();
        let route = tlv(TLV_ROUTE, b"web");
        let backend = tlv(TLV_BACKEND, b"b");
        let cluster = tlv(TLV_CLUSTER, b"ferry");
        let ok =
            with_tlvs(&[route.clone(), tlv(0x04, b"\x00\x01"), backend.clone(), cluster.clone()].concat());
        assert_eq!(ok.map(|h| h.backend), Ok("b".into()), "an unknown TLV type is skipped");
        assert_eq!(
            with_tlvs(&[route.clone(), cluster.clone()].concat()),
            Err(ProxyV2Error::MissingTlv(TLV_BACKEND, "backend"))
        );
        assert_eq!(
            with_tlvs(&[route.clone(), route.clone(), backend.clone(), cluster.clone()].concat()),
            Err(ProxyV2Error::DuplicateTlv(TLV_ROUTE))
        );
        assert_eq!(
            with_tlvs(&[route.clone(), tlv(TLV_BACKEND, b"b d"), cluster.clone()].concat()),
            Err(ProxyV2Error::BadValue(TLV_BACKEND, "backend"))
        );
        assert_eq!(
            with_tlvs(&[route.clone(), backend.clone(), tlv(TLV_CLUSTER, &[0xff, 0xfe])].concat()),
            Err(ProxyV2Error::BadValue(TLV_CLUSTER, "cluster id"))
        );
        assert_eq!(
            with_tlvs(&[route.clone(), backend.clone(), vec![TLV_CLUSTER, 0, 9, b'f']].concat()),
            Err(ProxyV2Error::Truncated("TLV value"))
        );
        assert_eq!(
            with_tlvs(&[route, vec![TLV_CLUSTER, 0]].concat()),
            Err(ProxyV2Error::Truncated("TLV header"))
        );
        // Values that are not names cannot be sent either.
        let mut h = header("10.1.2.3:1", "127.0.0.1:2");
        h.route = "x".repeat(65);
        assert_eq!(h.encode(), Err(ProxyV2Error::BadValue(TLV_ROUTE, "route")));
    }

    /// Random bytes, random bytes behind a valid prefix, truncations and bit
    /// flips of valid headers: never a panic, and never more than the bound.
    #[tokio::test]
    async fn random_and_damaged_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        let valid = [
            header("10.1.2.3:40000", "127.0.0.1:7000").encode().expect("encode"),
            header("[2001:db8::1]:5", "[::1]:7000").encode().expect("encode"),
        ];
        for i in 0..20_000 {
            let len = rng.usize(0..700);
            let mut buf: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            if i % 2 == 0 && len >= PREFIX_LEN {
                // Past the signature, so the payload parser is exercised.
                let v = &valid[i % valid.len()];
                let keep = rng.usize(12..=PREFIX_LEN);
                buf[..keep].copy_from_slice(&v[..keep]);
            }
            if let Ok((_, n)) = HopHeader::decode(&buf) {
                assert!(n <= PREFIX_LEN + MAX_PAYLOAD);
            }
            let mut input: &[u8] = &buf;
            let _ = read_header(&mut input).await;
            assert!(buf.len() - input.len() <= PREFIX_LEN + MAX_PAYLOAD);
        }
        for v in &valid {
            for _ in 0..2_000 {
                let mut flipped = v.clone();
                let i = rng.usize(..flipped.len());
                flipped[i] ^= 1 << rng.u8(0..8);
                let _ = HopHeader::decode(&flipped);
                let cut = rng.usize(..flipped.len());
                let mut input: &[u8] = &flipped[..cut];
                let _ = read_header(&mut input).await;
                let mut input: &[u8] = &v[..cut];
                assert!(read_header(&mut input).await.is_err(), "a truncated header was accepted");
            }
        }
    }
}
