//! The genesis members as the swarm sees them: peer ids, addresses, and
//! which member a connection belongs to.

use super::*;

/// Genesis members by peer id and by index.
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

    pub(crate) fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.by_peer.get(peer).copied()
    }
}
