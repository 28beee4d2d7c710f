//! The wallet key together with the chain facts signing needs (chain id,
//! address prefix, minimum fee), shared by `send` and `pegout`.

use std::path::Path;

use ed25519_dalek::SigningKey;
use fedpeg_keys::load_wallet_key;
use fedpeg_ledger::account::hrp_for;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::genesis::parse_network;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::tx::{Transaction, TxKind};

use crate::client::Client;
use crate::cmd::address;

/// Signs transactions for the wallet on the node's chain.
pub struct Signer {
    key: SigningKey,
    chain_id: Hash32,
    /// Address prefix of the node's network.
    pub hrp: &'static str,
    /// The chain's minimum transaction fee in sats.
    pub min_tx_fee: u64,
}

impl Signer {
    /// Loads the wallet key and asks the node which chain it is on.
    pub async fn load(c: &Client, key: &Path) -> anyhow::Result<Signer> {
        let key = load_wallet_key(key)?;
        let st = c.status().await?;
        let hrp = hrp_for(parse_network(&st.network)?);
        let chain_id = Hash32::from_hex(&st.chain_id).map_err(anyhow::Error::msg)?;
        Ok(Signer {
            key,
            chain_id,
            hrp,
            min_tx_fee: st.min_tx_fee,
        })
    }

    /// The wallet's next nonce, counting its pending transactions.
    pub async fn next_nonce(&self, c: &Client) -> anyhow::Result<u64> {
        let me = address::of_key(&self.key, self.hrp);
        Ok(c.account(me, "account").await?.next_nonce)
    }

    /// `kind` signed with `nonce` and `fee`.
    pub fn sign(&self, nonce: u64, fee: Sats, kind: TxKind) -> Transaction {
        Transaction::sign(self.chain_id, &self.key, nonce, fee, kind)
    }
}
