//! What this build of fedpegd is: its version string, as the node reports
//! it (status and federation APIs, `fedpeg_build_info`, logs) and tells the
//! other members over p2p (libp2p identify's agent version), and how a
//! version a peer reports is checked before anyone is shown it.

/// The crate version, plus `+<commit>` (12 hex digits) when built from a
/// git checkout or with `FEDPEG_GIT_COMMIT` set (see `build.rs`), e.g.
/// `0.1.0+3f9c2a1b7d0e`.
pub const VERSION: &str = env!("FEDPEGD_VERSION");

/// Prefix of the agent version a fedpegd sends over libp2p identify.
pub const AGENT_PREFIX: &str = "fedpegd/";

/// Longest version a peer may report; longer ones are not shown.
pub const MAX_PEER_VERSION_LEN: usize = 64;

/// What this node tells its peers: `fedpegd/<VERSION>`.
pub fn agent_version() -> String {
    format!("{AGENT_PREFIX}{VERSION}")
}

/// The version a peer's agent string states, if it is fit to show: at most
/// [`MAX_PEER_VERSION_LEN`] characters of printable ASCII (no spaces,
/// control or escape characters, nothing that could pass for another
/// line in a log or a terminal). `fedpegd/` is dropped; any other agent is
/// shown whole (it is not a fedpegd an operator expects). Display only:
/// nothing decides on it.
pub fn peer_version(agent: &str) -> Option<String> {
    let v = agent.strip_prefix(AGENT_PREFIX).unwrap_or(agent);
    let fit =
        !v.is_empty() && v.len() <= MAX_PEER_VERSION_LEN && v.bytes().all(|b| b.is_ascii_graphic());
    fit.then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_version_is_the_crate_version_with_an_optional_commit() {
        match VERSION.split_once('+') {
            Some((crate_version, commit)) => {
                assert_eq!(crate_version, env!("CARGO_PKG_VERSION"));
                assert!(commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            None => assert_eq!(VERSION, env!("CARGO_PKG_VERSION")),
        }
        assert_eq!(peer_version(&agent_version()).as_deref(), Some(VERSION));
    }

    #[test]
    fn a_peer_version_that_is_not_plain_short_ascii_is_not_shown() {
        assert_eq!(peer_version("fedpegd/0.2.0").as_deref(), Some("0.2.0"));
        assert_eq!(
            peer_version("rust-libp2p/0.45").as_deref(),
            Some("rust-libp2p/0.45")
        );
        let long = format!("fedpegd/{}", "9".repeat(MAX_PEER_VERSION_LEN + 1));
        for bad in [
            "",
            "fedpegd/",
            "fedpegd/0.2.0 (evil)",
            "fedpegd/0.2.0\nERROR fake log line",
            "fedpegd/0.2.0\u{1b}[2J",
            "fedpegd/0.2.0\u{202e}",
            "fedpegd/0.2.0\t",
            long.as_str(),
        ] {
            assert_eq!(peer_version(bad), None, "{bad:?}");
        }
        let longest = format!("fedpegd/{}", "9".repeat(MAX_PEER_VERSION_LEN));
        assert!(peer_version(&longest).is_some());
    }
}
