//! The state root: a hash chain over each block's changes,
//! `root_h = H("fedpeg/state/v2", root_{h-1} || height || delta_h)`, cheap
//! (proportional to the block, not the state) and identical on every member
//! that applied the same blocks.
//!
//! `delta_h` is written with [`crate::encoding`]'s canonical rules, every
//! list count-prefixed so no two deltas share bytes, in this order:
//! changed accounts (id, balance, nonce; id order), fee pool, supply, next
//! withdrawal id, new withdrawals (id, account, address, its output
//! script, amount, txid, height, time), new registrations, new mints (outpoint, account, credit,
//! deposit amount), fee votes (member, rate, height), new UTXOs (outpoint,
//! amount, owner), spent UTXOs, next batch id, changed batches (id order,
//! [`Batch::write`](crate::pegout_batch::Batch::write): each output carries
//! its address and the output script parsed from it when the PegOut was
//! checked). Then, only in a block whose fee votes raised the agreed rate,
//! a `1` byte and the new quote grace list (count, then rate and until-time
//! of each, see [`crate::quote_grace`]); nothing otherwise, so every block
//! that raises no rate hashes exactly as before the grace existed (the
//! fields before it are self-delimiting, so no two deltas share bytes).
//! Then, only in a block that starts an epoch, records change votes or
//! adopts a change, a `2` byte, the epoch-start flag (`0`/`1`), the new
//! change votes (optional: member, change id, change each, see
//! [`crate::epoch`]) and the adopted epoch (optional, [`crate::epoch::Epoch::write`]);
//! nothing otherwise, for the same reason. Then, only in a block that adds
//! a UTXO or changes a batch of an epoch other than 0, a `3` byte, the
//! epoch of each new UTXO (count, then u32 each, in order) and the input
//! and change epochs of each changed batch (count, then two u32 each, id
//! order); nothing otherwise, for the same reason. A golden test pins the bytes: changing any of this is a consensus change
//! that needs a new tag.

use crate::apply::Delta;
use crate::encoding::Writer;
use crate::epoch::write_change_votes;
use crate::hash::Hash32;
use crate::quote_grace::QuoteGrace;
use fedpeg_consensus::Height;

/// Domain tag of the state root.
pub const TAG: &str = "fedpeg/state/v2";

/// The canonical bytes of a block's changes.
pub fn encode_delta(d: &Delta) -> Vec<u8> {
    let mut w = Writer::default();
    w.len(d.accounts.len());
    for (id, a) in &d.accounts {
        w.bytes32(&id.0);
        w.sats(a.balance);
        w.u64(a.nonce);
    }
    w.sats(d.fee_pool);
    w.sats(d.supply);
    w.u64(d.next_withdrawal_id.0);
    w.len(d.new_withdrawals.len());
    for x in &d.new_withdrawals {
        w.u64(x.id.0);
        w.bytes32(&x.account.0);
        w.var_bytes(x.bitcoin_address.as_bytes());
        w.var_bytes(x.script_pubkey.as_bytes());
        w.sats(x.amount);
        w.bytes32(&x.txid.0);
        w.u64(x.height.0);
        w.u64(x.time_ms);
    }
    w.len(d.new_registrations.len());
    for a in &d.new_registrations {
        w.bytes32(&a.0);
    }
    w.len(d.new_mints.len());
    for (o, a, credit, amount) in &d.new_mints {
        w.outpoint(o);
        w.bytes32(&a.0);
        w.sats(*credit);
        w.sats(*amount);
    }
    w.len(d.new_fee_votes.len());
    for (m, rate, at) in &d.new_fee_votes {
        w.u32(m.0);
        w.u64(rate.0);
        w.u64(at.0);
    }
    w.len(d.new_utxos.len());
    for (o, u) in &d.new_utxos {
        w.outpoint(o);
        u.write(&mut w);
    }
    w.len(d.spent_utxos.len());
    for o in &d.spent_utxos {
        w.outpoint(o);
    }
    w.u64(d.next_batch_id.0);
    w.len(d.batches.len());
    for b in d.batches.values() {
        b.write(&mut w);
    }
    if let Some(grace) = &d.quote_grace {
        w.u8(1);
        QuoteGrace::write_list(grace, &mut w);
    }
    if d.epoch_start || d.change_votes.is_some() || d.adopted.is_some() {
        w.u8(2);
        w.u8(d.epoch_start.into());
        match &d.change_votes {
            Some(v) => {
                w.u8(1);
                write_change_votes(v, &mut w);
            }
            None => w.u8(0),
        }
        match &d.adopted {
            Some(e) => {
                w.u8(1);
                e.write(&mut w);
            }
            None => w.u8(0),
        }
    }
    let epochs = d.new_utxos.iter().any(|(_, u)| u.epoch != 0)
        || d.batches
            .values()
            .any(|b| b.epoch != 0 || b.change_epoch != 0);
    if epochs {
        w.u8(3);
        w.len(d.new_utxos.len());
        for (_, u) in &d.new_utxos {
            w.u32(u.epoch);
        }
        w.len(d.batches.len());
        for b in d.batches.values() {
            b.write_epochs(&mut w);
        }
    }
    w.buf
}

/// State root after applying `delta` on top of a state whose root is `prev`.
pub fn next(prev: Hash32, height: Height, delta: &Delta) -> Hash32 {
    Hash32::tagged(
        TAG,
        &[&prev.0, &height.0.to_be_bytes(), &encode_delta(delta)],
    )
}
