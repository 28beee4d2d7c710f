//! The federation: its members' peg keys, the signing threshold, the
//! Bitcoin network it pegs and the optional emergency branch (backup keys
//! that may spend after a relative timelock).
//!
//! A [`Federation`] is a value, not a global: a later "descriptor epoch"
//! (member-set change) is a second `Federation` next to the first.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Network, Weight};

/// Most keys a P2WSH `multi`/`sortedmulti` may hold (Bitcoin Core's
/// `MAX_PUBKEYS_PER_MULTISIG`; P2SH would be limited to 15 by script size).
pub const MAX_KEYS: usize = 20;

/// Worst-case size of one ECDSA signature stack element: a low-S DER
/// signature is at most 71 bytes (33-byte R, 32-byte S, 6 bytes of framing)
/// and the sighash byte makes 72. Bitcoin Core's estimator uses the same value.
pub const MAX_SIGNATURE_ELEMENT_BYTES: u64 = 72;

/// Default relative timelock of the emergency branch, in Bitcoin blocks:
/// 8,064 (about eight weeks).
///
/// Liquid started with 4,032 (four weeks) and moved to 8,064. We take the
/// longer one: the timelock is the time the federation has to notice and
/// repair an outage (a stalled chain, lost bitcoind, a bug) before the
/// backup-key holders *could* move coins; and the federation must roll every
/// UTXO before it ages past the timelock (see the rollover in the ledger),
/// so a longer timelock halves that churn. The price, waiting about eight
/// weeks after the federation is gone before funds can be recovered, is
/// acceptable for a last-resort path.
pub const DEFAULT_EMERGENCY_CSV_BLOCKS: u16 = 8064;

/// The emergency branch: `k` of the genesis backup keys may spend a
/// federation output once it is `csv_blocks` blocks deep (BIP68/112, a
/// relative timelock in blocks; at most 65,535 by consensus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyBranch {
    keys: Vec<PublicKey>,
    threshold: usize,
    csv_blocks: u16,
}

impl EmergencyBranch {
    /// The untweaked backup keys, in genesis order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Number of backup signatures needed (`k`).
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Relative timelock in blocks (`N`).
    pub fn csv_blocks(&self) -> u16 {
        self.csv_blocks
    }
}

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
    /// The emergency branch lists no backup key or too many.
    #[error("the emergency branch has {j} backup keys; it needs 1..={MAX_KEYS}")]
    BackupKeyCount {
        /// Number of backup keys given.
        j: usize,
    },
    /// Backup threshold outside `1..=j`.
    #[error("backup threshold {k} is invalid for {j} backup keys; it must be between 1 and {j}")]
    BadBackupThreshold {
        /// Threshold given.
        k: usize,
        /// Number of backup keys.
        j: usize,
    },
    /// A backup key repeats, or is also a member's peg key.
    #[error("backup key {key} is repeated or is also a member's peg key; every backup key must be distinct from all other keys")]
    DuplicateBackupKey {
        /// The repeated key.
        key: PublicKey,
    },
    /// Timelock of zero blocks (the branch would be open at once).
    #[error("the emergency timelock must be between 1 and 65535 blocks, got 0")]
    ZeroTimelock,
    /// The descriptor the keys form is not a valid miniscript (should not
    /// happen for valid counts; reported rather than assumed).
    #[error("the federation keys do not form a valid descriptor: {0}")]
    Descriptor(String),
}

/// The peg federation: `m` of the `n` members' peg keys can move peg coins.
///
/// Fields are private so that every value went through [`Federation::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    keys: Vec<PublicKey>,
    threshold: usize,
    network: Network,
    emergency: Option<EmergencyBranch>,
    /// Weight of one input spent through the normal branch, from the
    /// descriptor's satisfaction plan (the same for every tweak).
    normal_spend_weight: Weight,
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
        let mut f = Federation {
            keys,
            threshold: m,
            network,
            emergency: None,
            normal_spend_weight: Weight::ZERO,
        };
        f.normal_spend_weight = f.plan_normal_spend_weight()?;
        Ok(f)
    }

    /// Adds the emergency branch: `k` of `backup_keys` after `csv_blocks`
    /// blocks. Checks `1 <= k <= j <= MAX_KEYS`, `csv_blocks >= 1` and that
    /// every key of the descriptor is distinct.
    pub fn with_emergency(
        mut self,
        backup_keys: Vec<PublicKey>,
        k: usize,
        csv_blocks: u16,
    ) -> Result<Self, FederationError> {
        let j = backup_keys.len();
        if j == 0 || j > MAX_KEYS {
            return Err(FederationError::BackupKeyCount { j });
        }
        if k == 0 || k > j {
            return Err(FederationError::BadBackupThreshold { k, j });
        }
        if csv_blocks == 0 {
            return Err(FederationError::ZeroTimelock);
        }
        for (i, key) in backup_keys.iter().enumerate() {
            if backup_keys[..i].contains(key) || self.keys.contains(key) {
                return Err(FederationError::DuplicateBackupKey { key: *key });
            }
        }
        self.emergency = Some(EmergencyBranch {
            keys: backup_keys,
            threshold: k,
            csv_blocks,
        });
        self.normal_spend_weight = self.plan_normal_spend_weight()?;
        Ok(self)
    }

    /// The emergency branch, if genesis has one.
    pub fn emergency(&self) -> Option<&EmergencyBranch> {
        self.emergency.as_ref()
    }

    /// The members' untweaked peg keys, in genesis order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Position of `key` among [`Federation::keys`] (its peg-key index), if
    /// it is one of them.
    pub fn key_index(&self, key: &PublicKey) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
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

    /// Worst-case weight one input spending a federation P2WSH output
    /// through the normal (members') branch adds to a transaction.
    ///
    /// It comes from the descriptor: miniscript plans the satisfaction with
    /// the members' keys as the only assets (so never the emergency branch)
    /// and sizes each signature at 73 bytes (72 + push), Bitcoin Core's
    /// worst case; we add the witness script and the non-witness part, 41
    /// bytes x 4: outpoint (32 + 4), empty scriptSig (1), sequence (4). The
    /// segwit marker and flag (2 WU) are per transaction, not per input.
    pub fn spend_weight_estimate(&self) -> Weight {
        self.normal_spend_weight
    }

    /// The descriptor over `members` (and `backups`, if the federation has an
    /// emergency branch): the same keys tweaked or not.
    pub(crate) fn descriptor_over(
        &self,
        members: &[PublicKey],
        backups: &[PublicKey],
    ) -> Result<crate::descriptor::FedDescriptor, String> {
        let emergency = self
            .emergency
            .as_ref()
            .map(|e| crate::descriptor::EmergencyKeys {
                keys: backups,
                threshold: e.threshold,
                csv_blocks: e.csv_blocks,
            });
        crate::descriptor::build(self.threshold, members, emergency)
    }

    /// Plans a normal-branch spend of the untweaked descriptor (tweaking
    /// changes no size) and returns its input weight; also checks that the
    /// keys form a sane descriptor.
    fn plan_normal_spend_weight(&self) -> Result<Weight, FederationError> {
        let backups = self.emergency.as_ref().map(|e| e.keys.clone());
        let d = self
            .descriptor_over(&self.keys, backups.as_deref().unwrap_or(&[]))
            .map_err(FederationError::Descriptor)?;
        let assets = miniscript::plan::Assets::new().add(descriptor_keys(&self.keys));
        planned_input_weight(d, &assets)
            .ok_or_else(|| FederationError::Descriptor("members cannot satisfy it".into()))
    }

    /// [`Self::spend_weight_estimate`] in virtual bytes, rounded up: what a
    /// deposit is charged at the agreed fee rate when it is minted.
    pub fn spend_vbytes_estimate(&self) -> u64 {
        self.spend_weight_estimate().to_vbytes_ceil()
    }
}

/// `keys` as miniscript descriptor keys (planning assets).
pub(crate) fn descriptor_keys(keys: &[PublicKey]) -> Vec<miniscript::DescriptorPublicKey> {
    keys.iter()
        .map(|k| miniscript::DescriptorPublicKey::from(bitcoin::PublicKey::new(*k)))
        .collect()
}

/// Weight one input spending `d` adds when satisfied with `assets`: the
/// plan's stack (each signature 72 bytes + push), the witness script (one
/// more item) and the non-witness part, 41 bytes x 4: outpoint (32 + 4),
/// empty scriptSig (1), sequence (4). None if `assets` cannot satisfy it.
pub(crate) fn planned_input_weight(
    d: crate::descriptor::FedDescriptor,
    assets: &miniscript::plan::Assets,
) -> Option<Weight> {
    let script_len = d.explicit_script().ok()?.len() as u64;
    let plan = d.plan(assets).ok()?;
    let items = plan.witness_template().len() as u64;
    let witness = plan.witness_size() as u64 - compact_size_len(items)
        + compact_size_len(items + 1)
        + compact_size_len(script_len)
        + script_len;
    Some(Weight::from_non_witness_data_size(41) + Weight::from_witness_data_size(witness))
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

    /// Length of `f`'s witness script (the same for every tweak).
    pub(crate) fn witness_script_len(f: &Federation) -> u64 {
        f.witness_script(&crate::deposit::Tweak::Change)
            .unwrap()
            .len() as u64
    }

    /// Deterministic backup secret key number `i` (distinct from members').
    pub(crate) fn backup_secret(i: usize) -> SecretKey {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        b[0] = 0x77;
        SecretKey::from_slice(&b).expect("constant in range")
    }

    /// [`federation`] with an emergency branch of `k` of `j` backup keys after `csv` blocks.
    pub(crate) fn federation_with_backup(
        m: usize,
        n: usize,
        k: usize,
        j: usize,
        csv: u16,
    ) -> (Federation, Vec<SecretKey>, Vec<SecretKey>) {
        let secp = Secp256k1::new();
        let (f, secrets) = federation(m, n);
        let backups: Vec<SecretKey> = (0..j).map(backup_secret).collect();
        let keys = backups.iter().map(|s| s.public_key(&secp)).collect();
        (f.with_emergency(keys, k, csv).unwrap(), secrets, backups)
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
        assert_eq!(witness_script_len(&f), 105);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(418));
        assert_eq!(f.spend_vbytes_estimate(), 105);
    }

    /// Hand computation, 3-of-4: script = 1 + 4*34 + 1 + 1 = 139 bytes;
    /// witness = 1 + 1 + 3*73 + 1 + 139 = 361 WU; 164 + 361 = 525 WU
    /// = 131.25 vB, rounded up to 132.
    #[test]
    fn spend_estimate_3_of_4_matches_hand_computation() {
        let (f, _) = federation(3, 4);
        assert_eq!(witness_script_len(&f), 139);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(525));
        assert_eq!(f.spend_vbytes_estimate(), 132);
    }

    /// Hand computation, 11-of-15: script = 1 + 15*34 + 1 + 1 = 513 bytes,
    /// whose length needs a 3-byte compact size; witness = 1 + 1 + 11*73 + 3
    /// + 513 = 1321 WU; 164 + 1321 = 1485 WU = 371.25 vB, rounded up to 372.
    #[test]
    fn spend_estimate_11_of_15_matches_hand_computation() {
        let (f, _) = federation(11, 15);
        assert_eq!(witness_script_len(&f), 513);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(1485));
        assert_eq!(f.spend_vbytes_estimate(), 372);
    }

    /// With a 2-of-3 emergency branch after 8,064 blocks, 3-of-4: script =
    /// 139 (multi) + 2 (IFDUP NOTIF) + 105 (v:multi: 1 + 3*34 + 1 + 1) + 4
    /// (push of 8064 as 2 bytes, CSV) + 1 (ENDIF) = 251; the normal witness is
    /// the same stack as before: 1 + 1 + 3*73 + 1 + 251 = 473 WU; 164 + 473
    /// = 637 WU = 159.25 vB, rounded up to 160 (was 132 without the branch).
    #[test]
    fn spend_estimate_3_of_4_with_backup_matches_hand_computation() {
        let (f, _, _) = federation_with_backup(3, 4, 2, 3, DEFAULT_EMERGENCY_CSV_BLOCKS);
        assert_eq!(witness_script_len(&f), 251);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(637));
        assert_eq!(f.spend_vbytes_estimate(), 160);
    }

    /// 11-of-15 with 2-of-3 backup: script = 513 + 2 + 105 + 4 + 1 = 625;
    /// witness = 1 + 1 + 11*73 + 3 + 625 = 1433 WU; 164 + 1433 = 1597 WU =
    /// 399.25 vB, rounded up to 400 (was 372).
    #[test]
    fn spend_estimate_11_of_15_with_backup_matches_hand_computation() {
        let (f, _, _) = federation_with_backup(11, 15, 2, 3, DEFAULT_EMERGENCY_CSV_BLOCKS);
        assert_eq!(witness_script_len(&f), 625);
        assert_eq!(f.spend_weight_estimate(), Weight::from_wu(1597));
        assert_eq!(f.spend_vbytes_estimate(), 400);
    }

    #[test]
    fn bad_emergency_branches_are_rejected() {
        let secp = Secp256k1::new();
        let (f, secrets) = federation(2, 3);
        let b: Vec<PublicKey> = (0..3).map(|i| backup_secret(i).public_key(&secp)).collect();
        assert_eq!(
            f.clone().with_emergency(vec![], 1, 10),
            Err(FederationError::BackupKeyCount { j: 0 })
        );
        for k in [0, 4] {
            assert_eq!(
                f.clone().with_emergency(b.clone(), k, 10),
                Err(FederationError::BadBackupThreshold { k, j: 3 })
            );
        }
        assert_eq!(
            f.clone().with_emergency(b.clone(), 2, 0),
            Err(FederationError::ZeroTimelock)
        );
        let member = secrets[1].public_key(&secp);
        assert_eq!(
            f.clone().with_emergency(vec![b[0], member], 1, 10),
            Err(FederationError::DuplicateBackupKey { key: member })
        );
        assert_eq!(
            f.clone().with_emergency(vec![b[0], b[1], b[0]], 1, 10),
            Err(FederationError::DuplicateBackupKey { key: b[0] })
        );
        let g = f.with_emergency(b, 2, 65535).unwrap();
        let e = g.emergency().unwrap();
        assert_eq!(
            (e.threshold(), e.keys().len(), e.csv_blocks()),
            (2, 3, 65535)
        );
    }

    /// 17..20 are pushed as one data byte, not an opcode: 2 bytes each.
    #[test]
    fn spend_estimate_17_of_20_counts_two_byte_number_pushes() {
        let (f, _) = federation(17, 20);
        assert_eq!(witness_script_len(&f), 2 + 20 * 34 + 2 + 1);
    }
}
