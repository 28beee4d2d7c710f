//! Which version each member runs, as it says itself over libp2p identify
//! (`/ipfs/id/1.0.0`, agent version `fedpegd/<version>`).
//!
//! Identify is wrapped in [`MembersOnly`]: members answer it for members
//! only (an outsider learns no version, and cannot make a member parse its
//! identify messages). The connection is authenticated by Noise, so a member
//! can only state its own version, and what it states is untrusted input:
//! bounded by identify's own 4 KiB message cap, then kept only if it is
//! short printable ASCII ([`crate::build_info::peer_version`]). It is shown
//! to operators (`GetFederation`) and never used for a decision. Identify's
//! address book is off: what a peer says it listens on never changes whom
//! this node dials.

use super::*;
use libp2p::identify;

/// Identify's protocol family string (not the protocol id).
const IDENTIFY_FAMILY: &str = "/fedpeg/1";

/// The identify behaviour of a node with `public_key` stating `agent_version`.
pub(crate) fn identify_behaviour(
    public_key: identity::PublicKey,
    agent_version: String,
    members: impl IntoIterator<Item = PeerId>,
) -> MembersOnly<identify::Behaviour> {
    let config = identify::Config::new(IDENTIFY_FAMILY.into(), public_key)
        .with_agent_version(agent_version)
        .with_cache_size(0)
        .with_hide_listen_addrs(true);
    MembersOnly::new(identify::Behaviour::new(config), members)
}

impl SwarmTask {
    pub(crate) fn on_identify_event(&mut self, ev: identify::Event) {
        let (peer, info) = match ev {
            identify::Event::Received { peer_id, info, .. } => (peer_id, info),
            identify::Event::Error { peer_id, error, .. } => {
                debug!(peer = %peer_id, %error, "identify failed");
                return;
            }
            _ => return,
        };
        // `MembersOnly` only lets members through; checked again because
        // the table below must hold members only.
        let Some(member) = self.members.index_of(&peer) else {
            return;
        };
        if Some(member) == self.self_index {
            return;
        }
        let version = crate::build_info::peer_version(&info.agent_version);
        if version.is_none() {
            if let Some(suppressed) = self.warn_bad_message.check() {
                warn!(%peer, member, suppressed, len = info.agent_version.len(), "member states a version that is not short printable ASCII; not shown");
            }
        }
        let mut versions = lock(&self.shared.member_versions);
        match version {
            Some(v) => {
                if versions.get(&member) != Some(&v) {
                    info!(%peer, member, version = %v, "member version");
                }
                versions.insert(member, v);
            }
            None => {
                versions.remove(&member);
            }
        }
    }
}
