//! Account ids (ed25519 public keys) and their bech32m addresses.

use bech32::{Bech32m, Hrp};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// Checked, decompressed keys by their bytes. Decompressing a key costs a
/// field exponentiation and the same accounts sign and receive again and
/// again (profiled: a quarter of a member's CPU went to re-decompressing).
/// Only valid keys are cached; the map is cleared when it reaches the cap.
static KEY_CACHE: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> =
    LazyLock::new(Default::default);
const KEY_CACHE_MAX: usize = 1 << 16;

/// An account: the 32-byte ed25519 public key that signs its transactions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub [u8; 32]);

/// Why an account id or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not a fedpeg address: {1}")]
    Malformed(String, String),
    #[error("address '{addr}' is for another network (prefix '{got}'); this chain uses '{want}1…' addresses")]
    WrongNetwork {
        addr: String,
        got: String,
        want: String,
    },
    #[error("account key is not a valid ed25519 public key")]
    InvalidKey,
    #[error("account key is a weak (small-order) ed25519 key; no one can sign for it safely")]
    WeakKey,
}

impl AccountId {
    /// From raw bytes, checking they are a usable ed25519 public key.
    pub fn from_slice(b: &[u8]) -> Result<AccountId, AddressError> {
        let arr = <[u8; 32]>::try_from(b).map_err(|_| AddressError::InvalidKey)?;
        let id = AccountId(arr);
        id.verifying_key()?;
        Ok(id)
    }

    /// The ed25519 key, refusing non-points and weak (small-order) keys.
    pub fn verifying_key(&self) -> Result<VerifyingKey, AddressError> {
        if let Some(vk) = KEY_CACHE.lock().ok().and_then(|c| c.get(&self.0).copied()) {
            return Ok(vk);
        }
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| AddressError::InvalidKey)?;
        if vk.is_weak() {
            return Err(AddressError::WeakKey);
        }
        if let Ok(mut c) = KEY_CACHE.lock() {
            if c.len() >= KEY_CACHE_MAX {
                c.clear();
            }
            c.insert(self.0, vk);
        }
        Ok(vk)
    }

    /// bech32m address with the network's prefix.
    pub fn to_address(&self, hrp: &str) -> String {
        // The hrps used here are fixed valid ASCII constants and 32 bytes of
        // data is far below bech32's length limit, so encoding cannot fail.
        match Hrp::parse(hrp) {
            Ok(h) => bech32::encode::<Bech32m>(h, &self.0).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Parses a bech32m address and checks its prefix is `hrp`.
    pub fn from_address(s: &str, hrp: &str) -> Result<AccountId, AddressError> {
        let s = s.trim();
        let (got, data) =
            bech32::decode(s).map_err(|e| AddressError::Malformed(s.to_string(), e.to_string()))?;
        // bech32::decode accepts bech32 and bech32m; require bech32m exactly.
        let reenc = bech32::encode::<Bech32m>(got, &data)
            .map_err(|e| AddressError::Malformed(s.to_string(), e.to_string()))?;
        if !reenc.eq_ignore_ascii_case(s) {
            return Err(AddressError::Malformed(
                s.to_string(),
                "checksum is bech32, expected bech32m".into(),
            ));
        }
        if !got.as_str().eq_ignore_ascii_case(hrp) {
            return Err(AddressError::WrongNetwork {
                addr: s.to_string(),
                got: got.to_string(),
                want: hrp.to_string(),
            });
        }
        if data.len() != 32 {
            return Err(AddressError::Malformed(
                s.to_string(),
                format!("carries {} bytes, expected a 32-byte key", data.len()),
            ));
        }
        AccountId::from_slice(&data)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", &hex::encode(self.0)[..16])
    }
}

/// Address prefix for a Bitcoin network: `fp` on mainnet, `fprt` on regtest.
pub fn hrp_for(network: bitcoin::Network) -> &'static str {
    match network {
        bitcoin::Network::Bitcoin => "fp",
        bitcoin::Network::Regtest => "fprt",
        bitcoin::Network::Signet => "fps",
        _ => "fpt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn id(seed: u8) -> AccountId {
        AccountId(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    #[test]
    fn address_round_trip() {
        let a = id(7);
        let s = a.to_address("fprt");
        assert!(s.starts_with("fprt1"));
        assert_eq!(AccountId::from_address(&s, "fprt").unwrap(), a);
        assert_eq!(
            AccountId::from_address(&s.to_uppercase(), "fprt").unwrap(),
            a
        );
    }

    #[test]
    fn mistyped_address_is_caught() {
        let s = id(7).to_address("fprt");
        let mut chars: Vec<char> = s.chars().collect();
        let i = chars.len() - 3;
        chars[i] = if chars[i] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(
            AccountId::from_address(&typo, "fprt"),
            Err(AddressError::Malformed(..))
        ));
    }

    #[test]
    fn other_network_address_is_refused() {
        let s = id(7).to_address("fp");
        assert!(matches!(
            AccountId::from_address(&s, "fprt"),
            Err(AddressError::WrongNetwork { .. })
        ));
    }

    #[test]
    fn weak_key_is_refused() {
        // The identity point (small order) encodes as 1 followed by zeroes.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(AccountId::from_slice(&weak), Err(AddressError::WeakKey));
        let enc = bech32::encode::<Bech32m>(Hrp::parse("fprt").unwrap(), &weak).unwrap();
        assert_eq!(
            AccountId::from_address(&enc, "fprt"),
            Err(AddressError::WeakKey)
        );
    }

    #[test]
    fn wrong_length_is_refused() {
        let enc = bech32::encode::<Bech32m>(Hrp::parse("fprt").unwrap(), &[1u8; 20]).unwrap();
        assert!(matches!(
            AccountId::from_address(&enc, "fprt"),
            Err(AddressError::Malformed(..))
        ));
    }
}
