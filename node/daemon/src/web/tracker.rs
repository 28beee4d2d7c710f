//! The peg tracker: a Bitcoin txid or outpoint, a sidechain txid, a
//! withdrawal id or an address, resolved to the peg-ins and peg-outs it
//! names (through `GetPegIns`, `GetPegOut`, `ListPegOuts` and
//! `GetTransaction`), each with its stage:
//! CONFIRMING n/N → MINTED, or QUEUED → SIGNING k/m → BROADCAST n/N → CONFIRMED.

use super::html::{self, esc, facts, link};
use super::query::Query;
use super::{Web, WebError};
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_server::ExplorerService, federation_service_server::FederationService,
    wallet_service_server::WalletService,
};
use std::fmt::Write as _;
use tonic::Request;

/// What a query names, each with its stage.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TrackView {
    pub(crate) query: String,
    pub(crate) items: Vec<TrackItem>,
}

/// One peg-in, peg-out or plain transaction.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TrackItem {
    /// `peg_in`, `peg_out` or `transaction`.
    pub(crate) kind: &'static str,
    /// The stage as a person reads it: `CONFIRMING 1/3`, `SIGNING 2/3`, …
    pub(crate) stage: String,
    /// Final: nothing more will happen.
    pub(crate) done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peg_in: Option<pb::PegInInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peg_out: Option<pb::PegOutInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transaction: Option<pb::GetTransactionResponse>,
}

/// Steps of a peg-in and of a peg-out, in order.
const PEG_IN_STEPS: &[&str] = &["CONFIRMING", "MINTED"];
const PEG_OUT_STEPS: &[&str] = &["QUEUED", "SIGNING", "BROADCAST", "CONFIRMED"];

/// The stage of a peg-in.
pub(crate) fn peg_in_item(p: pb::PegInInfo) -> TrackItem {
    use pb::PegInState as S;
    let (stage, done) = match S::try_from(p.state) {
        Ok(S::Confirming) => (
            format!(
                "CONFIRMING {}/{}",
                p.confirmations, p.confirmations_required
            ),
            false,
        ),
        Ok(S::Minted) => ("MINTED".to_string(), true),
        Ok(S::BelowCost) => ("BELOW_COST".to_string(), true),
        Ok(S::ReorgedOut) => ("REORGED_OUT".to_string(), false),
        _ => ("UNKNOWN".to_string(), false),
    };
    TrackItem {
        kind: "peg_in",
        stage,
        done,
        peg_in: Some(p),
        peg_out: None,
        transaction: None,
    }
}

/// The stage of a peg-out.
pub(crate) fn peg_out_item(p: pb::PegOutInfo) -> TrackItem {
    use pb::PegOutState as S;
    let (stage, done) = match S::try_from(p.state) {
        Ok(S::Queued) => ("QUEUED".to_string(), false),
        Ok(S::Signing) => (
            format!("SIGNING {}/{}", p.signatures, p.signatures_required),
            false,
        ),
        Ok(S::Broadcast) => (
            format!("BROADCAST {}/{}", p.confirmations, p.confirmations_required),
            false,
        ),
        Ok(S::Confirmed) => ("CONFIRMED".to_string(), true),
        Ok(S::Replaced) => ("REPLACED".to_string(), false),
        _ => ("UNKNOWN".to_string(), false),
    };
    TrackItem {
        kind: "peg_out",
        stage,
        done,
        peg_in: None,
        peg_out: Some(p),
        transaction: None,
    }
}

async fn peg_outs(web: &Web, address: &str) -> Result<pb::ListPegOutsResponse, WebError> {
    Ok(FederationService::list_peg_outs(
        &web.api,
        Request::new(pb::ListPegOutsRequest {
            address: address.to_string(),
            limit: crate::federation::MAX_RECENT_PEGOUTS,
        }),
    )
    .await?
    .into_inner())
}

/// Resolves a classified query on this node.
pub(crate) async fn resolve(web: &Web, q: &Query, text: &str) -> Result<TrackView, WebError> {
    let api = &web.api;
    let mut items = Vec::new();
    match q {
        Query::Outpoint(o) => {
            let r = WalletService::get_peg_ins(
                api,
                Request::new(pb::GetPegInsRequest {
                    selector: Some(pb::get_peg_ins_request::Selector::Outpoint(o.clone())),
                }),
            )
            .await?;
            items.extend(r.into_inner().peg_ins.into_iter().map(peg_in_item));
        }
        Query::Number(w) => {
            let r = super::json_api::peg_out(api, &w.to_string()).await?;
            items.extend(r.peg_out.map(peg_out_item));
        }
        Query::Address(a) => {
            let id = api.parse_account(a)?;
            items.extend(
                api.peg_ins_where(|_, acc| *acc == id)
                    .into_iter()
                    .map(peg_in_item),
            );
            let outs = peg_outs(web, a).await?;
            items.extend(
                outs.pending
                    .into_iter()
                    .chain(outs.recent)
                    .map(peg_out_item),
            );
        }
        Query::Id(id) => {
            let tx = ExplorerService::get_transaction(
                api,
                Request::new(pb::GetTransactionRequest { txid: id.clone() }),
            )
            .await;
            match tx {
                Ok(tx) => {
                    let tx = tx.into_inner();
                    let is_peg_out = tx
                        .transaction
                        .as_ref()
                        .is_some_and(|t| t.kind == pb::TransactionKind::PegOut as i32);
                    if is_peg_out && tx.status == pb::TransactionStatus::Finalized as i32 {
                        let r = super::json_api::peg_out(api, id).await?;
                        items.extend(r.peg_out.map(peg_out_item));
                    } else {
                        items.push(TrackItem {
                            kind: "transaction",
                            stage: if tx.status == pb::TransactionStatus::Finalized as i32 {
                                "FINALIZED".into()
                            } else {
                                "PENDING".into()
                            },
                            done: tx.status == pb::TransactionStatus::Finalized as i32
                                && !is_peg_out,
                            peg_in: None,
                            peg_out: None,
                            transaction: Some(tx),
                        });
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    // Not a sidechain transaction: a Bitcoin deposit or batch txid.
                    let txid: fedpeg_peg::bitcoin::Txid = id
                        .parse()
                        .map_err(|_| WebError::bad_request("not a transaction id"))?;
                    items.extend(
                        api.peg_ins_where(|o, _| o.txid == txid)
                            .into_iter()
                            .map(peg_in_item),
                    );
                    let outs = peg_outs(web, "").await?;
                    items.extend(
                        outs.pending
                            .into_iter()
                            .chain(outs.recent)
                            .filter(|p| p.bitcoin_txid == *id)
                            .map(peg_out_item),
                    );
                    if items.is_empty() {
                        return Err(WebError::not_found(format!(
                            "no peg-in, peg-out or transaction with id {id} is known to this node (a deposit shows up once it is in a Bitcoin block and its address is registered)"
                        )));
                    }
                }
                Err(s) => return Err(s.into()),
            }
        }
    }
    Ok(TrackView {
        query: text.to_string(),
        items,
    })
}

fn steps(all: &[&str], stage: &str) -> String {
    let current = all
        .iter()
        .position(|s| stage.starts_with(s))
        .unwrap_or(usize::MAX);
    let mut o = String::from("<ol class=\"steps\">");
    for (i, s) in all.iter().enumerate() {
        let class = match i.cmp(&current) {
            std::cmp::Ordering::Less => "done",
            std::cmp::Ordering::Equal => "now",
            std::cmp::Ordering::Greater => "todo",
        };
        let text = if i == current { stage } else { s };
        let _ = write!(o, "<li class=\"{class}\">{}</li>", esc(text));
    }
    o.push_str("</ol>");
    o
}

fn peg_in_card(p: &pb::PegInInfo, stage: &str) -> String {
    let txid = p.outpoint.split(':').next().unwrap_or("");
    let vout = p.outpoint.split(':').nth(1).unwrap_or("");
    let mut rows = vec![
        (
            "Bitcoin txid",
            format!("<span class=\"mono\">{}</span>", esc(txid)),
        ),
        ("Output (vout)", esc(vout)),
        ("Deposit", esc(&html::btc(p.amount))),
        ("Account", link(&html::account_href(&p.account), &p.account)),
        (
            "Confirmations",
            esc(&if p.state == pb::PegInState::Minted as i32 {
                format!("{0} of {0} (reached)", p.confirmations_required)
            } else {
                format!("{} of {}", p.confirmations, p.confirmations_required)
            }),
        ),
    ];
    if p.state == pb::PegInState::Confirming as i32 {
        rows.push(("ETA", esc(&html::eta(p.eta_seconds))));
    }
    if p.minted_height > 0 {
        rows.push((
            "Minted",
            format!(
                "{} at height {}",
                esc(&html::btc(p.minted_amount)),
                link(
                    &html::block_href(p.minted_height),
                    &p.minted_height.to_string()
                )
            ),
        ));
    }
    if !p.bitcoin_block.is_empty() {
        rows.push((
            "Bitcoin block",
            format!("<span class=\"mono\">{}</span>", esc(&p.bitcoin_block)),
        ));
    }
    format!(
        "<section class=\"card track-item\" data-kind=\"peg_in\" data-stage=\"{}\"><h3>Peg-in {}</h3>{}{}</section>",
        esc(stage),
        esc(&p.outpoint),
        steps(PEG_IN_STEPS, stage),
        facts(&rows)
    )
}

fn peg_out_card(p: &pb::PegOutInfo, stage: &str) -> String {
    let mut rows = vec![
        ("Withdrawal id", esc(&p.withdrawal_id.to_string())),
        ("Sidechain txid", link(&html::tx_href(&p.txid), &p.txid)),
        ("Account", link(&html::account_href(&p.account), &p.account)),
        (
            "Pays",
            format!(
                "{} to <span class=\"mono\">{}</span>",
                esc(&html::btc(p.amount)),
                esc(&p.bitcoin_address)
            ),
        ),
        (
            "Burned at height",
            link(
                &html::block_href(p.queued_height),
                &p.queued_height.to_string(),
            ),
        ),
    ];
    if !p.bitcoin_txid.is_empty() {
        rows.push((
            "Batch",
            esc(&format!(
                "{} (version {}, {} sat/vB)",
                p.batch, p.batch_version, p.fee_rate_sat_vb
            )),
        ));
        rows.push((
            "Bitcoin txid",
            format!(
                "<span class=\"mono\">{}</span>:{}",
                esc(&p.bitcoin_txid),
                p.vout
            ),
        ));
        rows.push((
            "Signatures",
            esc(&format!("{} of {}", p.signatures, p.signatures_required)),
        ));
        rows.push((
            "Confirmations",
            esc(&format!(
                "{} of {}",
                p.confirmations, p.confirmations_required
            )),
        ));
    }
    if p.state != pb::PegOutState::Confirmed as i32 && p.eta_seconds > 0 {
        rows.push(("ETA", esc(&html::eta(p.eta_seconds))));
    }
    format!(
        "<section class=\"card track-item\" data-kind=\"peg_out\" data-stage=\"{}\"><h3>Peg-out #{}</h3>{}{}</section>",
        esc(stage),
        p.withdrawal_id,
        steps(PEG_OUT_STEPS, stage),
        facts(&rows)
    )
}

/// The tracker's HTML fragment (what the page shows and the live stream sends).
pub(crate) fn render(v: &TrackView) -> String {
    let mut o = String::new();
    if v.items.is_empty() {
        o.push_str("<p class=\"muted\">No peg-ins or peg-outs yet.</p>");
    }
    for item in &v.items {
        match (&item.peg_in, &item.peg_out, &item.transaction) {
            (Some(p), _, _) => o.push_str(&peg_in_card(p, &item.stage)),
            (_, Some(p), _) => o.push_str(&peg_out_card(p, &item.stage)),
            (_, _, Some(t)) => {
                let txid = t
                    .transaction
                    .as_ref()
                    .map(|t| t.txid.as_str())
                    .unwrap_or("");
                let _ = write!(
                    o,
                    "<section class=\"card track-item\" data-kind=\"transaction\" data-stage=\"{}\"><h3>Transaction</h3><p>{} is a sidechain transaction, {}; it moves no Bitcoin. {}</p></section>",
                    esc(&item.stage),
                    link(&html::tx_href(txid), txid),
                    esc(&item.stage.to_lowercase()),
                    if t.block_height > 0 { format!("Block {}.", link(&html::block_href(t.block_height), &t.block_height.to_string())) } else { String::new() }
                );
            }
            _ => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_as_the_issue_spells_them() {
        let i = peg_in_item(pb::PegInInfo {
            state: pb::PegInState::Confirming as i32,
            confirmations: 1,
            confirmations_required: 3,
            ..Default::default()
        });
        assert_eq!((i.stage.as_str(), i.done), ("CONFIRMING 1/3", false));
        let html = render(&TrackView {
            query: String::new(),
            items: vec![i],
        });
        assert!(html.contains("data-stage=\"CONFIRMING 1/3\""), "{html}");
        assert!(
            html.contains("<li class=\"now\">CONFIRMING 1/3</li><li class=\"todo\">MINTED</li>"),
            "{html}"
        );
        let o = peg_out_item(pb::PegOutInfo {
            state: pb::PegOutState::Signing as i32,
            signatures: 2,
            signatures_required: 3,
            bitcoin_address: "<x>".into(),
            ..Default::default()
        });
        assert_eq!(o.stage, "SIGNING 2/3");
        let html = render(&TrackView {
            query: String::new(),
            items: vec![o],
        });
        assert!(html.contains("<li class=\"done\">QUEUED</li><li class=\"now\">SIGNING 2/3</li>"));
        assert!(html.contains("&lt;x&gt;") && !html.contains("<x>"));
        let c = peg_out_item(pb::PegOutInfo {
            state: pb::PegOutState::Confirmed as i32,
            ..Default::default()
        });
        assert!(c.done && c.stage == "CONFIRMED");
    }
}
