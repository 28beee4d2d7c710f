//! What a person typed into the search box or the peg tracker: a height, a
//! 64-hex id (block hash, sidechain txid or Bitcoin txid), a fedpeg
//! address, a Bitcoin outpoint or a withdrawal id. Pure, so every shape of
//! bad input is unit-tested.

use super::WebError;

/// One classified query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A whole number: a block height (search) or a withdrawal id (tracker).
    Number(u64),
    /// 64 hex digits, lowercased: a block hash or a sidechain or Bitcoin txid.
    Id(String),
    /// A fedpeg address (checksum verified).
    Address(String),
    /// A Bitcoin outpoint `txid:vout`.
    Outpoint(String),
}

/// At most 40 characters of `s`, for quoting input back in a message.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

const WHAT: &str = "a block height, a block hash, a transaction id, a fedpeg address, a Bitcoin outpoint (txid:vout) or a withdrawal id";

/// Classifies `q` (already trimmed and length-checked); `hrp` is the
/// chain's address prefix.
pub(crate) fn classify(q: &str, hrp: &str) -> Result<Query, WebError> {
    if q.is_empty() {
        return Err(WebError::bad_request(format!("type {WHAT}")));
    }
    // 64 hex digits first: an id may happen to be all decimal digits.
    if is_hex64(q) {
        return Ok(Query::Id(q.to_ascii_lowercase()));
    }
    if q.bytes().all(|b| b.is_ascii_digit()) {
        return q.parse().map(Query::Number).map_err(|_| {
            WebError::bad_request(format!(
                "{} is too large for a height or a withdrawal id",
                clip(q)
            ))
        });
    }
    if let Some((txid, vout)) = q.split_once(':') {
        if !is_hex64(txid) {
            return Err(WebError::bad_request(format!(
                "\"{}\" is not an outpoint: the part before ':' must be a Bitcoin txid (64 hex digits)",
                clip(q)
            )));
        }
        let vout: u32 = vout.parse().map_err(|_| {
            WebError::bad_request(format!(
                "\"{}\" is not an outpoint: the part after ':' must be an output index (0, 1, …)",
                clip(q)
            ))
        })?;
        return Ok(Query::Outpoint(format!(
            "{}:{vout}",
            txid.to_ascii_lowercase()
        )));
    }
    let lower = q.to_ascii_lowercase();
    if lower.starts_with(&format!("{hrp}1")) {
        return fedpeg_ledger::account::AccountId::from_address(q, hrp)
            .map(|a| Query::Address(a.to_address(hrp)))
            .map_err(|e| {
                WebError::bad_request(format!("\"{}\" is not a valid address: {e}", clip(q)))
            });
    }
    Err(WebError::bad_request(format!(
        "\"{}\" is not something this explorer can look up: type {WHAT}",
        clip(q)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: &str = "8f0c1b5e3a0d4c2b9e7f6a5d4c3b2a1908f7e6d5c4b3a29180706f5e4d3c2b1a";

    #[test]
    fn each_shape_is_recognized() {
        assert_eq!(classify("42", "fprt").unwrap(), Query::Number(42));
        let zeros = "0".repeat(64);
        assert_eq!(classify(&zeros, "fprt").unwrap(), Query::Id(zeros.clone()));
        assert_eq!(
            classify(&TXID.to_uppercase(), "fprt").unwrap(),
            Query::Id(TXID.into())
        );
        assert_eq!(
            classify(&format!("{TXID}:3"), "fprt").unwrap(),
            Query::Outpoint(format!("{TXID}:3"))
        );
        let a = crate::peg_testing::account(7).to_address("fprt");
        assert_eq!(classify(&a, "fprt").unwrap(), Query::Address(a.clone()));
    }

    #[test]
    fn bad_input_is_explained_and_quoted_back_clipped() {
        let msg = |q: &str| classify(q, "fprt").unwrap_err().message;
        assert!(msg("").contains("type a block height"));
        assert!(msg("hello").contains("not something this explorer can look up"));
        assert!(msg("99999999999999999999999").contains("too large"));
        assert!(msg("abc:1").contains("64 hex digits"));
        assert!(msg(&format!("{TXID}:x")).contains("output index"));
        assert!(msg(&format!("{TXID}:-1")).contains("output index"));
        assert!(msg("fprt1qqqqqqqq").contains("not a valid address"));
        let long = "x".repeat(150);
        assert!(msg(&long).len() < 300, "input is clipped in the message");
        let a = crate::peg_testing::account(7).to_address("fprt");
        let mut typo = a.clone();
        typo.pop();
        typo.push(if a.ends_with('q') { 'p' } else { 'q' });
        assert!(msg(&typo).contains("not a valid address"));
        assert_eq!(classify("<script>", "fprt").unwrap_err().status, 400);
    }
}
