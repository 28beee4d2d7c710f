//! Rejoining after a restore: the **vote floor**, below which a restored
//! member never signs.
//!
//! A member restored from a backup lost what it signed since the backup:
//! its WAL is gone or old. It may already have signed proposals and votes
//! at heights above its restored store, and signing there again could put a
//! second, different message in one (height, round, step) — an
//! equivocation. [`Rejoin`] decides, from what the member can verify, the
//! lowest height at which it may sign again.
//!
//! # Why the floor is safe
//!
//! Let `W` be the voting power, `q = floor(2W/3) + 1` the quorum and
//! `f = W - q` the most power that may be faulty.
//! 1. A member signs at height `h` only once it committed `h - 1` (the engine
//!    starts a height when the one before is decided). So if the lost self
//!    signed at `V`, it had decided `H = V - 1`, on a quorum of precommits.
//! 2. Besides the lost self, correct members holding at least
//!    `q - p_me - f` power precommitted `H`. Each of them had committed
//!    `H - 1` first, and (not being restored) still has it. Outside of them,
//!    the other members hold at most `2f` power.
//! 3. So once members other than this one, holding at least `2f + 1`
//!    power, report a committed tip no higher than the height `L` this member
//!    holds *verified* (every block with its commit certificate), one of
//!    them is such a precommitter: `H - 1 <= L`, hence `V <= L + 2`.
//!    The floor is `L + 3`.
//!
//! The lost self may have been the only one to see `H`'s quorum of
//! precommits (the others decide `H` later, in another round): that is why
//! the floor is `L + 3` and not `L + 2`, and why `f + 1` reports are not
//! enough (they may all come from members that lag or lie).
//!
//! Only reports at or below `L` count, so no report can make the floor too
//! low: the argument above needs nothing from the others. A report of a
//! tip above `L` whose blocks raised `L` (each checked against its
//! certificate) keeps the member following and asking again; one that
//! brought no progress is ignored, neither counted nor waited for (a correct
//! member serves what it claims). So a lying member can delay the rejoin
//! only by slow answers or silence — a liveness cost for the restored
//! member only — and never for longer than the real chain grows.
//!
//! Belt and braces, in the spirit of CometBFT's `double_sign_check_height`:
//! a verified certificate that holds this member's own precommit at `h`
//! proves the lost self signed at `h`, so the floor is raised above `h + 1`.
//!
//! This module only decides; the node persists the floor durably before any
//! signature, follows the chain by block sync up to `floor - 1`, and starts
//! the engine at the floor.

use crate::certificate::CommitCertificate;
use crate::types::{Height, ValidatorIndex};
use crate::validator::ValidatorSet;

/// One member's answer to "what is your committed tip?", as the restored
/// member saw it after applying the blocks that came with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TipReport {
    /// Who answered (authenticated by the transport).
    pub member: ValidatorIndex,
    /// The committed height it claims.
    pub tip: Height,
    /// Whether the blocks in its answer raised this member's verified
    /// height (checked against their certificates and applied).
    pub advanced: bool,
}

/// What a round of tip reports tells the restored member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Caught up: the floor is fixed at this height. Persist it before
    /// anything else.
    FloorFixed(Height),
    /// A member's blocks raised this member's height, and it claims more:
    /// ask again at once.
    Behind,
    /// Too little power answered at or below this member's tip: ask again
    /// later. `need` is `None` when the other members together hold too
    /// little power for it ever to be enough (a one-member federation).
    TooFew {
        /// Power of the members that agreed.
        have: u64,
        /// Power needed ([`Rejoin::needed_power`]).
        need: Option<u64>,
    },
    /// The floor was fixed before; nothing more to judge.
    AlreadyFixed(Height),
}

/// The rejoin state of one restored member: its floor once fixed, and the
/// highest own precommit seen in a verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejoin {
    me: ValidatorIndex,
    floor: Option<Height>,
    own_precommit: Option<Height>,
}

impl Rejoin {
    /// A restored member `me`, with the floor it persisted (if it fixed one
    /// before a restart).
    pub fn new(me: ValidatorIndex, floor: Option<Height>) -> Rejoin {
        Rejoin {
            me,
            floor,
            own_precommit: None,
        }
    }

    /// The member's index changed (a new epoch's validator set lists it
    /// elsewhere): what it saw and fixed so far stays.
    pub fn reindex(&mut self, me: ValidatorIndex) {
        self.me = me;
    }

    /// The floor, once fixed: never sign below it.
    pub fn floor(&self) -> Option<Height> {
        self.floor
    }

    /// Power that must answer (members other than `me`): `2f + 1`. `None`
    /// if the others hold less, so that no answer can ever be enough.
    pub fn needed_power(validators: &ValidatorSet, me: ValidatorIndex) -> Option<u64> {
        let f = validators.total_power() - validators.quorum();
        let need = 2 * f + 1;
        let others = validators.total_power() - validators.power(me);
        (others >= need).then_some(need)
    }

    /// A certificate this member verified while rejoining (synced blocks).
    /// Returns the raised floor if it holds an own precommit that the floor
    /// does not clear (persist it before anything else).
    pub fn on_certificate(&mut self, cert: &CommitCertificate) -> Option<Height> {
        if !cert.precommits.iter().any(|(i, _)| *i == self.me) {
            return None;
        }
        self.own_precommit = self.own_precommit.max(Some(cert.height));
        let min = Height(cert.height.0.saturating_add(2));
        match self.floor {
            Some(f) if f < min => {
                self.floor = Some(min);
                self.floor
            }
            _ => None,
        }
    }

    /// Judges one round of reports; `local` is the height this member holds
    /// verified after applying the blocks that came with them.
    pub fn judge(
        &mut self,
        validators: &ValidatorSet,
        local: Height,
        reports: &[TipReport],
    ) -> Verdict {
        if let Some(f) = self.floor {
            return Verdict::AlreadyFixed(f);
        }
        let mut agreed = vec![false; validators.len()];
        for r in reports {
            if r.member == self.me || validators.get(r.member).is_none() {
                continue;
            }
            if r.tip > local {
                if r.advanced {
                    return Verdict::Behind;
                }
                // Claims more but brought nothing: not an answer.
                continue;
            }
            agreed[r.member.as_usize()] = true;
        }
        let have: u64 = validators
            .iter()
            .filter(|(i, _)| agreed[i.as_usize()])
            .map(|(_, v)| v.power)
            .sum();
        let need = Self::needed_power(validators, self.me);
        match need {
            Some(n) if have >= n => {}
            _ => return Verdict::TooFew { have, need },
        }
        let by_tip = Height(local.0.saturating_add(3));
        let by_own = self.own_precommit.map(|h| Height(h.0.saturating_add(2)));
        let floor = by_tip.max(by_own.unwrap_or(by_tip));
        self.floor = Some(floor);
        Verdict::FloorFixed(floor)
    }

    /// The height the engine may start at, holding `local` verified: the
    /// next one, once it reaches the floor.
    pub fn start_height(&self, local: Height) -> Option<Height> {
        let next = local.next();
        self.floor.filter(|f| next >= *f).map(|_| next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Round, ValueId};
    use ed25519_dalek::{Signature, SigningKey};
    use proptest::prelude::*;

    fn set(n: usize) -> ValidatorSet {
        let keys = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]).verifying_key())
            .collect();
        ValidatorSet::from_keys(keys).unwrap()
    }

    fn report(member: u32, tip: u64, advanced: bool) -> TipReport {
        TipReport {
            member: ValidatorIndex(member),
            tip: Height(tip),
            advanced,
        }
    }

    fn cert(height: u64, signers: &[u32]) -> CommitCertificate {
        CommitCertificate {
            height: Height(height),
            round: Round(0),
            value_id: ValueId([7; 32]),
            precommits: signers
                .iter()
                .map(|i| (ValidatorIndex(*i), Signature::from_bytes(&[0; 64])))
                .collect(),
        }
    }

    #[test]
    fn four_members_need_all_three_others_and_the_floor_is_three_above_the_tip() {
        let vs = set(4);
        let mut r = Rejoin::new(ValidatorIndex(1), None);
        assert_eq!(Rejoin::needed_power(&vs, ValidatorIndex(1)), Some(3));
        // Two of three (f + 1) is not enough: both may lag or lie.
        let two = [report(0, 10, false), report(3, 10, false)];
        assert_eq!(
            r.judge(&vs, Height(10), &two),
            Verdict::TooFew {
                have: 2,
                need: Some(3)
            }
        );
        // Its own report does not count.
        let with_self = [two[0], two[1], report(1, 10, false)];
        assert!(matches!(
            r.judge(&vs, Height(10), &with_self),
            Verdict::TooFew { have: 2, .. }
        ));
        let three = [two[0], two[1], report(2, 9, false)];
        assert_eq!(
            r.judge(&vs, Height(10), &three),
            Verdict::FloorFixed(Height(13))
        );
        assert_eq!(r.floor(), Some(Height(13)));
        // Fixed once: later rounds change nothing.
        assert_eq!(
            r.judge(&vs, Height(20), &three),
            Verdict::AlreadyFixed(Height(13))
        );
    }

    #[test]
    fn a_member_that_shows_blocks_above_keeps_it_following_and_an_empty_claim_is_ignored() {
        let vs = set(4);
        let mut r = Rejoin::new(ValidatorIndex(0), None);
        let behind = [
            report(1, 10, false),
            report(2, 10, false),
            report(3, 12, true),
        ];
        assert_eq!(r.judge(&vs, Height(10), &behind), Verdict::Behind);
        // A claim of a higher tip that brought no block is no answer: it
        // neither blocks the rejoin forever nor counts towards it.
        let liar = [
            report(1, 10, false),
            report(2, 10, false),
            report(3, u64::MAX, false),
        ];
        assert!(matches!(
            r.judge(&vs, Height(10), &liar),
            Verdict::TooFew { have: 2, .. }
        ));
        assert_eq!(r.floor(), None);
    }

    #[test]
    fn a_one_member_federation_can_never_fix_a_floor() {
        let vs = set(1);
        let mut r = Rejoin::new(ValidatorIndex(0), None);
        assert_eq!(Rejoin::needed_power(&vs, ValidatorIndex(0)), None);
        assert_eq!(
            r.judge(&vs, Height(5), &[report(0, 5, false)]),
            Verdict::TooFew {
                have: 0,
                need: None
            }
        );
    }

    #[test]
    fn an_own_precommit_in_a_certificate_raises_the_floor_above_it() {
        let vs = set(4);
        let mut r = Rejoin::new(ValidatorIndex(2), None);
        assert_eq!(r.on_certificate(&cert(8, &[0, 1, 3])), None);
        // Seen before the floor is fixed: the floor clears it.
        assert_eq!(r.on_certificate(&cert(9, &[0, 2, 3])), None);
        let all = [
            report(0, 9, false),
            report(1, 9, false),
            report(3, 9, false),
        ];
        assert_eq!(
            r.judge(&vs, Height(9), &all),
            Verdict::FloorFixed(Height(12))
        );
        // Seen after: it is raised to h + 2 (the lost self may have signed at h + 1).
        assert_eq!(r.on_certificate(&cert(11, &[1, 2, 3])), Some(Height(13)));
        assert_eq!(r.floor(), Some(Height(13)));
        assert_eq!(r.on_certificate(&cert(10, &[1, 2, 3])), None);
        assert_eq!(r.start_height(Height(11)), None);
        assert_eq!(r.start_height(Height(12)), Some(Height(13)));
        assert_eq!(r.start_height(Height(30)), Some(Height(31)));
    }

    #[test]
    fn the_engine_starts_only_at_the_floor() {
        let r = Rejoin::new(ValidatorIndex(0), None);
        assert_eq!(r.start_height(Height(100)), None);
        let r = Rejoin::new(ValidatorIndex(0), Some(Height(7)));
        assert_eq!(r.start_height(Height(5)), None);
        assert_eq!(r.start_height(Height(6)), Some(Height(7)));
    }

    /// A world in which the lost self decided `decided` (and so may have
    /// signed at `decided + 1`), and what its restored self hears.
    #[derive(Debug)]
    struct World {
        n: usize,
        me: u32,
        decided: u64,
        /// Others that precommitted `decided` with the lost self.
        precommitters: Vec<u32>,
        /// At most f others that say anything.
        byzantine: Vec<u32>,
        /// Each other's committed tip (correct ones never below what they
        /// had committed when they precommitted).
        tips: Vec<u64>,
        /// Who answers this round.
        answers: Vec<bool>,
        /// What the Byzantine members claim.
        lies: Vec<(u64, bool)>,
        local: u64,
        own_cert: Option<u64>,
    }

    fn world() -> impl Strategy<Value = World> {
        (1usize..=10, any::<u32>(), 5u64..50)
            .prop_flat_map(|(n, me, decided)| {
                let me = me % n as u32;
                let q = 2 * n / 3 + 1;
                let f = n - q;
                let others: Vec<u32> = (0..n as u32).filter(|i| *i != me).collect();
                (
                    Just((n, me, decided)),
                    proptest::sample::subsequence(others.clone(), q - 1),
                    proptest::sample::subsequence(others, 0..=f),
                    // Heights near the ones that matter: decided - 1 and around.
                    proptest::collection::vec(0u64..6, n),
                    proptest::collection::vec(any::<bool>(), n),
                    proptest::collection::vec((0u64..8, any::<bool>()), n),
                    0u64..6,
                    proptest::option::of(0u64..6),
                )
            })
            .prop_map(
                |(
                    (n, me, decided),
                    precommitters,
                    byzantine,
                    spread,
                    answers,
                    lies,
                    local,
                    own,
                )| {
                    let near = |d: u64| decided - 4 + d;
                    let tips = (0..n)
                        .map(|i| {
                            if precommitters.contains(&(i as u32)) {
                                // Committed decided - 1 before precommitting.
                                (decided - 1 + spread[i] / 2).max(near(spread[i]))
                            } else {
                                near(spread[i])
                            }
                        })
                        .collect();
                    World {
                        n,
                        me,
                        decided,
                        precommitters,
                        byzantine,
                        tips,
                        answers,
                        lies: lies.into_iter().map(|(t, s)| (near(t), s)).collect(),
                        local: near(local),
                        // Our own precommit is in certificates up to what the lost self decided.
                        own_cert: own.map(|d| near(d).min(decided)),
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10000))]

        /// Whatever lagging, silent and lying members do, a fixed floor is
        /// above every height the lost self may have signed at.
        #[test]
        fn a_fixed_floor_clears_every_height_the_lost_self_may_have_signed(w in world()) {
            let vs = set(w.n);
            let mut r = Rejoin::new(ValidatorIndex(w.me), None);
            if let Some(h) = w.own_cert {
                let mut signers = vec![w.me];
                signers.extend(w.precommitters.iter().copied());
                r.on_certificate(&cert(h, &signers));
            }
            let mut reports = Vec::new();
            for i in 0..w.n as u32 {
                if i == w.me || !w.answers[i as usize] {
                    continue;
                }
                let report = if w.byzantine.contains(&i) {
                    let (tip, sent) = w.lies[i as usize];
                    TipReport { member: ValidatorIndex(i), tip: Height(tip), advanced: sent }
                } else {
                    let tip = w.tips[i as usize];
                    // A correct member above us sends blocks; we would
                    // have synced them, so it is "behind" or we moved on.
                    TipReport { member: ValidatorIndex(i), tip: Height(tip), advanced: tip > w.local }
                };
                reports.push(report);
            }
            let verdict = r.judge(&vs, Height(w.local), &reports);
            if let Verdict::FloorFixed(floor) = verdict {
                prop_assert!(floor.0 > w.decided + 1, "{w:?}: floor {floor} lets it sign at {}", w.decided + 1);
                prop_assert_eq!(r.start_height(Height(floor.0 - 2)), None);
            }
        }

        /// When every correct other answers and the member holds their
        /// tips, the floor is fixed (Byzantine silence aside).
        #[test]
        fn caught_up_with_every_correct_member_fixes_the_floor(n in 2usize..=10, me in any::<u32>(), local in 0u64..100) {
            let vs = set(n);
            let me = me % n as u32;
            let mut r = Rejoin::new(ValidatorIndex(me), None);
            let reports: Vec<_> = (0..n as u32)
                .filter(|i| *i != me)
                .map(|i| report(i, local.saturating_sub(u64::from(i % 2)), false))
                .collect();
            prop_assert_eq!(r.judge(&vs, Height(local), &reports), Verdict::FloorFixed(Height(local + 3)));
        }
    }
}
