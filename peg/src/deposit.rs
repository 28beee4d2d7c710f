//! Per-account deposit addresses and the federation's change address.
//!
//! Every address the federation controls is the federation descriptor (see
//! [`crate::descriptor`]: `m` of the members' keys, or after a relative
//! timelock `k` of the backup keys) with every key, members' and backup
//! keys alike, tweaked pay-to-contract style: `P_i' = P_i + t_i * G`, where
//! `t_i = H_tag(P_i || data)` is a BIP340-style tagged hash
//! (`SHA256(SHA256(tag) || SHA256(tag) || msg)`) of the member's 33-byte
//! compressed key and 32 bytes of data:
//!
//! - deposits of account `a`: tag `fedpeg/pegin`, data = `a` (the account's
//!   ed25519 public key), so the address itself binds the deposit to `a`;
//! - change of peg-out batches: tag `fedpeg/change`, data = 32 zero bytes.
//!   The distinct tag means no account can derive the change address.
//!
//! The member holding the secret `x_i` of `P_i` spends with `x_i + t_i`;
//! so does a backup-key holder with its own key.

use crate::descriptor::FedDescriptor;
use crate::federation::Federation;
use bitcoin::secp256k1::{PublicKey, Scalar, Secp256k1, SecretKey};
use bitcoin::{Address, ScriptBuf};
use sha2::{Digest, Sha256};
use std::fmt;

/// Tag of the deposit (peg-in) tweak.
pub const DEPOSIT_TAG: &str = "fedpeg/pegin";
/// Tag of the federation change tweak.
pub const CHANGE_TAG: &str = "fedpeg/change";

/// Why a key could not be tweaked. Both cases happen with probability
/// about 2^-128 per key; they are errors rather than panics because the
/// keys come from genesis and the accounts from users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TweakError {
    /// The tagged hash is not below the secp256k1 group order.
    #[error("the {tag} tweak of peg key {key} is not below the curve order; this key cannot receive this tweak, use another account or key")]
    ScalarOutOfRange {
        /// Tag of the tweak.
        tag: &'static str,
        /// Untweaked member key.
        key: PublicKey,
    },
    /// Adding the tweak gives the point at infinity (or a zero secret key).
    #[error("the {tag} tweak of peg key {key} cancels the key out; this key cannot receive this tweak, use another account or key")]
    Infinity {
        /// Tag of the tweak.
        tag: &'static str,
        /// Untweaked member key.
        key: PublicKey,
    },
    /// The tweaked keys do not form a sane descriptor (two tweaked keys
    /// collide: probability about 2^-128).
    #[error("the {tag} descriptor cannot be formed: {reason}; use another account")]
    Descriptor {
        /// Tag of the tweak.
        tag: &'static str,
        /// What miniscript refused.
        reason: String,
    },
}

/// Which federation address a key is tweaked for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tweak {
    /// The deposit address of a sidechain account (its ed25519 public key).
    Deposit([u8; 32]),
    /// The federation's change address for peg-out batches.
    Change,
}

/// Shows the account in hex, as logs and test failures want it.
impl fmt::Debug for Tweak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tweak::Deposit(account) => {
                f.write_str("Deposit(")?;
                for b in account {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
            Tweak::Change => f.write_str("Change"),
        }
    }
}

impl Tweak {
    /// The tagged-hash tag of this tweak.
    pub fn tag(&self) -> &'static str {
        match self {
            Tweak::Deposit(_) => DEPOSIT_TAG,
            Tweak::Change => CHANGE_TAG,
        }
    }

    /// The 32 bytes hashed after the member key.
    fn data(&self) -> [u8; 32] {
        match self {
            Tweak::Deposit(account) => *account,
            Tweak::Change => [0u8; 32],
        }
    }

    /// The scalar `t = H_tag(key || data)` added to `key`.
    pub fn scalar(&self, key: &PublicKey) -> Result<Scalar, TweakError> {
        let hash = tagged_hash(self.tag().as_bytes(), &[&key.serialize(), &self.data()]);
        Scalar::from_be_bytes(hash).map_err(|_| TweakError::ScalarOutOfRange {
            tag: self.tag(),
            key: *key,
        })
    }
}

/// BIP340 tagged hash: `SHA256(SHA256(tag) || SHA256(tag) || msg)`, with
/// `msg` the concatenation of `parts`.
pub fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let tag_hash = Sha256::digest(tag);
    let mut h = Sha256::new();
    h.update(tag_hash);
    h.update(tag_hash);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The deposit tweak scalar of `account` for member key `key`.
pub fn tweak(account: &[u8; 32], key: &PublicKey) -> Result<Scalar, TweakError> {
    Tweak::Deposit(*account).scalar(key)
}

/// `key + t * G` for the tweak `tweak`.
pub fn tweaked_public_key(key: &PublicKey, tweak: &Tweak) -> Result<PublicKey, TweakError> {
    let t = tweak.scalar(key)?;
    key.add_exp_tweak(&Secp256k1::verification_only(), &t)
        .map_err(|_| TweakError::Infinity {
            tag: tweak.tag(),
            key: *key,
        })
}

/// `secret + t`: the secret key of [`tweaked_public_key`] of `secret`'s
/// public key, with which a member signs for that address.
pub fn tweaked_secret_key(secret: &SecretKey, tweak: &Tweak) -> Result<SecretKey, TweakError> {
    let key = secret.public_key(&Secp256k1::signing_only());
    let t = tweak.scalar(&key)?;
    secret.add_tweak(&t).map_err(|_| TweakError::Infinity {
        tag: tweak.tag(),
        key,
    })
}

impl Federation {
    /// The members' keys tweaked for `tweak`, in genesis order.
    pub fn tweaked_keys(&self, tweak: &Tweak) -> Result<Vec<PublicKey>, TweakError> {
        self.keys()
            .iter()
            .map(|k| tweaked_public_key(k, tweak))
            .collect()
    }

    /// The backup keys tweaked for `tweak`, in genesis order (empty
    /// without an emergency branch).
    pub fn tweaked_backup_keys(&self, tweak: &Tweak) -> Result<Vec<PublicKey>, TweakError> {
        self.emergency()
            .map(|e| e.keys())
            .unwrap_or(&[])
            .iter()
            .map(|k| tweaked_public_key(k, tweak))
            .collect()
    }

    /// The miniscript descriptor of the federation address for `tweak`:
    /// the one source of its script, address, weight and witness.
    pub fn output_descriptor(&self, tweak: &Tweak) -> Result<FedDescriptor, TweakError> {
        let members = self.tweaked_keys(tweak)?;
        let backups = self.tweaked_backup_keys(tweak)?;
        self.descriptor_over(&members, &backups)
            .map_err(|reason| TweakError::Descriptor {
                tag: tweak.tag(),
                reason,
            })
    }

    /// The federation descriptor over the untweaked keys, with checksum: the
    /// template every address is derived from (no one should pay to it).
    pub fn base_descriptor(&self) -> Result<String, TweakError> {
        let backups = self
            .emergency()
            .map(|e| e.keys().to_vec())
            .unwrap_or_default();
        self.descriptor_over(self.keys(), &backups)
            .map(|d| d.to_string())
            .map_err(|reason| TweakError::Descriptor {
                tag: "untweaked",
                reason,
            })
    }

    /// The witness script of the address for `tweak` (the descriptor's
    /// explicit script).
    pub fn witness_script(&self, tweak: &Tweak) -> Result<ScriptBuf, TweakError> {
        self.output_descriptor(tweak)?
            .explicit_script()
            .map_err(|e| TweakError::Descriptor {
                tag: tweak.tag(),
                reason: e.to_string(),
            })
    }

    /// The P2WSH output script of the address for `tweak`.
    pub fn script_pubkey(&self, tweak: &Tweak) -> Result<ScriptBuf, TweakError> {
        Ok(self.output_descriptor(tweak)?.script_pubkey())
    }

    /// The P2WSH address for `tweak` on the federation's network.
    pub fn address(&self, tweak: &Tweak) -> Result<Address, TweakError> {
        Ok(Address::p2wsh(&self.witness_script(tweak)?, self.network()))
    }

    /// The full descriptor with its checksum, as miniscript prints it:
    /// importable into Bitcoin Core (`deriveaddresses`, watch-only wallets).
    pub fn descriptor(&self, tweak: &Tweak) -> Result<String, TweakError> {
        Ok(self.output_descriptor(tweak)?.to_string())
    }

    /// Witness script of `account`'s deposit address.
    pub fn deposit_witness_script(&self, account: &[u8; 32]) -> Result<ScriptBuf, TweakError> {
        self.witness_script(&Tweak::Deposit(*account))
    }

    /// Output script of `account`'s deposit address.
    pub fn deposit_script_pubkey(&self, account: &[u8; 32]) -> Result<ScriptBuf, TweakError> {
        self.script_pubkey(&Tweak::Deposit(*account))
    }

    /// `account`'s deposit address: where a user sends bitcoin to peg in.
    pub fn deposit_address(&self, account: &[u8; 32]) -> Result<Address, TweakError> {
        self.address(&Tweak::Deposit(*account))
    }

    /// Descriptor (with checksum) of `account`'s deposit address.
    pub fn deposit_descriptor(&self, account: &[u8; 32]) -> Result<String, TweakError> {
        self.descriptor(&Tweak::Deposit(*account))
    }

    /// Output script peg-out change goes to.
    pub fn change_script_pubkey(&self) -> Result<ScriptBuf, TweakError> {
        self.script_pubkey(&Tweak::Change)
    }

    /// Address peg-out change goes to.
    pub fn change_address(&self) -> Result<Address, TweakError> {
        self.address(&Tweak::Change)
    }

    /// Descriptor (with checksum) of the change address.
    pub fn change_descriptor(&self) -> Result<String, TweakError> {
        self.descriptor(&Tweak::Change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::tests::federation;
    use bitcoin::hashes::Hash;
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::taproot::{LeafVersion, TapLeafHash};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
    };
    use proptest::prelude::*;

    /// Our tagged hash agrees with rust-bitcoin's BIP341 `TapLeaf` hash:
    /// tagged_hash("TapLeaf", leaf_version || compact_size(len) || script).
    #[test]
    fn tagged_hash_matches_rust_bitcoin_tapleaf_hash() {
        let script = ScriptBuf::from_bytes(vec![0x51, 0x52, 0x93]);
        let ours = tagged_hash(b"TapLeaf", &[&[0xc0, 3], script.as_bytes()]);
        let theirs = TapLeafHash::from_script(&script, LeafVersion::TapScript);
        assert_eq!(ours, theirs.to_byte_array());
    }

    #[test]
    fn tweaked_secret_matches_tweaked_public_for_members() {
        let secp = Secp256k1::new();
        let (f, secrets) = federation(3, 4);
        for tw in [Tweak::Deposit([9u8; 32]), Tweak::Change] {
            let keys = f.tweaked_keys(&tw).unwrap();
            for (s, k) in secrets.iter().zip(&keys) {
                assert_eq!(tweaked_secret_key(s, &tw).unwrap().public_key(&secp), *k);
            }
        }
    }

    #[test]
    fn deposit_tweak_equals_free_function() {
        let (f, _) = federation(1, 1);
        let a = [3u8; 32];
        assert_eq!(
            tweak(&a, &f.keys()[0]).unwrap(),
            Tweak::Deposit(a).scalar(&f.keys()[0]).unwrap()
        );
    }

    #[test]
    fn witness_script_is_sorted_multisig() {
        let (f, _) = federation(2, 3);
        let a = [1u8; 32];
        let script = f.deposit_witness_script(&a).unwrap();
        let mut sorted: Vec<[u8; 33]> = f
            .tweaked_keys(&Tweak::Deposit(a))
            .unwrap()
            .iter()
            .map(PublicKey::serialize)
            .collect();
        sorted.sort();
        let mut expected = vec![0x52];
        for k in &sorted {
            expected.push(33);
            expected.extend_from_slice(k);
        }
        expected.extend_from_slice(&[0x53, 0xae]);
        assert_eq!(script.as_bytes(), &expected[..]);
        assert_eq!(
            script.len() as u64,
            crate::federation::tests::witness_script_len(&f)
        );
        assert_eq!(
            f.deposit_script_pubkey(&a).unwrap(),
            f.deposit_address(&a).unwrap().script_pubkey()
        );
    }

    /// Key order in genesis does not change the address (sortedmulti).
    #[test]
    fn member_order_does_not_change_the_address() {
        let (f, _) = federation(2, 3);
        let mut keys = f.keys().to_vec();
        keys.reverse();
        let g = Federation::new(keys, 2, f.network()).unwrap();
        let a = [5u8; 32];
        assert_eq!(
            f.deposit_address(&a).unwrap(),
            g.deposit_address(&a).unwrap()
        );
        assert_eq!(f.change_address().unwrap(), g.change_address().unwrap());
    }

    #[test]
    fn twenty_key_script_pushes_20_as_data() {
        let (f, _) = federation(17, 20);
        let s = f.change_descriptor().unwrap();
        assert!(s.starts_with("wsh(sortedmulti(17,"), "{s}");
        let script = f.witness_script(&Tweak::Change).unwrap();
        let b = script.as_bytes();
        assert_eq!(&b[..2], &[0x01, 17]);
        assert_eq!(&b[b.len() - 3..], &[0x01, 20, 0xae]);
        assert_eq!(
            script.len() as u64,
            crate::federation::tests::witness_script_len(&f)
        );
    }

    #[test]
    fn tweak_debug_shows_account_hex() {
        assert_eq!(
            format!("{:?}", Tweak::Deposit([0xab; 32])),
            format!("Deposit({})", "ab".repeat(32))
        );
        assert_eq!(format!("{:?}", Tweak::Change), "Change");
    }

    #[test]
    fn change_address_differs_from_zero_account_deposit() {
        let (f, _) = federation(2, 3);
        assert_ne!(
            f.change_address().unwrap(),
            f.deposit_address(&[0u8; 32]).unwrap()
        );
    }

    #[test]
    fn descriptor_lists_sorted_keys_and_verifies() {
        let (f, _) = federation(2, 3);
        let a = [7u8; 32];
        let d = f.deposit_descriptor(&a).unwrap();
        let body = crate::descriptor::verify_checksum(&d).unwrap();
        let mut keys: Vec<String> = f
            .tweaked_keys(&Tweak::Deposit(a))
            .unwrap()
            .iter()
            .map(PublicKey::to_string)
            .collect();
        keys.sort();
        assert_eq!(body, format!("wsh(sortedmulti(2,{}))", keys.join(",")));
    }

    /// Backup keys get the same pay-to-contract tweak as member keys: the
    /// descriptor lists the tweaked backup keys, never the raw ones, so the
    /// address still binds the account; and neither members' nor backups'
    /// order in genesis changes it.
    #[test]
    fn backup_keys_are_tweaked_per_address_and_order_does_not_matter() {
        use crate::federation::tests::federation_with_backup;
        let secp = Secp256k1::new();
        let (f, members, backups) = federation_with_backup(3, 4, 2, 3, 10);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let da = f.deposit_descriptor(&a).unwrap();
        assert!(da.starts_with("wsh(or_d(multi(3,"), "{da}");
        assert!(
            da.contains("),and_v(v:multi(2,") && da.contains(",older(10))))#"),
            "{da}"
        );
        for s in &backups {
            let raw = s.public_key(&secp);
            assert!(!da.contains(&raw.to_string()), "raw backup key in {da}");
            let tweaked = tweaked_public_key(&raw, &Tweak::Deposit(a)).unwrap();
            assert!(da.contains(&tweaked.to_string()), "{da}");
            // The holder derives the secret of the tweaked key.
            assert_eq!(
                tweaked_secret_key(s, &Tweak::Deposit(a))
                    .unwrap()
                    .public_key(&secp),
                tweaked
            );
        }
        assert_eq!(f.tweaked_backup_keys(&Tweak::Change).unwrap().len(), 3);
        let addrs = [
            f.deposit_address(&a).unwrap(),
            f.deposit_address(&b).unwrap(),
            f.change_address().unwrap(),
        ];
        assert!(addrs[0] != addrs[1] && addrs[0] != addrs[2] && addrs[1] != addrs[2]);
        // Same keys in another order: same descriptor, byte for byte.
        let mut mk: Vec<PublicKey> = members.iter().map(|s| s.public_key(&secp)).collect();
        let mut bk: Vec<PublicKey> = backups.iter().map(|s| s.public_key(&secp)).collect();
        mk.rotate_left(1);
        bk.reverse();
        let g = Federation::new(mk, 3, f.network())
            .unwrap()
            .with_emergency(bk, 2, 10)
            .unwrap();
        assert_eq!(g.deposit_descriptor(&a).unwrap(), da);
        assert_eq!(
            g.change_descriptor().unwrap(),
            f.change_descriptor().unwrap()
        );
        // Without the branch the address differs (the branch is in the script).
        let (plain, _) = federation(3, 4);
        assert_ne!(plain.deposit_address(&a).unwrap(), addrs[0]);
        // The script pubkey is the P2WSH of the witness script.
        assert_eq!(
            f.deposit_script_pubkey(&a).unwrap(),
            ScriptBuf::new_p2wsh(&f.deposit_witness_script(&a).unwrap().wscript_hash())
        );
    }

    /// Our checksum code and miniscript's agree on every descriptor we print.
    #[test]
    fn miniscript_checksums_verify_with_our_bip380_code() {
        use crate::federation::tests::federation_with_backup;
        let (f, _, _) = federation_with_backup(11, 15, 2, 3, 8064);
        for tw in [Tweak::Change, Tweak::Deposit([3; 32])] {
            let d = f.descriptor(&tw).unwrap();
            assert!(crate::descriptor::verify_checksum(&d).is_ok(), "{d}");
        }
    }

    #[test]
    fn regtest_deposit_address_is_bech32_regtest() {
        let (f, _) = federation(2, 3);
        let addr = f.deposit_address(&[1u8; 32]).unwrap().to_string();
        assert!(addr.starts_with("bcrt1q") && addr.len() == 64, "{addr}");
    }

    /// Signs an input spending `f`'s output for `tweak` with the first `m`
    /// members, the way a batch signer will, and checks that the real
    /// witness is within the estimate (and equal to it with 72-byte sigs).
    fn signed_input(f: &Federation, secrets: &[SecretKey], tw: &Tweak) -> TxIn {
        let secp = Secp256k1::new();
        let script = f.witness_script(tw).unwrap();
        let value = Amount::from_sat(100_000);
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::all_zeros(), 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(90_000),
                script_pubkey: f.change_script_pubkey().unwrap(),
            }],
        };
        let sighash = SighashCache::new(&tx)
            .p2wsh_signature_hash(0, &script, value, EcdsaSighashType::All)
            .unwrap();
        let msg = bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array());
        // CHECKMULTISIG needs the signatures in the order of the keys.
        let mut sigs: Vec<([u8; 33], Vec<u8>)> = secrets[..f.threshold()]
            .iter()
            .map(|s| {
                let sk = tweaked_secret_key(s, tw).unwrap();
                let sig = bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&msg, &sk));
                (sk.public_key(&secp).serialize(), sig.to_vec())
            })
            .collect();
        sigs.sort();
        let mut w = Witness::new();
        w.push([]);
        for (_, s) in &sigs {
            w.push(s);
        }
        w.push(script.as_bytes());
        tx.input[0].witness = w;
        tx.input.remove(0)
    }

    #[test]
    fn spend_estimate_bounds_a_real_signed_input() {
        for (m, n) in [(1, 1), (2, 3), (3, 4), (11, 15), (17, 20)] {
            let (f, secrets) = federation(m, n);
            let tw = Tweak::Deposit([m as u8; 32]);
            let input = signed_input(&f, &secrets, &tw);
            let real = input.segwit_weight();
            let est = f.spend_weight_estimate();
            assert!(real <= est, "{m}-of-{n}: real {real} > estimate {est}");
            // Padding each signature to 72 bytes reaches the estimate exactly.
            let mut padded = Witness::new();
            for (i, el) in input.witness.iter().enumerate() {
                let is_sig = i >= 1 && i <= m;
                padded.push(if is_sig { vec![0u8; 72] } else { el.to_vec() });
            }
            let padded = TxIn {
                witness: padded,
                ..input
            };
            assert_eq!(padded.segwit_weight(), est, "{m}-of-{n}");
        }
    }

    fn secret_key() -> impl Strategy<Value = SecretKey> {
        any::<[u8; 32]>().prop_filter_map("not a secret key", |b| SecretKey::from_slice(&b).ok())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn tweaked_secret_and_public_keys_agree(sk in secret_key(), account in any::<[u8; 32]>(), change in any::<bool>()) {
            let secp = Secp256k1::new();
            let tw = if change { Tweak::Change } else { Tweak::Deposit(account) };
            let pk = tweaked_public_key(&sk.public_key(&secp), &tw).unwrap();
            prop_assert_eq!(tweaked_secret_key(&sk, &tw).unwrap().public_key(&secp), pk);
        }

        #[test]
        fn different_accounts_get_different_addresses(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), m in 1usize..=3) {
            prop_assume!(a != b);
            let (f, _) = federation(m, 3);
            prop_assert_ne!(f.deposit_address(&a).unwrap(), f.deposit_address(&b).unwrap());
        }

        #[test]
        fn deposit_and_change_tweaks_never_coincide(sk in secret_key(), account in any::<[u8; 32]>()) {
            let key = sk.public_key(&Secp256k1::new());
            prop_assert_ne!(Tweak::Deposit(account).scalar(&key).unwrap(), Tweak::Change.scalar(&key).unwrap());
            prop_assert_ne!(Tweak::Deposit([0u8; 32]).scalar(&key).unwrap(), Tweak::Change.scalar(&key).unwrap());
        }

        #[test]
        fn descriptors_carry_a_valid_checksum(account in any::<[u8; 32]>(), m in 1usize..=4) {
            let (f, _) = federation(m, 4);
            let d = f.deposit_descriptor(&account).unwrap();
            prop_assert!(crate::descriptor::verify_checksum(&d).is_ok(), "{}", d);
        }
    }
}
