//! The genesis file: the federation's members and the chain's parameters.
//! Its hash is the chain id that every signature commits to.

use crate::account::{hrp_for, AccountId};
use crate::amount::Sats;
use crate::epoch::{Epoch, EpochMember};
use crate::hash::Hash32;
use crate::ids::FeeRate;
use crate::{LedgerParams, State, MAX_FEE_RATE};
use ed25519_dalek::VerifyingKey;
use fedpeg_consensus::Height;
use serde::{Deserialize, Serialize};

/// A federation member's public identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInfo {
    /// Human name, unique in the federation.
    pub name: String,
    /// ed25519 consensus public key, hex (also the libp2p identity).
    pub consensus_key: String,
    /// secp256k1 compressed peg public key, hex.
    pub peg_key: String,
    /// libp2p multiaddress other members dial, e.g. `/ip4/127.0.0.1/tcp/40001`.
    pub p2p_address: String,
}

/// Consensus timeouts in milliseconds (each grows by `*_delta_ms` per round).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    pub timeout_propose_ms: u64,
    pub timeout_propose_delta_ms: u64,
    pub timeout_vote_ms: u64,
    pub timeout_vote_delta_ms: u64,
    pub max_block_txs: u32,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            timeout_propose_ms: 1000,
            timeout_propose_delta_ms: 500,
            timeout_vote_ms: 500,
            timeout_vote_delta_ms: 250,
            max_block_txs: 10_000,
        }
    }
}

/// Fee parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeParams {
    /// Minimum fee of any transaction, sats.
    pub min_tx_fee: Sats,
    /// Smallest fee of a peg-out, sats; the quote at the agreed fee rate
    /// (`EstimatePegOutFee`) is charged when higher.
    pub pegout_fee: Sats,
    /// Bitcoin fee rate (sat/vB) assumed until members vote one; also the
    /// fallback a member votes while its bitcoind has no estimate (a fresh
    /// node, regtest), so the median is taken over every member and one
    /// member cannot set it alone.
    #[serde(default = "default_fee_rate")]
    pub default_fee_rate_sat_vb: u64,
    /// Lowest fee rate (sat/vB) a member may vote; the agreed rate is never
    /// below it. Default 1 (Bitcoin Core's minimum relay fee). Absent from
    /// the file (and from the chain id) when it is the default.
    #[serde(
        default = "default_min_fee_rate",
        skip_serializing_if = "is_default_min_fee_rate"
    )]
    pub min_fee_rate_sat_vb: u64,
    /// Highest fee rate (sat/vB) a member may vote; the agreed rate is never
    /// above it. Default 1000: above what Bitcoin's 6-block estimates have
    /// asked for outside short spikes (the peaks of December 2017 and the
    /// April 2024 halving reached about this level for hours), so honest
    /// estimates fit; and it caps what votes can deduct from every mint and
    /// charge every peg-out (at 1000 sat/vB spending one 3-of-4 deposit costs
    /// 0.0013 BTC) even if a majority of members colluded. A chain that must
    /// pay more raises it in genesis, up to 100000. Absent from the file (and
    /// from the chain id) when it is the default.
    #[serde(
        default = "default_max_fee_rate",
        skip_serializing_if = "is_default_max_fee_rate"
    )]
    pub max_fee_rate_sat_vb: u64,
    /// How long, in ms of block time, a peg-out fee quoted at an agreed rate
    /// stays enough after the rate rises (the fee pool pays the difference).
    /// Default 600000 (10 minutes): time to read a quote, sign, maybe on a
    /// hardware wallet, and submit. 0 turns the grace off; at most one hour.
    /// Absent from the file (and from the chain id) when it is the default.
    #[serde(
        default = "default_quote_validity_ms",
        skip_serializing_if = "is_default_quote_validity_ms"
    )]
    pub quote_validity_ms: u64,
}

fn default_fee_rate() -> u64 {
    10
}

fn default_min_fee_rate() -> u64 {
    1
}

fn is_default_min_fee_rate(v: &u64) -> bool {
    *v == default_min_fee_rate()
}

fn default_max_fee_rate() -> u64 {
    1000
}

fn is_default_max_fee_rate(v: &u64) -> bool {
    *v == default_max_fee_rate()
}

fn default_quote_validity_ms() -> u64 {
    600_000
}

fn is_default_quote_validity_ms(v: &u64) -> bool {
    *v == default_quote_validity_ms()
}

/// Longest `fees.quote_validity_ms`: an hour of block time. It bounds how
/// long the federation subsidises old quotes and how many past rates state
/// remembers.
pub const MAX_QUOTE_VALIDITY_MS: u64 = 3_600_000;

impl Default for FeeParams {
    fn default() -> Self {
        FeeParams {
            default_fee_rate_sat_vb: default_fee_rate(),
            min_tx_fee: Sats::checked(1).unwrap_or(Sats::ZERO),
            pegout_fee: Sats::checked(1000).unwrap_or(Sats::ZERO),
            min_fee_rate_sat_vb: default_min_fee_rate(),
            max_fee_rate_sat_vb: default_max_fee_rate(),
            quote_validity_ms: default_quote_validity_ms(),
        }
    }
}

impl FeeParams {
    /// Checks 1 <= min <= default <= max <= [`MAX_FEE_RATE`] and the quote
    /// validity.
    fn validate(&self) -> Result<(), GenesisError> {
        let (min, default, max) = (
            self.min_fee_rate_sat_vb,
            self.default_fee_rate_sat_vb,
            self.max_fee_rate_sat_vb,
        );
        if min == 0 {
            return Err(invalid(
                "fees.min_fee_rate_sat_vb must be at least 1 (Bitcoin relays nothing below 1 sat/vB)",
            ));
        }
        if max > MAX_FEE_RATE.0 {
            return Err(invalid(format!(
                "fees.max_fee_rate_sat_vb {max} is above the protocol limit of {MAX_FEE_RATE} sat/vB; lower it"
            )));
        }
        if min > max {
            return Err(invalid(format!(
                "fees.min_fee_rate_sat_vb {min} is above fees.max_fee_rate_sat_vb {max}; swap or fix them"
            )));
        }
        if !(min..=max).contains(&default) {
            return Err(invalid(format!(
                "fees.default_fee_rate_sat_vb {default} must be between fees.min_fee_rate_sat_vb {min} and fees.max_fee_rate_sat_vb {max}"
            )));
        }
        if self.quote_validity_ms > MAX_QUOTE_VALIDITY_MS {
            return Err(invalid(format!(
                "fees.quote_validity_ms {} is above the limit of {MAX_QUOTE_VALIDITY_MS} (one hour)",
                self.quote_validity_ms
            )));
        }
        Ok(())
    }
}

/// A development-only starting balance (regtest only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevBalance {
    pub address: String,
    /// Sats; at most 21M BTC (refused when parsed otherwise).
    pub amount: Sats,
}

/// Contents of `genesis.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Human-readable chain name.
    pub chain_name: String,
    /// Time of the genesis, ms since the Unix epoch.
    pub genesis_time_ms: u64,
    /// Bitcoin network of the peg: bitcoin, testnet, signet or regtest.
    pub network: String,
    /// Members in order; index = validator index.
    pub members: Vec<MemberInfo>,
    /// m in m-of-n of the peg multisig; f < m <= n - f with
    /// f = floor((n - 1) / 3), see [`safe_peg_thresholds`].
    pub peg_threshold: u32,
    /// Regtest only: accept a peg threshold outside the safe range (for
    /// tests of the peg itself). Absent from the file when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsafe_peg_threshold: bool,
    /// Bitcoin confirmations before a deposit is minted.
    pub pegin_confirmations: u32,
    #[serde(default)]
    pub consensus: ConsensusParams,
    #[serde(default)]
    pub fees: FeeParams,
    /// Starting balances; refused on any network but regtest.
    #[serde(default)]
    pub dev_balances: Vec<DevBalance>,
    /// Peg-out batching policy.
    #[serde(default = "crate::pegout_batch::PegOutParams::unnamed_in_genesis")]
    pub pegout: crate::pegout_batch::PegOutParams,
    /// The emergency recovery branch of every federation address: `k` of
    /// these backup keys may spend a federation output `csv_blocks` after it
    /// confirmed. Optional: a federation whose members judge the backup-key
    /// holders a bigger risk than losing quorum may leave it out, at the
    /// price of coins lost for good if quorum is ever lost; `fedpegd
    /// genesis` asks for it explicitly (`--backup-key`), and the devnet and
    /// the end-to-end tests always include it. Absent from the file (and
    /// from the chain id) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<EmergencyParams>,
}

/// The emergency branch of the federation descriptor (see
/// `fedpeg_peg::descriptor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyParams {
    /// Backup public keys, compressed secp256k1, hex (from `fedpegd
    /// backup-keygen`, held offline by people other than the members).
    pub backup_keys: Vec<String>,
    /// Backup signatures needed (`k` of the backup keys).
    pub threshold: u32,
    /// Relative timelock in Bitcoin blocks (1..=65535) before the backup
    /// keys can spend an output. Required in the file (a code default that
    /// changed would silently change every address and the chain id);
    /// `fedpegd genesis` writes
    /// [`fedpeg_peg::federation::DEFAULT_EMERGENCY_CSV_BLOCKS`] (8,064,
    /// about eight weeks, Liquid's current value) unless told otherwise.
    /// Outside regtest at least [`MIN_CSV_BLOCKS_MAINNET`] on bitcoin,
    /// [`MIN_CSV_BLOCKS_TEST_NETWORKS`] on the test networks, and at least 4
    /// × `pegin_confirmations` everywhere but regtest.
    pub csv_blocks: u32,
}

/// Least emergency timelock on bitcoin mainnet: a week of blocks, so the
/// backup keys can never act on a federation that is merely slow.
pub const MIN_CSV_BLOCKS_MAINNET: u32 = 1008;
/// Least emergency timelock on testnet and signet: a day of blocks.
pub const MIN_CSV_BLOCKS_TEST_NETWORKS: u32 = 144;

impl EmergencyParams {
    /// Parses the backup keys and checks the numbers (the peg crate checks
    /// the rest when the descriptor is formed).
    fn parse_keys(&self) -> Result<Vec<bitcoin::secp256k1::PublicKey>, GenesisError> {
        if self.csv_blocks == 0 || self.csv_blocks > 65_535 {
            return Err(invalid(format!(
                "emergency.csv_blocks {} must be between 1 and 65535 (a BIP68 relative timelock in blocks)",
                self.csv_blocks
            )));
        }
        self.backup_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                hex::decode(k)
                    .ok()
                    .filter(|b| b.len() == 33)
                    .and_then(|b| bitcoin::secp256k1::PublicKey::from_slice(&b).ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "emergency.backup_keys[{i}] '{k}' is not a compressed secp256k1 public key (66 hex chars)"
                        ))
                    })
            })
            .collect()
    }
}

/// Peg thresholds m with which up to f = floor((n - 1) / 3) faulty members
/// can neither sign alone (m > f) nor block signing (m <= n - f).
pub fn safe_peg_thresholds(n: u32) -> std::ops::RangeInclusive<u32> {
    let f = n.saturating_sub(1) / 3;
    (f + 1)..=(n - f)
}

/// Why a genesis file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("genesis file {0} is not valid JSON for a fedpeg genesis: {1}")]
    Json(String, serde_json::Error),
    #[error("genesis: {0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> GenesisError {
    GenesisError::Invalid(s.into())
}

/// A validated genesis with derived values.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub genesis: Genesis,
    pub chain_id: Hash32,
    pub network: bitcoin::Network,
    pub member_keys: Vec<VerifyingKey>,
    pub peg_keys: Vec<bitcoin::secp256k1::PublicKey>,
    /// Backup keys of the emergency branch, genesis order (empty without one).
    pub backup_keys: Vec<bitcoin::secp256k1::PublicKey>,
}

impl Genesis {
    /// Parses and validates a genesis file's contents; `origin` (the file
    /// name) is only for error messages. Reading the file is the caller's.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<ChainSpec, GenesisError> {
        let g: Genesis =
            serde_json::from_slice(bytes).map_err(|e| GenesisError::Json(origin.to_string(), e))?;
        g.validate()
    }

    /// Chain id: tagged hash of the canonical JSON encoding of this genesis
    /// (field order fixed by this struct, so whitespace in the file does not matter).
    pub fn chain_id(&self) -> Hash32 {
        // Serializing a struct of strings and integers cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        Hash32::tagged("fedpeg/genesis/v1", &[&canonical])
    }

    /// Checks everything and derives the chain spec.
    pub fn validate(self) -> Result<ChainSpec, GenesisError> {
        let network = parse_network(&self.network)?;
        if self.chain_name.trim().is_empty() {
            return Err(invalid("chain_name must not be empty"));
        }
        if self.members.is_empty() {
            return Err(invalid("members must list at least one member"));
        }
        let n = self.members.len() as u32;
        if self.peg_threshold == 0 || self.peg_threshold > n {
            return Err(invalid(format!(
                "peg_threshold {} must be between 1 and the number of members ({n})",
                self.peg_threshold
            )));
        }
        let safe = safe_peg_thresholds(n);
        if !safe.contains(&self.peg_threshold) {
            let f = (n - 1) / 3;
            let why = if self.peg_threshold <= f {
                format!("{f} faulty members (the most the federation tolerates) could sign a peg-out alone and take the funds")
            } else {
                format!("{f} faulty members (the most the federation tolerates) could refuse to sign and freeze the funds")
            };
            if network != bitcoin::Network::Regtest {
                return Err(invalid(format!(
                    "peg_threshold {} of {n} is unsafe: {why}; use {}..={} (f < m <= n - f)",
                    self.peg_threshold,
                    safe.start(),
                    safe.end()
                )));
            }
            if !self.allow_unsafe_peg_threshold {
                return Err(invalid(format!(
                    "peg_threshold {} of {n} is unsafe: {why}; use {}..={}, or on regtest set allow_unsafe_peg_threshold (fedpegd genesis --allow-unsafe-peg-threshold)",
                    self.peg_threshold,
                    safe.start(),
                    safe.end()
                )));
            }
        } else if self.allow_unsafe_peg_threshold && network != bitcoin::Network::Regtest {
            return Err(invalid("allow_unsafe_peg_threshold is for regtest only"));
        }
        if self.pegin_confirmations == 0 {
            return Err(invalid("pegin_confirmations must be at least 1"));
        }
        let po = &self.pegout;
        if po.max_outputs == 0 || po.max_inputs == 0 || po.max_unconfirmed == 0 {
            return Err(invalid(
                "pegout.max_outputs, pegout.max_inputs and pegout.max_unconfirmed must be at least 1",
            ));
        }
        if po.bump_after_blocks == 0 {
            return Err(invalid("pegout.bump_after_blocks must be at least 1"));
        }
        self.fees.validate()?;
        if self.consensus.max_block_txs == 0 {
            return Err(invalid("consensus.max_block_txs must be at least 1"));
        }
        let mut member_keys = Vec::new();
        let mut peg_keys = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.name.trim().is_empty() || !names.insert(m.name.clone()) {
                return Err(invalid(format!(
                    "member {i}: name '{}' is empty or repeated",
                    m.name
                )));
            }
            let ck = hex::decode(&m.consensus_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .filter(|k| !k.is_weak())
                .ok_or_else(|| {
                    invalid(format!("member '{}': consensus_key is not a valid ed25519 public key (64 hex chars)", m.name))
                })?;
            if member_keys.contains(&ck) {
                return Err(invalid(format!(
                    "member '{}': consensus_key is repeated",
                    m.name
                )));
            }
            let pk = hex::decode(&m.peg_key)
                .ok()
                .and_then(|b| bitcoin::secp256k1::PublicKey::from_slice(&b).ok())
                .filter(|_| m.peg_key.len() == 66)
                .ok_or_else(|| {
                    invalid(format!("member '{}': peg_key is not a compressed secp256k1 public key (66 hex chars)", m.name))
                })?;
            if peg_keys.contains(&pk) {
                return Err(invalid(format!("member '{}': peg_key is repeated", m.name)));
            }
            member_keys.push(ck);
            peg_keys.push(pk);
        }
        if !self.dev_balances.is_empty() && network != bitcoin::Network::Regtest {
            return Err(invalid(format!(
                "dev_balances are allowed on regtest only; this genesis is for {network}. Remove them: pegged BTC on a real network comes only from deposits"
            )));
        }
        let hrp = hrp_for(network);
        let mut total = Sats::ZERO;
        for d in &self.dev_balances {
            AccountId::from_address(&d.address, hrp)
                .map_err(|e| invalid(format!("dev_balances: {e}")))?;
            total = total
                .checked_add(d.amount)
                .ok_or_else(|| invalid("dev_balances add up to more than 21 million BTC"))?;
        }
        let backup_keys = match &self.emergency {
            Some(e) => {
                let keys = e.parse_keys()?;
                let least = match network {
                    bitcoin::Network::Regtest => 1,
                    bitcoin::Network::Bitcoin => MIN_CSV_BLOCKS_MAINNET,
                    _ => MIN_CSV_BLOCKS_TEST_NETWORKS,
                };
                let least = if network == bitcoin::Network::Regtest {
                    least
                } else {
                    least.max(self.pegin_confirmations.saturating_mul(4))
                };
                if e.csv_blocks < least {
                    return Err(invalid(format!(
                        "emergency.csv_blocks {} is below {least} on {network}: the backup keys could spend deposits the federation is still confirming or minting; use at least {least} (default 8064)",
                        e.csv_blocks
                    )));
                }
                keys
            }
            None => Vec::new(),
        };
        let spec = ChainSpec {
            chain_id: self.chain_id(),
            network,
            member_keys,
            peg_keys,
            backup_keys,
            genesis: self,
        };
        spec.peg_federation()
            .map_err(|e| invalid(format!("peg federation: {e}")))?;
        Ok(spec)
    }
}

/// Parses a network name as used in genesis and config.
pub fn parse_network(s: &str) -> Result<bitcoin::Network, GenesisError> {
    match s {
        "bitcoin" | "mainnet" => Ok(bitcoin::Network::Bitcoin),
        "testnet" => Ok(bitcoin::Network::Testnet),
        "signet" => Ok(bitcoin::Network::Signet),
        "regtest" => Ok(bitcoin::Network::Regtest),
        other => Err(invalid(format!(
            "network '{other}' is unknown; use bitcoin, testnet, signet or regtest"
        ))),
    }
}

impl ChainSpec {
    /// Address prefix of this chain.
    pub fn hrp(&self) -> &'static str {
        hrp_for(self.network)
    }

    /// Ledger parameters from genesis.
    pub fn ledger_params(&self) -> LedgerParams {
        LedgerParams {
            chain_id: self.chain_id,
            network: self.network,
            min_tx_fee: self.genesis.fees.min_tx_fee,
            pegout_fee: self.genesis.fees.pegout_fee,
            max_block_txs: self.genesis.consensus.max_block_txs as usize,
            pegin_spend_vbytes: self.pegin_spend_vbytes(),
            default_fee_rate: FeeRate(self.genesis.fees.default_fee_rate_sat_vb),
            min_fee_rate: FeeRate(self.genesis.fees.min_fee_rate_sat_vb),
            max_fee_rate: FeeRate(self.genesis.fees.max_fee_rate_sat_vb),
            quote_validity_ms: self.genesis.fees.quote_validity_ms,
            federation: self.peg_federation().expect("validated genesis"),
            epoch_federations: Default::default(),
            allow_unsafe_peg_threshold: self.genesis.allow_unsafe_peg_threshold,
            pegout: self.genesis.pegout.clone(),
            confirmations: self.genesis.pegin_confirmations,
            rollover_after_ms: self.genesis.emergency.as_ref().map(|e| {
                crate::rollover::rollover_after_ms(
                    u16::try_from(e.csv_blocks).unwrap_or(u16::MAX),
                    self.genesis.pegin_confirmations,
                )
            }),
        }
    }

    /// Virtual bytes to spend one deposit of this federation.
    pub fn pegin_spend_vbytes(&self) -> u64 {
        self.peg_federation()
            .map(|f| f.spend_vbytes_estimate())
            .unwrap_or(0)
    }

    /// Sats it costs to spend one deposit at the genesis (default) fee rate.
    pub fn pegin_spend_cost(&self) -> u64 {
        self.pegin_spend_vbytes()
            .saturating_mul(self.genesis.fees.default_fee_rate_sat_vb)
    }

    /// Epoch 0: the genesis members, in force from height 0.
    pub fn genesis_epoch(&self) -> Epoch {
        Epoch {
            number: 0,
            activation: Height(0),
            adopted: Height(0),
            members: self
                .genesis
                .members
                .iter()
                .zip(self.member_keys.iter().zip(&self.peg_keys))
                .map(|(m, (ck, pk))| EpochMember {
                    name: m.name.clone(),
                    consensus_key: *ck,
                    peg_key: *pk,
                    p2p_address: m.p2p_address.clone(),
                })
                .collect(),
            peg_threshold: self.genesis.peg_threshold,
        }
    }

    /// The state at height 0.
    pub fn genesis_state(&self) -> State {
        let mut s = State {
            state_root: Hash32::tagged("fedpeg/state/genesis", &[&self.chain_id.0]),
            tip_time_ms: self.genesis.genesis_time_ms,
            epochs: vec![self.genesis_epoch()],
            ..State::default()
        };
        for d in &self.genesis.dev_balances {
            // Validated in `validate`.
            if let Ok(id) = AccountId::from_address(&d.address, self.hrp()) {
                let a = s.accounts.entry(id).or_default();
                // The total is at most 21M BTC (`validate`), so neither sum fails.
                a.balance = a.balance.checked_add(d.amount).unwrap_or(Sats::MAX);
                s.supply = s.supply.checked_add(d.amount).unwrap_or(Sats::MAX);
            }
        }
        s
    }

    /// The peg federation: members' peg keys, threshold, network and the
    /// emergency branch.
    pub fn peg_federation(
        &self,
    ) -> Result<fedpeg_peg::federation::Federation, fedpeg_peg::federation::FederationError> {
        let f = fedpeg_peg::federation::Federation::new(
            self.peg_keys.clone(),
            self.genesis.peg_threshold as usize,
            self.network,
        )?;
        match &self.genesis.emergency {
            None => Ok(f),
            // csv_blocks was checked to fit 16 bits in `validate`; an
            // unchecked value becomes 0, which `with_emergency` refuses.
            Some(e) => f.with_emergency(
                self.backup_keys.clone(),
                e.threshold as usize,
                u16::try_from(e.csv_blocks).unwrap_or(0),
            ),
        }
    }

    /// Index of the member with this consensus key.
    pub fn member_index(&self, key: &VerifyingKey) -> Option<usize> {
        self.member_keys.iter().position(|k| k == key)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::sats;
    use ed25519_dalek::SigningKey;

    use crate::testing::sample_genesis as sample;

    fn dev(hrp: &str) -> Vec<DevBalance> {
        let id = AccountId(SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes());
        vec![DevBalance {
            address: id.to_address(hrp),
            amount: sats(1000),
        }]
    }

    #[test]
    fn regtest_genesis_with_dev_balances_is_valid() {
        let spec = sample("regtest", dev("fprt")).validate().unwrap();
        assert_eq!(spec.genesis_state().supply, sats(1000));
    }

    #[test]
    fn dev_balances_are_refused_off_regtest() {
        let e = sample("testnet", dev("fpt")).validate().unwrap_err();
        assert!(e.to_string().contains("regtest only"), "{e}");
        let e = sample("bitcoin", dev("fp")).validate().unwrap_err();
        assert!(e.to_string().contains("regtest only"), "{e}");
    }

    #[test]
    fn bad_genesis_fields_are_explained() {
        let mut g = sample("regtest", vec![]);
        g.peg_threshold = 2;
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("peg_threshold"));
        let mut g = sample("regtest", vec![]);
        g.members[0].consensus_key = "zz".into();
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("consensus_key"));
        let mut g = sample("regtest", vec![]);
        g.members[0].peg_key = "02ab".into();
        assert!(g.validate().unwrap_err().to_string().contains("peg_key"));
        let g = sample("moon", vec![]);
        assert!(g.validate().unwrap_err().to_string().contains("unknown"));
        let g = sample("regtest", dev("fp"));
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("another network"));
    }

    /// `g` with `n` members, each with its own keys.
    fn with_members(mut g: Genesis, n: u8) -> Genesis {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        g.members = (0..n)
            .map(|i| MemberInfo {
                name: format!("m{i}"),
                consensus_key: hex::encode(
                    SigningKey::from_bytes(&[i + 10; 32])
                        .verifying_key()
                        .to_bytes(),
                ),
                peg_key: bitcoin::secp256k1::SecretKey::from_slice(&[i + 10; 32])
                    .unwrap()
                    .public_key(&secp)
                    .to_string(),
                p2p_address: format!("/ip4/127.0.0.1/tcp/{}", 1000 + u16::from(i)),
            })
            .collect();
        g
    }

    #[test]
    fn a_peg_threshold_that_f_members_could_abuse_is_refused_with_the_reason() {
        for n in 1..=15u8 {
            let f = (u32::from(n) - 1) / 3;
            for m in 1..=u32::from(n) {
                let safe = f < m && m <= u32::from(n) - f;
                assert_eq!(safe_peg_thresholds(u32::from(n)).contains(&m), safe);
                for network in ["bitcoin", "regtest"] {
                    let mut g = with_members(sample(network, vec![]), n);
                    g.peg_threshold = m;
                    match (safe, g.clone().validate()) {
                        (true, r) => assert!(r.is_ok(), "{m}-of-{n} on {network}: {:?}", r.err()),
                        (false, Ok(_)) => panic!("{m}-of-{n} on {network} accepted"),
                        (false, Err(e)) => {
                            let e = e.to_string();
                            let harm = if m <= f {
                                "take the funds"
                            } else {
                                "freeze the funds"
                            };
                            assert!(e.contains(harm), "{e}");
                        }
                    }
                    // The explicit flag opens the unsafe range on regtest only.
                    g.allow_unsafe_peg_threshold = true;
                    assert_eq!(
                        g.validate().is_ok(),
                        network == "regtest",
                        "{m}-of-{n} on {network} with the flag"
                    );
                }
            }
        }
    }

    #[test]
    fn the_unsafe_threshold_flag_is_absent_from_the_file_when_false() {
        let g = sample("regtest", vec![]);
        let json = serde_json::to_string(&g).unwrap();
        assert!(!json.contains("allow_unsafe_peg_threshold"), "{json}");
    }

    #[test]
    fn a_genesis_that_does_not_name_consolidation_keeps_its_chain_id_and_never_consolidates() {
        // A new genesis (`fedpegd genesis`) writes the default, 5 sat/vB.
        let g = sample("regtest", vec![]);
        assert_eq!(g.pegout.consolidate_below_sat_vb, 5);
        let json = serde_json::to_string(&g).unwrap();
        let field = r#","consolidate_below_sat_vb":5"#;
        assert!(json.contains(field), "{json}");
        // The same file written before the parameter existed: it reads as
        // 0 (never), and serializes to the very bytes the chain id hashed.
        let old = json.replace(field, "");
        let spec = Genesis::parse(old.as_bytes(), "old.json").unwrap();
        assert_eq!(spec.genesis.pegout.consolidate_below_sat_vb, 0);
        assert_eq!(serde_json::to_string(&spec.genesis).unwrap(), old);
        assert_eq!(
            spec.chain_id,
            Hash32::tagged("fedpeg/genesis/v1", &[old.as_bytes()])
        );
        assert_ne!(spec.chain_id, g.chain_id());
        // No `pegout` section at all: the defaults, without consolidation.
        let mut v: serde_json::Value = serde_json::from_str(&old).unwrap();
        v.as_object_mut().unwrap().remove("pegout");
        let spec = Genesis::parse(v.to_string().as_bytes(), "bare.json").unwrap();
        assert_eq!(
            spec.genesis.pegout,
            crate::pegout_batch::PegOutParams::unnamed_in_genesis()
        );
        // Not a sat/vB count: the file is refused.
        let bad = json.replace(field, r#","consolidate_below_sat_vb":-1"#);
        let e = Genesis::parse(bad.as_bytes(), "bad.json").unwrap_err();
        assert!(matches!(e, GenesisError::Json(..)), "{e}");
    }

    #[test]
    fn fee_rate_bounds_and_quote_validity_are_checked_with_clear_errors() {
        type Spoil = fn(&mut FeeParams);
        let cases: [(Spoil, &str); 6] = [
            (
                |f| f.min_fee_rate_sat_vb = 0,
                "min_fee_rate_sat_vb must be at least 1",
            ),
            (
                |f| f.max_fee_rate_sat_vb = 100_001,
                "above the protocol limit of 100000",
            ),
            (
                |f| {
                    f.min_fee_rate_sat_vb = 20;
                    f.max_fee_rate_sat_vb = 10;
                },
                "min_fee_rate_sat_vb 20 is above fees.max_fee_rate_sat_vb 10",
            ),
            (
                |f| f.min_fee_rate_sat_vb = 11,
                "default_fee_rate_sat_vb 10 must be between",
            ),
            (
                |f| f.max_fee_rate_sat_vb = 9,
                "default_fee_rate_sat_vb 10 must be between",
            ),
            (
                |f| f.quote_validity_ms = 3_600_001,
                "quote_validity_ms 3600001 is above",
            ),
        ];
        for (spoil, want) in cases {
            let mut g = sample("regtest", vec![]);
            spoil(&mut g.fees);
            let e = g.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut g = sample("regtest", vec![]);
        g.fees.min_fee_rate_sat_vb = 10;
        g.fees.max_fee_rate_sat_vb = 100_000;
        g.fees.quote_validity_ms = 0;
        let p = g.validate().unwrap().ledger_params();
        assert_eq!(
            (p.min_fee_rate, p.max_fee_rate, p.quote_validity_ms),
            (FeeRate(10), FeeRate(100_000), 0)
        );
    }

    /// The chain id hashes the genesis as serialized: new fee fields at
    /// their defaults are left out, so a genesis file written before they
    /// existed keeps its chain id.
    #[test]
    fn fee_fields_at_their_defaults_keep_an_existing_chain_id() {
        let fees = serde_json::to_string(&FeeParams::default()).unwrap();
        assert_eq!(
            fees,
            r#"{"min_tx_fee":1,"pegout_fee":1000,"default_fee_rate_sat_vb":10}"#
        );
        let g = sample("regtest", vec![]);
        let mut explicit = serde_json::to_value(&g).unwrap();
        explicit["fees"]["min_fee_rate_sat_vb"] = 1.into();
        explicit["fees"]["max_fee_rate_sat_vb"] = 1000.into();
        explicit["fees"]["quote_validity_ms"] = 600_000.into();
        let explicit = Genesis::parse(explicit.to_string().as_bytes(), "explicit").unwrap();
        assert_eq!(explicit.chain_id, g.chain_id());
        let mut other = g.clone();
        other.fees.max_fee_rate_sat_vb = 2000;
        assert_ne!(other.chain_id(), g.chain_id());
    }

    /// A genesis with three backup keys (2-of-3 after 144 blocks).
    pub(crate) fn with_emergency(mut g: Genesis) -> Genesis {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        g.emergency = Some(EmergencyParams {
            backup_keys: (0..3u8)
                .map(|i| {
                    bitcoin::secp256k1::SecretKey::from_slice(&[i + 40; 32])
                        .unwrap()
                        .public_key(&secp)
                        .to_string()
                })
                .collect(),
            threshold: 2,
            csv_blocks: 144,
        });
        g
    }

    #[test]
    fn the_emergency_branch_reaches_the_federation_descriptor() {
        let spec = with_emergency(sample("regtest", vec![]))
            .validate()
            .unwrap();
        let fed = spec.peg_federation().unwrap();
        let e = fed.emergency().unwrap();
        assert_eq!((e.threshold(), e.csv_blocks(), e.keys().len()), (2, 144, 3));
        let d = fed.change_descriptor().unwrap();
        assert!(d.contains("older(144)"), "{d}");
        // Without the section: no branch, and the JSON does not mention it.
        let plain = sample("regtest", vec![]);
        assert!(!serde_json::to_string(&plain).unwrap().contains("emergency"));
        let spec = plain.validate().unwrap();
        assert!(spec.peg_federation().unwrap().emergency().is_none());
    }

    #[test]
    fn the_genesis_epoch_federation_is_the_genesis_descriptor_with_its_emergency_branch() {
        let spec = with_emergency(sample("regtest", vec![]))
            .validate()
            .unwrap();
        let params = spec.ledger_params();
        let genesis = spec.peg_federation().unwrap();
        assert_eq!(
            params.federation_of(&spec.genesis_epoch()).unwrap(),
            genesis
        );
        // Derived from the members as a later epoch is: the same descriptor,
        // so the same addresses (the backup keys, k and timelock carried).
        let derived = params
            .federation_of(&Epoch {
                number: 1,
                ..spec.genesis_epoch()
            })
            .unwrap();
        assert_eq!(derived, genesis);
        assert_eq!(
            derived.deposit_address(&[5; 32]).unwrap(),
            genesis.deposit_address(&[5; 32]).unwrap()
        );
    }

    /// The chain id of a genesis with an emergency branch, pinned: the
    /// section is part of the bytes the chain id hashes (field order of the
    /// structs), so changing its encoding changes every chain id.
    #[test]
    fn golden_chain_id_of_a_genesis_with_an_emergency_branch() {
        let g = with_emergency(sample("regtest", vec![]));
        let json = serde_json::to_string(&g).unwrap();
        assert!(json.contains(r#","emergency":{"backup_keys":[""#), "{json}");
        assert!(
            json.ends_with(r#"],"threshold":2,"csv_blocks":144}}"#),
            "{json}"
        );
        assert_eq!(
            g.chain_id().to_hex(),
            "1c157829110ef7860af5c60b8c8d4648f8e88318c498e2597fa9db330578c871"
        );
    }

    #[test]
    fn bad_emergency_sections_are_explained() {
        type Spoil = fn(&mut EmergencyParams);
        let cases: [(Spoil, &str); 7] = [
            (
                |e| e.csv_blocks = 0,
                "csv_blocks 0 must be between 1 and 65535",
            ),
            (
                |e| e.csv_blocks = 65_536,
                "csv_blocks 65536 must be between",
            ),
            (
                |e| e.backup_keys[1] = "02ab".into(),
                "backup_keys[1] '02ab' is not",
            ),
            (|e| e.threshold = 0, "backup threshold 0 is invalid for 3"),
            (|e| e.threshold = 4, "backup threshold 4 is invalid for 3"),
            (|e| e.backup_keys.clear(), "has 0 backup keys"),
            (
                |e| e.backup_keys[2] = e.backup_keys[0].clone(),
                "is repeated or is also a member's peg key",
            ),
        ];
        for (spoil, want) in cases {
            let mut g = with_emergency(sample("regtest", vec![]));
            spoil(g.emergency.as_mut().unwrap());
            let e = g.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // A member's peg key reused as a backup key.
        let mut g = with_emergency(sample("regtest", vec![]));
        let member = g.members[0].peg_key.clone();
        g.emergency.as_mut().unwrap().backup_keys[0] = member;
        let e = g.validate().unwrap_err().to_string();
        assert!(e.contains("also a member's peg key"), "{e}");
        // csv_blocks left out: refused, never a code default (a changed
        // default would change every address and the chain id).
        let g = with_emergency(sample("regtest", vec![]));
        let json = serde_json::to_string(&g)
            .unwrap()
            .replace(r#","csv_blocks":144"#, "");
        let e = Genesis::parse(json.as_bytes(), "g.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("csv_blocks"), "{e}");
        // Outside regtest, a timelock that could open before deposits are
        // even minted (or within days on mainnet) is refused.
        for (net, csv, ok) in [
            ("bitcoin", 1007, false),
            ("bitcoin", 1008, true),
            ("signet", 143, false),
            ("signet", 144, true),
            ("regtest", 1, true),
        ] {
            let mut g = with_emergency(sample(net, vec![]));
            g.emergency.as_mut().unwrap().csv_blocks = csv;
            let r = g.validate();
            assert_eq!(
                r.is_ok(),
                ok,
                "{net} {csv}: {:?}",
                r.err().map(|e| e.to_string())
            );
            if !ok {
                let e = r.err().unwrap().to_string();
                assert!(e.contains("is below"), "{e}");
            }
        }
    }

    #[test]
    fn chain_id_ignores_formatting_but_not_content() {
        let g = sample("regtest", vec![]);
        let pretty = serde_json::to_string_pretty(&g).unwrap();
        let back: Genesis = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back.chain_id(), g.chain_id());
        let mut other = g.clone();
        other.pegin_confirmations = 3;
        assert_ne!(other.chain_id(), g.chain_id());
    }
}
