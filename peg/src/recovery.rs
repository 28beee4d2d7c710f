//! Emergency recovery: sweeping the federation's outputs with the genesis
//! backup keys once their relative timelock has passed, for when the
//! federation is gone.
//!
//! Pure: the caller finds the outputs (e.g. with bitcoind's `scantxoutset`,
//! see [`crate::chain::RpcChain::scan_descriptors`]) and broadcasts. Here we
//! count the blocks until each output's emergency branch opens, build the
//! sweep as a PSBT (version 2, every input's `nSequence` = the timelock, one
//! output), sign it with backup secret keys (each tweaked for its input's
//! address), and finalize it with miniscript's PSBT finalizer, which picks
//! the emergency branch because only backup signatures are present.
//!
//! Each input records which federation address it spends (the tweak) in a
//! proprietary PSBT field (prefix `fedpeg`, subtype 0: `0x00` for change,
//! `0x01 || account[32]` for a deposit), so a PSBT exported here can be
//! signed later, by this code on an offline machine, with nothing else than
//! the genesis and the backup key files.

use crate::deposit::{tweaked_secret_key, Tweak, TweakError};
use crate::federation::{compact_size_len, descriptor_keys, planned_input_weight, Federation};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{self, raw::ProprietaryKey, Psbt};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, relative, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Weight,
    Witness,
};

/// Smallest sweep output we build; less would not relay.
pub const SWEEP_DUST_LIMIT_SATS: u64 = 546;

/// Most weight one sweep may have: below Bitcoin Core's 400,000 WU standard
/// limit, with room for the transaction's own fields.
pub const MAX_SWEEP_WEIGHT: u64 = 350_000;

/// Proprietary PSBT key prefix under which each input's tweak is recorded.
pub const PSBT_PREFIX: &[u8] = b"fedpeg";

/// A federation output to sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryInput {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
    /// Which federation address it pays.
    pub tweak: Tweak,
    /// Height of the block that confirmed it.
    pub confirmed_height: u64,
}

/// Why a sweep could not be built, signed or finalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// Genesis has no emergency branch: no backup key can ever spend.
    #[error("this federation's genesis has no emergency branch (no backup keys); its coins can only be spent by the members")]
    NoEmergencyBranch,
    /// Nothing to sweep.
    #[error(
        "no federation outputs to sweep; check the accounts scanned and that bitcoind is synced"
    )]
    NoInputs,
    /// An output's timelock has not passed.
    #[error(
        "output {outpoint} can be swept only after {blocks} more block(s); wait, or leave it out"
    )]
    NotYetOpen {
        /// The output.
        outpoint: OutPoint,
        /// Blocks still to be mined.
        blocks: u64,
    },
    /// The fee would eat the whole sweep.
    #[error("the fee of {fee} sats at {rate} sat/vB leaves less than {SWEEP_DUST_LIMIT_SATS} sats of the {total} sats swept; use a lower fee rate")]
    FeeTooHigh {
        /// Sats swept.
        total: u64,
        /// Fee in sats.
        fee: u64,
        /// Fee rate asked for.
        rate: u64,
    },
    /// The fee rate is zero or absurd.
    #[error("{got} inputs make a sweep over the standard size; one sweep takes at most {most} (sweep in parts)")]
    TooManyInputs {
        /// Inputs given.
        got: usize,
        /// Most per sweep.
        most: usize,
    },
    #[error("fee rate {0} sat/vB is outside 1..=10000")]
    BadFeeRate(u64),
    /// A secret key is not one of the backup keys.
    #[error("backup key #{index} (public key {public}) is not one of this genesis's backup keys; check the key file and the genesis")]
    NotABackupKey {
        /// Position of the key among those given (0-based).
        index: usize,
        /// Its (untweaked) public key.
        public: bitcoin::secp256k1::PublicKey,
    },
    /// The PSBT is not one this tool made for this federation.
    #[error("the PSBT's transaction {0}; only sweeps made by `fedpeg recover` can be signed")]
    BadSweep(String),
    #[error("the sweep pays {fee} sats in fees ({rate} sat/vB over about {vbytes} vB), above the {max} sat/vB you allow (--fee-rate); refusing to sign it")]
    SweepFeeTooHigh {
        /// Fee the PSBT leaves (inputs minus output).
        fee: u64,
        /// That fee per planned vbyte.
        rate: u64,
        /// Planned size.
        vbytes: u64,
        /// The most the holder allows.
        max: u64,
    },
    #[error("PSBT input {input}: {reason}")]
    BadPsbt {
        /// Input index.
        input: usize,
        /// What is wrong.
        reason: String,
    },
    /// Not enough backup signatures to finalize.
    #[error("PSBT input {input} has {got} backup signature(s); {needed} are needed. Sign it with more backup keys (--backup-key, or another holder's `fedpeg recover --psbt-in`)")]
    NotEnoughSignatures {
        /// Input index.
        input: usize,
        /// Signatures present.
        got: usize,
        /// Signatures needed.
        needed: usize,
    },
    /// Miniscript could not finalize (should not happen once the counts check).
    #[error("the PSBT could not be finalized: {0}")]
    Finalize(String),
    /// A tweak failed (probability about 2^-128).
    #[error(transparent)]
    Tweak(#[from] TweakError),
}

impl Federation {
    /// Blocks still to be mined before an output confirmed at
    /// `confirmed_height` can be spent through the emergency branch, with
    /// the best chain at `tip`; None without an emergency branch.
    ///
    /// BIP68: a spend with `nSequence = N` is valid in a block at height
    /// `h >= confirmed_height + N`; the next block is `tip + 1`, so bitcoind
    /// accepts the sweep into its mempool once this is 0.
    pub fn emergency_blocks_remaining(&self, confirmed_height: u64, tip: u64) -> Option<u64> {
        let n = u64::from(self.emergency()?.csv_blocks());
        Some((confirmed_height + n).saturating_sub(tip + 1))
    }

    /// Most inputs one sweep may spend within [`MAX_SWEEP_WEIGHT`] (at
    /// least 1); 0 without an emergency branch.
    pub fn max_sweep_inputs(&self) -> usize {
        self.emergency_spend_weight()
            .map_or(0, |w| (MAX_SWEEP_WEIGHT / w.to_wu().max(1)).max(1) as usize)
    }

    /// Weight one input spent through the emergency branch adds (from the
    /// descriptor's plan with the backup keys and the timelock as assets;
    /// signatures sized at 72 bytes); None without an emergency branch.
    pub fn emergency_spend_weight(&self) -> Option<Weight> {
        use miniscript::plan::Assets;
        let e = self.emergency()?;
        let d = self.descriptor_over(self.keys(), e.keys()).ok()?;
        let assets = Assets::new()
            .add(descriptor_keys(e.keys()))
            .older(relative::LockTime::from_height(e.csv_blocks()));
        planned_input_weight(d, &assets)
    }

    /// The unsigned sweep of `inputs` to `to` at `fee_rate` sat/vB, as a
    /// PSBT carrying each input's witness UTXO, witness script and tweak.
    /// Refuses inputs whose timelock is still closed at `tip`.
    pub fn emergency_sweep_psbt(
        &self,
        inputs: &[RecoveryInput],
        to: &ScriptBuf,
        fee_rate: u64,
        tip: u64,
    ) -> Result<Psbt, RecoveryError> {
        let e = self.emergency().ok_or(RecoveryError::NoEmergencyBranch)?;
        if inputs.is_empty() {
            return Err(RecoveryError::NoInputs);
        }
        if inputs.len() > self.max_sweep_inputs() {
            return Err(RecoveryError::TooManyInputs {
                got: inputs.len(),
                most: self.max_sweep_inputs(),
            });
        }
        if fee_rate == 0 || fee_rate > 10_000 {
            return Err(RecoveryError::BadFeeRate(fee_rate));
        }
        for i in inputs {
            let blocks = self
                .emergency_blocks_remaining(i.confirmed_height, tip)
                .unwrap_or(0);
            if blocks > 0 {
                return Err(RecoveryError::NotYetOpen {
                    outpoint: i.outpoint,
                    blocks,
                });
            }
        }
        let per_input = self
            .emergency_spend_weight()
            .ok_or(RecoveryError::NoEmergencyBranch)?;
        let out_bytes = crate::pegout::output_bytes(to);
        let base = 4 + 4 + compact_size_len(inputs.len() as u64) + 1 + out_bytes;
        let weight = Weight::from_non_witness_data_size(base)
            + Weight::from_wu(2)
            + per_input * inputs.len() as u64;
        let fee = weight.to_vbytes_ceil().saturating_mul(fee_rate);
        let total: u64 = inputs.iter().map(|i| i.amount.to_sat()).sum();
        let value = total
            .checked_sub(fee)
            .filter(|v| *v >= SWEEP_DUST_LIMIT_SATS)
            .ok_or(RecoveryError::FeeTooHigh {
                total,
                fee,
                rate: fee_rate,
            })?;
        let sequence = Sequence::from_height(e.csv_blocks());
        let tx = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: inputs
                .iter()
                .map(|i| TxIn {
                    previous_output: i.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: to.clone(),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| RecoveryError::BadPsbt {
            input: 0,
            reason: e.to_string(),
        })?;
        for (n, i) in inputs.iter().enumerate() {
            let input = &mut psbt.inputs[n];
            input.witness_utxo = Some(TxOut {
                value: i.amount,
                script_pubkey: self.script_pubkey(&i.tweak)?,
            });
            input.witness_script = Some(self.witness_script(&i.tweak)?);
            input.sighash_type = Some(EcdsaSighashType::All.into());
            input
                .proprietary
                .insert(tweak_key(), encode_tweak(&i.tweak));
        }
        Ok(psbt)
    }

    /// Adds the signatures of `secrets` (backup secret keys, untweaked) to
    /// every input of `psbt` it can sign. Each input's address is re-derived
    /// from its recorded tweak and must match its witness UTXO and witness
    /// script: we sign only what we derived ourselves from the genesis.
    /// Returns the number of signatures added.
    pub fn sign_emergency_psbt(
        &self,
        psbt: &mut Psbt,
        secrets: &[SecretKey],
    ) -> Result<usize, RecoveryError> {
        let e = self.emergency().ok_or(RecoveryError::NoEmergencyBranch)?;
        let secp = Secp256k1::new();
        for (index, s) in secrets.iter().enumerate() {
            let public = s.public_key(&secp);
            if !e.keys().contains(&public) {
                return Err(RecoveryError::NotABackupKey { index, public });
            }
        }
        let inputs = self.check_psbt(psbt)?;
        let mut added = 0;
        let tx = psbt.unsigned_tx.clone();
        let mut cache = SighashCache::new(&tx);
        for (n, (tweak, amount)) in inputs.iter().enumerate() {
            let script = self.witness_script(tweak)?;
            let hash = cache
                .p2wsh_signature_hash(n, &script, *amount, EcdsaSighashType::All)
                .map_err(|e| RecoveryError::BadPsbt {
                    input: n,
                    reason: e.to_string(),
                })?;
            let msg = Message::from_digest(hash.to_byte_array());
            for s in secrets {
                let key = tweaked_secret_key(s, tweak)?;
                let sig = bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&msg, &key));
                let pk = bitcoin::PublicKey::new(key.public_key(&secp));
                if psbt.inputs[n].partial_sigs.insert(pk, sig).is_none() {
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    /// Checks every input of `psbt` against the federation (tweak recorded,
    /// witness UTXO and script ours, sequence = the timelock) and returns
    /// each input's tweak and amount.
    fn check_psbt(&self, psbt: &Psbt) -> Result<Vec<(Tweak, Amount)>, RecoveryError> {
        let e = self.emergency().ok_or(RecoveryError::NoEmergencyBranch)?;
        let bad = |input: usize, reason: &str| RecoveryError::BadPsbt {
            input,
            reason: reason.to_string(),
        };
        if psbt.inputs.is_empty() {
            return Err(RecoveryError::NoInputs);
        }
        let tx = &psbt.unsigned_tx;
        if tx.version != Version::TWO {
            return Err(RecoveryError::BadSweep(format!(
                "has version {} (a timelocked spend needs 2)",
                tx.version.0
            )));
        }
        if tx.lock_time != absolute::LockTime::ZERO {
            return Err(RecoveryError::BadSweep("has a lock time".into()));
        }
        if tx.input.len() != psbt.inputs.len() {
            return Err(RecoveryError::BadSweep(
                "and its input list differ in length".into(),
            ));
        }
        let mut spent = std::collections::HashSet::new();
        if !tx.input.iter().all(|i| spent.insert(i.previous_output)) {
            return Err(RecoveryError::BadSweep("spends an output twice".into()));
        }
        let mut out = Vec::new();
        for (n, input) in psbt.inputs.iter().enumerate() {
            let tweak = input
                .proprietary
                .get(&tweak_key())
                .and_then(|v| decode_tweak(v))
                .ok_or_else(|| {
                    bad(
                        n,
                        "no fedpeg tweak recorded; only PSBTs made by `fedpeg recover` can be signed",
                    )
                })?;
            let utxo = input
                .witness_utxo
                .as_ref()
                .ok_or_else(|| bad(n, "no witness UTXO"))?;
            if utxo.script_pubkey != self.script_pubkey(&tweak)? {
                return Err(bad(
                    n,
                    "its output is not the federation address its tweak says; not made for this genesis",
                ));
            }
            if input.witness_script.as_ref() != Some(&self.witness_script(&tweak)?) {
                return Err(bad(n, "its witness script is not the federation's"));
            }
            let seq = psbt.unsigned_tx.input.get(n).map(|i| i.sequence);
            if seq != Some(Sequence::from_height(e.csv_blocks())) {
                return Err(bad(n, "its nSequence is not the emergency timelock"));
            }
            out.push((tweak, utxo.value));
        }
        Ok(out)
    }

    /// The sweep's fee (its inputs' witness UTXO amounts, which each
    /// signature commits to, minus its outputs) and its planned size in
    /// vbytes; refused above `max_rate` sat/vB, so a holder never signs a
    /// sweep that another holder (or whoever carried the file) turned into
    /// a gift to miners.
    pub fn check_sweep_fee(&self, psbt: &Psbt, max_rate: u64) -> Result<(u64, u64), RecoveryError> {
        let inputs = self.check_psbt(psbt)?;
        let total_in = inputs
            .iter()
            .fold(0u64, |t, (_, a)| t.saturating_add(a.to_sat()));
        let total_out = psbt
            .unsigned_tx
            .output
            .iter()
            .fold(0u64, |t, o| t.saturating_add(o.value.to_sat()));
        let fee = total_in
            .checked_sub(total_out)
            .ok_or_else(|| RecoveryError::BadSweep("pays out more than it spends".into()))?;
        let per_input = self
            .emergency_spend_weight()
            .ok_or(RecoveryError::NoEmergencyBranch)?;
        let out_bytes: u64 = psbt
            .unsigned_tx
            .output
            .iter()
            .map(|o| crate::pegout::output_bytes(&o.script_pubkey))
            .sum();
        let n = psbt.inputs.len() as u64;
        let base = 4
            + 4
            + compact_size_len(n)
            + compact_size_len(psbt.unsigned_tx.output.len() as u64)
            + out_bytes;
        let vbytes =
            (Weight::from_non_witness_data_size(base) + Weight::from_wu(2) + per_input * n)
                .to_vbytes_ceil();
        let rate = fee / vbytes.max(1);
        if rate > max_rate {
            return Err(RecoveryError::SweepFeeTooHigh {
                fee,
                rate,
                vbytes,
                max: max_rate,
            });
        }
        Ok((fee, vbytes))
    }

    /// Finalizes a signed sweep with miniscript's PSBT finalizer and
    /// extracts the transaction, after checking each input carries enough
    /// backup signatures.
    pub fn finalize_emergency_psbt(&self, mut psbt: Psbt) -> Result<Transaction, RecoveryError> {
        use miniscript::psbt::PsbtExt;
        let e = self.emergency().ok_or(RecoveryError::NoEmergencyBranch)?;
        let inputs = self.check_psbt(&psbt)?;
        for (n, (tweak, _)) in inputs.iter().enumerate() {
            let backups = self.tweaked_backup_keys(tweak)?;
            let got = psbt.inputs[n]
                .partial_sigs
                .keys()
                .filter(|k| backups.contains(&k.inner))
                .count();
            if got < e.threshold() {
                return Err(RecoveryError::NotEnoughSignatures {
                    input: n,
                    got,
                    needed: e.threshold(),
                });
            }
        }
        let secp = Secp256k1::verification_only();
        psbt.finalize_mut(&secp).map_err(|errs| {
            RecoveryError::Finalize(
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(psbt.extract_tx_unchecked_fee_rate())
    }
}

fn tweak_key() -> ProprietaryKey {
    ProprietaryKey {
        prefix: PSBT_PREFIX.to_vec(),
        subtype: 0,
        key: Vec::new(),
    }
}

fn encode_tweak(t: &Tweak) -> Vec<u8> {
    match t {
        Tweak::Change => vec![0],
        Tweak::Deposit(a) => {
            let mut v = vec![1];
            v.extend_from_slice(a);
            v
        }
    }
}

fn decode_tweak(v: &[u8]) -> Option<Tweak> {
    match v {
        [0] => Some(Tweak::Change),
        [1, rest @ ..] => Some(Tweak::Deposit(rest.try_into().ok()?)),
        _ => None,
    }
}

/// Reads a PSBT from base64 (what `--psbt-out` writes and wallets exchange).
pub fn psbt_from_base64(s: &str) -> Result<Psbt, psbt::PsbtParseError> {
    s.trim().parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::tests::{federation, federation_with_backup};

    fn inputs(f: &Federation, n: u8) -> Vec<RecoveryInput> {
        let _ = f;
        (0..n)
            .map(|i| RecoveryInput {
                outpoint: OutPoint::new(bitcoin::Txid::from_byte_array([i + 1; 32]), 0),
                amount: Amount::from_sat(100_000),
                tweak: if i == 0 {
                    Tweak::Change
                } else {
                    Tweak::Deposit([i; 32])
                },
                confirmed_height: 100,
            })
            .collect()
    }

    fn dest() -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20]))
    }

    #[test]
    fn blocks_remaining_counts_to_the_first_block_the_spend_is_valid_in() {
        let (f, _, _) = federation_with_backup(2, 3, 2, 3, 10);
        // Confirmed at 100: valid in block 110, so once the tip is 109.
        assert_eq!(f.emergency_blocks_remaining(100, 100), Some(9));
        assert_eq!(f.emergency_blocks_remaining(100, 108), Some(1));
        assert_eq!(f.emergency_blocks_remaining(100, 109), Some(0));
        assert_eq!(f.emergency_blocks_remaining(100, 500), Some(0));
        let (plain, _) = federation(2, 3);
        assert_eq!(plain.emergency_blocks_remaining(100, 100), None);
    }

    #[test]
    fn a_sweep_is_signed_by_k_backup_keys_and_finalized_on_the_emergency_branch() {
        let (f, members, backups) = federation_with_backup(3, 4, 2, 3, 10);
        let ins = inputs(&f, 3);
        let mut psbt = f.emergency_sweep_psbt(&ins, &dest(), 2, 109).unwrap();
        assert!(psbt
            .unsigned_tx
            .input
            .iter()
            .all(|i| i.sequence == Sequence::from_height(10)));
        // Through base64, as `--psbt-out`/`--psbt-in` would.
        psbt = psbt_from_base64(&psbt.to_string()).unwrap();
        // One key is not enough.
        assert_eq!(f.sign_emergency_psbt(&mut psbt, &backups[2..]).unwrap(), 3);
        assert_eq!(
            f.finalize_emergency_psbt(psbt.clone()),
            Err(RecoveryError::NotEnoughSignatures {
                input: 0,
                got: 1,
                needed: 2
            })
        );
        assert_eq!(f.sign_emergency_psbt(&mut psbt, &backups[..1]).unwrap(), 3);
        let tx = f.finalize_emergency_psbt(psbt).unwrap();
        let per_input = f.emergency_spend_weight().unwrap();
        for (i, input) in tx.input.iter().enumerate() {
            // Two signatures, the empty element of v:multi, 3 + 1 empties
            // dissatisfying the members' multi, the script.
            let w: Vec<&[u8]> = input.witness.iter().collect();
            assert_eq!(w.len(), 1 + 2 + 4 + 1, "input {i}");
            assert_eq!(
                w[w.len() - 1],
                f.witness_script(&ins[i].tweak).unwrap().as_bytes()
            );
            assert!(input.segwit_weight() <= per_input);
        }
        // The fee paid covers the weight at 2 sat/vB.
        let fee = 300_000 - tx.output[0].value.to_sat();
        assert!(
            fee >= tx.vsize() as u64 * 2,
            "fee {fee} for {} vB",
            tx.vsize()
        );
        // A member key is not a backup key.
        let mut psbt = f.emergency_sweep_psbt(&ins, &dest(), 2, 109).unwrap();
        assert!(matches!(
            f.sign_emergency_psbt(&mut psbt, &members[..1]),
            Err(RecoveryError::NotABackupKey { index: 0, .. })
        ));
    }

    #[test]
    fn bad_sweeps_are_refused_with_reasons() {
        let (f, _, backups) = federation_with_backup(2, 3, 2, 3, 10);
        let ins = inputs(&f, 2);
        assert_eq!(
            f.emergency_sweep_psbt(&ins, &dest(), 2, 108),
            Err(RecoveryError::NotYetOpen {
                outpoint: ins[0].outpoint,
                blocks: 1
            })
        );
        assert_eq!(
            f.emergency_sweep_psbt(&[], &dest(), 2, 200),
            Err(RecoveryError::NoInputs)
        );
        assert_eq!(
            f.emergency_sweep_psbt(&ins, &dest(), 0, 200),
            Err(RecoveryError::BadFeeRate(0))
        );
        assert!(matches!(
            f.emergency_sweep_psbt(&ins, &dest(), 10_000, 200),
            Err(RecoveryError::FeeTooHigh { .. })
        ));
        let (plain, _) = federation(2, 3);
        assert_eq!(
            plain.emergency_sweep_psbt(&ins, &dest(), 2, 200),
            Err(RecoveryError::NoEmergencyBranch)
        );
        // A PSBT whose output is not the address its tweak says is refused.
        let mut psbt = f.emergency_sweep_psbt(&ins, &dest(), 2, 200).unwrap();
        psbt.inputs[1]
            .proprietary
            .insert(tweak_key(), encode_tweak(&Tweak::Deposit([9; 32])));
        assert!(matches!(
            f.sign_emergency_psbt(&mut psbt, &backups),
            Err(RecoveryError::BadPsbt { input: 1, .. })
        ));
        // No tweak recorded (a foreign PSBT).
        let mut psbt = f.emergency_sweep_psbt(&ins, &dest(), 2, 200).unwrap();
        psbt.inputs[0].proprietary.clear();
        let e = f.sign_emergency_psbt(&mut psbt, &backups).unwrap_err();
        assert!(e.to_string().contains("no fedpeg tweak"), "{e}");
        // A changed sequence (e.g. to make the sweep look final) is refused.
        let mut psbt = f.emergency_sweep_psbt(&ins, &dest(), 2, 200).unwrap();
        psbt.unsigned_tx.input[0].sequence = Sequence::ZERO;
        assert!(matches!(
            f.sign_emergency_psbt(&mut psbt, &backups),
            Err(RecoveryError::BadPsbt { input: 0, .. })
        ));
        assert!(psbt_from_base64("not a psbt").is_err());
        // More inputs than a standard transaction holds.
        let most = f.max_sweep_inputs();
        assert!(most > 100, "{most}");
        let many: Vec<RecoveryInput> = (0..=most as u32)
            .map(|i| RecoveryInput {
                outpoint: OutPoint::new(bitcoin::Txid::from_byte_array([1; 32]), i),
                ..ins[0].clone()
            })
            .collect();
        assert_eq!(
            f.emergency_sweep_psbt(&many, &dest(), 2, 200),
            Err(RecoveryError::TooManyInputs {
                got: most + 1,
                most
            })
        );
        let psbt = f
            .emergency_sweep_psbt(&many[..most], &dest(), 1, 200)
            .unwrap();
        let weight = f.emergency_spend_weight().unwrap().to_wu() * most as u64;
        assert!(weight <= MAX_SWEEP_WEIGHT && psbt.inputs.len() == most);
    }

    /// What a dishonest co-holder (or whoever carried the file) could do to
    /// a sweep that still pays the agreed address: a huge fee, another
    /// version or lock time, an input twice. Each is refused before signing.
    #[test]
    fn a_tampered_sweep_is_refused_before_signing() {
        let (f, _, _) = federation_with_backup(2, 3, 2, 3, 10);
        let ins = inputs(&f, 2);
        let honest = f.emergency_sweep_psbt(&ins, &dest(), 5, 200).unwrap();
        let (fee, vbytes) = f.check_sweep_fee(&honest, 5).unwrap();
        assert!(
            fee >= 5 * vbytes && fee < 6 * vbytes,
            "{fee} for {vbytes} vB"
        );
        assert!(matches!(
            f.check_sweep_fee(&honest, 4),
            Err(RecoveryError::SweepFeeTooHigh { max: 4, .. })
        ));
        // 99 % to the miners, same address.
        let mut gift = honest.clone();
        gift.unsigned_tx.output[0].value = Amount::from_sat(2_000);
        assert!(matches!(
            f.check_sweep_fee(&gift, 5),
            Err(RecoveryError::SweepFeeTooHigh { .. })
        ));
        let mut v1 = honest.clone();
        v1.unsigned_tx.version = Version::ONE;
        let mut locked = honest.clone();
        locked.unsigned_tx.lock_time = absolute::LockTime::from_height(500_000).unwrap();
        let mut twice = honest.clone();
        twice.unsigned_tx.input[1].previous_output = twice.unsigned_tx.input[0].previous_output;
        for bad in [v1, locked, twice] {
            assert!(
                matches!(f.check_sweep_fee(&bad, 5), Err(RecoveryError::BadSweep(_))),
                "{:?}",
                f.check_sweep_fee(&bad, 5)
            );
        }
    }
}
