//! Cross-checks fedpeg-peg against a Bitcoin node we did not write: a real
//! `bitcoind -regtest` (found or installed by `deploy/bitcoind.sh`).
//!
//! - Our descriptor checksums equal `getdescriptorinfo`'s.
//! - `deriveaddresses` of our deposit and change descriptors gives our
//!   addresses (so our sorted witness scripts are Core's `sortedmulti`).
//! - Coins sent to a deposit address are spent with the members' tweaked
//!   secret keys, accepted by the node's mempool and mined, and the
//!   transaction is no bigger than our spend estimate says.

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Weight, Witness,
};
use fedpeg_peg::deposit::{tweaked_secret_key, Tweak};
use fedpeg_peg::descriptor;
use fedpeg_peg::federation::Federation;
use fedpeg_peg::testkit::Bitcoind;
use serde_json::Value;

/// A testkit node (`deploy/bitcoind.sh`, regtest, funded `miner` wallet)
/// driven through `bitcoin-cli`, so these checks do not even share our
/// JSON-RPC client.
struct Node(Bitcoind);

impl Node {
    fn start() -> Node {
        Node(Bitcoind::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Runs bitcoin-cli; `Ok(stdout)` or `Err(stderr)`.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .0
            .cli_command()
            .args(args)
            .output()
            .map_err(|e| format!("cannot run bitcoin-cli: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Runs bitcoin-cli and parses its JSON answer; fails the test on error.
    fn json(&self, args: &[&str]) -> Value {
        let out = self
            .cli(args)
            .unwrap_or_else(|e| panic!("bitcoin-cli {args:?} failed: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bitcoin-cli {args:?}: {e}: {out}"))
    }

    /// Runs bitcoin-cli for its plain-text answer; fails the test on error.
    fn text(&self, args: &[&str]) -> String {
        self.cli(args)
            .unwrap_or_else(|e| panic!("bitcoin-cli {args:?} failed: {e}"))
    }
}

/// `n` reproducible member secret keys, distinct per `seed`.
fn member_secrets(seed: u8, n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| {
            let mut b = [seed; 32];
            b[31] = i as u8;
            b[0] = 0x11;
            SecretKey::from_slice(&b).unwrap()
        })
        .collect()
}

fn federation(m: usize, n: usize) -> (Federation, Vec<SecretKey>) {
    let secp = Secp256k1::new();
    let secrets = member_secrets((m * 32 + n) as u8, n);
    let keys: Vec<PublicKey> = secrets.iter().map(|s| s.public_key(&secp)).collect();
    (Federation::new(keys, m, Network::Regtest).unwrap(), secrets)
}

/// Accounts that look like ed25519 public keys (random-ish 32 bytes), plus
/// the all-zero and all-0xff edge cases.
fn accounts() -> Vec<[u8; 32]> {
    let mut v = vec![[0u8; 32], [0xffu8; 32]];
    for i in 0..3u8 {
        let mut a = [0u8; 32];
        for (j, b) in a.iter_mut().enumerate() {
            *b = (j as u8).wrapping_mul(97).wrapping_add(i.wrapping_mul(61)) ^ 0x5a;
        }
        v.push(a);
    }
    v
}

/// Asserts that bitcoind computes our checksum for `full`'s body and
/// derives `address` from `full`.
fn check_descriptor(node: &Node, full: &str, address: &str) {
    let body = descriptor::verify_checksum(full).expect("our own checksum verifies");
    let ours = &full[body.len() + 1..];
    let info = node.json(&["getdescriptorinfo", body]);
    assert_eq!(info["checksum"], ours, "checksum of {body}: {info}");
    assert_eq!(info["descriptor"], full, "{info}");
    let derived = node.json(&["deriveaddresses", full]);
    assert_eq!(
        derived,
        serde_json::json!([address]),
        "deriveaddresses {full}"
    );
}

const FEDERATIONS: [(usize, usize); 5] = [(1, 1), (2, 3), (3, 4), (11, 15), (17, 20)];

#[test]
fn descriptors_checksums_and_addresses_match_bitcoind() {
    let node = Node::start();

    for (desc, cs) in [
        ("raw(deadbeef)", "89f8spxm"),
        ("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)", "02wpgw69"),
    ] {
        assert_eq!(descriptor::checksum(desc).unwrap(), cs);
        let info = node.json(&["getdescriptorinfo", desc]);
        assert_eq!(info["checksum"], cs, "{desc}: {info}");
    }

    let mut printed = false;
    for (m, n) in FEDERATIONS {
        let (fed, _) = federation(m, n);
        for account in accounts() {
            let full = fed.deposit_descriptor(&account).unwrap();
            let address = fed.deposit_address(&account).unwrap().to_string();
            if !printed && (m, n) == (2, 3) {
                eprintln!("example 2-of-3 deposit: {full} -> {address}");
                printed = true;
            }
            check_descriptor(&node, &full, &address);
        }
        let full = fed.change_descriptor().unwrap();
        check_descriptor(&node, &full, &fed.change_address().unwrap().to_string());
    }
}

/// Pays `value` from `prev` (an output of `fed`'s address for `tweak`) to
/// `fed`'s change address, signed by `signers`' tweaked keys.
fn spend(
    fed: &Federation,
    signers: &[SecretKey],
    tweak: &Tweak,
    prev: OutPoint,
    value: Amount,
    fee: Amount,
) -> Transaction {
    let secp = Secp256k1::new();
    let script = fed.witness_script(tweak).unwrap();
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: prev,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: value - fee,
            script_pubkey: fed.change_script_pubkey().unwrap(),
        }],
    };
    let sighash = SighashCache::new(&tx)
        .p2wsh_signature_hash(0, &script, value, EcdsaSighashType::All)
        .unwrap();
    let msg = Message::from_digest(sighash.to_byte_array());
    // CHECKMULTISIG wants the signatures in the witness script's key order.
    let mut sigs: Vec<([u8; 33], Vec<u8>)> = signers
        .iter()
        .map(|s| {
            let sk = tweaked_secret_key(s, tweak).unwrap();
            let sig = bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&msg, &sk));
            (sk.public_key(&secp).serialize(), sig.to_vec())
        })
        .collect();
    sigs.sort();
    let mut witness = Witness::new();
    witness.push([]);
    for (_, sig) in &sigs {
        witness.push(sig);
    }
    witness.push(script.as_bytes());
    tx.input[0].witness = witness;
    tx
}

#[test]
fn members_spend_deposits_with_tweaked_keys_and_estimate_bounds_vsize() {
    let node = Node::start();
    // testkit made the `miner` wallet and matured a coinbase for it.
    let mining = node.0.mining_address().to_string();

    for (m, n) in [(2, 3), (3, 4), (11, 15)] {
        let (fed, secrets) = federation(m, n);
        let account = accounts()[2];
        for tweak in [Tweak::Deposit(account), Tweak::Change] {
            let prev = fund(&node, &fed, &tweak);
            node.json(&["generatetoaddress", "1", &mining]);

            // Any m members can spend: take the last m, not the first.
            let signers = &secrets[n - m..];
            let fee = Amount::from_sat(10 * 1_000);
            let tx = spend(&fed, signers, &tweak, prev, Amount::ONE_BTC, fee);
            let hex = serialize_hex(&tx);
            let accepted = node.json(&["testmempoolaccept", &format!("[\"{hex}\"]")]);
            assert_eq!(
                accepted[0]["allowed"], true,
                "{m}-of-{n} {tweak:?}: {accepted}"
            );

            // One P2WSH output: version 4, input/output counts 1+1, output
            // 8 + 1 + 34, locktime 4 = 53 non-witness bytes; marker+flag 2 WU.
            let overhead = Weight::from_non_witness_data_size(53) + Weight::from_wu(2);
            let est_vsize = (fed.spend_weight_estimate() + overhead).to_vbytes_ceil();
            let vsize = accepted[0]["vsize"].as_u64().unwrap();
            assert!(
                vsize <= est_vsize,
                "{m}-of-{n}: vsize {vsize} > estimate {est_vsize}"
            );
            assert!(
                est_vsize - vsize <= m as u64,
                "{m}-of-{n}: estimate {est_vsize} far above {vsize}"
            );

            let spent = node.text(&["sendrawtransaction", &hex]);
            node.json(&["generatetoaddress", "1", &mining]);
            let out = node.json(&["gettxout", &spent, "0"]);
            assert_eq!(out["confirmations"], 1, "{out}");
            assert_eq!(
                out["scriptPubKey"]["address"],
                fed.change_address().unwrap().to_string()
            );
            eprintln!(
                "{m}-of-{n} {tweak:?}: spent in {spent}, vsize {vsize}, estimate {est_vsize}"
            );
        }
    }
}

/// `n` reproducible backup secret keys (distinct from every member key).
fn backup_secrets(n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| {
            let mut b = [0x5b; 32];
            b[31] = i as u8;
            SecretKey::from_slice(&b).unwrap()
        })
        .collect()
}

/// [`federation`] with an emergency branch of `k` of `j` backup keys after `csv` blocks.
fn federation_with_backup(
    m: usize,
    n: usize,
    k: usize,
    j: usize,
    csv: u16,
) -> (Federation, Vec<SecretKey>, Vec<SecretKey>) {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(m, n);
    let backups = backup_secrets(j);
    let keys = backups.iter().map(|s| s.public_key(&secp)).collect();
    (fed.with_emergency(keys, k, csv).unwrap(), secrets, backups)
}

/// Sends 1 BTC to `fed`'s address for `tweak` and returns the outpoint
/// (unconfirmed).
fn fund(node: &Node, fed: &Federation, tweak: &Tweak) -> OutPoint {
    let address = fed.address(tweak).unwrap().to_string();
    let txid = node.text(&[
        "-named",
        "sendtoaddress",
        &format!("address={address}"),
        "amount=1",
        "fee_rate=10",
    ]);
    let funding: Transaction = deserialize_hex(
        node.json(&["gettransaction", &txid])["hex"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let vout = funding
        .output
        .iter()
        .position(|o| o.script_pubkey == fed.script_pubkey(tweak).unwrap())
        .expect("funding pays our script") as u32;
    OutPoint::new(funding.compute_txid(), vout)
}

/// Descriptors with the emergency branch: bitcoind computes the checksum
/// miniscript printed, and derives our address from them, for deposits of
/// several accounts and for change, at the default and a small timelock.
#[test]
fn emergency_descriptors_round_trip_through_getdescriptorinfo_and_deriveaddresses() {
    let node = Node::start();
    for (m, n, csv) in [(2, 3, 10), (3, 4, 8064), (11, 15, 8064), (17, 20, 65535)] {
        let (fed, _, _) = federation_with_backup(m, n, 2, 3, csv);
        for account in accounts() {
            let full = fed.deposit_descriptor(&account).unwrap();
            assert!(full.starts_with(&format!("wsh(or_d(multi({m},")), "{full}");
            check_descriptor(
                &node,
                &full,
                &fed.deposit_address(&account).unwrap().to_string(),
            );
        }
        let full = fed.change_descriptor().unwrap();
        check_descriptor(&node, &full, &fed.change_address().unwrap().to_string());
        if (m, n) == (3, 4) {
            eprintln!("example 3-of-4 + 2-of-3 change: {full}");
        }
    }
}

/// The members spend outputs of the descriptor with the emergency branch
/// through the normal branch (signatures from `sign_batch`, witness from
/// miniscript's satisfier), bitcoind accepts it without any timelock, and
/// the weight the fee is computed from bounds the real one within the
/// signatures' length variation. Prints vB per input for the closing note.
#[test]
fn members_spend_the_emergency_descriptor_and_fee_maths_match_the_real_weight() {
    use fedpeg_peg::pegout::{output_bytes, unsigned_tx, BatchInput};
    let node = Node::start();
    let mining = node.0.mining_address().to_string();
    for (m, n) in [(3, 4), (11, 15)] {
        let (fed, secrets, _) = federation_with_backup(m, n, 2, 3, 8064);
        let (plain, _) = federation(m, n);
        let tweaks = [Tweak::Deposit(accounts()[3]), Tweak::Change];
        let inputs: Vec<BatchInput> = tweaks
            .iter()
            .map(|t| BatchInput {
                outpoint: fund(&node, &fed, t),
                amount: 100_000_000,
                tweak: *t,
            })
            .collect();
        node.json(&["generatetoaddress", "1", &mining]);
        let change = TxOut {
            value: Amount::from_sat(200_000_000 - 20_000),
            script_pubkey: fed.change_script_pubkey().unwrap(),
        };
        let tx = unsigned_tx(&inputs, std::slice::from_ref(&change));
        // The last m members sign (any m will do).
        let sigs: Vec<(usize, Vec<Vec<u8>>)> = (n - m..n)
            .map(|i| (i, fed.sign_batch(&tx, &inputs, &secrets[i]).unwrap()))
            .collect();
        let signed = fed.assemble_batch(&tx, &inputs, &sigs).unwrap();
        let hex = serialize_hex(&signed);
        let accepted = node.json(&["testmempoolaccept", &format!("[\"{hex}\"]")]);
        assert_eq!(accepted[0]["allowed"], true, "{m}-of-{n}: {accepted}");
        let est = fed.batch_weight(2, 1, output_bytes(&change.script_pubkey));
        let real = signed.weight();
        assert!(real <= est, "{m}-of-{n}: real {real} > estimate {est}");
        assert!(
            est.to_wu() - real.to_wu() <= 2 * 2 * m as u64,
            "{m}-of-{n}: estimate {est} far above real {real}"
        );
        let spent = node.text(&["sendrawtransaction", &hex]);
        node.json(&["generatetoaddress", "1", &mining]);
        assert_eq!(node.json(&["gettxout", &spent, "0"])["confirmations"], 1);
        eprintln!(
            "{m}-of-{n}: peg-out input {} vB before (sortedmulti), {} vB with a 2-of-3 emergency branch (8064 blocks); real tx weight {real}, estimate {est}",
            plain.spend_weight_estimate().to_wu() as f64 / 4.0,
            fed.spend_weight_estimate().to_wu() as f64 / 4.0,
        );
    }
}

/// The emergency path end to end against bitcoind: the backup keys' sweep
/// (found with `scantxoutset`, built, signed and finalized by
/// `fedpeg_peg::recovery`) is refused as non-BIP68-final one block before
/// the timelock opens, and accepted and mined once it has.
#[test]
fn emergency_sweep_is_refused_before_the_timelock_and_mined_after() {
    use fedpeg_peg::recovery::RecoveryInput;
    const CSV: u16 = 10;
    let node = Node::start();
    let mining = node.0.mining_address().to_string();
    let (fed, _, backups) = federation_with_backup(2, 3, 2, 3, CSV);
    let account = accounts()[2];
    let tweaks = [Tweak::Deposit(account), Tweak::Change];
    for t in &tweaks {
        fund(&node, &fed, t);
    }
    node.json(&["generatetoaddress", "1", &mining]);

    // Find them as the recovery tool does: scan the UTXO set with the descriptors.
    let descriptors: Vec<String> = tweaks.iter().map(|t| fed.descriptor(t).unwrap()).collect();
    let (found, tip) = node.0.chain().scan_descriptors(&descriptors).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let inputs: Vec<RecoveryInput> = found
        .iter()
        .map(|o| RecoveryInput {
            outpoint: o.outpoint,
            amount: o.amount,
            tweak: *tweaks
                .iter()
                .find(|t| fed.script_pubkey(t).unwrap() == o.script_pubkey)
                .unwrap(),
            confirmed_height: o.height,
        })
        .collect();
    let confirmed = inputs[0].confirmed_height;
    assert_eq!(confirmed, tip);
    assert_eq!(
        fed.emergency_blocks_remaining(confirmed, tip),
        Some(u64::from(CSV) - 1)
    );
    // Our own builder refuses while the timelock is closed.
    let dest = node.0.new_address().unwrap();
    assert!(fed
        .emergency_sweep_psbt(&inputs, &dest.script_pubkey(), 2, tip)
        .is_err());

    // One block short: build as if open (claiming a later tip) to see that
    // bitcoind, not only our code, enforces the timelock.
    node.json(&[
        "generatetoaddress",
        &(u64::from(CSV) - 2).to_string(),
        &mining,
    ]);
    let tip = confirmed + u64::from(CSV) - 2;
    assert_eq!(fed.emergency_blocks_remaining(confirmed, tip), Some(1));
    let mut psbt = fed
        .emergency_sweep_psbt(&inputs, &dest.script_pubkey(), 2, tip + 1)
        .unwrap();
    assert_eq!(
        fed.sign_emergency_psbt(&mut psbt, &backups[1..]).unwrap(),
        4
    );
    let early = fed.finalize_emergency_psbt(psbt.clone()).unwrap();
    let hex = serialize_hex(&early);
    let refused = node.json(&["testmempoolaccept", &format!("[\"{hex}\"]")]);
    assert_eq!(refused[0]["allowed"], false, "{refused}");
    assert_eq!(refused[0]["reject-reason"], "non-BIP68-final", "{refused}");
    let e = node.cli(&["sendrawtransaction", &hex]).unwrap_err();
    assert!(e.contains("non-BIP68-final"), "{e}");

    // One more block: the same transaction is final, accepted and mined.
    node.json(&["generatetoaddress", "1", &mining]);
    assert_eq!(fed.emergency_blocks_remaining(confirmed, tip + 1), Some(0));
    let accepted = node.json(&["testmempoolaccept", &format!("[\"{hex}\"]")]);
    assert_eq!(accepted[0]["allowed"], true, "{accepted}");
    // The fee covers the real size at the asked rate; our weight bounds it.
    let vsize = accepted[0]["vsize"].as_u64().unwrap();
    let fee = 200_000_000 - early.output[0].value.to_sat();
    assert!(fee >= 2 * vsize, "fee {fee} for {vsize} vB");
    assert!(early.weight() <= fed.emergency_spend_weight().unwrap() * 2 + Weight::from_wu(4 * 60));
    let txid = node.text(&["sendrawtransaction", &hex]);
    node.json(&["generatetoaddress", "1", &mining]);
    let out = node.json(&["gettxout", &txid, "0"]);
    assert_eq!(out["confirmations"], 1, "{out}");
    assert_eq!(out["scriptPubKey"]["address"], dest.to_string());
    // Nothing of the federation is left.
    let (left, _) = node.0.chain().scan_descriptors(&descriptors).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
