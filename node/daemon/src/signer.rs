//! A member's peg-out worker: signs batches, broadcasts fully signed ones,
//! reports confirmations and votes to replace stuck versions.
//!
//! Everything it acts on comes from this member's own committed state: a
//! batch exists only because this member's own state machine formed it from
//! finalized blocks, and the transaction it signs is rebuilt here from that
//! record ([`Batch::unsigned_tx`]); nothing a peer sends is signed. It signs
//! nothing while a deep-reorg alert is open (a minted deposit left the best
//! chain: the operator must look first).

use crate::chain::Chain;
use crate::faults::Faults;
use crate::watcher::{Spend, Watcher};
use ed25519_dalek::SigningKey;
use fedpeg_ledger::fed_pool::FedAdmitError;
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};
use fedpeg_ledger::ids::{BatchId, MemberIndex};
use fedpeg_ledger::pegout_batch::{Batch, MAX_BATCH_VERSIONS};
use fedpeg_peg::bitcoin::secp256k1::SecretKey;
use fedpeg_peg::bitcoin::{BlockHash, Txid};
use fedpeg_peg::federation::Federation;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a broadcast batch is sent to bitcoind again while unconfirmed.
const REBROADCAST: Duration = Duration::from_secs(30);

/// A member's peg-out worker (needs the member's bitcoind).
pub struct PegOutWorker {
    chain: Arc<Chain>,
    watcher: Arc<Watcher>,
    consensus_key: SigningKey,
    peg_secret: SecretKey,
    /// Test-only faults (see [`crate::faults`]): sign with a wrong key, to
    /// show that state refuses the signatures.
    #[cfg_attr(not(feature = "byzantine"), allow(dead_code))]
    faults: Faults,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// (batch, version) this member submitted signatures / a bump vote for.
    signed: HashMap<(BatchId, u32), Instant>,
    /// (batch, version) this member voted to bump → Bitcoin tip then; the
    /// vote is renewed on a later block if state dropped it (a bump the fee
    /// pool could not pay clears the votes).
    bumped: HashMap<(BatchId, u32), u64>,
    /// Reorged-out federation spends rebroadcast, and when.
    rebroadcast: HashMap<Txid, Instant>,
    /// txid → (last broadcast, Bitcoin tip when first broadcast).
    broadcast: HashMap<Txid, (Instant, u64)>,
    /// Batches whose confirmation this member reported, and when.
    reported: HashMap<BatchId, Instant>,
}

/// Resubmit a federation transaction not yet final after this long.
const RESUBMIT: Duration = Duration::from_secs(10);

impl PegOutWorker {
    pub fn new(
        chain: Arc<Chain>,
        watcher: Arc<Watcher>,
        consensus_key: SigningKey,
        peg_secret: SecretKey,
    ) -> PegOutWorker {
        let faults = Faults::from_env(chain.spec.network);
        PegOutWorker {
            chain,
            watcher,
            consensus_key,
            peg_secret,
            faults,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Works every `interval` and whenever the chain moves, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tip = self.chain.subscribe_tip();
        loop {
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.tick()).await;
            tokio::select! {
                _ = stop.changed() => return,
                _ = tip.changed() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// This member's index in the epoch in force at the next height (None
    /// while it is not a member: it then submits nothing).
    fn member(&self) -> Option<u32> {
        let key = self.consensus_key.verifying_key();
        self.chain
            .with_state(|s| s.epoch_at(s.height.next()).member_index(&key))
            .map(|i| i as u32)
    }

    fn submit(&self, kind: FedTxKind) {
        let Some(member) = self.member() else {
            return;
        };
        let tx = FederationTx::sign(
            self.chain.spec.chain_id,
            MemberIndex(member),
            &self.consensus_key,
            kind,
        );
        #[cfg(feature = "byzantine")]
        if self.faults.bad_pegout_signatures
            && matches!(tx.kind, FedTxKind::PegOutSignatures { .. })
        {
            // A Byzantine member skips its own node's checks and sends the
            // bad signatures straight to the others.
            self.chain.gossip_fed_tx(tx);
            return;
        }
        match self.chain.submit_fed_tx(tx, true) {
            Ok(_) | Err(FedAdmitError::Duplicate) => {}
            Err(e) => {
                tracing::warn!(member, error = %e, "own federation transaction refused")
            }
        }
    }

    /// One pass over the unconfirmed batches of committed state.
    pub fn tick(&self) {
        let (batches, settled): (Vec<Batch>, Vec<Batch>) = self.chain.with_state(|s| {
            (
                s.batches.values().cloned().collect(),
                s.settled.values().cloned().collect(),
            )
        });
        self.rebroadcast_reorged();
        let btc_tip = self.watcher.tip();
        for b in &settled {
            self.reconfirm(b, btc_tip);
        }
        for b in &batches {
            if self.confirm(b, btc_tip) {
                continue;
            }
            self.sign(b);
            self.broadcast(b, btc_tip);
        }
    }

    /// Sends federation spends that a reorg took out of the best chain (and
    /// that are not mined again) back to bitcoind, from the stale block.
    fn rebroadcast_reorged(&self) {
        for sp in self.watcher.reorged_spends() {
            let due = self
                .memory
                .lock()
                .map(|m| {
                    m.rebroadcast
                        .get(&sp.txid)
                        .is_none_or(|t| t.elapsed() >= REBROADCAST)
                })
                .unwrap_or(false);
            if !due {
                continue;
            }
            let btc = self.watcher.bitcoin();
            match btc.transaction(&sp.txid, Some(&sp.block)) {
                Ok(Some((tx, _))) => match btc.broadcast(&tx) {
                    Ok(_) => {
                        tracing::warn!(txid = %sp.txid, "rebroadcast a federation transaction that a reorg took out of the best chain")
                    }
                    Err(e) => {
                        tracing::warn!(txid = %sp.txid, error = %e, "cannot rebroadcast a reorged-out federation transaction")
                    }
                },
                Ok(None) => {
                    tracing::warn!(txid = %sp.txid, block = %sp.block, "a reorged-out federation transaction is not in its stale block on bitcoind (pruned?)")
                }
                Err(e) => {
                    tracing::warn!(txid = %sp.txid, error = %e, "cannot read a reorged-out federation transaction")
                }
            }
            if let Ok(mut m) = self.memory.lock() {
                m.rebroadcast.insert(sp.txid, Instant::now());
            }
        }
    }

    /// The version of `b` mined on the best chain (any depth), as this
    /// member's watcher saw it: (version index, spend).
    fn mined(&self, b: &Batch) -> Option<(usize, Spend)> {
        let (first, _) = b.inputs.first()?;
        let sp = self.watcher.spend(first)?;
        match b.version_of(&sp.txid) {
            Some(v) => Some((v, sp)),
            None => {
                tracing::error!(batch = b.id.0, input = %first, spender = %sp.txid, "a batch input was spent by a transaction that is no version of the batch");
                None
            }
        }
    }

    /// The federations of `b`'s inputs (its epoch's descriptor: sighash,
    /// tweaks, witness) and of its change; None if state lacks either
    /// epoch (it never does for a batch it holds).
    fn federations(&self, b: &Batch) -> Option<(Federation, Federation)> {
        let params = self.chain.params();
        self.chain.with_state(|s| {
            Some((
                params.epoch_federation(s, b.epoch)?,
                params.epoch_federation(s, b.change_epoch)?,
            ))
        })
    }

    /// Index of this member's peg key among the keys of `fed` (the
    /// federation of a batch's epoch): what its signatures are recorded
    /// under in that batch (`BatchVersion::signatures` is keyed by peg-key
    /// index, not member index). None if its peg key is none of them (it
    /// cannot sign that batch).
    fn peg_index(&self, fed: &Federation) -> Option<MemberIndex> {
        let secp = fedpeg_peg::bitcoin::secp256k1::Secp256k1::signing_only();
        let key = self.peg_secret.public_key(&secp);
        fed.key_index(&key).map(|i| MemberIndex(i as u32))
    }

    /// Signs the newest version of `b` unless already done.
    fn sign(&self, b: &Batch) {
        let v = b.versions.len() - 1;
        let Some((fed, change_fed)) = self.federations(b) else {
            tracing::error!(
                batch = b.id.0,
                epoch = b.epoch,
                "not signing: state has no descriptor for the batch's epoch"
            );
            return;
        };
        let Some(peg) = self.peg_index(&fed) else {
            tracing::debug!(
                batch = b.id.0,
                epoch = b.epoch,
                "not signing: this member's peg key is not one of the batch epoch's descriptor"
            );
            return;
        };
        if b.latest().signatures.contains_key(&peg) {
            return;
        }
        let key = (b.id, v as u32);
        {
            let Ok(mem) = self.memory.lock() else { return };
            if mem.signed.get(&key).is_some_and(|t| t.elapsed() < RESUBMIT) {
                return;
            }
        }
        let alerts = self.watcher.deep_reorgs();
        if !alerts.is_empty() {
            tracing::error!(batch = b.id.0, alerts = alerts.len(), "not signing peg-outs: deep-reorg alerts are open (see GetStatus, AcknowledgeAlerts)");
            return;
        }
        let tx = match b.unsigned_tx(&change_fed, v) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(batch = b.id.0, error = %e, "cannot rebuild batch transaction");
                return;
            }
        };
        let secret = self.peg_secret;
        #[cfg(feature = "byzantine")]
        let secret = if self.faults.bad_pegout_signatures {
            SecretKey::from_slice(&fedpeg_keys::random_32()).unwrap_or(secret)
        } else {
            secret
        };
        match fed.sign_batch(&tx, &b.batch_inputs(), &secret) {
            Ok(signatures) => {
                tracing::info!(batch = b.id.0, version = v, txid = %tx.compute_txid(), inputs = signatures.len(), "signing peg-out batch");
                self.submit(FedTxKind::PegOutSignatures {
                    batch: b.id,
                    version: v as u32,
                    signatures,
                });
                if let Ok(mut mem) = self.memory.lock() {
                    mem.signed.insert(key, Instant::now());
                }
            }
            Err(e) => tracing::error!(batch = b.id.0, error = %e, "cannot sign batch"),
        }
    }

    /// Assembles and broadcasts the newest version once m members signed;
    /// rebroadcasts while unconfirmed; votes to bump a stuck version.
    fn broadcast(&self, b: &Batch, btc_tip: Option<u64>) {
        let Some((fed, change_fed)) = self.federations(b) else {
            return;
        };
        let v = b.versions.len() - 1;
        let latest = b.latest();
        if latest.signatures.len() < fed.threshold() {
            return;
        }
        // A version is in a block of the best chain: nothing to send or
        // replace, only to wait for depth. (An input spent by anything else
        // cannot be replaced either: `mined` logs that.)
        let spent = b
            .inputs
            .first()
            .is_some_and(|(o, _)| self.watcher.spend(o).is_some());
        if spent {
            let _ = self.mined(b);
            return;
        }
        let txid = latest.txid;
        let now = Instant::now();
        let (due, first_tip) = {
            let Ok(mem) = self.memory.lock() else { return };
            match mem.broadcast.get(&txid) {
                Some((last, first)) => (last.elapsed() >= REBROADCAST, Some(*first)),
                None => (true, None),
            }
        };
        if due {
            // Keyed by peg-key index: the index `assemble_batch` takes.
            let sigs: Vec<(usize, Vec<Vec<u8>>)> = latest
                .signatures
                .iter()
                .map(|(peg, s)| (peg.index(), s.clone()))
                .collect();
            let signed = b
                .unsigned_tx(&change_fed, v)
                .map_err(|e| e.to_string())
                .and_then(|tx| {
                    fed.assemble_batch(&tx, &b.batch_inputs(), &sigs)
                        .map_err(|e| e.to_string())
                });
            let btc = self.watcher.bitcoin();
            match signed {
                Ok(tx) => {
                    if first_tip.is_none() {
                        if let Err(e) = btc.test_accept(&tx) {
                            tracing::warn!(batch = b.id.0, %txid, error = %e, "testmempoolaccept refused the batch (broadcasting anyway; it may already be in the mempool)");
                        }
                    }
                    match btc.broadcast(&tx) {
                        Ok(_) => {
                            if first_tip.is_none() {
                                tracing::info!(batch = b.id.0, version = v, %txid, vbytes = tx.vsize(), "peg-out batch broadcast");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(batch = b.id.0, %txid, error = %e, "broadcast failed; retrying")
                        }
                    }
                    // After a restart, bitcoind still knows when the version
                    // entered its mempool: the bump timer goes on from there.
                    let entered = match first_tip {
                        Some(_) => None,
                        None => btc.mempool_entry_height(&txid).ok().flatten(),
                    };
                    if let Ok(mut mem) = self.memory.lock() {
                        let first = first_tip.or(entered).or(btc_tip).unwrap_or(0);
                        mem.broadcast.insert(txid, (now, first));
                    }
                }
                Err(e) => tracing::error!(batch = b.id.0, error = %e, "cannot assemble batch"),
            }
        }
        // Stuck: vote for a replacement (f + 1 votes make one).
        let bump_after = self.chain.params().pegout.bump_after_blocks as u64;
        if let (Some(first), Some(tip)) = (first_tip, btc_tip) {
            if tip >= first + bump_after
                && b.versions.len() < MAX_BATCH_VERSIONS
                && self
                    .member()
                    .is_some_and(|m| !latest.bump_votes.contains(&MemberIndex(m)))
            {
                let key = (b.id, v as u32);
                // Once per Bitcoin block at most: a vote state dropped
                // because the fee pool could not pay is renewed later.
                let fresh = self
                    .memory
                    .lock()
                    .map(|mut m| match m.bumped.get(&key) {
                        Some(at) if *at >= tip => false,
                        _ => {
                            m.bumped.insert(key, tip);
                            true
                        }
                    })
                    .unwrap_or(false);
                if fresh {
                    tracing::info!(
                        batch = b.id.0,
                        version = v,
                        waited_blocks = tip - first,
                        "peg-out batch unconfirmed; voting to replace it at a higher fee"
                    );
                    self.submit(FedTxKind::PegOutBump {
                        batch: b.id,
                        version: v as u32,
                    });
                }
            }
        }
    }

    /// A batch state holds as confirmed whose confirmed version is no
    /// longer what Bitcoin shows (a reorg deeper than the confirmation
    /// depth): reports the version that is at depth now, so that state
    /// follows it.
    fn reconfirm(&self, b: &Batch, btc_tip: Option<u64>) {
        let Some(c) = &b.confirmed else { return };
        if self.mined(b).is_some_and(|(v, _)| v as u32 != c.version) {
            self.confirm(b, btc_tip);
        }
    }

    /// Reports a version of `b` confirmed at depth on this member's
    /// bitcoind (as its watcher saw the batch's inputs spent); true if one is.
    fn confirm(&self, b: &Batch, btc_tip: Option<u64>) -> bool {
        let Some(tip) = btc_tip else { return false };
        let depth = self.chain.params().confirmations as u64;
        let Some((v, sp)) = self.mined(b) else {
            return false;
        };
        if tip + 1 < sp.height + depth {
            return false;
        }
        if b.confirmed.is_some() {
            tracing::warn!(batch = b.id.0, version = v, txid = %sp.txid, "Bitcoin now shows another version of a confirmed batch at depth: state follows it");
        }
        let recent = self
            .memory
            .lock()
            .map(|m| {
                m.reported
                    .get(&BatchId(b.id.0))
                    .is_some_and(|t| t.elapsed() < RESUBMIT)
            })
            .unwrap_or(true);
        if !recent {
            tracing::info!(batch = b.id.0, version = v, txid = %sp.txid, "peg-out batch confirmed at depth");
            self.submit(FedTxKind::PegOutConfirmed {
                batch: b.id,
                txid: sp.txid,
                bitcoin_block: sp.block,
            });
            if let Ok(mut m) = self.memory.lock() {
                m.reported.insert(BatchId(b.id.0), Instant::now());
            }
        }
        true
    }
}

/// The best-chain block holding `txid` if it is at least `depth` deep
/// (`tip` is the best height); `hint` names the block when known.
pub fn confirmed_at_depth(
    btc: &dyn fedpeg_peg::chain::BitcoinChain,
    txid: &Txid,
    hint: Option<&BlockHash>,
    tip: u64,
    depth: u64,
) -> Option<BlockHash> {
    let (_, block) = btc.transaction(txid, hint).ok()??;
    let block = block?;
    let height = btc.best_chain_height(&block).ok()??;
    (tip + 1 >= height + depth).then_some(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{PegNode, CONFIRMATIONS};
    use fedpeg_peg::chain::BitcoinChain;

    /// A 2-of-3 federation that pegged in 1 BTC and formed a peg-out batch,
    /// with members 0 and 1's workers over one watcher of its bitcoind.
    struct Federation {
        node: PegNode,
        watcher: Arc<Watcher>,
        workers: [PegOutWorker; 2],
        batch: Batch,
    }

    fn formed() -> Federation {
        formed_with(PegNode::new(3, 2))
    }

    /// [`formed`] on `node`, a fresh 2-of-3 federation.
    fn formed_with(node: PegNode) -> Federation {
        node.pegged_in(1, 100_000_000);
        let batch = node.peg_out(1);
        let watcher = node.watcher();
        watcher.poll().unwrap();
        let workers = [node.worker(&watcher, 0), node.worker(&watcher, 1)];
        Federation {
            node,
            watcher,
            workers,
            batch,
        }
    }

    impl Federation {
        /// Member `m`'s worker, after its watcher caught up with bitcoind.
        fn tick(&self, m: usize) {
            self.watcher.poll().unwrap();
            self.workers[m].tick();
        }

        /// The batch as committed state holds it now.
        fn batch(&self) -> Batch {
            self.node.batch(self.batch.id.0).expect("unconfirmed batch")
        }

        /// The batch's newest version, as a Bitcoin txid.
        fn txid(&self) -> Txid {
            self.batch().latest().txid
        }

        /// Members 0 and 1 sign, each in its own block.
        fn signed(&self) {
            for m in 0..2 {
                self.tick(m);
                self.node.commit(vec![]);
            }
            assert_eq!(self.batch().latest().signatures.len(), 2);
        }

        /// Signed, then broadcast by member 0.
        fn broadcast(&self) -> Txid {
            self.signed();
            self.tick(0);
            let txid = self.txid();
            assert_eq!(self.node.btc.mempool(), vec![txid]);
            txid
        }

        /// The pooled federation transactions of `kind`'s variant.
        fn pooled(&self, kind: fn(&FedTxKind) -> bool) -> Vec<FederationTx> {
            self.node
                .pooled()
                .into_iter()
                .filter(|t| kind(&t.kind))
                .collect()
        }
    }

    fn signatures(k: &FedTxKind) -> bool {
        matches!(k, FedTxKind::PegOutSignatures { .. })
    }
    fn bump(k: &FedTxKind) -> bool {
        matches!(k, FedTxKind::PegOutBump { .. })
    }
    fn confirmed(k: &FedTxKind) -> bool {
        matches!(k, FedTxKind::PegOutConfirmed { .. })
    }

    /// After a change that adds a member with a new peg key (2 of 3 both
    /// times), the old coins' sweep is signed by the members holding the
    /// genesis keys (the newcomer skips it), assembled under the genesis
    /// descriptor and pays the new epoch's change script.
    #[test]
    fn a_sweep_is_signed_by_the_old_key_holders_and_pays_the_new_descriptor() {
        use fedpeg_ledger::epoch::EpochMember;
        let node = PegNode::new(3, 2);
        node.pegged_in(1, 100_000_000);
        let secp = fedpeg_peg::bitcoin::secp256k1::Secp256k1::signing_only();
        let mut members: Vec<EpochMember> =
            node.chain.with_state(|s| s.epochs[0].members[..2].to_vec());
        members.push(EpochMember {
            name: "m3".into(),
            consensus_key: crate::peg_testing::consensus_key(3).verifying_key(),
            peg_key: crate::peg_testing::peg_secret(3).public_key(&secp),
            p2p_address: "/ip4/127.0.0.1/tcp/9".into(),
        });
        // A quorum of 3 members is all 3.
        let activation = node.adopt_change(members, 2, 3);
        while node.chain.height() < activation {
            node.commit(vec![]);
        }
        let sweep = node.batch(0).expect("the sweep formed at the activation");
        assert!(sweep.outputs.is_empty());
        assert_eq!((sweep.epoch, sweep.change_epoch), (0, 1));
        let watcher = node.watcher();
        watcher.poll().unwrap();
        let workers = [0, 1, 3].map(|m| node.worker(&watcher, m));
        // The newcomer (member 2 of epoch 1) holds no genesis peg key.
        workers[2].tick();
        assert!(node.pooled().is_empty(), "{:?}", node.pooled());
        for w in &workers[..2] {
            w.tick();
            node.commit(vec![]);
        }
        let signed = node.batch(0).unwrap();
        assert_eq!(signed.latest().signatures.len(), 2);
        watcher.poll().unwrap();
        workers[0].tick();
        assert_eq!(node.btc.mempool(), vec![signed.latest().txid]);
        let params = node.chain.params();
        let fed1 = node
            .chain
            .with_state(|s| params.federation_of(&s.epochs[1]))
            .unwrap();
        let (tx, _) = node
            .bitcoind()
            .transaction(&signed.latest().txid, None)
            .unwrap()
            .unwrap();
        assert_eq!(tx.output.len(), 1);
        assert_eq!(
            tx.output[0].script_pubkey,
            fed1.change_script_pubkey().unwrap()
        );
    }

    #[test]
    fn a_committed_batch_is_signed_with_signatures_state_accepts() {
        let f = formed();
        assert!(f.batch.latest().signatures.is_empty());
        f.tick(0);
        let pooled = f.pooled(signatures);
        assert_eq!(pooled.len(), 1);
        assert_eq!(pooled[0].member, MemberIndex(0));
        let FedTxKind::PegOutSignatures {
            batch,
            version,
            signatures: sigs,
        } = &pooled[0].kind
        else {
            unreachable!()
        };
        assert_eq!((*batch, *version), (f.batch.id, 0));
        assert_eq!(sigs.len(), f.batch.inputs.len());
        // The ledger verified and recorded them.
        f.node.commit(vec![]);
        assert_eq!(
            f.batch().latest().signatures.keys().collect::<Vec<_>>(),
            vec![&MemberIndex(0)]
        );
        // Nothing more to sign.
        f.tick(0);
        assert!(f.pooled(signatures).is_empty());
    }

    #[test]
    fn a_batch_is_broadcast_once_threshold_signatures_are_in_state() {
        let f = formed();
        f.tick(0);
        f.node.commit(vec![]);
        // One signature of two: nothing to broadcast.
        f.tick(0);
        assert!(f.node.btc.mempool().is_empty());
        assert_eq!(f.node.btc.calls("broadcast"), 0);
        f.tick(1);
        f.node.commit(vec![]);
        f.tick(0);
        let txid = f.txid();
        assert_eq!(f.node.btc.mempool(), vec![txid]);
        // It pays the withdrawal from the minted deposit.
        let (tx, _) = f.node.btc.transaction(&txid, None).unwrap().unwrap();
        assert_eq!(tx.input[0].previous_output, f.batch.inputs[0].0);
        assert_eq!(
            tx.output[0].value.to_sat(),
            crate::peg_testing::PEG_OUT_SATS
        );
        // Not sent again on the next pass (only every REBROADCAST).
        f.tick(0);
        assert_eq!(f.node.btc.calls("broadcast"), 1);
    }

    #[test]
    fn confirmation_is_reported_only_at_the_configured_depth() {
        let f = formed();
        let txid = f.broadcast();
        let block = f.node.btc.mine(1)[0];
        let btc = f.node.bitcoind();
        for depth in 1..CONFIRMATIONS {
            f.tick(0);
            let tip = f.node.btc.best_tip().0;
            assert_eq!(
                confirmed_at_depth(&*btc, &txid, Some(&block), tip, CONFIRMATIONS),
                None
            );
            assert!(f.pooled(confirmed).is_empty(), "reported at depth {depth}");
            f.node.btc.mine_empty(1);
        }
        let tip = f.node.btc.best_tip().0;
        assert_eq!(
            confirmed_at_depth(&*btc, &txid, Some(&block), tip, CONFIRMATIONS),
            Some(block)
        );
        f.tick(0);
        let pooled = f.pooled(confirmed);
        assert_eq!(pooled.len(), 1);
        assert_eq!(
            pooled[0].kind,
            FedTxKind::PegOutConfirmed {
                batch: f.batch.id,
                txid,
                bitcoin_block: block,
            }
        );
        f.node.commit(vec![]);
        assert!(f.node.batch(f.batch.id.0).is_none(), "the batch is done");
    }

    /// Bumps are due after one block, confirmation after three: a batch
    /// mined in the next block must not be replaced while it gets deep
    /// (before, every batch was bumped while already mined).
    #[test]
    fn a_mined_batch_gets_no_bump_vote_while_it_gets_deep() {
        let f = formed_with(PegNode::new_with(3, 2, |g| g.pegout.bump_after_blocks = 1));
        let txid = f.broadcast();
        let block = f.node.btc.mine(1)[0];
        for _ in 1..CONFIRMATIONS {
            f.tick(0);
            f.tick(1);
            assert!(f.pooled(bump).is_empty(), "bump vote for a mined batch");
            assert!(f.pooled(confirmed).is_empty(), "confirmed too early");
            f.node.btc.mine_empty(1);
        }
        f.tick(0);
        assert!(f.pooled(bump).is_empty());
        assert_eq!(
            f.pooled(confirmed)[0].kind,
            FedTxKind::PegOutConfirmed {
                batch: f.batch.id,
                txid,
                bitcoin_block: block,
            }
        );
        // The control: unmined, the same genesis bumps after one block.
        let g = formed_with(PegNode::new_with(3, 2, |g| g.pegout.bump_after_blocks = 1));
        g.broadcast();
        g.node.btc.mine_empty(1);
        g.tick(0);
        assert_eq!(g.pooled(bump).len(), 1);
    }

    /// The member's state is the only record of which version confirmed
    /// once the batch is done; when a reorg deeper than the confirmation
    /// depth takes the confirming block away, the member raises an alert
    /// (signing stops) and sends the transaction back to bitcoind.
    #[test]
    fn a_confirmed_batch_reorged_out_is_alerted_and_rebroadcast() {
        let f = formed();
        let txid = f.broadcast();
        f.node.btc.mine(CONFIRMATIONS);
        f.tick(0);
        f.node.commit(vec![]);
        assert!(f.node.batch(f.batch.id.0).is_none(), "the batch is done");
        // A longer branch from below the batch's block, without it.
        let depth = CONFIRMATIONS;
        f.node
            .btc
            .reorg(depth, vec![vec![]; depth as usize + 1])
            .unwrap();
        // bitcoind puts it back in its mempool; say it lost it (restart).
        assert!(f.node.btc.evict(&txid));
        assert!(f.node.btc.mempool().is_empty());
        f.tick(0);
        let input = f.batch.inputs[0].0;
        assert!(f.watcher.deep_reorgs().contains(&input), "no alert");
        assert_eq!(f.node.btc.mempool(), vec![txid], "not rebroadcast");
        // Mined again: no longer reorged out; the alert waits for an operator.
        f.node.btc.mine(1);
        f.tick(0);
        assert!(f.watcher.reorged_spends().is_empty());
        assert!(f.watcher.deep_reorgs().contains(&input));
    }

    /// Version 0 confirms and state records it; then a reorg deeper than
    /// the confirmation depth replaces its block with one holding version 1.
    /// The member alerts, reports version 1 at depth, and state follows:
    /// version 1's change is the federation's UTXO.
    #[test]
    fn after_a_deep_reorg_to_another_version_state_follows_bitcoin() {
        let f = formed();
        let (stuck, v1) = replaced_and_sent(&f);
        let (v1_tx, _) = f.node.btc.transaction(&v1, None).unwrap().unwrap();
        // Version 0 is mined and confirmed.
        f.node.btc.mine_with(vec![stuck.clone()]).unwrap();
        f.node.btc.mine_empty(CONFIRMATIONS - 1);
        f.tick(0);
        f.node.commit(vec![]);
        let n = f.batch.outputs.len() as u32;
        let settled = |v: u32| {
            f.node.chain.with_state(|s| {
                s.settled[&f.batch.id].confirmed.as_ref().map(|c| c.version) == Some(v)
            })
        };
        assert!(settled(0));
        let change = |txid| fedpeg_ledger::fedtx::OutPoint { txid, vout: n };
        assert!(f
            .node
            .chain
            .with_state(|s| s.utxos.contains_key(&change(stuck.compute_txid()))));
        // The deep reorg: version 1 in the new branch, which gets deep.
        let mut branch = vec![vec![v1_tx]];
        branch.extend(vec![vec![]; CONFIRMATIONS as usize]);
        f.node.btc.reorg(CONFIRMATIONS, branch).unwrap();
        f.tick(1);
        let input = f.batch.inputs[0].0;
        assert!(f.watcher.deep_reorgs().contains(&input), "no alert");
        let pooled = f.pooled(confirmed);
        assert_eq!(pooled.len(), 1, "{pooled:?}");
        assert!(matches!(
            pooled[0].kind,
            FedTxKind::PegOutConfirmed { txid, .. } if txid == v1
        ));
        f.node.commit(vec![]);
        assert!(settled(1), "state did not follow");
        f.node.chain.with_state(|s| {
            assert!(!s.utxos.contains_key(&change(stuck.compute_txid())));
            assert!(s.utxos.contains_key(&change(v1)));
        });
    }

    #[test]
    fn a_stuck_batch_gets_a_bump_vote_after_bump_after_blocks() {
        let f = formed();
        let txid = f.broadcast();
        let bump_after = u64::from(f.node.chain.params().pegout.bump_after_blocks);
        f.node.btc.mine_empty(bump_after - 1);
        f.tick(0);
        assert!(f.pooled(bump).is_empty(), "bumped too early");
        f.node.btc.mine_empty(1);
        f.tick(0);
        let pooled = f.pooled(bump);
        assert_eq!(pooled.len(), 1);
        assert_eq!(pooled[0].member, MemberIndex(0));
        assert_eq!(
            pooled[0].kind,
            FedTxKind::PegOutBump {
                batch: f.batch.id,
                version: 0
            }
        );
        assert_eq!(f.node.btc.mempool(), vec![txid], "still unconfirmed");
    }

    /// Broadcasts version 0, lets it get stuck, commits member 0's bump
    /// vote (one vote is f + 1 of three members), and has version 1 signed;
    /// version 0 as broadcast.
    fn replaced(f: &Federation) -> fedpeg_peg::bitcoin::Transaction {
        let v0 = f.broadcast();
        let (stuck, _) = f.node.btc.transaction(&v0, None).unwrap().unwrap();
        let bump_after = u64::from(f.node.chain.params().pegout.bump_after_blocks);
        f.node.btc.mine_empty(bump_after);
        f.tick(0);
        f.node.commit(vec![]);
        assert_eq!(f.batch().versions.len(), 2, "the bump made a version");
        f.signed();
        stuck
    }

    /// [`replaced`], then member 0 sends version 1: (version 0, version 1's txid).
    fn replaced_and_sent(f: &Federation) -> (fedpeg_peg::bitcoin::Transaction, Txid) {
        let stuck = replaced(f);
        f.tick(0);
        (stuck, f.txid())
    }

    #[test]
    fn a_replacement_version_is_signed_and_replaces_the_stuck_one_in_the_mempool() {
        let f = formed();
        let (stuck, v1) = replaced_and_sent(&f);
        assert_ne!(v1, stuck.compute_txid());
        assert_eq!(f.node.btc.mempool(), vec![v1]);
    }

    #[test]
    fn the_version_that_confirms_is_reported_even_if_it_was_replaced() {
        let f = formed();
        let stuck = replaced(&f);
        f.tick(0);
        // A miner that never saw the replacement confirms version 0.
        let block = f.node.btc.mine_with(vec![stuck.clone()]).unwrap();
        f.node.btc.mine_empty(CONFIRMATIONS - 1);
        f.tick(0);
        let pooled = f.pooled(confirmed);
        assert_eq!(pooled.len(), 1);
        assert_eq!(
            pooled[0].kind,
            FedTxKind::PegOutConfirmed {
                batch: f.batch.id,
                txid: stuck.compute_txid(),
                bitcoin_block: block,
            }
        );
        f.node.commit(vec![]);
        assert!(f.node.batch(f.batch.id.0).is_none(), "the batch is done");
    }

    #[test]
    fn after_a_restart_the_bump_timer_counts_from_when_the_batch_entered_the_mempool() {
        let f = formed();
        f.broadcast();
        let bump_after = u64::from(f.node.chain.params().pegout.bump_after_blocks);
        f.node.btc.mine_empty(bump_after);
        // A restarted member 0: no memory of the broadcast.
        let restarted = f.node.worker(&f.watcher, 0);
        f.watcher.poll().unwrap();
        restarted.tick();
        restarted.tick();
        assert_eq!(f.pooled(bump).len(), 1);
    }

    #[test]
    fn no_batch_is_signed_while_a_deep_reorg_alert_is_open() {
        let f = formed();
        // The minted deposit's block leaves the best chain.
        let depth = f.node.btc.best_tip().0;
        f.node
            .btc
            .reorg(depth, vec![vec![]; depth as usize + 1])
            .unwrap();
        f.watcher.poll().unwrap();
        let alerts = f.watcher.deep_reorgs();
        assert_eq!(alerts.len(), 1);
        f.tick(0);
        assert!(f.pooled(signatures).is_empty(), "signed despite the alert");
        // The operator acknowledges: signing resumes.
        f.watcher.acknowledge(&alerts);
        f.tick(0);
        assert_eq!(f.pooled(signatures).len(), 1);
    }

    /// A rollover batch (a deposit nearing its emergency timelock, no
    /// peg-out queued) forms from committed state alone and is signed,
    /// assembled and broadcast by the members like any batch: one output,
    /// to the change address, spending the old deposit.
    #[test]
    fn a_rollover_batch_is_signed_and_broadcast_like_a_peg_out_batch() {
        let backup = fedpeg_peg::bitcoin::secp256k1::SecretKey::from_slice(&[0x77; 32])
            .unwrap()
            .public_key(&fedpeg_peg::bitcoin::secp256k1::Secp256k1::signing_only());
        let node = PegNode::new_with(3, 2, |g| {
            g.emergency = Some(fedpeg_ledger::genesis::EmergencyParams {
                backup_keys: vec![backup.to_string()],
                threshold: 1,
                csv_blocks: 1,
            });
        });
        // The shortest rollover age: one assumed block, 450 s of block time
        // (the harness's blocks are 1 s apart).
        assert_eq!(node.chain.params().rollover_after_ms, Some(450_000));
        // Each mint pre-paid its own input's spend cost into the fee pool;
        // the transaction's header and change output are paid from other
        // fee income: here the second, younger deposit's (with one deposit
        // alone the pool could not pay, and the rollover would wait).
        let d = node.pegged_in(1, 100_000_000);
        node.pegged_in(2, 100_000_000);
        let mut blocks = 0;
        while node.chain.with_state(|s| s.batches.is_empty()) {
            node.commit(vec![]);
            blocks += 1;
            assert!(blocks < 500, "no rollover batch after {blocks} blocks");
        }
        assert!(blocks >= 440, "rolled too early, after {blocks} blocks");
        let batch = node.batch(0).expect("the rollover batch");
        assert!(batch.outputs.is_empty());
        let ins: Vec<_> = batch.inputs.iter().map(|(o, _)| *o).collect();
        assert_eq!(ins, vec![d.outpoint], "the older deposit, alone");
        let watcher = node.watcher();
        watcher.poll().unwrap();
        let workers = [node.worker(&watcher, 0), node.worker(&watcher, 1)];
        for w in &workers {
            watcher.poll().unwrap();
            w.tick();
            node.commit(vec![]);
        }
        assert_eq!(node.batch(0).unwrap().latest().signatures.len(), 2);
        workers[0].tick();
        let txid = node.batch(0).unwrap().latest().txid;
        assert_eq!(node.btc.mempool(), vec![txid]);
        let (tx, _) = node.btc.transaction(&txid, None).unwrap().unwrap();
        assert_eq!(tx.output.len(), 1);
        let fed = node.chain.spec.peg_federation().unwrap();
        assert_eq!(
            tx.output[0].script_pubkey,
            fed.change_script_pubkey().unwrap()
        );
        // The members' branch: dummy, 2 signatures, the witness script.
        assert_eq!(tx.input[0].witness.len(), 4);
    }
}
