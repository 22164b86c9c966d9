//! The PROXY protocol (`HAProxy`, versions 1 and 2): the header a trusted load
//! balancer puts in front of a connection to say which client it carries.
//!
//! Only the parser and a bounded reader live here; the listener decides whose
//! header is read at all (trusted proxies only). The parser never panics and
//! never asks for more than [`MAX_HEADER_BYTES`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::Error;

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The version 1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest version 1 line, CRLF included (from the specification).
const V1_MAX: usize = 107;
/// Most bytes of addresses and TLVs accepted after the 16-byte v2 header.
/// The protocol allows 65535; real balancers send a few hundred at most.
const V2_MAX_PAYLOAD: usize = 4096;

/// Largest PROXY protocol header (v1 or v2) the public listener reads
/// before it gives up on the connection.
pub const MAX_HEADER_BYTES: usize = 16 + V2_MAX_PAYLOAD;

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// The original client and the address it connected to, when the header
    /// carries TCP over IPv4 or IPv6. `None` for `LOCAL` (the proxy's own
    /// health check), `UNKNOWN` / `UNSPEC` and Unix sockets: the connection
    /// then stands for itself.
    pub addresses: Option<ProxyAddresses>,
}

/// Source and destination from a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddresses {
    /// The client, as the proxy saw it.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

fn invalid(reason: &str) -> Error {
    Error::Io {
        what: "PROXY protocol header".to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason.to_owned()),
    }
}

/// Parses a PROXY header at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid beginning but too short; read more.
/// `Ok(Some((header, n)))`: the header takes the first `n` bytes; what
/// follows belongs to the proxied stream. An error means the bytes are not a
/// PROXY header (or one this collector refuses), and the connection must be
/// closed.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Error> {
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(None);
        }
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(None);
        }
        parse_v1(buf)
    } else {
        Err(invalid(
            "the connection does not start with a PROXY protocol header",
        ))
    }
}

/// Whether `buf` and `sig` agree on their common length (an empty `buf`
/// agrees with everything).
fn starts_like(buf: &[u8], sig: &[u8]) -> bool {
    buf.iter().zip(sig).all(|(a, b)| a == b)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Error> {
    // The CR must leave room for the LF within the longest line.
    let window = buf.get(..buf.len().min(V1_MAX - 1)).unwrap_or(buf);
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX - 1 {
            return Err(invalid("PROXY v1 line longer than 107 bytes"));
        }
        return Ok(None);
    };
    if window.get(cr) == Some(&b'\n') {
        return Err(invalid("PROXY v1 line ends without CR"));
    }
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(invalid("PROXY v1 line has a CR not followed by LF")),
    }
    let line = buf
        .get(V1_PREFIX.len()..cr)
        .ok_or_else(|| invalid("PROXY v1 line too short"))?;
    let line = std::str::from_utf8(line).map_err(|_| invalid("PROXY v1 line is not ASCII"))?;
    let consumed = cr + 2;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    if proto == "UNKNOWN" {
        // The rest of the line is to be ignored, per the specification.
        return Ok(Some((
            ProxyHeader {
                version: 1,
                addresses: None,
            },
            consumed,
        )));
    }
    let is_v4 = match proto {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(invalid("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(invalid(
            "PROXY v1 line must hold exactly: protocol, source, destination, source port, \
             destination port",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        if is_v4 {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        }
        .map_err(|_| invalid("PROXY v1 address does not match its protocol"))
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Some((
        ProxyHeader {
            version: 1,
            addresses: Some(ProxyAddresses {
                source,
                destination,
            }),
        },
        consumed,
    )))
}

/// A decimal port without sign or leading zeros, as the specification says.
fn v1_port(s: &str) -> Result<u16, Error> {
    let well_formed = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !well_formed {
        return Err(invalid("PROXY v1 port is not a decimal number"));
    }
    s.parse()
        .map_err(|_| invalid("PROXY v1 port is above 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, Error> {
    let Some(&[ver_cmd, fam, len_hi, len_lo]) = buf.get(12..16) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(invalid("PROXY v2 header has a version other than 2"));
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(invalid("PROXY v2 header is longer than 4096 bytes"));
    }
    let Some(payload) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let consumed = 16 + len;
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => return Err(invalid("PROXY v2 command must be LOCAL or PROXY")),
    };
    let header = |addresses| {
        Ok(Some((
            ProxyHeader {
                version: 2,
                addresses,
            },
            consumed,
        )))
    };
    // LOCAL: the proxy speaks for itself (a health check). The
    // specification says the receiver must accept it and discard the
    // protocol block, family byte included, whatever that byte holds.
    if local {
        return header(None);
    }
    let family = fam >> 4;
    let transport = fam & 0x0F;
    if family > 3 || transport > 2 {
        return Err(invalid("PROXY v2 address family or transport is unknown"));
    }
    // UNSPEC and Unix sockets carry nothing usable as an egress.
    if family == 0 || family == 3 {
        return header(None);
    }
    if transport != 1 {
        return Err(invalid(
            "PROXY v2 header announces a non-stream transport on a TCP connection",
        ));
    }
    let addresses = if family == 1 {
        let Some(a) = payload.get(..12) else {
            return Err(invalid("PROXY v2 IPv4 address block is too short"));
        };
        let ip = |i: usize| -> IpAddr {
            let mut o = [0u8; 4];
            o.copy_from_slice(a.get(i..i + 4).unwrap_or(&[0; 4]));
            IpAddr::V4(Ipv4Addr::from(o))
        };
        let port = |i: usize| port_at(a, i);
        ProxyAddresses {
            source: SocketAddr::new(ip(0), port(8)),
            destination: SocketAddr::new(ip(4), port(10)),
        }
    } else {
        let Some(a) = payload.get(..36) else {
            return Err(invalid("PROXY v2 IPv6 address block is too short"));
        };
        let ip = |i: usize| -> IpAddr {
            let mut o = [0u8; 16];
            o.copy_from_slice(a.get(i..i + 16).unwrap_or(&[0; 16]));
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let port = |i: usize| port_at(a, i);
        ProxyAddresses {
            source: SocketAddr::new(ip(0), port(32)),
            destination: SocketAddr::new(ip(16), port(34)),
        }
    };
    // TLVs after the address block are skipped: nothing in them is needed.
    header(Some(addresses))
}

fn port_at(block: &[u8], i: usize) -> u16 {
    match block.get(i..i + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// Reads a PROXY header from the start of `stream` within `timeout`.
///
/// Returns the header and the bytes read past it (the start of the proxied
/// stream, which the caller must replay). Reads at most
/// [`MAX_HEADER_BYTES`] plus one read's worth.
pub(crate) async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Vec<u8>), Error> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|source| Error::Io {
                what: "reading the PROXY protocol header".to_owned(),
                source,
            })?;
            if n == 0 {
                return Err(invalid(
                    "connection closed inside the PROXY protocol header",
                ));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if let Some((header, used)) = parse_proxy_header(&buf)? {
                let rest = buf.get(used..).unwrap_or_default().to_vec();
                return Ok((header, rest));
            }
            if buf.len() > MAX_HEADER_BYTES {
                return Err(invalid("PROXY protocol header too long"));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::Io {
            what: "reading the PROXY protocol header".to_owned(),
            source: io::Error::new(io::ErrorKind::TimedOut, "no complete header in time"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn addrs(h: &ProxyHeader) -> (SocketAddr, SocketAddr) {
        let a = h.addresses.unwrap();
        (a.source, a.destination)
    }

    #[test]
    fn v1_tcp4_and_rest() {
        let buf = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\nGET /";
        let (h, n) = parse_proxy_header(buf).unwrap().unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(&buf[n..], b"GET /");
        assert_eq!(
            addrs(&h),
            (
                "203.0.113.7:51234".parse().unwrap(),
                "192.0.2.1:443".parse().unwrap()
            )
        );
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (h, _) = parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(addrs(&h).0, "[2001:db8::1]:1".parse().unwrap());
        let (h, n) = parse_proxy_header(b"PROXY UNKNOWN ffff::1 whatever\r\nx")
            .unwrap()
            .unwrap();
        assert_eq!(h.addresses, None);
        assert_eq!(n, 32);
        assert!(parse_proxy_header(b"PROXY UNKNOWN\r\n").unwrap().is_some());
    }

    #[test]
    fn v1_incomplete_then_errors() {
        assert!(parse_proxy_header(b"").unwrap().is_none());
        assert!(parse_proxy_header(b"PRO").unwrap().is_none());
        assert!(parse_proxy_header(b"PROXY TCP4 1.2.3.4").unwrap().is_none());
        assert!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")
                .unwrap()
                .is_none()
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
        ] {
            assert!(
                parse_proxy_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 120]].concat();
        assert!(parse_proxy_header(&long).is_err());
    }

    #[test]
    fn v2_inet_inet6_local_unspec_with_tlvs() {
        let mut p = vec![203, 0, 113, 7, 192, 0, 2, 1];
        p.extend_from_slice(&51234u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&[0x04, 0x00, 0x02, 0xAB, 0xCD]); // a TLV, skipped
        let mut buf = v2(1, 0x11, &p);
        buf.extend_from_slice(b"rest");
        let (h, n) = parse_proxy_header(&buf).unwrap().unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(&buf[n..], b"rest");
        assert_eq!(addrs(&h).0, "203.0.113.7:51234".parse().unwrap());
        assert_eq!(addrs(&h).1, "192.0.2.1:443".parse().unwrap());

        let mut p6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        p6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p6.extend_from_slice(&[0, 80, 1, 187]);
        let (h, _) = parse_proxy_header(&v2(1, 0x21, &p6)).unwrap().unwrap();
        assert_eq!(addrs(&h).0, "[2001:db8::7]:80".parse().unwrap());
        assert_eq!(addrs(&h).1, "[2001:db8::1]:443".parse().unwrap());

        let (h, n) = parse_proxy_header(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!((h.addresses, n), (None, 16));
        let (h, _) = parse_proxy_header(&v2(0, 0x11, &p)).unwrap().unwrap();
        assert_eq!(h.addresses, None, "LOCAL ignores addresses");
        let (h, _) = parse_proxy_header(&v2(1, 0x00, &[1, 2, 3]))
            .unwrap()
            .unwrap();
        assert_eq!(h.addresses, None);
    }

    #[test]
    fn v2_local_is_accepted_whatever_its_family_byte() {
        // Family and transport values the specification does not define:
        // refused with PROXY, but LOCAL discards the whole block.
        for fam in [0x41, 0x13, 0xFF, 0x0F, 0xF0] {
            let mut buf = v2(0, fam, &[9; 7]);
            buf.extend_from_slice(b"GET /");
            let (h, n) = parse_proxy_header(&buf).unwrap().unwrap();
            assert_eq!(h.addresses, None, "{fam:#04x}");
            assert_eq!(&buf[n..], b"GET /", "{fam:#04x}");
            assert!(
                parse_proxy_header(&v2(1, fam, &[0; 36])).is_err(),
                "{fam:#04x}"
            );
        }
    }

    #[test]
    fn v2_incomplete_and_errors() {
        let full = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for cut in 0..full.len() {
            assert!(parse_proxy_header(&full[..cut]).unwrap().is_none(), "{cut}");
        }
        assert!(parse_proxy_header(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse_proxy_header(&v2(1, 0x21, &[0; 12])).is_err());
        assert!(parse_proxy_header(&v2(2, 0x11, &[0; 12])).is_err());
        assert!(parse_proxy_header(&v2(1, 0x12, &[0; 12])).is_err());
        assert!(parse_proxy_header(&v2(1, 0x41, &[0; 12])).is_err());
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(parse_proxy_header(&wrong_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(parse_proxy_header(&huge).is_err());
    }

    #[tokio::test]
    async fn reader_returns_leftover_and_bounds_input() {
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 10 20\r\nhello";
        let (h, rest) = read_proxy_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(addrs(&h).0, "1.2.3.4:10".parse().unwrap());
        assert_eq!(rest, b"hello");

        let mut eof: &[u8] = b"PROXY TCP4 1.2.3.4";
        assert!(
            read_proxy_header(&mut eof, Duration::from_secs(1))
                .await
                .is_err()
        );

        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY ")
            .await
            .unwrap();
        let err = read_proxy_header(&mut server, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("in time"), "{err}");
    }

    proptest! {
        #[test]
        fn never_panics_and_consumes_within_input(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, n))) = parse_proxy_header(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!(n <= MAX_HEADER_BYTES);
            }
        }

        #[test]
        fn never_panics_behind_a_valid_signature(tail in proptest::collection::vec(any::<u8>(), 0..200), v1 in any::<bool>()) {
            let mut bytes = if v1 { V1_PREFIX.to_vec() } else { V2_SIGNATURE.to_vec() };
            bytes.extend_from_slice(&tail);
            if let Ok(Some((_, n))) = parse_proxy_header(&bytes) {
                prop_assert!(n <= bytes.len());
            }
            // A prefix of a complete header is never an error.
            if let Ok(Some((_, n))) = parse_proxy_header(&bytes) {
                for cut in 0..n {
                    prop_assert!(parse_proxy_header(&bytes[..cut]).is_ok());
                }
            }
        }
    }
}
