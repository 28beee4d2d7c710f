//! The one rule that decides whether an ed25519 signature is valid, for
//! everything consensus or the ledger state depends on: user transactions,
//! federation transactions, proposals, votes, commit certificates and
//! evidence. Keys and signing stay with `ed25519-dalek`; only the *accept
//! set* is defined here.
//!
//! # The rule: ZIP-215 (<https://zips.z.cash/zip-0215>)
//!
//! A signature `(R_bytes, s_bytes)` on `msg` under key `A_bytes` is valid iff
//! - `A_bytes` and `R_bytes` decode to points on the curve (non-canonical
//!   encodings, i.e. a `y` coordinate ≥ p, are accepted and reduced);
//! - `s_bytes` is canonical: `s < L`, the prime subgroup order;
//! - the **cofactored** equation `[8][s]B = [8]R + [8][k]A` holds, with
//!   `k = SHA-512(R_bytes || A_bytes || msg)` over the bytes as received.
//!
//! Small-order `A` or `R` are not rejected by the signature rule. Under this
//! rule single and batch verification accept exactly the same signatures
//! ([`Batch`]), so a member may verify in batches and still agree with every
//! other member on every signature; that is what consensus needs.
//!
//! ## What changed from `verify_strict` (a consensus rule change)
//!
//! `verify_strict` (the rule before) additionally rejected: small-order `A`
//! ("weak keys"), small-order `R`, non-canonical encodings of `R` (it compared
//! the recomputed `R` by its canonical encoding) and signatures that satisfy
//! only the cofactored equation (an `R` or `A` with a torsion component).
//! ZIP-215 accepts those. None of them can be produced by an honest signer
//! of ours, and none lets anyone sign for a key whose secret they lack. User
//! accounts keep refusing small-order and undecodable keys at decode time
//! (an address rule in `fedpeg-ledger`, not a signature rule), and genesis
//! member keys are checked when the genesis is built.
//!
//! Implemented with `ed25519-zebra` (built on the same `curve25519-dalek`).

use ed25519_dalek::Signature;
use ed25519_zebra::batch;
use ed25519_zebra::{VerificationKey, VerificationKeyBytes};
use rand_core::CryptoRng;

/// True if `sig` is a valid signature of `msg` under the key `key` (ZIP-215).
pub fn verify(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    VerificationKey::try_from(*key)
        .and_then(|vk| vk.verify(&Signature::from_bytes(sig), msg))
        .is_ok()
}

/// Signatures checked together: one multiscalar multiplication for the lot
/// when all are valid (about twice as fast as one by one), each alone only
/// when the batch fails. The verdicts equal [`verify`]'s, item by item,
/// whatever the batch holds: a bad signature costs its batch one batch check
/// on top of the single checks, never a wrong verdict for another item.
#[derive(Default)]
pub struct Batch {
    items: Vec<batch::Item>,
}

impl Batch {
    /// An empty batch with room for `n` signatures.
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            items: Vec::with_capacity(n),
        }
    }

    /// Adds a signature to check (hashes `msg` now; the batch does not keep it).
    pub fn push(&mut self, key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) {
        self.items.push(batch::Item::from((
            VerificationKeyBytes::from(*key),
            Signature::from_bytes(sig),
            msg,
        )));
    }

    /// Number of signatures queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True iff every queued signature is valid (true for an empty batch).
    /// `rng` must be unpredictable to whoever chose the signatures.
    pub fn verify_all<R: CryptoRng>(&self, rng: &mut R) -> bool {
        match self.items.len() {
            0 => true,
            1 => self.items[0].clone().verify_single().is_ok(),
            _ => {
                let mut v = batch::Verifier::new();
                for item in &self.items {
                    v.queue(item.clone());
                }
                v.verify(rng).is_ok()
            }
        }
    }

    /// One verdict per queued signature, in order: the batch check first,
    /// single checks only if it fails.
    pub fn verdicts<R: CryptoRng>(self, rng: &mut R) -> Vec<bool> {
        // One signature: its single check is the verdict (not done twice).
        if self.items.len() >= 2 && self.verify_all(rng) {
            return vec![true; self.items.len()];
        }
        self.items
            .into_iter()
            .map(|i| i.verify_single().is_ok())
            .collect()
    }
}

/// `k`'s signature on `msg` with a point of order 8 added to R (made with
/// the secret: R = rB + T, s = r + H(R, A, msg) x): only the cofactored
/// equation holds, so this rule accepts it and `verify_strict` does not.
/// For tests of every call site (`sim` feature, never in a node build).
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
pub fn sign_with_torsion(k: &ed25519_dalek::SigningKey, msg: &[u8]) -> [u8; 64] {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use sha2::Digest;
    // A point of order 8.
    const T: [u8; 32] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    let a = k.verifying_key().to_bytes();
    let t = CompressedEdwardsY(T)
        .decompress()
        .expect("a constant point on the curve");
    let r = curve25519_dalek::Scalar::from_bytes_mod_order([7u8; 32]);
    let big_r = (curve25519_dalek::constants::ED25519_BASEPOINT_POINT * r + t).compress();
    let h = sha2::Sha512::new()
        .chain_update(big_r.as_bytes())
        .chain_update(a)
        .chain_update(msg)
        .finalize();
    let kk = curve25519_dalek::Scalar::from_bytes_mod_order_wide(&h.into());
    let s = r + kk * k.to_scalar();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    /// The 8 small-order points, by their canonical encodings (from ZIP-215's
    /// test vectors / the curve's torsion subgroup), plus non-canonical
    /// encodings of some of them.
    fn small_order_encodings() -> Vec<[u8; 32]> {
        let hexes = [
            // identity (0, 1)
            "0100000000000000000000000000000000000000000000000000000000000000",
            // (0, -1), order 2
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            // order 4
            "0000000000000000000000000000000000000000000000000000000000000080",
            "0000000000000000000000000000000000000000000000000000000000000000",
            // order 8
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            // non-canonical: y = p + 1 (identity), y = p (order 4)
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        hexes.iter().map(|h| hex32(h)).collect()
    }

    fn hex32(h: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn rng() -> rand010::rngs::ThreadRng {
        rand010::rng()
    }

    #[test]
    fn honest_signature_is_valid_and_tampering_is_not() {
        let k = key(1);
        let sig = k.sign(b"msg").to_bytes();
        let a = k.verifying_key().to_bytes();
        assert!(verify(&a, b"msg", &sig));
        assert!(!verify(&a, b"msh", &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!verify(&a, b"msg", &bad));
        assert!(!verify(&key(2).verifying_key().to_bytes(), b"msg", &sig));
    }

    /// ZIP-215 accepts small-order A and R where the cofactored equation
    /// holds: with A and R small order and s = 0, `[8]R + [8][k]A = 0 = [8][0]B`
    /// for every message. verify_strict refused all of these.
    #[test]
    fn small_order_key_and_r_with_zero_s_are_accepted_as_zip215_requires() {
        let dalek_sig = |a: &[u8; 32], sig: &[u8; 64]| {
            ed25519_dalek::VerifyingKey::from_bytes(a)
                .map(|vk| {
                    vk.verify_strict(b"any", &Signature::from_bytes(sig))
                        .is_ok()
                })
                .unwrap_or(false)
        };
        let points = small_order_encodings();
        for a in &points {
            for r in &points {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                assert!(verify(a, b"any", &sig), "A={a:02x?} R={r:02x?}");
                assert!(!dalek_sig(a, &sig), "verify_strict accepted it");
                let mut b = Batch::default();
                b.push(a, b"any", &sig);
                b.push(a, b"other", &sig);
                assert!(b.verify_all(&mut rng()));
            }
        }
    }

    /// An honest signature with a small-order point added to R: only the
    /// cofactored equation holds. Accepted (ZIP-215), refused by verify_strict.
    #[test]
    fn torsion_in_r_passes_only_the_cofactored_equation() {
        let k = key(3);
        let a = k.verifying_key().to_bytes();
        let sig = sign_with_torsion(&k, b"torsion");
        assert!(verify(&a, b"torsion", &sig));
        assert!(k
            .verifying_key()
            .verify_strict(b"torsion", &Signature::from_bytes(&sig))
            .is_err());
    }

    /// Every consensus call site uses this rule: a proposal, a vote and a
    /// commit certificate whose signatures only ZIP-215 accepts verify (one
    /// site left on verify_strict would refuse them, and members running
    /// it would disagree with the others).
    #[test]
    fn every_consensus_message_takes_a_zip215_only_signature() {
        use crate::{
            ChainId, CommitCertificate, Height, Round, SignedProposal, SignedVote, ValidatorIndex,
            ValidatorSet, ValueId, VoteKind,
        };
        let keys: Vec<SigningKey> = (10..14).map(key).collect();
        let set =
            ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
        let chain = ChainId([5; 32]);
        let (h, r, v) = (Height(7), Round(0), ValueId([9; 32]));
        let who = set.proposer(h, r);
        let mut p = SignedProposal::sign(&chain, &keys[who.as_usize()], who, h, r, v, None);
        let msg = SignedProposal::sign_bytes(&chain, h, r, v, None);
        p.signature = Signature::from_bytes(&sign_with_torsion(&keys[who.as_usize()], &msg));
        assert!(p.verify(&chain, &set).is_ok());
        let msg = SignedVote::sign_bytes(&chain, VoteKind::Precommit, h, r, Some(v));
        let mut precommits = Vec::new();
        for (i, k) in keys.iter().enumerate().take(3) {
            let idx = ValidatorIndex(i as u32);
            let mut vote = SignedVote::sign(&chain, k, idx, VoteKind::Precommit, h, r, Some(v));
            vote.signature = Signature::from_bytes(&sign_with_torsion(k, &msg));
            assert!(vote.verify(&chain, &set).is_ok(), "vote {i}");
            precommits.push((idx, vote.signature));
        }
        let cert = CommitCertificate {
            height: h,
            round: r,
            value_id: v,
            precommits,
        };
        assert_eq!(cert.verify(&chain, &set), Ok(()));
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        let k = key(4);
        let a = k.verifying_key().to_bytes();
        let sig = k.sign(b"m").to_bytes();
        // s + L: same value mod L, non-canonical encoding.
        let l: [u8; 32] = hex32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut s = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + l[i] as u16 + carry;
            s[i] = v as u8;
            carry = v >> 8;
        }
        let mut bad = sig;
        bad[32..].copy_from_slice(&s);
        assert!(!verify(&a, b"m", &bad));
        let mut high = sig;
        high[63] |= 0xf0; // s far above L
        assert!(!verify(&a, b"m", &high));
        let mut b = Batch::default();
        b.push(&a, b"m", &sig);
        b.push(&a, b"m", &bad);
        assert!(!b.verify_all(&mut rng()));
        assert_eq!(b.verdicts(&mut rng()), vec![true, false]);
    }

    /// Non-canonical encodings of A and R are accepted (and the hash uses the
    /// bytes as sent): with A = non-canonical identity and R = non-canonical
    /// order-4 point, s = 0 satisfies the cofactored equation.
    #[test]
    fn non_canonical_encodings_of_a_and_r_are_accepted() {
        let a = hex32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&hex32(
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ));
        assert!(verify(&a, b"x", &sig));
        // Not on the curve at all: rejected.
        let off = hex32("0200000000000000000000000000000000000000000000000000000000000000");
        assert!(!verify(&off, b"x", &sig));
        let mut off_r = sig;
        off_r[..32].copy_from_slice(&off);
        assert!(!verify(&a, b"x", &off_r));
        let mut b = Batch::default();
        b.push(&off, b"x", &sig);
        assert_eq!(b.verdicts(&mut rng()), vec![false]);
    }

    #[derive(Clone, Debug)]
    enum Entry {
        Good(u8, Vec<u8>),
        WrongMsg(u8, Vec<u8>),
        SmallOrder(usize, usize, Vec<u8>),
        BadS(u8),
        Garbage([u8; 32], [u8; 32], [u8; 32]),
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            6 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(k, m)| Entry::Good(k, m)),
            1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(k, m)| Entry::WrongMsg(k, m)),
            1 => (0usize..10, 0usize..10, proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(a, r, m)| Entry::SmallOrder(a, r, m)),
            1 => any::<u8>().prop_map(Entry::BadS),
            1 => (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>())
                .prop_map(|(a, r, s)| Entry::Garbage(a, r, s)),
        ]
    }

    fn materialize(e: &Entry) -> ([u8; 32], Vec<u8>, [u8; 64]) {
        let so = small_order_encodings();
        match e {
            Entry::Good(k, m) => {
                let k = key(*k);
                (
                    k.verifying_key().to_bytes(),
                    m.clone(),
                    k.sign(m).to_bytes(),
                )
            }
            Entry::WrongMsg(k, m) => {
                let k = key(*k);
                let mut other = m.clone();
                other.push(1);
                (
                    k.verifying_key().to_bytes(),
                    m.clone(),
                    k.sign(&other).to_bytes(),
                )
            }
            Entry::SmallOrder(a, r, m) => {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&so[*r]);
                // s = 1 makes it invalid unless... no: [8]B != 0; keep s = 0
                // for valid ones and flip for odd r to get invalid ones.
                if r % 2 == 1 {
                    sig[32] = 1;
                }
                (so[*a], m.clone(), sig)
            }
            Entry::BadS(k) => {
                let k = key(*k);
                let mut sig = k.sign(b"s").to_bytes();
                sig[63] |= 0x80;
                (k.verifying_key().to_bytes(), b"s".to_vec(), sig)
            }
            Entry::Garbage(a, r, s) => {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                sig[32..].copy_from_slice(s);
                (*a, b"g".to_vec(), sig)
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Batch verification accepts a set iff every single verification
        /// accepts, and its per-item verdicts equal the single verdicts.
        #[test]
        fn batch_accepts_iff_every_single_verify_accepts(
            entries in proptest::collection::vec(entry(), 0..24)
        ) {
            let items: Vec<_> = entries.iter().map(materialize).collect();
            let singles: Vec<bool> = items.iter().map(|(a, m, s)| verify(a, m, s)).collect();
            let mut b = Batch::with_capacity(items.len());
            for (a, m, s) in &items {
                b.push(a, m, s);
            }
            prop_assert_eq!(b.verify_all(&mut rng()), singles.iter().all(|v| *v));
            prop_assert_eq!(b.verdicts(&mut rng()), singles);
        }
    }
}
