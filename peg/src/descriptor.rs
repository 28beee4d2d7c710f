//! The federation's output descriptors, and descriptor checksums.
//!
//! Every federation script is one miniscript descriptor ([`FedDescriptor`],
//! built by [`build`]), the single source of the address, the witness
//! script, the spending weight, the witness (miniscript's satisfier) and the
//! string shown to users:
//!
//! - with an emergency branch:
//!   `wsh(or_d(multi(m,M_1',...,M_n'),and_v(v:multi(k,B_1',...,B_j'),older(N))))`
//! - without one (a genesis without backup keys): `wsh(sortedmulti(m,M_1',...,M_n'))`
//!
//! `or_d` is the form whose normal branch costs nothing extra: the members'
//! witness is exactly a `multi` satisfaction (dummy + `m` signatures), the
//! same stack as plain `sortedmulti`; the script only grows by the
//! emergency branch. (`or_i` would add an `OP_IF` selector element to every
//! spend; `or_b`/`or_c` do not type-check with a timelocked right side.) The
//! emergency spend pushes the backup signatures and `m + 1` empty elements
//! that dissatisfy the members' `multi`, with `nSequence >= N`.
//!
//! `sortedmulti` is only allowed at the top level, so inside `or_d` the keys
//! are written already sorted by their compressed serialization (what
//! `sortedmulti` does): the descriptor, and so the address, does not depend
//! on the order of members or backup keys in genesis.
//!
//! The checksum functions (BIP-380, as Bitcoin Core's `DescriptorChecksum`)
//! are an independent check of the strings miniscript prints.

use bitcoin::secp256k1::PublicKey;
use miniscript::descriptor::DefiniteDescriptorKey;
use std::str::FromStr;

/// A federation descriptor with concrete (tweaked) keys.
pub type FedDescriptor = miniscript::Descriptor<DefiniteDescriptorKey>;

/// The emergency branch of a descriptor: `k` of `keys` after `csv_blocks`.
#[derive(Debug, Clone, Copy)]
pub struct EmergencyKeys<'a> {
    /// Backup keys (already tweaked), any order.
    pub keys: &'a [PublicKey],
    /// Signatures needed.
    pub threshold: usize,
    /// Relative timelock in blocks.
    pub csv_blocks: u16,
}

/// Keys sorted by compressed serialization, hex, comma-separated.
fn sorted_hex(keys: &[PublicKey]) -> String {
    let mut ser: Vec<[u8; 33]> = keys.iter().map(PublicKey::serialize).collect();
    ser.sort_unstable();
    let hex: Vec<String> = ser
        .iter()
        .map(|k| k.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    hex.join(",")
}

/// Builds (and type-checks) the federation descriptor: `m` of `members`,
/// and the emergency branch if any. Errors only if the keys do not form a
/// sane miniscript (a repeated key, or sizes outside Bitcoin's limits).
pub fn build(
    m: usize,
    members: &[PublicKey],
    emergency: Option<EmergencyKeys<'_>>,
) -> Result<FedDescriptor, String> {
    let text = match emergency {
        None => format!("wsh(sortedmulti({m},{}))", sorted_hex(members)),
        Some(e) => format!(
            "wsh(or_d(multi({m},{}),and_v(v:multi({},{}),older({}))))",
            sorted_hex(members),
            e.threshold,
            sorted_hex(e.keys),
            e.csv_blocks
        ),
    };
    let d = FedDescriptor::from_str(&text).map_err(|e| e.to_string())?;
    d.sanity_check().map_err(|e| e.to_string())?;
    Ok(d)
}

/// Characters a descriptor may contain, in the order the checksum groups them.
const INPUT_CHARSET: &str =
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";

/// The bech32 alphabet the 8 checksum characters are written in.
const CHECKSUM_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// Number of checksum characters after the `#`.
pub const CHECKSUM_LEN: usize = 8;

/// Why a descriptor checksum could not be computed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A character outside the descriptor character set.
    #[error("descriptor contains {ch:?} at byte {pos}, which no descriptor may contain")]
    InvalidCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        pos: usize,
    },
    /// No `#` followed by 8 checksum characters at the end.
    #[error("descriptor has no checksum; expected '#' and {CHECKSUM_LEN} characters at the end")]
    MissingChecksum,
    /// The checksum does not match the descriptor.
    #[error("descriptor checksum is '{found}' but the descriptor's checksum is '{expected}'; the descriptor was altered or mistyped")]
    ChecksumMismatch {
        /// Checksum computed from the descriptor.
        expected: String,
        /// Checksum written after the `#`.
        found: String,
    },
}

/// BCH polymod over GF(32) with Bitcoin Core's generator (degree-8 code).
fn polymod(chk: u64, value: u64) -> u64 {
    let top = chk >> 35;
    let mut chk = ((chk & 0x7_ffff_ffff) << 5) ^ value;
    for (i, g) in [
        0xf5_dee5_1989u64,
        0xa9_fdca_3312,
        0x1b_ab10_e32d,
        0x37_06b1_677a,
        0x64_4d62_6ffd,
    ]
    .iter()
    .enumerate()
    {
        if (top >> i) & 1 == 1 {
            chk ^= g;
        }
    }
    chk
}

/// The 8-character checksum of `desc` (which must not carry one already).
pub fn checksum(desc: &str) -> Result<String, DescriptorError> {
    let mut c = 1u64;
    let mut cls = 0u64;
    let mut clscount = 0;
    for (pos, ch) in desc.char_indices() {
        let pos_in_set = INPUT_CHARSET
            .find(ch)
            .ok_or(DescriptorError::InvalidCharacter { ch, pos })? as u64;
        // Low 5 bits are a symbol of their own; the high bits ("class") of
        // three characters are packed into one extra symbol.
        c = polymod(c, pos_in_set & 31);
        cls = cls * 3 + (pos_in_set >> 5);
        clscount += 1;
        if clscount == 3 {
            c = polymod(c, cls);
            cls = 0;
            clscount = 0;
        }
    }
    if clscount > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..CHECKSUM_LEN {
        c = polymod(c, 0);
    }
    c ^= 1;
    Ok((0..CHECKSUM_LEN)
        .map(|j| char::from(CHECKSUM_CHARSET[((c >> (5 * (7 - j))) & 31) as usize]))
        .collect())
}

/// `desc#checksum`.
pub fn with_checksum(desc: &str) -> Result<String, DescriptorError> {
    Ok(format!("{desc}#{}", checksum(desc)?))
}

/// Checks the checksum of `desc#checksum` and returns `desc`.
pub fn verify_checksum(full: &str) -> Result<&str, DescriptorError> {
    let (desc, found) = full
        .rsplit_once('#')
        .ok_or(DescriptorError::MissingChecksum)?;
    if found.len() != CHECKSUM_LEN {
        return Err(DescriptorError::MissingChecksum);
    }
    let expected = checksum(desc)?;
    if expected != found {
        return Err(DescriptorError::ChecksumMismatch {
            expected,
            found: found.to_string(),
        });
    }
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors from BIP-380 (also checked against bitcoind's
    /// `getdescriptorinfo` by tests/bitcoind_descriptor.rs).
    #[test]
    fn bip380_vectors() {
        assert_eq!(
            with_checksum("raw(deadbeef)").unwrap(),
            "raw(deadbeef)#89f8spxm"
        );
        assert_eq!(
            with_checksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)").unwrap(),
            "addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)#02wpgw69"
        );
    }

    /// Vector from Bitcoin Core's descriptor_tests.cpp (mainnet xprvs, so
    /// the regtest node of tests/bitcoind_descriptor.rs cannot parse it).
    #[test]
    fn bitcoin_core_sh_multi_vector() {
        let d = "sh(multi(2,[00000000/111'/222]xprvA1RpRA33e1JQ7ifknakTFpgNXPmW2YvmhqLQYMmrj4xJXXWYpDPS3xz7iAxn8L39njGVyuoseXzU6rcxFLJ8HFsTjSyQbLYnMpCqE2VbFWc,xprv9uPDJpEQgRQfDcW7BkF7eTya6RPxXeJCqCJGHuCJ4GiRVLzkTXBAJMu2qaMWPrS7AANYqdq6vcBcBUdJCVVFceUvJFjaPdGZ2y9WACViL4L/0))";
        assert_eq!(with_checksum(d).unwrap(), format!("{d}#ggrsrxfy"));
    }

    #[test]
    fn verify_accepts_good_and_returns_body() {
        assert_eq!(
            verify_checksum("raw(deadbeef)#89f8spxm"),
            Ok("raw(deadbeef)")
        );
    }

    #[test]
    fn verify_rejects_altered_descriptor_and_checksum() {
        assert!(matches!(
            verify_checksum("raw(deadbeee)#89f8spxm"),
            Err(DescriptorError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            verify_checksum("raw(deadbeef)#89f8spxn"),
            Err(DescriptorError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn verify_rejects_missing_or_short_checksum() {
        assert_eq!(
            verify_checksum("raw(deadbeef)"),
            Err(DescriptorError::MissingChecksum)
        );
        assert_eq!(
            verify_checksum("raw(deadbeef)#89f8spx"),
            Err(DescriptorError::MissingChecksum)
        );
        assert_eq!(
            verify_checksum("raw(deadbeef)#"),
            Err(DescriptorError::MissingChecksum)
        );
    }

    #[test]
    fn characters_outside_the_charset_are_rejected() {
        assert_eq!(
            checksum("raw(dé)"),
            Err(DescriptorError::InvalidCharacter { ch: 'é', pos: 5 })
        );
        assert!(matches!(
            checksum("raw(\n)"),
            Err(DescriptorError::InvalidCharacter { ch: '\n', .. })
        ));
    }

    proptest! {
        /// Any string over the descriptor charset round-trips through
        /// `with_checksum` and `verify_checksum`.
        #[test]
        fn appended_checksum_verifies(idx in proptest::collection::vec(0..INPUT_CHARSET.len(), 0..120)) {
            let desc: String = idx.iter().map(|&i| char::from(INPUT_CHARSET.as_bytes()[i])).collect();
            let full = with_checksum(&desc).unwrap();
            prop_assert_eq!(verify_checksum(&full), Ok(desc.as_str()));
        }

        /// Changing one character of the body is always detected (the code
        /// detects every error of up to 4 characters in descriptors this short).
        #[test]
        fn one_changed_character_is_detected(
            idx in proptest::collection::vec(0..INPUT_CHARSET.len(), 1..120),
            at in any::<prop::sample::Index>(),
            delta in 1..INPUT_CHARSET.len(),
        ) {
            let chars: Vec<char> = idx.iter().map(|&i| char::from(INPUT_CHARSET.as_bytes()[i])).collect();
            let desc: String = chars.iter().collect();
            let full = with_checksum(&desc).unwrap();
            let k = at.index(chars.len());
            let mut altered = chars.clone();
            altered[k] = char::from(INPUT_CHARSET.as_bytes()[(idx[k] + delta) % INPUT_CHARSET.len()]);
            let altered: String = altered.iter().collect();
            let bad = format!("{altered}{}", &full[desc.len()..]);
            let is_mismatch = matches!(verify_checksum(&bad), Err(DescriptorError::ChecksumMismatch { .. }));
            prop_assert!(is_mismatch);
        }
    }
}
