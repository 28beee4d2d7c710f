//! Newtypes for the integers that travel through the ledger, so a batch id
//! cannot be passed where a withdrawal id or a member index is meant.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A peg-out batch, numbered from 0 in the order batches form.
    BatchId(u64)
);
id_type!(
    /// A queued peg-out (withdrawal), numbered from 0 in burn order.
    WithdrawalId(u64)
);
id_type!(
    /// A federation member: its index in the genesis member list.
    MemberIndex(u32)
);
id_type!(
    /// A Bitcoin fee rate in satoshis per virtual byte.
    FeeRate(u64)
);

impl BatchId {
    /// The id after this one.
    pub fn next(self) -> Option<BatchId> {
        self.0.checked_add(1).map(BatchId)
    }
}

impl WithdrawalId {
    /// The id after this one.
    pub fn next(self) -> Option<WithdrawalId> {
        self.0.checked_add(1).map(WithdrawalId)
    }
}

impl MemberIndex {
    /// As an index into the genesis member list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl FeeRate {
    /// sat/vB.
    pub fn sat_per_vb(self) -> u64 {
        self.0
    }
}
