//! `fedpeg federation show|propose|approve`: the member set by epoch, and
//! the operators' votes that change it. A change is adopted when a quorum
//! (2f+1) of the members in force vote for the same change, and takes
//! effect at its activation height. Pure parts: `edits` (the propose flags
//! applied to the set in force) and `diff` (what a change does).

pub mod approve;
mod diff;
mod edits;
pub mod propose;
pub mod show;

use anyhow::{bail, Context as _};
use fedpeg_proto::v1 as pb;

use crate::client::{admin_request, status_error, Client};

pub use edits::Flags as EditFlags;

/// Blocks between the block whose vote adopts a change and the change's
/// activation height, at the least (the node refuses a change closer).
pub use fedpeg_ledger::epoch::MIN_ACTIVATION_LEAD as MIN_ACTIVATION_DELAY;

/// The node's federation with its height and name, fetched once.
pub struct Snapshot {
    /// The node's tip height.
    pub height: u64,
    /// This node's member name (empty on an observer).
    pub member_name: String,
    pub federation: pb::GetFederationResponse,
}

impl Snapshot {
    /// Asks the node for its status and its federation.
    pub async fn fetch(c: &Client, what: &str) -> anyhow::Result<Snapshot> {
        let status = c.status().await?;
        let federation = c
            .federation()
            .get_federation(pb::GetFederationRequest {})
            .await
            .map_err(|s| status_error(what, s))?
            .into_inner();
        Ok(Snapshot {
            height: status.height,
            member_name: status.member_name,
            federation,
        })
    }

    /// The epoch in force at the next height.
    pub fn current(&self) -> anyhow::Result<&pb::EpochView> {
        let f = &self.federation;
        f.epochs
            .iter()
            .find(|e| e.number == f.epoch)
            .with_context(|| format!("the node reports no epoch {} (epochs: {}); is fedpegd older than federation changes? Upgrade it", f.epoch, f.epochs.len()))
    }

    /// An adopted change that is not in force yet, if any.
    pub fn waiting(&self) -> Option<&pb::EpochView> {
        let f = &self.federation;
        f.epochs.iter().find(|e| e.number > f.epoch)
    }

    /// Refuses to vote while an adopted change waits for its activation
    /// (the node would refuse the vote).
    pub fn refuse_if_waiting(&self) -> anyhow::Result<()> {
        if let Some(e) = self.waiting() {
            bail!(
                "epoch {} was adopted at height {} and activates at height {} ({}); no other change can be voted until then: run this again after it",
                e.number,
                e.adopted_height,
                e.activation_height,
                self.in_blocks(e.activation_height)
            );
        }
        Ok(())
    }

    /// "in K blocks" from the node's height to `height`.
    pub fn in_blocks(&self, height: u64) -> String {
        match height.checked_sub(self.height) {
            Some(k) if k > 0 => format!("in {k} blocks"),
            _ => "now".into(),
        }
    }

    /// The least activation height a change adopted from now on may have:
    /// the next block may carry the adopting vote.
    pub fn earliest_activation(&self) -> u64 {
        self.height + 1 + MIN_ACTIVATION_DELAY
    }
}

/// Signs and submits this member's vote for `change` (an admin call).
pub async fn vote(
    c: &Client,
    token: &str,
    change: &pb::FederationChange,
    what: &str,
) -> anyhow::Result<pb::VoteFederationChangeResponse> {
    let req = admin_request(
        token,
        pb::VoteFederationChangeRequest {
            change: Some(change.clone()),
        },
    )?;
    Ok(c.node()
        .vote_federation_change(req)
        .await
        .map_err(|s| status_error(what, s))?
        .into_inner())
}

/// The command the other members' operators run to vote for `change_id`.
pub fn approve_command(change_id: &str) -> String {
    format!("fedpeg federation approve --admin-token <data-dir>/admin.token {change_id}")
}
