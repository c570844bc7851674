//! The subjectAltName extension as receptor writes and reads it: DNS names, IP
//! addresses and ReceptorName otherNames (OID 1.3.6.1.4.1.2312.19.1, value
//! `[0] EXPLICIT UTF8String` holding a node ID), in that order.

use std::net::IpAddr;

use crate::der::{self, oids, tag};

/// The names found in a subjectAltName extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanNames {
    /// dNSName entries.
    pub dns_names: Vec<String>,
    /// iPAddress entries.
    pub ip_addresses: Vec<IpAddr>,
    /// ReceptorName otherName entries (node IDs).
    pub node_ids: Vec<String>,
}

impl SanNames {
    /// True when there is no DNS name, IP address or node ID.
    pub fn is_empty(&self) -> bool {
        self.dns_names.is_empty() && self.ip_addresses.is_empty() && self.node_ids.is_empty()
    }
}

/// Encodes the value (the `extnValue` content) of a subjectAltName extension with
/// the given names, in receptor's order: DNS names, then IPs, then node IDs.
pub fn receptor_san(dns_names: &[String], ip_addresses: &[IpAddr], node_ids: &[String]) -> Vec<u8> {
    let mut names: Vec<u8> = Vec::new();
    for name in dns_names {
        names.extend(der::tlv(0x82, name.as_bytes()));
    }
    for ip in ip_addresses {
        match ip {
            IpAddr::V4(v4) => names.extend(der::tlv(0x87, &v4.octets())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // Go stores IPv4-mapped addresses in their 4-byte form.
                Some(v4) => names.extend(der::tlv(0x87, &v4.octets())),
                None => names.extend(der::tlv(0x87, &v6.octets())),
            },
        }
    }
    for node in node_ids {
        names.extend(receptor_other_name(node));
    }
    der::tlv(tag::SEQUENCE, &names)
}

/// One ReceptorName GeneralName: `[0] { OID, [0] EXPLICIT UTF8String }`.
fn receptor_other_name(node_id: &str) -> Vec<u8> {
    let value = der::explicit(0, &der::tlv(tag::UTF8_STRING, node_id.as_bytes()));
    der::explicit(0, &[der::oid(oids::RECEPTOR_NAME), value].concat())
}

/// A malformed subjectAltName; the messages are Go's `x509` texts (without `x509: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SanError {
    /// The extension is not one DER SEQUENCE.
    #[error("malformed subjectAltName")]
    Malformed,
    /// The SEQUENCE's entries do not parse.
    #[error("malformed subjectAltName entry")]
    MalformedEntry,
    /// An otherName entry does not parse.
    #[error("malformed otherName in subjectAltName")]
    MalformedOtherName,
    /// A dNSName that is not ASCII.
    #[error("SAN dNSName is malformed")]
    MalformedDnsName,
    /// An iPAddress of neither 4 nor 16 bytes.
    #[error("cannot parse IP address of length {0}")]
    IpLength(usize),
    /// A ReceptorName UTF8String that is not UTF-8.
    #[error("ReceptorName is not valid UTF-8")]
    ReceptorNameNotUtf8,
    /// A ReceptorName that is not a string at all.
    #[error("ReceptorName is not a string")]
    ReceptorNameNotString,
}

/// Decodes a subjectAltName extension value. Entries other than DNS names, IPs and
/// otherNames are skipped; otherNames of other types are ignored. Malformed entries
/// are errors (as in Go, where they fail certificate parsing or verification).
pub fn parse_san(value: &[u8]) -> Result<SanNames, SanError> {
    let (t, content, _, rest) = der::read_tlv(value).ok_or(SanError::Malformed)?;
    if t != tag::SEQUENCE || !rest.is_empty() {
        return Err(SanError::Malformed);
    }
    let entries = der::read_all(content).ok_or(SanError::MalformedEntry)?;
    let mut out = SanNames::default();
    for (t, content, _) in entries {
        match t {
            0xa0 => {
                if let Some(name) = parse_other_name(content)? {
                    out.node_ids.push(name);
                }
            }
            0x80 => return Err(SanError::MalformedOtherName),
            0x82 => {
                let s = std::str::from_utf8(content)
                    .ok()
                    .filter(|s| s.is_ascii())
                    .ok_or(SanError::MalformedDnsName)?;
                out.dns_names.push(s.to_string());
            }
            0x87 => {
                let ip = if let Ok(v4) = <[u8; 4]>::try_from(content) {
                    IpAddr::from(v4)
                } else if let Ok(v6) = <[u8; 16]>::try_from(content) {
                    IpAddr::from(v6)
                } else {
                    return Err(SanError::IpLength(content.len()));
                };
                out.ip_addresses.push(ip);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes the content of an otherName; `Some(node)` for a ReceptorName.
fn parse_other_name(content: &[u8]) -> Result<Option<String>, SanError> {
    let bad = SanError::MalformedOtherName;
    let (t, _, oid_whole, rest) = der::read_tlv(content).ok_or(bad.clone())?;
    if t != tag::OID {
        return Err(bad);
    }
    let (t, value, _, _) = der::read_tlv(rest).ok_or(bad.clone())?;
    if t != 0xa0 {
        return Err(bad);
    }
    if !der::oid_is(oid_whole, oids::RECEPTOR_NAME) {
        return Ok(None);
    }
    let (t, s, _, _) = der::read_tlv(value).ok_or(bad.clone())?;
    let text = match t {
        tag::UTF8_STRING => std::str::from_utf8(s).map_err(|_| SanError::ReceptorNameNotUtf8)?,
        tag::PRINTABLE_STRING | tag::IA5_STRING | tag::NUMERIC_STRING | tag::T61_STRING => {
            std::str::from_utf8(s)
                .ok()
                .filter(|s| s.is_ascii())
                .ok_or(bad)?
        }
        _ => return Err(SanError::ReceptorNameNotString),
    };
    Ok(Some(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    #[test]
    fn spec_bytes_single_node() {
        // wire-protocol.md 10.3: the otherName for node ID `probe`.
        let san = receptor_san(&[], &[], &["probe".to_string()]);
        assert_eq!(
            san,
            hex("30 16 A0 14 06 09 2B 06 01 04 01 92 08 13 01 A0 07 0C 05 70 72 6F 62 65")
        );
    }

    #[test]
    fn spec_bytes_full_san() {
        let san = receptor_san(
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            &["gonode2".to_string()],
        );
        assert_eq!(
            san,
            hex("30 29 82 09 6C6F63616C686F7374 87 04 7F000001 A0 16 06 09 2B0601040192081301 A0 09 0C 07 676F6E6F646532")
        );
        let parsed = parse_san(&san).unwrap_or_default();
        assert_eq!(parsed.dns_names, vec!["localhost"]);
        assert_eq!(parsed.ip_addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(parsed.node_ids, vec!["gonode2"]);
    }

    #[test]
    fn long_node_ids_and_ipv6_round_trip() {
        let long = "n".repeat(300);
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let san = receptor_san(&[], &[v6], &[long.clone(), "b".into()]);
        let parsed = parse_san(&san).unwrap_or_default();
        assert_eq!(parsed.node_ids, vec![long, "b".to_string()]);
        assert_eq!(parsed.ip_addresses, vec![v6]);
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert!(parse_san(&hex("30 03 87 01 00")).is_err());
        assert!(parse_san(&hex("30 05 A0 03 06 01 00")).is_err());
        assert!(parse_san(&hex("30 02 A0")).is_err());
        assert!(parse_san(&hex("31 00")).is_err());
        // other otherName types are ignored
        let other = hex("30 0C A0 0A 06 03 2A 03 04 A0 03 0C 01 78");
        assert_eq!(parse_san(&other), Ok(SanNames::default()));
        assert!(parse_san(&hex("30 00"))
            .map(|n| n.is_empty())
            .unwrap_or(false));
    }
}
