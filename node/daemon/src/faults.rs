//! Test-only Byzantine behaviours, for end-to-end tests that need a member
//! to misbehave. Compiled only with the `byzantine` cargo feature (the
//! tests crate enables it; the workspace's default members leave the tests
//! crate out, so `cargo build` at the root does not); a build of `fedpegd`
//! alone, as every release and container build is, contains neither the
//! switches nor the code they reach. Even where compiled in, they work on a
//! regtest chain only.

/// Which faults this member plays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Propose a mint of a deposit that does not exist
    /// (`FEDPEG_TEST_ONLY_PROPOSE_FAKE_MINTS=1`).
    pub propose_fake_mints: bool,
    /// Sign peg-out batches with a wrong key
    /// (`FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS=1`).
    pub bad_pegout_signatures: bool,
    /// Ignore the restore marker and vote at once after a restore, as a
    /// member without a vote floor would (`FEDPEG_TEST_ONLY_NO_VOTE_FLOOR=1`).
    pub ignore_vote_floor: bool,
}

impl Faults {
    /// With the `byzantine` feature and on a regtest chain, the faults
    /// switched on in the environment (each logged as an error); otherwise
    /// none.
    pub fn from_env(network: bitcoin::Network) -> Faults {
        if network != bitcoin::Network::Regtest {
            return Faults::default();
        }
        #[cfg(feature = "byzantine")]
        {
            let on = |name: &str| {
                let set = std::env::var(name).is_ok_and(|v| v == "1");
                if set {
                    tracing::error!("{name}=1: test-only Byzantine behaviour switched on");
                }
                set
            };
            Faults {
                propose_fake_mints: on("FEDPEG_TEST_ONLY_PROPOSE_FAKE_MINTS"),
                bad_pegout_signatures: on("FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS"),
                ignore_vote_floor: on("FEDPEG_TEST_ONLY_NO_VOTE_FLOOR"),
            }
        }
        #[cfg(not(feature = "byzantine"))]
        Faults::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test sets the variables, so no other test sees them half-set.
    #[test]
    fn the_environment_turns_faults_on_only_with_the_byzantine_feature() {
        std::env::set_var("FEDPEG_TEST_ONLY_PROPOSE_FAKE_MINTS", "1");
        std::env::set_var("FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS", "1");
        std::env::set_var("FEDPEG_TEST_ONLY_NO_VOTE_FLOOR", "1");
        let f = Faults::from_env(bitcoin::Network::Regtest);
        let mainnet = Faults::from_env(bitcoin::Network::Bitcoin);
        std::env::remove_var("FEDPEG_TEST_ONLY_PROPOSE_FAKE_MINTS");
        std::env::remove_var("FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS");
        std::env::remove_var("FEDPEG_TEST_ONLY_NO_VOTE_FLOOR");
        let on = cfg!(feature = "byzantine");
        assert_eq!(f.propose_fake_mints, on);
        assert_eq!(f.bad_pegout_signatures, on);
        assert_eq!(f.ignore_vote_floor, on);
        assert!(
            !mainnet.propose_fake_mints
                && !mainnet.bad_pegout_signatures
                && !mainnet.ignore_vote_floor
        );
    }
}
