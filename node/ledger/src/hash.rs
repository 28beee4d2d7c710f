//! 32-byte SHA-256 hashes with domain separation.

use sha2::{Digest, Sha256};
use std::fmt;

/// A 32-byte hash (block hash, transaction id, chain id, state root).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// All zeroes: the parent of the first block.
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    /// SHA-256 over `len(tag) || tag || parts...`: a hash that cannot collide
    /// with a hash of another domain whose parts happen to share bytes.
    pub fn tagged(tag: &str, parts: &[&[u8]]) -> Hash32 {
        let mut h = Sha256::new();
        // Tags are short constants; u8 length is enough and keeps the prefix fixed.
        h.update([tag.len() as u8]);
        h.update(tag.as_bytes());
        for p in parts {
            h.update(p);
        }
        Hash32(h.finalize().into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Hash32, String> {
        let bytes = hex::decode(s.trim())
            .map_err(|e| format!("'{s}' is not hex ({e}); expected 64 hex characters"))?;
        Self::from_slice(&bytes).map_err(|_| {
            format!(
                "'{s}' has {} bytes; expected 32 (64 hex characters)",
                bytes.len()
            )
        })
    }

    /// From exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Hash32, String> {
        <[u8; 32]>::try_from(b)
            .map(Hash32)
            .map_err(|_| format!("expected 32 bytes, got {}", b.len()))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_separate_domains() {
        assert_ne!(Hash32::tagged("a", &[b"bc"]), Hash32::tagged("ab", &[b"c"]));
        assert_eq!(
            Hash32::tagged("x", &[b"1", b"2"]),
            Hash32::tagged("x", &[b"12"])
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash32::tagged("t", &[]);
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash32::from_hex("zz").unwrap_err().contains("not hex"));
        assert!(Hash32::from_hex("abcd")
            .unwrap_err()
            .contains("expected 32"));
    }
}
