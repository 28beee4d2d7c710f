//! Peg-out destination addresses.

use bitcoin::address::{Address, AddressType, NetworkUnchecked};
use bitcoin::Network;
use std::str::FromStr;

/// Smallest peg-out amount: no output of an accepted type is dust at this
/// value under Bitcoin Core's default relay policy (P2PKH dust is 546 sats).
pub const PEGOUT_DUST_LIMIT_SATS: u64 = 546;

/// Why a peg-out address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not a Bitcoin address: {1}")]
    Malformed(String, String),
    #[error("'{addr}' is not a {network} address; this federation pegs {network} bitcoin")]
    WrongNetwork { addr: String, network: Network },
    #[error("'{0}' is of an unsupported type; use P2PKH, P2SH, P2WPKH, P2WSH or P2TR")]
    Unsupported(String),
}

/// Parses `s` as a Bitcoin address of `network` of a type the federation pays
/// (P2PKH, P2SH, P2WPKH, P2WSH, P2TR).
pub fn parse_pegout_address(s: &str, network: Network) -> Result<Address, AddressError> {
    let unchecked = Address::<NetworkUnchecked>::from_str(s)
        .map_err(|e| AddressError::Malformed(s.to_string(), e.to_string()))?;
    let addr = unchecked
        .require_network(network)
        .map_err(|_| AddressError::WrongNetwork {
            addr: s.to_string(),
            network,
        })?;
    match addr.address_type() {
        Some(
            AddressType::P2pkh
            | AddressType::P2sh
            | AddressType::P2wpkh
            | AddressType::P2wsh
            | AddressType::P2tr,
        ) => Ok(addr),
        _ => Err(AddressError::Unsupported(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address of each accepted type on `network`, built by the bitcoin crate.
    pub(crate) fn sample_addresses(network: Network) -> Vec<Address> {
        use bitcoin::secp256k1::{Secp256k1, SecretKey};
        use bitcoin::{CompressedPublicKey, PublicKey, ScriptBuf};
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[7u8; 32]).expect("valid constant key");
        let pk = PublicKey::new(sk.public_key(&secp));
        let cpk = CompressedPublicKey(sk.public_key(&secp));
        let script = ScriptBuf::from_bytes(vec![0x51]);
        let (xonly, _) = sk.public_key(&secp).x_only_public_key();
        vec![
            Address::p2pkh(pk, network),
            Address::p2sh(&script, network).expect("small script"),
            Address::p2wpkh(&cpk, network),
            Address::p2wsh(&script, network),
            Address::p2tr(&secp, xonly, None, network),
        ]
    }

    #[test]
    fn regtest_addresses_of_each_type_are_accepted() {
        for a in sample_addresses(Network::Regtest) {
            let s = a.to_string();
            assert_eq!(
                parse_pegout_address(&s, Network::Regtest).unwrap(),
                a,
                "{s}"
            );
        }
    }

    #[test]
    fn other_networks_addresses_are_refused_on_regtest() {
        for net in [Network::Bitcoin, Network::Testnet] {
            for a in sample_addresses(net) {
                let s = a.to_string();
                // Testnet and regtest share base58 prefixes, so legacy testnet
                // addresses are valid regtest addresses too; segwit hrps differ.
                if net == Network::Testnet && !s.starts_with("tb1") {
                    continue;
                }
                let e = parse_pegout_address(&s, Network::Regtest);
                assert!(
                    matches!(e, Err(AddressError::WrongNetwork { .. })),
                    "{s}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn testnet_address_is_refused_on_regtest() {
        let e = parse_pegout_address(
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            Network::Regtest,
        );
        assert!(matches!(e, Err(AddressError::WrongNetwork { .. })));
    }

    #[test]
    fn mainnet_address_is_refused_on_regtest() {
        let e = parse_pegout_address(
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            Network::Regtest,
        );
        assert!(matches!(e, Err(AddressError::WrongNetwork { .. })));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse_pegout_address("not-an-address", Network::Regtest),
            Err(AddressError::Malformed(..))
        ));
        assert!(matches!(
            parse_pegout_address("", Network::Regtest),
            Err(AddressError::Malformed(..))
        ));
    }
}
