//! The members as the swarm sees them: peer ids, addresses, which member a
//! connection belongs to, and how a new member list takes effect.

use super::*;

/// Members by peer id and by index.
pub(crate) struct MemberTable {
    pub(crate) by_peer: HashMap<PeerId, usize>,
    /// Sorted by index (BTreeMap order) for deterministic dialing and sync rotation.
    pub(crate) by_index: BTreeMap<usize, (PeerId, Multiaddr)>,
}

impl MemberTable {
    pub(crate) fn new(members: &[MemberPeer]) -> Result<MemberTable, NetworkError> {
        let mut t = MemberTable {
            by_peer: HashMap::new(),
            by_index: BTreeMap::new(),
        };
        for m in members {
            if let Some(Protocol::P2p(p)) = m.addr.iter().last() {
                if p != m.peer_id {
                    return Err(NetworkError::InvalidConfig(format!(
                        "member {}: address {} names peer {p} but its consensus key is peer {}",
                        m.index, m.addr, m.peer_id
                    )));
                }
            }
            if t.by_peer.insert(m.peer_id, m.index).is_some() {
                return Err(NetworkError::InvalidConfig(format!(
                    "member {}: peer {} is listed twice",
                    m.index, m.peer_id
                )));
            }
            if t.by_index
                .insert(m.index, (m.peer_id, m.addr.clone()))
                .is_some()
            {
                return Err(NetworkError::InvalidConfig(format!(
                    "member index {} is listed twice",
                    m.index
                )));
            }
        }
        Ok(t)
    }

    /// A table for [`Network::set_members`]: as [`MemberTable::new`], and
    /// each index must be the member's position (the consensus task maps
    /// indices back to keys through the list it gave).
    pub(crate) fn from_list(members: &[MemberPeer]) -> Result<MemberTable, NetworkError> {
        if let Some((pos, m)) = members.iter().enumerate().find(|(i, m)| m.index != *i) {
            return Err(NetworkError::InvalidConfig(format!(
                "member at position {pos} has index {}; indices must be 0, 1, ... in list order",
                m.index
            )));
        }
        MemberTable::new(members)
    }

    pub(crate) fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.by_peer.get(peer).copied()
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.by_peer.keys().copied()
    }
}

impl SwarmTask {
    /// Puts a new member list in force everywhere member identity lives, or
    /// keeps the old one (with a warning) if the list is invalid.
    ///
    /// Connections: a behaviour's handler (gossip and identify offered or
    /// not) is fixed when a connection opens, and the slot table counts a
    /// connection as what its peer was then. So the connections of a peer
    /// that became a member or stopped being one are closed: a new member
    /// is redialed (and dials us) and comes back with the member protocols
    /// and no observer slot; an ex-member that still dials us comes back as
    /// an observer, admitted only if a slot is free or past its tenure.
    pub(crate) fn set_members(&mut self, list: Vec<MemberPeer>) {
        let table = match MemberTable::from_list(&list) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "new p2p member list refused; the old one stays in force");
                return;
            }
        };
        let local = *self.swarm.local_peer_id();
        let old = std::mem::replace(&mut self.members, table);
        let old_self = self.self_index;
        self.self_index = self.members.index_of(&local);
        info!(
            members = self.members.by_index.len(),
            self_index = ?self.self_index,
            was = ?old_self,
            "p2p member list changed"
        );

        let behaviour = self.swarm.behaviour_mut();
        behaviour.slots.set_members(self.members.peers());
        behaviour.gossip.set_members(self.members.peers());
        behaviour.identify.set_members(self.members.peers());

        self.reindex_shared(&old);
        self.retarget(local);

        let changed: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| old.index_of(p).is_some() != self.members.index_of(p).is_some())
            .copied()
            .collect();
        for peer in changed {
            debug!(%peer, member = ?self.members.index_of(&peer), "peer changed role; closing its connections to reopen them under the new one");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        *lock(&self.shared.members) = list;
        self.redial_due();
    }

    /// Rewrites the member indices the handles see (peer table, versions).
    fn reindex_shared(&mut self, old: &MemberTable) {
        for (peer, e) in lock(&self.shared.peers).iter_mut() {
            e.member = self.members.index_of(peer);
        }
        let mut versions = lock(&self.shared.member_versions);
        let kept: HashMap<usize, String> = versions
            .drain()
            .filter_map(|(i, v)| {
                let (peer, _) = old.by_index.get(&i)?;
                Some((self.members.index_of(peer)?, v))
            })
            .collect();
        *versions = kept;
    }

    /// Dials new members, forgets removed ones (explicit dials stay) and
    /// follows a member's changed address.
    fn retarget(&mut self, local: PeerId) {
        let members = &self.members;
        self.targets.retain(|t| {
            t.reason == DialReason::Explicit
                || t.peer
                    .is_some_and(|p| p != local && members.index_of(&p).is_some())
        });
        let now = Instant::now();
        for (peer, addr) in self.members.by_index.values() {
            if *peer == local {
                continue;
            }
            let existing = self.targets.iter_mut().find(|t| t.peer == Some(*peer));
            match existing {
                Some(t) if t.reason == DialReason::Member && t.addr != *addr => {
                    t.addr = addr.clone();
                    t.redial.next_at = Some(now);
                }
                Some(_) => {}
                None => self.targets.push(DialTarget::new(
                    Some(*peer),
                    addr.clone(),
                    DialReason::Member,
                    now,
                )),
            }
        }
    }
}
