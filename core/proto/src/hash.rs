//! Node-name hashing.
//!
//! DATA messages carry node names as 64-bit hashes: HighwayHash-64 with an all-zero
//! 32-byte key over the UTF-8 bytes of the name. The hash is written big-endian in
//! the DATA header. Each node keeps a table hash → name to resolve incoming headers.

use highway::{HighwayHash, HighwayHasher, Key};

/// HighwayHash-64 (zero key) of a node name, as Go receptor computes it.
pub fn node_hash(name: &str) -> u64 {
    HighwayHasher::new(Key([0; 4])).hash64(name.as_bytes())
}

/// A `Hasher` for maps keyed by values that already are uniformly distributed hashes
/// (node-name hashes): it passes the `u64` through unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys; fold the bytes in so it still works.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// `BuildHasher` for [`IdentityHasher`].
pub type BuildIdentityHasher = std::hash::BuildHasherDefault<IdentityHasher>;

/// A map keyed by node-name hash.
pub type HashKeyedMap<V> = std::collections::HashMap<u64, V, BuildIdentityHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_vectors_from_go() {
        let cases = [
            ("", 0x7035da75b9d54469u64),
            ("gonode", 0xfc9393bd9ab34eba),
            ("gonode2", 0xaf7bd013be877758),
            ("probe", 0xaaed127a25b69a12),
            ("localhost", 0x99c4380a442ae062),
            ("ping", 0xe98e3242f8b15e51),
            ("unreach", 0xe05eac0110f1ce44),
            ("control", 0x3bdee1e3b5f2dbcd),
        ];
        for (name, want) in cases {
            assert_eq!(node_hash(name), want, "hash of {name:?}");
        }
    }

    #[test]
    fn keyed_reference_vectors() {
        // HighwayHash reference: key 00..1f, input 00..(i-1); first entries of the
        // published 64-bit test vector table.
        let mut key = [0u64; 4];
        for (i, k) in key.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            for (j, x) in b.iter_mut().enumerate() {
                *x = (i * 8 + j) as u8;
            }
            *k = u64::from_le_bytes(b);
        }
        let want = [
            0x907A56DE22C26E53u64,
            0x7EAB43AAC7CDDD78,
            0xB8D0569AB0B53D62,
        ];
        for (i, w) in want.iter().enumerate() {
            let data: Vec<u8> = (0..i as u8).collect();
            assert_eq!(HighwayHasher::new(Key(key)).hash64(&data), *w, "vector {i}");
        }
    }
}
