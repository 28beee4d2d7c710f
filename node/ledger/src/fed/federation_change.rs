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
    check_peg_rule(params, change)?;
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

/// The peg descriptor stays the genesis one in this phase: the change keeps
/// its threshold, and at least that many of the new members hold one of its
/// keys, or nobody could sign peg-outs (members without one take part in
/// consensus only).
fn check_peg_rule(params: &LedgerParams, change: &FederationChange) -> Result<(), FedTxError> {
    let fed = &params.federation;
    let m = fed.threshold();
    if change.peg_threshold as usize != m {
        return Err(FedTxError::BadFederationChange(format!(
            "peg_threshold {} differs from the federation's {m}; the peg descriptor cannot change yet, so keep {m}",
            change.peg_threshold
        )));
    }
    let holders = change
        .members
        .iter()
        .filter(|e| fed.key_index(&e.peg_key).is_some())
        .count();
    if holders < m {
        return Err(FedTxError::BadFederationChange(format!(
            "only {holders} of the {} new members hold a peg key of the federation, but {m} are needed to sign peg-outs (they would freeze); keep at least {m} of the federation's peg keys",
            change.members.len()
        )));
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
