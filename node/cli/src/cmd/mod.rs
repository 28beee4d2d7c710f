//! One module per subcommand. Each returns a [`Report`](crate::report::Report)
//! for `main` to print; the ones that follow something over time (`watch`,
//! `pegin --wait`, `pegout`) also emit progress through the printer as they
//! go and return the last report.

pub mod acknowledge_alerts;
pub mod address;
pub mod balance;
pub mod block;
pub mod federation;
pub mod health;
pub mod keygen;
pub mod pegin;
pub mod pegout;
pub mod pegout_status;
pub mod recover;
pub mod reserves;
pub mod send;
pub mod status;
pub mod tx;
pub mod watch;

use std::path::Path;

use crate::client::Client;

/// The global flags a subcommand may need.
pub struct Context<'a> {
    /// gRPC endpoint of the node (`--node`).
    pub node: &'a str,
    /// Wallet key file (`--key`).
    pub key: &'a Path,
}

impl Context<'_> {
    /// Connects to the node given by `--node`.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(self.node).await
    }
}
