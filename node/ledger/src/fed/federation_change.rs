//! `FederationChange`: a member's vote to replace the member set. A quorum
//! of the epoch in force voting for the same change adopts it: it becomes
//! the next epoch from its activation height. And what an epoch's first
//! block resets.

use crate::epoch::{
    ChangeVotes, Epoch, FederationChange, MAX_ACTIVATION_LEAD, MIN_ACTIVATION_LEAD,
};
use crate::error::FedTxError;
use crate::events::Event;
use crate::ids::MemberIndex;
use crate::overlay::Overlay;
use crate::LedgerParams;
use fedpeg_consensus::Height;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    member: MemberIndex,
    change: &FederationChange,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let last = o.delta.adopted.as_ref().or(o.base.epochs.last());
    if let Some(pending) = last.filter(|e| e.activation > height) {
        return Err(FedTxError::ChangePending {
            activation: pending.activation,
        });
    }
    let (min, max) = (
        Height(height.0.saturating_add(MIN_ACTIVATION_LEAD)),
        Height(height.0.saturating_add(MAX_ACTIVATION_LEAD)),
    );
    if !(min..=max).contains(&change.activation) {
        return Err(FedTxError::ActivationLead {
            activation: change.activation,
            height,
            min,
            max,
        });
    }
    if let Some(problem) = change.member_set_problem() {
        return Err(FedTxError::BadFederationChange(problem));
    }
    check_peg_rule(o, params, height, change)?;
    let epoch = o.base.epoch_at(height);
    if change.base_epoch != epoch.number {
        return Err(FedTxError::BadFederationChange(format!(
            "the change replaces epoch {}, but epoch {} is in force; propose it again from the set in force",
            change.base_epoch, epoch.number
        )));
    }
    let id = change.id();
    let mut votes: ChangeVotes = match &o.delta.change_votes {
        Some(v) => v.clone(),
        None if o.delta.epoch_start => ChangeVotes::new(),
        None => o.base.change_votes.clone(),
    };
    // A vote stands until its change is adopted or expires (start_block):
    // were it replaceable, anyone could replay a member's older vote and
    // flip it back.
    if let Some((voted, _)) = votes.get(&member) {
        return Err(if *voted == id {
            FedTxError::Duplicate(member)
        } else {
            FedTxError::BadFederationChange(format!(
                "member {member} already voted for change {} in this epoch; a vote stands until that change is adopted or can no longer be (its activation less than {MIN_ACTIVATION_LEAD} blocks ahead)",
                voted.to_hex()
            ))
        });
    }
    votes.insert(member, (id, change.clone()));
    let count = votes.values().filter(|(v, _)| *v == id).count();
    let needed = epoch.quorum();
    events.push(Event::FederationChangeVote {
        member,
        change: id,
        votes: count as u32,
        needed: needed as u32,
    });
    if count >= needed {
        let number = last.map_or(0, |e| e.number.saturating_add(1));
        o.delta.adopted = Some(Epoch {
            number,
            activation: change.activation,
            adopted: height,
            members: change.members.clone(),
            peg_threshold: change.peg_threshold,
        });
        votes.clear();
        events.push(Event::FederationChangeAdopted {
            change: id,
            epoch: number,
            activation: change.activation,
        });
    }
    o.delta.change_votes = Some(votes);
    Ok(())
}

/// The peg rules of a change (each epoch has its own descriptor, see
/// [`crate::epoch`]):
/// - its members' peg keys and threshold form a descriptor (with the
///   genesis emergency branch);
/// - the threshold is safe for its size: f < m <= n - f (unless genesis
///   allows an unsafe one, on regtest);
/// - continuity: its members hold at least the current epoch's threshold
///   of the current epoch's peg keys, so the coins under the current
///   descriptor can still be signed and swept once it is in force;
/// - no UTXO or unconfirmed batch of a past epoch remains: the previous
///   sweep is done, so no coin is ever more than one descriptor behind.
fn check_peg_rule(
    o: &Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    change: &FederationChange,
) -> Result<(), FedTxError> {
    let bad = |s: String| Err(FedTxError::BadFederationChange(s));
    let n = change.members.len() as u32;
    let m = change.peg_threshold;
    let safe = crate::genesis::safe_peg_thresholds(n);
    let allowed = params.allow_unsafe_peg_threshold && params.network == bitcoin::Network::Regtest;
    let acceptable = safe.contains(&m) || (allowed && (1..=n).contains(&m));
    if !acceptable {
        return bad(format!(
            "peg_threshold {m} of {n} members is unsafe: f = {} faulty members could sign alone or freeze the funds; use {}..={} (f < m <= n - f)",
            n.saturating_sub(1) / 3,
            safe.start(),
            safe.end()
        ));
    }
    let keys: Vec<_> = change.members.iter().map(|e| e.peg_key).collect();
    if let Err(e) = params.build_federation(&keys, m) {
        return bad(format!("the new peg keys form no descriptor: {e}"));
    }
    // Continuity, for the epoch in force and every older epoch that still
    // has coins (UTXOs, or inputs of an unconfirmed batch): the new set
    // must hold its threshold of that epoch's peg keys, or those coins
    // could never be signed again. A change during a sweep is allowed on
    // these terms: it is how a sweep stalled by old-key holders who do not
    // sign gets more of them back.
    let current = o.base.epoch_at(height);
    let mut with_coins: Vec<u32> = o.available_utxos().iter().map(|(_, u)| u.epoch).collect();
    with_coins.extend(
        o.base
            .batches
            .keys()
            .chain(o.delta.batches.keys())
            .filter_map(|id| o.batch(*id))
            .map(|b| b.epoch),
    );
    with_coins.push(current.number);
    with_coins.sort_unstable();
    with_coins.dedup();
    for number in with_coins {
        let Some(e) = o.base.epoch(number) else {
            continue;
        };
        // A key counts only where the member who holds its secret keeps it
        // (same consensus key, or same name across a consensus-key
        // rotation): the same key listed under a newcomer signs nothing.
        let held = e
            .members
            .iter()
            .filter(|c| {
                change.members.iter().any(|n| {
                    n.peg_key == c.peg_key
                        && (n.consensus_key == c.consensus_key || n.name == c.name)
                })
            })
            .count();
        if held < e.peg_threshold as usize {
            return bad(format!(
                "only {held} of the {} peg keys of epoch {} are held by the new members, but its threshold {} is needed to sign (and sweep) the coins under its descriptor; keep at least {} of its peg keys (rotate fewer keys per change)",
                e.members.len(),
                e.number,
                e.peg_threshold,
                e.peg_threshold
            ));
        }
    }
    Ok(())
}

/// At the start of the block at `height`: if an epoch activates there,
/// drops what members of the old one voted (fee rates, changes, bumps),
/// since member indices now name other members.
pub(crate) fn start_block(o: &mut Overlay<'_>, height: Height) {
    let starts = o
        .base
        .epochs
        .iter()
        .any(|e| e.number > 0 && e.activation == height);
    if !starts {
        // Votes for changes that can no longer be adopted (a vote in this
        // block needs an activation at least MIN_ACTIVATION_LEAD ahead)
        // expire: their members may vote again.
        let expired =
            |c: &FederationChange| c.activation.0 < height.0.saturating_add(MIN_ACTIVATION_LEAD);
        if o.base.change_votes.values().any(|(_, c)| expired(c)) {
            let mut votes = o.base.change_votes.clone();
            votes.retain(|_, (_, c)| !expired(c));
            o.delta.change_votes = Some(votes);
        }
        return;
    }
    o.delta.epoch_start = true;
    let with_votes: Vec<_> = o
        .base
        .batches
        .values()
        .filter(|b| b.versions.iter().any(|v| !v.bump_votes.is_empty()))
        .map(|b| b.id)
        .collect();
    for id in with_votes {
        if let Some(mut b) = o.batch(id) {
            for v in &mut b.versions {
                v.bump_votes.clear();
            }
            o.delta.batches.insert(id, b);
        }
    }
}
