//! `/api/v1`: the read-only JSON API. Each route calls the gRPC handler of
//! the same name and answers its response message as JSON (proto field
//! names, enums by value name, bytes as hex; see `openapi.yaml`). Errors
//! are `{"error": {"code": "INVALID_ARGUMENT", "message": "…"}}` with the
//! matching HTTP status.

use super::{live, query, respond, tracker, Body, Params, Web, WebError};
use crate::api::Api;
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_server::ExplorerService, federation_service_server::FederationService,
    node_service_server::NodeService, wallet_service_server::WalletService,
};
use hyper::{Response, StatusCode};
use tonic::Request;

/// The OpenAPI description of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.yaml");

/// A JSON response.
pub(crate) fn json(value: &impl serde::Serialize) -> Result<Response<Body>, WebError> {
    let body = serde_json::to_vec(value).map_err(|e| WebError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "INTERNAL",
        message: format!("cannot encode the answer as JSON: {e}"),
    })?;
    let mut r = respond(StatusCode::OK, "application/json", body);
    r.headers_mut().insert(
        hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        hyper::header::HeaderValue::from_static("*"),
    );
    Ok(r)
}

/// An error as JSON.
pub(crate) fn error(e: &WebError) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": e.code, "message": e.message}});
    respond(e.status, "application/json", body.to_string())
}

async fn status(api: &Api) -> Result<pb::GetStatusResponse, WebError> {
    Ok(
        NodeService::get_status(api, Request::new(pb::GetStatusRequest {}))
            .await?
            .into_inner(),
    )
}

/// GetBlock by height (digits) or hash (hex).
pub(crate) async fn block(api: &Api, id: &str) -> Result<pb::BlockView, WebError> {
    use pb::get_block_request::Selector;
    let selector = match id.parse::<u64>() {
        Ok(h) => Selector::Height(h),
        Err(_) => Selector::Hash(id.to_string()),
    };
    ExplorerService::get_block(
        api,
        Request::new(pb::GetBlockRequest {
            selector: Some(selector),
        }),
    )
    .await?
    .into_inner()
    .block
    .ok_or_else(|| WebError::not_found("no such block"))
}

/// GetPegOut by withdrawal id (digits) or sidechain txid.
pub(crate) async fn peg_out(api: &Api, id: &str) -> Result<pb::GetPegOutResponse, WebError> {
    use pb::get_peg_out_request::Selector;
    let selector = match id.parse::<u64>() {
        Ok(w) => Selector::WithdrawalId(w),
        Err(_) => Selector::Txid(id.to_string()),
    };
    Ok(WalletService::get_peg_out(
        api,
        Request::new(pb::GetPegOutRequest {
            selector: Some(selector),
        }),
    )
    .await?
    .into_inner())
}

/// Routes `/api/v1/<rest>`.
pub(crate) async fn route(
    web: &Web,
    rest: &[&str],
    p: &Params,
    last_event_id: Option<&str>,
) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    match rest {
        ["openapi.yaml"] => Ok(respond(StatusCode::OK, "application/yaml", OPENAPI)),
        ["status"] => json(&status(api).await?),
        ["federation"] => json(
            &FederationService::get_federation(api, Request::new(pb::GetFederationRequest {}))
                .await?
                .into_inner(),
        ),
        ["reserves"] => json(
            &FederationService::get_reserves(api, Request::new(pb::GetReservesRequest {}))
                .await?
                .into_inner(),
        ),
        ["blocks"] => json(&api.feed().list_blocks(&pb::ListBlocksRequest {
            from_height: p.u64("from_height", 0)?,
            to_height: p.u64("to_height", 0)?,
            page_size: p.page_size(20)?,
            page_token: p.text("page_token")?,
            include_raw: false,
        })?),
        ["blocks", id] => json(&block(api, id).await?),
        ["transactions", txid] => json(
            &ExplorerService::get_transaction(
                api,
                Request::new(pb::GetTransactionRequest {
                    txid: txid.to_string(),
                }),
            )
            .await?
            .into_inner(),
        ),
        ["accounts", address] => json(
            &WalletService::get_account(
                api,
                Request::new(pb::GetAccountRequest {
                    address: address.to_string(),
                }),
            )
            .await?
            .into_inner(),
        ),
        ["accounts", address, "transactions"] => json(&api.feed().list_account_transactions(
            &pb::ListAccountTransactionsRequest {
                address: address.to_string(),
                page_size: p.page_size(25)?,
                page_token: p.text("page_token")?,
            },
        )?),
        ["accounts", address, "peg-ins"] => json(
            &WalletService::get_peg_ins(
                api,
                Request::new(pb::GetPegInsRequest {
                    selector: Some(pb::get_peg_ins_request::Selector::Address(
                        address.to_string(),
                    )),
                }),
            )
            .await?
            .into_inner(),
        ),
        ["peg-ins", outpoint] => json(
            &WalletService::get_peg_ins(
                api,
                Request::new(pb::GetPegInsRequest {
                    selector: Some(pb::get_peg_ins_request::Selector::Outpoint(
                        outpoint.to_string(),
                    )),
                }),
            )
            .await?
            .into_inner(),
        ),
        ["peg-outs"] => {
            let limit = p.u64("limit", 0)?;
            if limit > u64::from(super::MAX_PAGE_SIZE) {
                return Err(WebError::bad_request(format!(
                    "limit {limit} is too large: at most {}",
                    super::MAX_PAGE_SIZE
                )));
            }
            json(
                &FederationService::list_peg_outs(
                    api,
                    Request::new(pb::ListPegOutsRequest {
                        address: p.text("address")?,
                        limit: limit as u32,
                    }),
                )
                .await?
                .into_inner(),
            )
        }
        ["peg-outs", id] => json(&peg_out(api, id).await?),
        ["track"] => {
            let q = p.text("q")?;
            json(&tracker::resolve(web, &query::classify(&q, api.chain().spec.hrp())?, &q).await?)
        }
        ["stream", "blocks"] => live::blocks(web, p, last_event_id, live::Format::Json),
        ["stream", "track"] => {
            let q = p.text("q")?;
            let parsed = query::classify(&q, api.chain().spec.hrp())?;
            Ok(live::track(web, parsed, q, live::Format::Json))
        }
        _ => Err(WebError::not_found(
            "no such API route; see /api/v1/openapi.yaml for the routes",
        )),
    }
}
