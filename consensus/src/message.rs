//! Signed consensus messages, their sign-bytes and their wire encoding.
//!
//! # Sign-bytes (what a signature covers)
//!
//! Every signature is an ed25519 signature over exactly 102 bytes:
//!
//! ```text
//! b"fedpeg/consensus/v1"   19 bytes, domain separator
//! chain_id                 32 bytes
//! tag                       1 byte: 0x01 proposal, 0x02 prevote, 0x03 precommit
//! height                    8 bytes, u64 big-endian
//! round                     4 bytes, u32 big-endian
//! value presence            1 byte: 0x00 nil, 0x01 present
//! value id                 32 bytes (all zero when nil)
//! pol_round presence        1 byte: 0x00 none, 0x01 present (always 0x00 for votes)
//! pol_round                 4 bytes, u32 big-endian (zero when none)
//! ```
//!
//! Signatures are checked with the one rule of [`crate::signature_rule`]
//! (ZIP-215) everywhere (engine, certificates, evidence), so that all honest
//! nodes accept exactly the same signatures, one by one or in batches.
//!
//! # Wire encoding ([`Message::encode`])
//!
//! ```text
//! proposal (114 bytes): 0x01 | height u64 | round u32 | value 32 | pol flag u8 | pol u32 | proposer u32 | sig 64
//! vote     (115 bytes): 0x02 | kind u8 (1 prevote, 2 precommit) | height u64 | round u32
//!                       | value flag u8 | value 32 | validator u32 | sig 64
//! ```
//!
//! All integers are big-endian; flags must be 0 or 1 and absent fields must be
//! zero, so each message has exactly one encoding. Decoding checks lengths and
//! never panics; it does not check signatures (see [`ValidatorSet::verify_message`]).

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::types::{ChainId, Height, Round, ValidatorIndex, ValueId, VoteKind};
use crate::validator::ValidatorSet;

/// Domain separator that prefixes every sign-bytes string.
pub const DOMAIN: &[u8; 19] = b"fedpeg/consensus/v1";
/// Length of the sign-bytes of any message.
pub const SIGN_BYTES_LEN: usize = 19 + 32 + 1 + 8 + 4 + 1 + 32 + 1 + 4;
/// Length of an encoded proposal.
pub const PROPOSAL_WIRE_LEN: usize = 1 + 8 + 4 + 32 + 1 + 4 + 4 + 64;
/// Length of an encoded vote.
pub const VOTE_WIRE_LEN: usize = 1 + 1 + 8 + 4 + 1 + 32 + 4 + 64;

const TAG_PROPOSAL: u8 = 0x01;
const TAG_PREVOTE: u8 = 0x02;
const TAG_PRECOMMIT: u8 = 0x03;
const WIRE_PROPOSAL: u8 = 0x01;
const WIRE_VOTE: u8 = 0x02;

/// A proposal for (height, round), signed by that round's proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedProposal {
    /// Height proposed for.
    pub height: Height,
    /// Round proposed in.
    pub round: Round,
    /// Proposed value.
    pub value_id: ValueId,
    /// Round of the polka that justifies re-proposing a value (Tendermint `validRound`).
    pub pol_round: Option<Round>,
    /// Index of the proposer.
    pub proposer: ValidatorIndex,
    /// Signature over [`SignedProposal::sign_bytes`].
    pub signature: Signature,
}

/// A prevote or precommit, signed by a validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedVote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Height voted on.
    pub height: Height,
    /// Round voted in.
    pub round: Round,
    /// The value voted for; `None` is a nil vote.
    pub value: Option<ValueId>,
    /// Index of the voter.
    pub validator: ValidatorIndex,
    /// Signature over [`SignedVote::sign_bytes`].
    pub signature: Signature,
}

/// Any consensus message that travels between members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A proposal.
    Proposal(SignedProposal),
    /// A vote.
    Vote(SignedVote),
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is empty.
    #[error("empty message; expected a tag byte")]
    Empty,
    /// Unknown message tag.
    #[error("unknown message tag {0:#04x}; expected 0x01 (proposal) or 0x02 (vote)")]
    UnknownTag(u8),
    /// Wrong total length.
    #[error("message is {got} bytes, expected exactly {expected}")]
    Length {
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A field holds a value outside its domain.
    #[error("field `{0}` has a non-canonical value")]
    BadField(&'static str),
}

/// Why a message was not accepted as authentic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// The signer index is not in the validator set.
    #[error("signer index {0} is not in the validator set")]
    UnknownValidator(u32),
    /// The signature is not valid under [`crate::signature_rule`].
    #[error("bad signature from validator {0}")]
    BadSignature(u32),
    /// The proposal is signed by someone other than the round's proposer.
    #[error("proposal signed by {got}, but the proposer of this round is {expected}")]
    WrongProposer {
        /// Scheduled proposer.
        expected: u32,
        /// Claimed signer.
        got: u32,
    },
    /// A proposal's pol_round is not below its round.
    #[error("proposal pol_round must be below its round")]
    BadPolRound,
}

#[allow(clippy::too_many_arguments)]
fn sign_bytes(
    chain_id: &ChainId,
    tag: u8,
    height: Height,
    round: Round,
    value: Option<ValueId>,
    pol_round: Option<Round>,
) -> [u8; SIGN_BYTES_LEN] {
    let mut b = [0u8; SIGN_BYTES_LEN];
    let mut w = Writer::new(&mut b);
    w.put(DOMAIN);
    w.put(&chain_id.0);
    w.put(&[tag]);
    w.put(&height.0.to_be_bytes());
    w.put(&round.0.to_be_bytes());
    put_opt_value(&mut w, value);
    match pol_round {
        Some(r) => {
            w.put(&[1]);
            w.put(&r.0.to_be_bytes());
        }
        None => w.put(&[0, 0, 0, 0, 0]),
    }
    b
}

fn vote_tag(kind: VoteKind) -> u8 {
    match kind {
        VoteKind::Prevote => TAG_PREVOTE,
        VoteKind::Precommit => TAG_PRECOMMIT,
    }
}

impl SignedProposal {
    /// The exact bytes the proposer signs (see module docs).
    pub fn sign_bytes(
        chain_id: &ChainId,
        height: Height,
        round: Round,
        value_id: ValueId,
        pol_round: Option<Round>,
    ) -> [u8; SIGN_BYTES_LEN] {
        sign_bytes(
            chain_id,
            TAG_PROPOSAL,
            height,
            round,
            Some(value_id),
            pol_round,
        )
    }

    /// Sign a proposal with `key` as validator `proposer`.
    pub fn sign(
        chain_id: &ChainId,
        key: &SigningKey,
        proposer: ValidatorIndex,
        height: Height,
        round: Round,
        value_id: ValueId,
        pol_round: Option<Round>,
    ) -> Self {
        let msg = Self::sign_bytes(chain_id, height, round, value_id, pol_round);
        SignedProposal {
            height,
            round,
            value_id,
            pol_round,
            proposer,
            signature: key.sign(&msg),
        }
    }

    /// Check signature, proposer schedule and pol_round.
    pub fn verify(
        &self,
        chain_id: &ChainId,
        validators: &ValidatorSet,
    ) -> Result<(), MessageError> {
        let v = validators
            .get(self.proposer)
            .ok_or(MessageError::UnknownValidator(self.proposer.0))?;
        let expected = validators.proposer(self.height, self.round);
        if expected != self.proposer {
            return Err(MessageError::WrongProposer {
                expected: expected.0,
                got: self.proposer.0,
            });
        }
        if self.pol_round.is_some_and(|p| p >= self.round) {
            return Err(MessageError::BadPolRound);
        }
        let msg = Self::sign_bytes(
            chain_id,
            self.height,
            self.round,
            self.value_id,
            self.pol_round,
        );
        if crate::signature_rule::verify(v.key.as_bytes(), &msg, &self.signature.to_bytes()) {
            Ok(())
        } else {
            Err(MessageError::BadSignature(self.proposer.0))
        }
    }
}

impl SignedVote {
    /// The exact bytes a voter signs (see module docs).
    pub fn sign_bytes(
        chain_id: &ChainId,
        kind: VoteKind,
        height: Height,
        round: Round,
        value: Option<ValueId>,
    ) -> [u8; SIGN_BYTES_LEN] {
        sign_bytes(chain_id, vote_tag(kind), height, round, value, None)
    }

    /// Sign a vote with `key` as validator `validator`.
    pub fn sign(
        chain_id: &ChainId,
        key: &SigningKey,
        validator: ValidatorIndex,
        kind: VoteKind,
        height: Height,
        round: Round,
        value: Option<ValueId>,
    ) -> Self {
        let msg = Self::sign_bytes(chain_id, kind, height, round, value);
        SignedVote {
            kind,
            height,
            round,
            value,
            validator,
            signature: key.sign(&msg),
        }
    }

    /// Check that the signer is a member and the signature is valid ([`crate::signature_rule`]).
    pub fn verify(
        &self,
        chain_id: &ChainId,
        validators: &ValidatorSet,
    ) -> Result<(), MessageError> {
        let v = validators
            .get(self.validator)
            .ok_or(MessageError::UnknownValidator(self.validator.0))?;
        let msg = Self::sign_bytes(chain_id, self.kind, self.height, self.round, self.value);
        if crate::signature_rule::verify(v.key.as_bytes(), &msg, &self.signature.to_bytes()) {
            Ok(())
        } else {
            Err(MessageError::BadSignature(self.validator.0))
        }
    }
}

impl Message {
    /// Height the message belongs to.
    pub fn height(&self) -> Height {
        match self {
            Message::Proposal(p) => p.height,
            Message::Vote(v) => v.height,
        }
    }

    /// Round the message belongs to.
    pub fn round(&self) -> Round {
        match self {
            Message::Proposal(p) => p.round,
            Message::Vote(v) => v.round,
        }
    }

    /// Index of the signer.
    pub fn signer(&self) -> ValidatorIndex {
        match self {
            Message::Proposal(p) => p.proposer,
            Message::Vote(v) => v.validator,
        }
    }

    /// Check the message against a chain id and validator set.
    pub fn verify(
        &self,
        chain_id: &ChainId,
        validators: &ValidatorSet,
    ) -> Result<(), MessageError> {
        match self {
            Message::Proposal(p) => p.verify(chain_id, validators),
            Message::Vote(v) => v.verify(chain_id, validators),
        }
    }

    /// Encode to the wire format described in the module docs.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Proposal(p) => {
                let mut b = vec![0u8; PROPOSAL_WIRE_LEN];
                let mut w = Writer::new(&mut b);
                w.put(&[WIRE_PROPOSAL]);
                w.put(&p.height.0.to_be_bytes());
                w.put(&p.round.0.to_be_bytes());
                w.put(&p.value_id.0);
                match p.pol_round {
                    Some(r) => {
                        w.put(&[1]);
                        w.put(&r.0.to_be_bytes());
                    }
                    None => w.put(&[0, 0, 0, 0, 0]),
                }
                w.put(&p.proposer.0.to_be_bytes());
                w.put(&p.signature.to_bytes());
                b
            }
            Message::Vote(v) => {
                let mut b = vec![0u8; VOTE_WIRE_LEN];
                let mut w = Writer::new(&mut b);
                w.put(&[WIRE_VOTE]);
                w.put(&[match v.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                }]);
                w.put(&v.height.0.to_be_bytes());
                w.put(&v.round.0.to_be_bytes());
                put_opt_value(&mut w, v.value);
                w.put(&v.validator.0.to_be_bytes());
                w.put(&v.signature.to_bytes());
                b
            }
        }
    }

    /// Decode untrusted bytes; strict about length and canonical fields, never panics.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let tag = *bytes.first().ok_or(DecodeError::Empty)?;
        match tag {
            WIRE_PROPOSAL => {
                check_len(bytes, PROPOSAL_WIRE_LEN)?;
                let mut r = Reader::new(&bytes[1..]);
                let height = Height(r.u64());
                let round = Round(r.u32());
                let value_id = ValueId(r.array32());
                let pol_round = r.opt_u32("pol_round")?.map(Round);
                let proposer = ValidatorIndex(r.u32());
                let signature = Signature::from_bytes(&r.array64());
                Ok(Message::Proposal(SignedProposal {
                    height,
                    round,
                    value_id,
                    pol_round,
                    proposer,
                    signature,
                }))
            }
            WIRE_VOTE => {
                check_len(bytes, VOTE_WIRE_LEN)?;
                let mut r = Reader::new(&bytes[1..]);
                let kind = match r.u8() {
                    1 => VoteKind::Prevote,
                    2 => VoteKind::Precommit,
                    _ => return Err(DecodeError::BadField("kind")),
                };
                let height = Height(r.u64());
                let round = Round(r.u32());
                let value = r.opt_value("value")?;
                let validator = ValidatorIndex(r.u32());
                let signature = Signature::from_bytes(&r.array64());
                Ok(Message::Vote(SignedVote {
                    kind,
                    height,
                    round,
                    value,
                    validator,
                    signature,
                }))
            }
            other => Err(DecodeError::UnknownTag(other)),
        }
    }
}

impl From<SignedProposal> for Message {
    fn from(p: SignedProposal) -> Self {
        Message::Proposal(p)
    }
}

impl From<SignedVote> for Message {
    fn from(v: SignedVote) -> Self {
        Message::Vote(v)
    }
}

/// A message whose signature was checked against a given chain id and validator set.
///
/// Lets a node verify on another thread (or once for many recipients in the
/// simulator) and hand the engine [`crate::Input::Verified`]; the engine still
/// checks that the chain id and validator-set fingerprint match its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    message: Message,
    chain_id: ChainId,
    set_id: [u8; 32],
}

impl Verified {
    /// The verified message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Give back the message.
    pub fn into_message(self) -> Message {
        self.message
    }

    pub(crate) fn matches(&self, chain_id: &ChainId, validators: &ValidatorSet) -> bool {
        self.chain_id == *chain_id && self.set_id == validators.id()
    }

    /// Wrap a message the engine itself produced or already verified.
    pub(crate) fn trusted(message: Message, chain_id: ChainId, validators: &ValidatorSet) -> Self {
        Verified {
            message,
            chain_id,
            set_id: validators.id(),
        }
    }
}

impl ValidatorSet {
    /// Verify a message and return the proof-carrying [`Verified`] wrapper.
    pub fn verify_message(
        &self,
        chain_id: &ChainId,
        message: Message,
    ) -> Result<Verified, MessageError> {
        message.verify(chain_id, self)?;
        Ok(Verified::trusted(message, *chain_id, self))
    }
}

fn put_opt_value(w: &mut Writer<'_>, value: Option<ValueId>) {
    match value {
        Some(v) => {
            w.put(&[1]);
            w.put(&v.0);
        }
        None => {
            w.put(&[0]);
            w.put(&[0u8; 32]);
        }
    }
}

pub(crate) fn check_len_at_least(bytes: &[u8], min: usize) -> Result<(), DecodeError> {
    if bytes.len() >= min {
        Ok(())
    } else {
        Err(DecodeError::Length {
            expected: min,
            got: bytes.len(),
        })
    }
}

fn check_len(bytes: &[u8], expected: usize) -> Result<(), DecodeError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(DecodeError::Length {
            expected,
            got: bytes.len(),
        })
    }
}

/// Sequential writer into a buffer whose size the caller computed exactly.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        // Callers size the buffer from constants matching these writes, so the
        // range is always in bounds; `get_mut` keeps even a bug panic-free.
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

/// Sequential reader over a slice whose length the caller already checked.
///
/// Reads past the end yield zeros instead of panicking; callers check the
/// exact length first, so that never happens for accepted input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }

    pub(crate) fn array32(&mut self) -> [u8; 32] {
        self.take()
    }

    pub(crate) fn array64(&mut self) -> [u8; 64] {
        self.take()
    }

    fn opt_u32(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        let flag = self.u8();
        let v = self.u32();
        match (flag, v) {
            (1, v) => Ok(Some(v)),
            (0, 0) => Ok(None),
            _ => Err(DecodeError::BadField(field)),
        }
    }

    fn opt_value(&mut self, field: &'static str) -> Result<Option<ValueId>, DecodeError> {
        let flag = self.u8();
        let v = self.array32();
        match flag {
            1 => Ok(Some(ValueId(v))),
            0 if v == [0u8; 32] => Ok(None),
            _ => Err(DecodeError::BadField(field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup() -> (ChainId, Vec<SigningKey>, ValidatorSet) {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let set =
            ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
        (ChainId([9; 32]), keys, set)
    }

    #[test]
    fn sign_bytes_layout_is_fixed_and_domain_separated() {
        let c = ChainId([7; 32]);
        let p = SignedProposal::sign_bytes(&c, Height(1), Round(2), ValueId([3; 32]), None);
        let pv = SignedVote::sign_bytes(
            &c,
            VoteKind::Prevote,
            Height(1),
            Round(2),
            Some(ValueId([3; 32])),
        );
        let pc = SignedVote::sign_bytes(
            &c,
            VoteKind::Precommit,
            Height(1),
            Round(2),
            Some(ValueId([3; 32])),
        );
        assert_eq!(&p[..19], DOMAIN);
        assert_eq!(&p[19..51], &[7; 32]);
        assert_eq!((p[51], pv[51], pc[51]), (1, 2, 3));
        assert_eq!(&p[52..60], &1u64.to_be_bytes());
        assert_eq!(&p[60..64], &2u32.to_be_bytes());
        assert_eq!(p[64], 1);
        assert_ne!(pv, pc);
        let nil = SignedVote::sign_bytes(&c, VoteKind::Prevote, Height(1), Round(2), None);
        assert_eq!(nil[64], 0);
        assert_eq!(&nil[65..97], &[0; 32]);
    }

    #[test]
    fn vote_signed_for_another_chain_is_rejected() {
        let (c, keys, set) = setup();
        let v = SignedVote::sign(
            &c,
            &keys[1],
            ValidatorIndex(1),
            VoteKind::Prevote,
            Height(3),
            Round(0),
            None,
        );
        assert_eq!(v.verify(&c, &set), Ok(()));
        assert_eq!(
            v.verify(&ChainId([8; 32]), &set),
            Err(MessageError::BadSignature(1))
        );
    }

    #[test]
    fn vote_claiming_another_validator_is_rejected() {
        let (c, keys, set) = setup();
        let v = SignedVote::sign(
            &c,
            &keys[1],
            ValidatorIndex(2),
            VoteKind::Prevote,
            Height(3),
            Round(0),
            None,
        );
        assert_eq!(v.verify(&c, &set), Err(MessageError::BadSignature(2)));
        let v = SignedVote::sign(
            &c,
            &keys[1],
            ValidatorIndex(9),
            VoteKind::Prevote,
            Height(3),
            Round(0),
            None,
        );
        assert_eq!(v.verify(&c, &set), Err(MessageError::UnknownValidator(9)));
    }

    #[test]
    fn proposal_from_wrong_proposer_or_bad_pol_round_is_rejected() {
        let (c, keys, set) = setup();
        // proposer of (1, 0) is index 1.
        let ok = SignedProposal::sign(
            &c,
            &keys[1],
            ValidatorIndex(1),
            Height(1),
            Round(0),
            ValueId([1; 32]),
            None,
        );
        assert_eq!(ok.verify(&c, &set), Ok(()));
        let wrong = SignedProposal::sign(
            &c,
            &keys[2],
            ValidatorIndex(2),
            Height(1),
            Round(0),
            ValueId([1; 32]),
            None,
        );
        assert!(matches!(
            wrong.verify(&c, &set),
            Err(MessageError::WrongProposer { .. })
        ));
        let pol = SignedProposal::sign(
            &c,
            &keys[1],
            ValidatorIndex(1),
            Height(1),
            Round(0),
            ValueId([1; 32]),
            Some(Round(0)),
        );
        assert_eq!(pol.verify(&c, &set), Err(MessageError::BadPolRound));
    }

    #[test]
    fn non_canonical_encodings_are_rejected() {
        let (c, keys, _) = setup();
        let v = SignedVote::sign(
            &c,
            &keys[0],
            ValidatorIndex(0),
            VoteKind::Prevote,
            Height(3),
            Round(0),
            None,
        );
        let mut b = Message::Vote(v).encode();
        b[15] = 1; // a byte of the nil value id
        assert_eq!(Message::decode(&b), Err(DecodeError::BadField("value")));
        b[15] = 0;
        b[1] = 3;
        assert_eq!(Message::decode(&b), Err(DecodeError::BadField("kind")));
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Message::decode(&[7]), Err(DecodeError::UnknownTag(7)));
        assert!(matches!(
            Message::decode(&[1, 0]),
            Err(DecodeError::Length { .. })
        ));
    }

    fn arb_value() -> impl Strategy<Value = ValueId> {
        any::<[u8; 32]>().prop_map(ValueId)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let prop = (
            any::<u64>(),
            any::<u32>(),
            arb_value(),
            proptest::option::of(any::<u32>()),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(h, r, v, pol, who, s1, s2)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&s1);
                sig[32..].copy_from_slice(&s2);
                Message::Proposal(SignedProposal {
                    height: Height(h),
                    round: Round(r),
                    value_id: v,
                    pol_round: pol.map(Round),
                    proposer: ValidatorIndex(who),
                    signature: Signature::from_bytes(&sig),
                })
            });
        let vote = (
            any::<bool>(),
            any::<u64>(),
            any::<u32>(),
            proptest::option::of(arb_value()),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(pre, h, r, v, who, s1, s2)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&s1);
                sig[32..].copy_from_slice(&s2);
                Message::Vote(SignedVote {
                    kind: if pre {
                        VoteKind::Prevote
                    } else {
                        VoteKind::Precommit
                    },
                    height: Height(h),
                    round: Round(r),
                    value: v,
                    validator: ValidatorIndex(who),
                    signature: Signature::from_bytes(&sig),
                })
            });
        prop_oneof![prop, vote]
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(m in arb_message()) {
            let bytes = m.encode();
            prop_assert_eq!(Message::decode(&bytes), Ok(m));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = Message::decode(&bytes) {
                // Whatever decodes must re-encode to the same bytes (canonical form).
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        #[test]
        fn decoding_mutated_valid_messages_never_panics(m in arb_message(), idx in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = m.encode();
            let i = idx % bytes.len();
            bytes[i] = byte;
            if let Ok(d) = Message::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes);
            }
        }
    }
}
