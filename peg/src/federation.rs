//! The federation: its members' peg keys, the signing threshold and the
//! Bitcoin network it pegs.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Network, Weight};

/// Most keys a P2WSH `multi`/`sortedmulti` may hold (Bitcoin Core's
/// `MAX_PUBKEYS_PER_MULTISIG`; P2SH would be limited to 15 by script size).
pub const MAX_KEYS: usize = 20;

/// Worst-case size of one ECDSA signature stack element: a low-S DER
/// signature is at most 71 bytes (33-byte R, 32-byte S, 6 bytes of framing)
/// and the sighash byte makes 72. Bitcoin Core's estimator uses the same value.
pub const MAX_SIGNATURE_ELEMENT_BYTES: u64 = 72;

/// Why a federation definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// No peg keys were given.
    #[error("a federation needs at least one peg key; list every member's peg key in genesis")]
    NoKeys,
    /// More keys than a P2WSH multisig can hold.
    #[error("the federation has {n} peg keys but a P2WSH sortedmulti holds at most {MAX_KEYS}; use fewer members")]
    TooManyKeys {
        /// Number of keys given.
        n: usize,
    },
    /// Threshold outside `1..=n`.
    #[error("peg threshold {m} is invalid for {n} keys; it must be between 1 and {n}")]
    BadThreshold {
        /// Threshold given.
        m: usize,
        /// Number of keys.
        n: usize,
    },
    /// The same key listed for two members.
    #[error("peg key {key} is listed for members {first} and {second} (0-based, genesis order); every member needs its own key")]
    DuplicateKey {
        /// The repeated key.
        key: PublicKey,
        /// Index of its first occurrence.
        first: usize,
        /// Index of its second occurrence.
        second: usize,
    },
}

/// The peg federation: `m` of the `n` members' peg keys can move peg coins.
///
/// Fields are private so that every value went through [`Federation::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    keys: Vec<PublicKey>,
    threshold: usize,
    network: Network,
}

impl Federation {
    /// Checks `1 <= m <= n <= MAX_KEYS` and that no key repeats.
    pub fn new(keys: Vec<PublicKey>, m: usize, network: Network) -> Result<Self, FederationError> {
        let n = keys.len();
        if n == 0 {
            return Err(FederationError::NoKeys);
        }
        if n > MAX_KEYS {
            return Err(FederationError::TooManyKeys { n });
        }
        if m == 0 || m > n {
            return Err(FederationError::BadThreshold { m, n });
        }
        for (second, key) in keys.iter().enumerate() {
            if let Some(first) = keys[..second].iter().position(|k| k == key) {
                return Err(FederationError::DuplicateKey {
                    key: *key,
                    first,
                    second,
                });
            }
        }
        Ok(Federation {
            keys,
            threshold: m,
            network,
        })
    }

    /// The members' untweaked peg keys, in genesis order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Number of signatures needed to spend (`m`).
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Number of members (`n`).
    pub fn size(&self) -> usize {
        self.keys.len()
    }

    /// The Bitcoin network the federation pegs.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Length in bytes of the federation's witness script (the same for every
    /// tweak): `OP_m`, `n` pushes of a 33-byte key, `OP_n`, `OP_CHECKMULTISIG`.
    pub fn witness_script_len(&self) -> u64 {
        small_int_push_len(self.threshold)
            + 34 * self.size() as u64
            + small_int_push_len(self.size())
            + 1
    }

    /// Worst-case weight one input spending a federation P2WSH output adds to
    /// a transaction.
    ///
    /// Non-witness part, 41 bytes x 4: outpoint (32 + 4), empty scriptSig (1),
    /// sequence (4). Witness part, 1 WU per byte: item count (1, for `m + 2`
    /// items), the empty dummy element CHECKMULTISIG pops (1), `m` signatures
    /// of [`MAX_SIGNATURE_ELEMENT_BYTES`] plus a length byte each, the witness
    /// script with its compact-size length. The transaction's segwit marker
    /// and flag (2 WU) are per transaction, not per input, so not included.
    pub fn spend_weight_estimate(&self) -> Weight {
        let m = self.threshold as u64;
        let script = self.witness_script_len();
        let non_witness = 32 + 4 + 1 + 4;
        let witness = compact_size_len(m + 2)
            + 1
            + m * (1 + MAX_SIGNATURE_ELEMENT_BYTES)
            + compact_size_len(script)
            + script;
        Weight::from_non_witness_data_size(non_witness) + Weight::from_witness_data_size(witness)
    }

    /// [`Self::spend_weight_estimate`] in virtual bytes, rounded up: what a
    /// deposit is charged at the agreed fee rate when it is minted.
    pub fn spend_vbytes_estimate(&self) -> u64 {
        self.spend_weight_estimate().to_vbytes_ceil()
    }
}

/// Script bytes taken by pushing `k` (`1..=MAX_KEYS`) the way Bitcoin Core
/// does: `OP_1..OP_16` are one opcode, 17..20 are a one-byte data push.
fn small_int_push_len(k: usize) -> u64 {
    if k <= 16 {
        1
    } else {
        2
    }
}

/// Bytes of Bitcoin's compact-size encoding of `n`.
pub(crate) fn compact_size_len(n: u64) -> u64 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    /// Deterministic member secret key number `i` (1-based, never zero).
    pub(crate) fn member_secret(i: usize) -> SecretKey {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        b[0] = 0x42;
        SecretKey::from_slice(&b).expect("constant in range")
    }

    /// A federation of `n` deterministic members with threshold `m` on regtest.
    pub(crate) fn federation(m: usize, n: usize) -> (Federation, Vec<SecretKey>) {
        let secp = Secp256k1::new();
        let secrets: Vec<SecretKey> = (0..n).map(member_secret).collect();
        let keys = secrets.iter().map(|s| s.public_key(&secp)).collect();
        (Federation::new(keys, m, Network::Regtest).unwrap(), secrets)
    }

    #[test]
    fn valid_federations_are_accepted() {
        for (m, n) in [(1, 1), (2, 3), (3, 4), (11, 15), (20, 20), (1, 20)] {
            let (f, _) = federation(m, n);
            assert_eq!((f.threshold(), f.size()), (m, n));
            assert_eq!(f.network(), Network::Regtest);
        }
    }

    #[test]
    fn empty_federation_is_rejected() {
        assert_eq!(
            Federation::new(vec![], 1, Network::Regtest),
            Err(FederationError::NoKeys)
        );
    }

    #[test]
    fn more_than_twenty_keys_are_rejected() {
        let (f, _) = federation(1, 20);
        let mut keys = f.keys().to_vec();
        let secp = Secp256k1::new();
        keys.push(member_secret(20).public_key(&secp));
        assert_eq!(
            Federation::new(keys, 2, Network::Regtest),
            Err(FederationError::TooManyKeys { n: 21 })
        );
    }

    #[test]
    fn threshold_zero_or_above_n_is_rejected() {
        let (f, _) = federation(2, 3);
        for m in [0, 4] {
            assert_eq!(
                Federation::new(f.keys().to_vec(), m, Network::Regtest),
                Err(FederationError::BadThreshold { m, n: 3 })
            );
        }
    }

    #[test]
    fn duplicate_key_is_rejected_with_both_positions() {
        let (f, _) = federation(2, 3);
        let mut keys = f.keys().to_vec();
        keys.push(keys[1]);
        let e = Federation::new(keys, 2, Network::Regtest).unwrap_err();
        assert_eq!(
            e,
            FederationError::DuplicateKey {
                key: f.keys()[1],
                first: 1,
                second: 3
            }
        );
        assert!(e.to_string().contains("members 1 and 3"), "{e}");
    }

    /// Hand computation, 2-of-3: script = 1 + 3*34 + 1 + 1 = 105 bytes;
    /// witness = 1 (count) + 1 (dummy) + 2*73 + 1 (len) + 105 = 254 WU;
    /// non-witness = 41*4 = 164 WU; 418 WU = 104.5 vB, rounded up to 105.
    #[test]
    fn spend_estimate_2_of_3_matches_hand_computation() {
        let (f, _) = federation(2, 3);
        assert_eq!(f.witness_script_len(), 105);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(418));
        assert_eq!(f.spend_vbytes_estimate(), 105);
    }

    /// Hand computation, 3-of-4: script = 1 + 4*34 + 1 + 1 = 139 bytes;
    /// witness = 1 + 1 + 3*73 + 1 + 139 = 361 WU; 164 + 361 = 525 WU
    /// = 131.25 vB, rounded up to 132.
    #[test]
    fn spend_estimate_3_of_4_matches_hand_computation() {
        let (f, _) = federation(3, 4);
        assert_eq!(f.witness_script_len(), 139);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(525));
        assert_eq!(f.spend_vbytes_estimate(), 132);
    }

    /// Hand computation, 11-of-15: script = 1 + 15*34 + 1 + 1 = 513 bytes,
    /// whose length needs a 3-byte compact size; witness = 1 + 1 + 11*73 + 3
    /// + 513 = 1321 WU; 164 + 1321 = 1485 WU = 371.25 vB, rounded up to 372.
    #[test]
    fn spend_estimate_11_of_15_matches_hand_computation() {
        let (f, _) = federation(11, 15);
        assert_eq!(f.witness_script_len(), 513);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(1485));
        assert_eq!(f.spend_vbytes_estimate(), 372);
    }

    /// 17..20 are pushed as one data byte, not an opcode: 2 bytes each.
    #[test]
    fn spend_estimate_17_of_20_counts_two_byte_number_pushes() {
        let (f, _) = federation(17, 20);
        assert_eq!(f.witness_script_len(), 2 + 20 * 34 + 2 + 1);
    }
}
