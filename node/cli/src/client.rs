//! The gRPC client of a fedpeg node, and how its errors read to a person.

use std::time::Duration;

use anyhow::Context;
use fedpeg_ledger::tx::Transaction;
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_client::ExplorerServiceClient,
    federation_service_client::FederationServiceClient, node_service_client::NodeServiceClient,
    wallet_service_client::WalletServiceClient,
};
use tonic::transport::Channel;

/// A connection to one fedpeg node.
pub struct Client {
    channel: Channel,
}

/// A node's refusal as `what: <kind>: <node's message>`.
pub fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::NotFound => "not found",
        tonic::Code::ResourceExhausted => "busy",
        tonic::Code::Unavailable => "node unavailable",
        _ => "error",
    };
    anyhow::anyhow!("{what}: {code}: {}", s.message())
}

/// Reads the operator's admin token from `path` (`--admin-token`), before
/// anything is sent.
pub fn load_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    fedpeg_keys::load_admin_token(path)
        .with_context(|| "--admin-token (the node's <data-dir>/admin.token)")
}

/// `msg` as an admin call: with `authorization: Bearer <token>`.
pub fn admin_request<T>(token: &str, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    let bearer = format!("Bearer {token}")
        .parse()
        .context("admin token is not valid header text")?;
    req.metadata_mut().insert("authorization", bearer);
    Ok(req)
}

impl Client {
    /// Connects to the node at `url`, or says how to point at one.
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        let endpoint = Channel::from_shared(url.to_string())
            .with_context(|| {
                format!("--node '{url}' is not a valid URL (e.g. http://127.0.0.1:20051)")
            })?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach a fedpeg node at {url}; is fedpegd running? (set --node or FEDPEG_NODE)"))?;
        Ok(Client { channel })
    }

    /// Accounts, transfers, peg-ins and peg-outs.
    pub fn wallet(&self) -> WalletServiceClient<Channel> {
        WalletServiceClient::new(self.channel.clone())
    }

    /// Blocks, transactions and the live feeds.
    pub fn explorer(&self) -> ExplorerServiceClient<Channel> {
        ExplorerServiceClient::new(self.channel.clone())
    }

    /// Members, quorum and reserves.
    pub fn federation(&self) -> FederationServiceClient<Channel> {
        FederationServiceClient::new(self.channel.clone())
    }

    /// The node's status.
    /// The node service (status, admin calls).
    pub fn node(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.channel.clone())
    }

    /// The standard `grpc.health.v1` service.
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    pub async fn status(&self) -> anyhow::Result<pb::GetStatusResponse> {
        Ok(NodeServiceClient::new(self.channel.clone())
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|s| status_error("status", s))?
            .into_inner())
    }

    /// An account's balance and nonces; `what` names the step in errors.
    pub async fn account(
        &self,
        address: String,
        what: &str,
    ) -> anyhow::Result<pb::GetAccountResponse> {
        Ok(self
            .wallet()
            .get_account(pb::GetAccountRequest { address })
            .await
            .map_err(|s| status_error(what, s))?
            .into_inner())
    }

    /// Submits a signed transaction and returns its txid; `what` names the
    /// step in errors.
    pub async fn submit(&self, tx: &Transaction, what: &str) -> anyhow::Result<String> {
        Ok(self
            .wallet()
            .submit_transaction(pb::SubmitTransactionRequest {
                transaction: tx.encode(),
            })
            .await
            .map_err(|s| status_error(what, s))?
            .into_inner()
            .txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_the_step_and_the_kind_of_refusal() {
        let e = status_error(
            "send",
            tonic::Status::failed_precondition("nonce 0 was used"),
        );
        assert_eq!(e.to_string(), "send: refused: nonce 0 was used");
        let e = status_error("block", tonic::Status::not_found("no block 9"));
        assert_eq!(e.to_string(), "block: not found: no block 9");
    }
}
