//! A minimal DER writer and reader: just what certificates, requests and the
//! ReceptorName otherName need. Writing builds complete TLVs into `Vec<u8>`; reading
//! walks borrowed slices and never panics on malformed input.

/// ASN.1 universal tags used here.
pub(crate) mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const NUMERIC_STRING: u8 = 0x12;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const T61_STRING: u8 = 0x14;
    pub const IA5_STRING: u8 = 0x16;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
}

/// Encodes one TLV with a definite DER length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// A SEQUENCE of already encoded elements.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SEQUENCE, &parts.concat())
}

/// A SET of already encoded elements (callers pass them in DER order).
pub(crate) fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SET, &parts.concat())
}

/// A context-specific constructed tag `[n]` around already encoded content.
pub(crate) fn explicit(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, content)
}

/// A non-negative INTEGER from big-endian magnitude bytes.
pub(crate) fn uint(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|b| **b == 0).count();
    let m = &magnitude[skip..];
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(tag::INTEGER, &content)
}

/// An OBJECT IDENTIFIER from its arcs (the first two arcs must be valid).
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        [a] => (a * 40, &[][..]),
        [] => (0, &[][..]),
    };
    push_base128(&mut content, first);
    for arc in rest {
        push_base128(&mut content, *arc);
    }
    tlv(tag::OID, &content)
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8 | if i == tmp.len() - 1 { 0 } else { 0x80 };
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// A BIT STRING with no unused bits.
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &content)
}

/// One decoded TLV: `(tag, content, whole TLV)`.
pub(crate) type Tlv<'a> = (u8, &'a [u8], &'a [u8]);

/// One decoded TLV and the input after it: `(tag, content, whole TLV, rest)`.
pub(crate) type TlvRest<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one TLV from the front of `input`.
pub(crate) fn read_tlv(input: &[u8]) -> Option<TlvRest<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags are not used in anything we parse
    }
    let (&first, mut rest) = after_tag.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | *b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (content, tail) = rest.split_at(len);
    Some((tag, content, &input[..header + len], tail))
}

/// Reads all TLVs of a constructed value's content.
pub(crate) fn read_all(mut input: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tag, content, whole, rest) = read_tlv(input)?;
        out.push((tag, content, whole));
        input = rest;
    }
    Some(out)
}

/// Well-known object identifiers.
pub(crate) mod oids {
    /// subjectAltName.
    pub const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
    /// ReceptorName otherName type (node ID).
    pub const RECEPTOR_NAME: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 19, 1];
    /// keyUsage.
    pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
    /// extKeyUsage.
    pub const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
    /// basicConstraints.
    pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
    /// subjectKeyIdentifier.
    pub const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
    /// authorityKeyIdentifier.
    pub const AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
    /// id-kp-serverAuth.
    pub const SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
    /// id-kp-clientAuth.
    pub const CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];
    /// commonName.
    pub const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
    /// PKCS#9 extensionRequest.
    pub const EXTENSION_REQUEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];
    /// sha256WithRSAEncryption.
    pub const SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
    /// sha384WithRSAEncryption.
    pub const SHA384_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
    /// sha512WithRSAEncryption.
    pub const SHA512_WITH_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
}

/// True when the encoded OID TLV `whole` equals `arcs`.
pub(crate) fn oid_is(whole: &[u8], arcs: &[u64]) -> bool {
    whole == oid(arcs).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers() {
        assert_eq!(tlv(4, &[1, 2]), vec![4, 2, 1, 2]);
        let long = tlv(4, &[0u8; 200]);
        assert_eq!(&long[..3], &[4, 0x81, 200]);
        let longer = tlv(4, &[0u8; 300]);
        assert_eq!(&longer[..4], &[4, 0x82, 1, 44]);
        assert_eq!(uint(&[0x6b, 0x07]), vec![2, 2, 0x6b, 0x07]);
        assert_eq!(uint(&[0, 0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(uint(&[]), vec![2, 1, 0]);
    }

    #[test]
    fn receptor_name_oid_bytes() {
        assert_eq!(
            oid(oids::RECEPTOR_NAME),
            vec![0x06, 0x09, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x92, 0x08, 0x13, 0x01]
        );
    }

    #[test]
    fn reader_rejects_truncation() {
        assert!(read_tlv(&[0x30, 0x05, 1, 2]).is_none());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(read_tlv(&[]).is_none());
        let (t, c, w, r) = read_tlv(&[0x04, 0x01, 0xff, 0x00]).unwrap_or_default();
        assert_eq!((t, c, w, r), (4, &[0xff][..], &[4, 1, 0xff][..], &[0][..]));
    }
}
