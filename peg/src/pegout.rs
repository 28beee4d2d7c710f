//! Peg-out batch transactions: the unsigned transaction every member derives
//! from committed state, its size and fee, and the threshold signatures.
//!
//! A batch spends federation outputs (the federation descriptor with
//! tweaked keys, see [`crate::descriptor`] and [`crate::deposit`]) and pays the queued withdrawals, in withdrawal
//! order, then the change (if any) to the federation change address. Version
//! 2, lock time 0, every input signals replaceability (BIP125) so a stuck
//! batch can be fee-bumped on the same inputs.
//!
//! Members sign every input with segwit v0 ECDSA, `SIGHASH_ALL`, using their
//! peg secret tweaked for that input's address. Signatures are strict DER,
//! low-S, followed by the sighash byte `0x01` — exactly what goes on the
//! witness stack.

use crate::deposit::{tweaked_public_key, tweaked_secret_key, Tweak, TweakError};
use crate::federation::{compact_size_len, Federation};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Weight, Witness};
use miniscript::descriptor::DefiniteDescriptorKey;
use std::collections::BTreeMap;

/// Smallest change output the federation creates; less is left to the fee.
pub const CHANGE_DUST_LIMIT_SATS: u64 = 546;

/// An output of the federation a batch spends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInput {
    pub outpoint: OutPoint,
    /// Value in sats.
    pub amount: u64,
    /// Which federation address it pays.
    pub tweak: Tweak,
}

/// Why a signature set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("expected one signature per input ({expected}), got {got}")]
    Count { expected: usize, got: usize },
    #[error("signature for input {0} is not strict DER with SIGHASH_ALL")]
    Encoding(usize),
    #[error("signature for input {0} does not verify against the member's tweaked key")]
    Invalid(usize),
    #[error("member {0} is not in the federation")]
    UnknownMember(usize),
    #[error("input {input} has {got} valid signatures; {needed} are needed")]
    NotEnough {
        input: usize,
        got: usize,
        needed: usize,
    },
    #[error(transparent)]
    Tweak(#[from] TweakError),
}

/// Bytes an output with `script_pubkey` adds: value (8), script length, script.
pub fn output_bytes(script_pubkey: &bitcoin::Script) -> u64 {
    let len = script_pubkey.len() as u64;
    8 + compact_size_len(len) + len
}

/// The unsigned batch transaction: inputs in the given order, then outputs
/// in the given order.
pub fn unsigned_tx(inputs: &[BatchInput], outputs: &[TxOut]) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs.to_vec(),
    }
}

impl Federation {
    /// Worst-case weight of a batch with `n_inputs` federation inputs and
    /// outputs taking `output_bytes` bytes in total (`n_outputs` of them),
    /// once fully signed. The fee is computed from this, so the real feerate
    /// is never below the target.
    pub fn batch_weight(&self, n_inputs: usize, n_outputs: usize, output_bytes: u64) -> Weight {
        // version, lock time, input and output counts.
        let base = 4 + 4 + compact_size_len(n_inputs as u64) + compact_size_len(n_outputs as u64);
        // Segwit marker and flag: 2 WU.
        Weight::from_non_witness_data_size(base + output_bytes)
            + Weight::from_wu(2)
            + self.spend_weight_estimate() * n_inputs as u64
    }

    /// [`Self::batch_weight`] in virtual bytes, rounded up.
    pub fn batch_vbytes(&self, n_inputs: usize, n_outputs: usize, output_bytes: u64) -> u64 {
        self.batch_weight(n_inputs, n_outputs, output_bytes)
            .to_vbytes_ceil()
    }

    /// The BIP143 sighash of input `index` of `tx`.
    pub fn sighash(
        &self,
        tx: &Transaction,
        inputs: &[BatchInput],
        index: usize,
    ) -> Result<Message, SignatureError> {
        let input = &inputs[index];
        let script = self.witness_script(&input.tweak)?;
        let hash = SighashCache::new(tx)
            .p2wsh_signature_hash(
                index,
                &script,
                Amount::from_sat(input.amount),
                EcdsaSighashType::All,
            )
            .map_err(|_| SignatureError::Count {
                expected: tx.input.len(),
                got: inputs.len(),
            })?;
        Ok(Message::from_digest(hash.to_byte_array()))
    }

    /// This member's signature of every input of `tx` (`inputs` describe
    /// them), each strict DER + `0x01`.
    pub fn sign_batch(
        &self,
        tx: &Transaction,
        inputs: &[BatchInput],
        secret: &SecretKey,
    ) -> Result<Vec<Vec<u8>>, SignatureError> {
        if tx.input.len() != inputs.len() {
            return Err(SignatureError::Count {
                expected: tx.input.len(),
                got: inputs.len(),
            });
        }
        let secp = Secp256k1::signing_only();
        (0..inputs.len())
            .map(|i| {
                let msg = self.sighash(tx, inputs, i)?;
                let key = tweaked_secret_key(secret, &inputs[i].tweak)?;
                let sig = secp.sign_ecdsa(&msg, &key);
                Ok(bitcoin::ecdsa::Signature::sighash_all(sig).to_vec())
            })
            .collect()
    }

    /// Checks `member`'s signatures of every input of `tx`.
    pub fn verify_batch_signatures(
        &self,
        tx: &Transaction,
        inputs: &[BatchInput],
        member: usize,
        sigs: &[Vec<u8>],
    ) -> Result<(), SignatureError> {
        let key = *self
            .keys()
            .get(member)
            .ok_or(SignatureError::UnknownMember(member))?;
        if sigs.len() != inputs.len() || tx.input.len() != inputs.len() {
            return Err(SignatureError::Count {
                expected: inputs.len(),
                got: sigs.len(),
            });
        }
        let secp = Secp256k1::verification_only();
        for (i, raw) in sigs.iter().enumerate() {
            let sig = parse_signature(raw).ok_or(SignatureError::Encoding(i))?;
            let pk = tweaked_public_key(&key, &inputs[i].tweak)?;
            let msg = self.sighash(tx, inputs, i)?;
            secp.verify_ecdsa(&msg, &sig, &pk)
                .map_err(|_| SignatureError::Invalid(i))?;
        }
        Ok(())
    }

    /// Fills the witnesses of `tx` from members' signatures
    /// (`(member index, signatures per input)`, already verified): for each
    /// input, miniscript's satisfier of the input's descriptor picks `m`
    /// signatures for the members' branch (in key order, as
    /// `OP_CHECKMULTISIG` wants them). It is never given a timelock, so it
    /// cannot choose the emergency branch.
    pub fn assemble_batch(
        &self,
        tx: &Transaction,
        inputs: &[BatchInput],
        sigs: &[(usize, Vec<Vec<u8>>)],
    ) -> Result<Transaction, SignatureError> {
        let mut out = tx.clone();
        let m = self.threshold();
        for (i, input) in inputs.iter().enumerate() {
            let keys: Vec<PublicKey> = self.tweaked_keys(&input.tweak)?;
            let mut have: BTreeMap<DefiniteDescriptorKey, bitcoin::ecdsa::Signature> =
                BTreeMap::new();
            for (member, s) in sigs {
                let (Some(key), Some(raw)) = (keys.get(*member), s.get(i)) else {
                    continue;
                };
                let sig = bitcoin::ecdsa::Signature::from_slice(raw)
                    .map_err(|_| SignatureError::Encoding(i))?;
                have.insert(definite_key(key), sig);
            }
            if have.len() < m {
                return Err(SignatureError::NotEnough {
                    input: i,
                    got: have.len(),
                    needed: m,
                });
            }
            let (witness, _) = self
                .output_descriptor(&input.tweak)?
                .get_satisfaction(&have)
                .map_err(|_| SignatureError::NotEnough {
                    input: i,
                    got: have.len(),
                    needed: m,
                })?;
            out.input[i].witness = Witness::from_slice(&witness);
        }
        Ok(out)
    }
}

/// `key` as a miniscript descriptor key (a single full key, no origin).
pub fn definite_key(key: &PublicKey) -> DefiniteDescriptorKey {
    // Infallible: a single key without wildcard is always definite.
    DefiniteDescriptorKey::new(bitcoin::PublicKey::new(*key).into())
        .expect("a single key has no wildcard")
}

/// Strict DER, low-S, `SIGHASH_ALL`; None otherwise.
fn parse_signature(raw: &[u8]) -> Option<ecdsa::Signature> {
    let (&hashtype, der) = raw.split_last()?;
    if hashtype != EcdsaSighashType::All as u8 {
        return None;
    }
    let sig = ecdsa::Signature::from_der(der).ok()?;
    // Canonical encoding only: re-serializing gives the same bytes, and S is
    // low (libsecp's verify also refuses high S).
    let mut normalized = sig;
    normalized.normalize_s();
    (sig.serialize_der().as_ref() == der && normalized == sig).then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::Network;

    fn secrets(n: u8) -> Vec<SecretKey> {
        (0..n)
            .map(|i| SecretKey::from_slice(&[i + 11; 32]).unwrap())
            .collect()
    }

    fn federation(n: u8, m: usize) -> (Federation, Vec<SecretKey>) {
        let s = secrets(n);
        let secp = Secp256k1::signing_only();
        let keys = s.iter().map(|k| k.public_key(&secp)).collect();
        (Federation::new(keys, m, Network::Regtest).unwrap(), s)
    }

    fn batch(f: &Federation, n_in: u8, n_out: usize) -> (Transaction, Vec<BatchInput>) {
        let inputs: Vec<BatchInput> = (0..n_in)
            .map(|i| BatchInput {
                outpoint: OutPoint {
                    txid: bitcoin::Txid::from_byte_array([i; 32]),
                    vout: i as u32,
                },
                amount: 1_000_000 + i as u64,
                tweak: if i % 2 == 0 {
                    Tweak::Deposit([i; 32])
                } else {
                    Tweak::Change
                },
            })
            .collect();
        let mut outputs: Vec<TxOut> = (0..n_out)
            .map(|i| TxOut {
                value: Amount::from_sat(10_000 + i as u64),
                script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array(
                    [i as u8; 20],
                )),
            })
            .collect();
        outputs.push(TxOut {
            value: Amount::from_sat(5000),
            script_pubkey: f.script_pubkey(&Tweak::Change).unwrap(),
        });
        (unsigned_tx(&inputs, &outputs), inputs)
    }

    #[test]
    fn signatures_verify_only_for_their_member_and_assemble_in_key_order() {
        let (f, s) = federation(4, 3);
        let (tx, inputs) = batch(&f, 3, 2);
        let all: Vec<Vec<Vec<u8>>> = s
            .iter()
            .map(|k| f.sign_batch(&tx, &inputs, k).unwrap())
            .collect();
        for (m, sigs) in all.iter().enumerate() {
            f.verify_batch_signatures(&tx, &inputs, m, sigs).unwrap();
            // Attributed to another member: refused.
            let other = (m + 1) % 4;
            assert_eq!(
                f.verify_batch_signatures(&tx, &inputs, other, sigs),
                Err(SignatureError::Invalid(0))
            );
        }
        // Swapped inputs, truncated list, wrong hashtype, garbage: refused.
        let mut swapped = all[0].clone();
        swapped.swap(0, 1);
        assert!(f
            .verify_batch_signatures(&tx, &inputs, 0, &swapped)
            .is_err());
        assert!(matches!(
            f.verify_batch_signatures(&tx, &inputs, 0, &all[0][..2]),
            Err(SignatureError::Count { .. })
        ));
        let mut bad_type = all[0].clone();
        *bad_type[1].last_mut().unwrap() = 0x81;
        assert_eq!(
            f.verify_batch_signatures(&tx, &inputs, 0, &bad_type),
            Err(SignatureError::Encoding(1))
        );
        let garbage = vec![vec![0x30, 0x01, 0x01]; 3];
        assert_eq!(
            f.verify_batch_signatures(&tx, &inputs, 0, &garbage),
            Err(SignatureError::Encoding(0))
        );
        assert_eq!(
            f.verify_batch_signatures(&tx, &inputs, 9, &all[0]),
            Err(SignatureError::UnknownMember(9))
        );

        // Two signers are not enough for 3-of-4; three are.
        let two: Vec<(usize, Vec<Vec<u8>>)> = vec![(0, all[0].clone()), (2, all[2].clone())];
        assert!(matches!(
            f.assemble_batch(&tx, &inputs, &two),
            Err(SignatureError::NotEnough { needed: 3, .. })
        ));
        let three: Vec<(usize, Vec<Vec<u8>>)> =
            [3, 0, 2].iter().map(|&m| (m, all[m].clone())).collect();
        let signed = f.assemble_batch(&tx, &inputs, &three).unwrap();
        let secp = Secp256k1::verification_only();
        for (i, input) in inputs.iter().enumerate() {
            let w: Vec<&[u8]> = signed.input[i].witness.iter().collect();
            assert_eq!(w.len(), 5);
            assert!(w[0].is_empty());
            assert_eq!(w[4], f.witness_script(&input.tweak).unwrap().as_bytes());
            // Signatures appear in the order of the sorted keys they verify against.
            let mut keys: Vec<PublicKey> = f.tweaked_keys(&input.tweak).unwrap();
            keys.sort_by_key(|k| k.serialize());
            let msg = f.sighash(&tx, &inputs, i).unwrap();
            let mut k = 0;
            for sig in &w[1..4] {
                let sig = parse_signature(sig).unwrap();
                while secp.verify_ecdsa(&msg, &sig, &keys[k]).is_err() {
                    k += 1;
                    assert!(k < keys.len(), "signature order does not follow key order");
                }
                k += 1;
            }
        }
        // The estimate bounds the real size.
        let out_bytes: u64 = tx
            .output
            .iter()
            .map(|o| output_bytes(&o.script_pubkey))
            .sum();
        let est = f.batch_weight(inputs.len(), tx.output.len(), out_bytes);
        assert!(est >= signed.weight(), "{est} < {}", signed.weight());
        assert!(est.to_wu() - signed.weight().to_wu() <= 3 * 3 * 2 + 8);
    }

    /// With an emergency branch, the members' witness is still a plain
    /// `multi` satisfaction (dummy, `m` signatures, script: never the
    /// backup branch) and, padded to 72-byte signatures, weighs exactly the
    /// descriptor's planned normal-spend weight.
    #[test]
    fn emergency_federation_batches_assemble_the_normal_branch_at_the_planned_weight() {
        use crate::federation::tests::federation_with_backup;
        for (m, n) in [(3, 4), (11, 15)] {
            let (f, s, _) = federation_with_backup(m, n, 2, 3, 8064);
            let (tx, inputs) = batch(&f, 3, 2);
            let all: Vec<(usize, Vec<Vec<u8>>)> = (0..n)
                .rev()
                .map(|i| (i, f.sign_batch(&tx, &inputs, &s[i]).unwrap()))
                .collect();
            for (i, sigs) in &all {
                f.verify_batch_signatures(&tx, &inputs, *i, sigs).unwrap();
            }
            let signed = f.assemble_batch(&tx, &inputs, &all).unwrap();
            for (i, input) in signed.input.iter().enumerate() {
                let w: Vec<&[u8]> = input.witness.iter().collect();
                assert_eq!(w.len(), m + 2, "{m}-of-{n}");
                assert!(w[0].is_empty());
                assert_eq!(
                    w[m + 1],
                    f.witness_script(&inputs[i].tweak).unwrap().as_bytes()
                );
                let mut padded = Witness::new();
                for (j, el) in w.iter().enumerate() {
                    padded.push(if (1..=m).contains(&j) {
                        vec![0u8; 72]
                    } else {
                        el.to_vec()
                    });
                }
                let padded = TxIn {
                    witness: padded,
                    ..input.clone()
                };
                assert_eq!(
                    padded.segwit_weight(),
                    f.spend_weight_estimate(),
                    "{m}-of-{n}"
                );
                assert!(input.segwit_weight() <= f.spend_weight_estimate());
            }
        }
    }

    /// vbytes per peg-out of a 3-of-4 batch paying P2WPKH outputs plus
    /// change from one input: the weight bound the fee is computed from.
    #[test]
    fn vbytes_per_pegout_at_batch_sizes_1_10_100() {
        let (f, _) = federation(4, 3);
        let per = |n: u64| {
            let v = f.batch_vbytes(1, n as usize + 1, n * 31 + 43);
            println!(
                "batch of {n}: {v} vB, {:.1} vB per peg-out",
                v as f64 / n as f64
            );
            v as f64 / n as f64
        };
        assert!(per(1) < 220.0);
        assert!(per(10) < 50.0);
        assert!(per(100) <= 40.0, "goal: at most 40 vB per peg-out at 100");
    }

    #[test]
    fn the_unsigned_transaction_signals_rbf_and_has_no_witness() {
        let (f, _) = federation(3, 2);
        let (tx, _) = batch(&f, 2, 1);
        assert!(tx.is_explicitly_rbf());
        assert_eq!(tx.version, Version::TWO);
        assert!(tx.input.iter().all(|i| i.witness.is_empty()));
    }

    #[test]
    fn output_sizes_match_the_serialization() {
        for script in [
            ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20])),
            ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([1; 20])),
            ScriptBuf::new_p2sh(&bitcoin::ScriptHash::from_byte_array([1; 20])),
            ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([1; 32])),
        ] {
            let out = TxOut {
                value: Amount::from_sat(1),
                script_pubkey: script.clone(),
            };
            assert_eq!(
                output_bytes(&script),
                bitcoin::consensus::serialize(&out).len() as u64
            );
        }
    }
}
