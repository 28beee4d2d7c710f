//! The pages: home (tip, live blocks, members, charts), block, transaction,
//! account, peg tracker, federation audit and search. Each page is
//! rendered from the gRPC handlers' answers; live parts carry a
//! `data-live` stream URL that `static/app.js` follows.

use super::html::{self, esc, facts, link, page, short_link, url};
use super::json_api::block;
use super::{charts, live, query, respond, tracker, Body, Params, Web, WebError};
use crate::api::Api;
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_server::ExplorerService, federation_service_server::FederationService,
    node_service_server::NodeService, wallet_service_server::WalletService,
};
use hyper::{header, Response, StatusCode};
use std::fmt::Write as _;
use tonic::Request;

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");
/// Blocks on the home page.
const HOME_BLOCKS: u64 = 20;
/// Rows of the account history and of the audit's UTXO table.
const HISTORY_PAGE: u32 = 25;
const MAX_UTXO_ROWS: usize = 500;

fn chain_label(api: &Api) -> String {
    let spec = &api.chain().spec;
    format!("{} · {}", spec.genesis.chain_name, spec.genesis.network)
}

fn ok_page(api: &Api, title: &str, search: &str, body: &str) -> Response<Body> {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page(title, &chain_label(api), search, body),
    )
}

/// The message of an error, as a fragment.
pub(crate) fn error_fragment(e: &WebError) -> String {
    format!(
        "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
        esc(&e.message)
    )
}

/// An error page with the status and the message.
pub(crate) fn error(web: &Web, e: &WebError) -> Response<Body> {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_client_error() => "Cannot show this",
        _ => "Error",
    };
    let body = format!(
        "<h1>{}</h1>{}<p>Search for a block height or hash, a transaction id, a fedpeg address or a Bitcoin outpoint with the box above, or go to the {}.</p>",
        esc(title),
        error_fragment(e),
        link("/", "latest blocks")
    );
    respond(
        e.status,
        "text/html; charset=utf-8",
        page(title, &chain_label(&web.api), "", &body),
    )
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Routes a page path.
pub(crate) async fn route(
    web: &Web,
    path: &[&str],
    p: &Params,
    last_event_id: Option<&str>,
) -> Result<Response<Body>, WebError> {
    match path {
        [] => home(web).await,
        ["block", id] => block_page(web, id).await,
        ["tx", txid] => tx_page(web, txid).await,
        ["account", address] => account_page(web, address, p).await,
        ["track"] => track_page(web, p).await,
        ["audit"] => audit_page(web).await,
        ["search"] => search(web, p).await,
        ["live", "blocks"] => live::blocks(web, p, last_event_id, live::Format::Html),
        ["live", "track"] => {
            let q = p.text("q")?;
            let parsed = query::classify(&q, web.api.chain().spec.hrp())?;
            Ok(live::track(web, parsed, q, live::Format::Html))
        }
        ["static", "app.js"] => Ok(asset("text/javascript; charset=utf-8", APP_JS)),
        ["static", "app.css"] => Ok(asset("text/css; charset=utf-8", APP_CSS)),
        _ => Err(WebError::not_found("there is no page at this address")),
    }
}

fn asset(content_type: &str, body: &'static str) -> Response<Body> {
    let mut r = respond(StatusCode::OK, content_type, body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    r
}

fn kind_name(kind: i32) -> &'static str {
    match pb::TransactionKind::try_from(kind) {
        Ok(pb::TransactionKind::Transfer) => "transfer",
        Ok(pb::TransactionKind::PegOut) => "peg-out",
        _ => "unknown",
    }
}

/// A one-line summary of an event, as HTML.
fn event_summary(e: &pb::ChainEvent) -> String {
    use pb::chain_event::Event as Ev;
    match &e.event {
        Some(Ev::Transfer(t)) => format!(
            "transfer {} from {} to {}",
            esc(&html::btc(t.amount)),
            short_link(&html::account_href(&t.from), &t.from),
            short_link(&html::account_href(&t.to), &t.to)
        ),
        Some(Ev::Fee(f)) => format!(
            "fee {} from {}",
            esc(&html::btc(f.amount)),
            short_link(&html::account_href(&f.from), &f.from)
        ),
        Some(Ev::Mint(m)) => format!(
            "peg-in {} minted to {} ({})",
            esc(&html::btc(m.amount)),
            short_link(&html::account_href(&m.account), &m.account),
            short_link(&html::track_href(&m.outpoint), &m.outpoint)
        ),
        Some(Ev::Burn(b)) => format!(
            "peg-out {} burned by {} ({})",
            esc(&html::btc(b.amount)),
            short_link(&html::account_href(&b.account), &b.account),
            link(
                &html::track_href(&b.withdrawal_id.to_string()),
                &format!("withdrawal #{}", b.withdrawal_id)
            )
        ),
        Some(Ev::DepositAddressRegistered(d)) => format!(
            "deposit address of {} registered",
            short_link(&html::account_href(&d.account), &d.account)
        ),
        Some(Ev::PegOutStateChanged(s)) => format!(
            "peg-out batch {} {} {}",
            s.batch,
            esc(pb::PegOutState::try_from(s.state)
                .map(|s| s.as_str_name().trim_start_matches("PEG_OUT_STATE_"))
                .unwrap_or("?")),
            if s.bitcoin_txid.is_empty() {
                String::new()
            } else {
                short_link(&html::track_href(&s.bitcoin_txid), &s.bitcoin_txid)
            }
        ),
        None => "event".into(),
    }
}

/// One row of the home page's block table (also sent live).
pub(crate) fn block_row(b: &pb::FeedBlock, finality_ms: Option<u64>) -> String {
    let mut txs = String::new();
    for t in b.transactions.iter().take(3) {
        if let Some(v) = &t.transaction {
            let _ = write!(
                txs,
                "{} {} ",
                short_link(&html::tx_href(&v.txid), &v.txid),
                esc(kind_name(v.kind))
            );
        }
    }
    if b.transactions.len() > 3 {
        let _ = write!(txs, "+{} more", b.transactions.len() - 3);
    }
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for f in &b.federation_transactions {
        match kinds.iter_mut().find(|(k, _)| *k == f.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((f.kind.clone(), 1)),
        }
    }
    let fed: Vec<String> = kinds
        .iter()
        .map(|(k, n)| {
            if *n > 1 {
                format!("{k} ×{n}")
            } else {
                k.clone()
            }
        })
        .collect();
    let signers = b
        .commit
        .as_ref()
        .map(|c| format!("{}/{}", c.signers.len(), c.members))
        .unwrap_or_default();
    format!(
        "<tr data-height=\"{h}\"><td>{}</td><td>{}</td><td data-time-ms=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        link(&html::block_href(b.height), &b.height.to_string()),
        short_link(&html::block_href(b.height), &b.hash),
        b.time_ms,
        esc(&html::utc(b.time_ms)),
        if txs.is_empty() { "—".into() } else { txs },
        esc(&if fed.is_empty() { "—".into() } else { fed.join(", ") }),
        b.events.len(),
        esc(&signers),
        esc(&finality_ms.map(|f| format!("{f} ms")).unwrap_or_else(|| "—".into())),
        h = b.height,
    )
}

const BLOCK_TABLE_HEAD: &str = "<thead><tr><th>Height</th><th>Hash</th><th>Time</th><th>Transactions</th><th>Federation</th><th>Events</th><th>Signed</th><th>Finality</th></tr></thead>";

async fn status(api: &Api) -> Result<pb::GetStatusResponse, WebError> {
    Ok(
        NodeService::get_status(api, Request::new(pb::GetStatusRequest {}))
            .await?
            .into_inner(),
    )
}

async fn federation(api: &Api) -> Result<pb::GetFederationResponse, WebError> {
    Ok(
        FederationService::get_federation(api, Request::new(pb::GetFederationRequest {}))
            .await?
            .into_inner(),
    )
}

/// Members: online, last seen, last commit signed (and peg signatures, on the audit).
fn members_table(
    api: &Api,
    fed: &pb::GetFederationResponse,
    signed_tip: &[u32],
    peg_signatures: Option<&[u64]>,
) -> String {
    let now = crate::driver::now_ms();
    let last_signed = api.chain().last_signed();
    let mut o = String::from("<table class=\"members\"><thead><tr><th>Member</th><th>Online</th><th>Last seen</th><th>Last commit signed</th>");
    if peg_signatures.is_some() {
        o.push_str("<th>Peg signatures given</th><th>Consensus key</th>");
    }
    o.push_str("</tr></thead><tbody>");
    for m in &fed.members {
        let online = m.online || signed_tip.contains(&m.index);
        let signed = last_signed.get(m.index as usize).copied().flatten();
        let _ = write!(
            o,
            "<tr data-member=\"{}\"><td>{}{}</td><td class=\"{}\">{}</td><td class=\"ago\" data-time-ms=\"{}\">{}</td><td>{}</td>",
            esc(&m.name),
            esc(&m.name),
            if m.is_self { " (this node)" } else { "" },
            if online { "ok" } else { "warn" },
            if online { "online" } else { "offline" },
            m.last_seen_ms,
            esc(&html::ago(m.last_seen_ms, now)),
            signed
                .map(|h| link(&html::block_href(h), &h.to_string()))
                .unwrap_or_else(|| "not since this node started".into()),
        );
        if let Some(sigs) = peg_signatures {
            let _ = write!(
                o,
                "<td>{}</td><td class=\"mono\">{}</td>",
                sigs.get(m.index as usize).copied().unwrap_or(0),
                esc(&m.consensus_key)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    o
}

async fn home(web: &Web) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let st = status(api).await?;
    let tip = st.height;
    let blocks = if tip == 0 {
        Vec::new()
    } else {
        api.feed()
            .list_blocks(&pb::ListBlocksRequest {
                from_height: tip.saturating_sub(HOME_BLOCKS - 1).max(1),
                to_height: tip,
                page_size: HOME_BLOCKS as u32,
                ..Default::default()
            })?
            .blocks
    };
    let samples = api.telemetry().recent_blocks();
    let finality = |h: u64| {
        samples
            .iter()
            .find(|s| s.height == h)
            .map(|s| s.finalized_ms.saturating_sub(s.time_ms))
    };
    let fed = federation(api).await?;
    let signed_tip: Vec<u32> = blocks
        .last()
        .and_then(|b| b.commit.as_ref())
        .map(|c| c.signers.clone())
        .unwrap_or_default();
    let now = crate::driver::now_ms();
    let mut rows = String::new();
    for b in blocks.iter().rev() {
        rows.push_str(&block_row(b, finality(b.height)));
    }
    let body = format!(
        "<h1>Latest blocks</h1>\
<div class=\"tiles\"><div class=\"tile\"><span>Tip height</span><strong id=\"tip-height\">{tip}</strong></div>\
<div class=\"tile\"><span>Tip age</span><strong id=\"tip-age\" data-time-ms=\"{tip_ms}\">{age}</strong></div>\
<div class=\"tile\"><span>Members</span><strong>{online}/{n} online</strong></div>\
<div class=\"tile\"><span>Live</span><strong id=\"live-status\">connecting…</strong></div></div>\
<table class=\"blocks\">{head}<tbody id=\"blocks\" data-live=\"/live/blocks\" data-live-mode=\"prepend\" data-last-id=\"{tip}\" data-keep=\"{keep}\">{rows}</tbody></table>\
<h2>Members</h2><p class=\"muted\">Online: connected to this node or signed the latest commit.</p>{members}\
<h2>Finality</h2><div class=\"charts\">{latency}{per_min}</div>",
        tip_ms = st.tip_time_ms,
        age = esc(&html::ago(st.tip_time_ms, now)),
        online = fed
            .members
            .iter()
            .filter(|m| m.online || signed_tip.contains(&m.index))
            .count(),
        n = fed.members.len(),
        head = BLOCK_TABLE_HEAD,
        keep = HOME_BLOCKS,
        members = members_table(api, &fed, &signed_tip, None),
        latency = charts::commit_latency(&samples),
        per_min = charts::blocks_per_minute(&samples, now),
    );
    Ok(ok_page(api, "Latest blocks", "", &body))
}

fn tx_rows(b: &pb::FeedBlock) -> String {
    let mut o = String::new();
    for t in &b.transactions {
        let Some(v) = &t.transaction else { continue };
        let to = match pb::TransactionKind::try_from(v.kind) {
            Ok(pb::TransactionKind::PegOut) => format!(
                "<span class=\"mono\">{}</span> (Bitcoin)",
                esc(&v.bitcoin_address)
            ),
            _ => short_link(&html::account_href(&v.to), &v.to),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.index,
            short_link(&html::tx_href(&v.txid), &v.txid),
            esc(kind_name(v.kind)),
            short_link(&html::account_href(&v.sender), &v.sender),
            to,
            esc(&html::btc(v.amount)),
            esc(&html::btc(v.fee)),
        );
    }
    o
}

async fn block_page(web: &Web, id: &str) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let h = block(api, id).await?.height;
    let b = api
        .feed()
        .list_blocks(&pb::ListBlocksRequest {
            from_height: h,
            to_height: h,
            page_size: 1,
            ..Default::default()
        })?
        .blocks
        .into_iter()
        .next()
        .ok_or_else(|| WebError::not_found(format!("no block at height {h}")))?;
    let tip = api.chain().height();
    let commit = b
        .commit
        .as_ref()
        .map(|c| {
            format!(
                "round {}, {} of {} members (quorum {}): {}",
                c.round,
                c.signers.len(),
                c.members,
                c.quorum,
                c.signer_names.join(", ")
            )
        })
        .unwrap_or_default();
    let mut nav = String::new();
    if h > 1 {
        nav.push_str(&link(&html::block_href(h - 1), "← previous"));
    }
    if h < tip {
        nav.push(' ');
        nav.push_str(&link(&html::block_href(h + 1), "next →"));
    }
    let mut fed_rows = String::new();
    for f in &b.federation_transactions {
        let _ = write!(
            fed_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.member_name),
            esc(&f.kind),
            esc(&f.summary)
        );
    }
    let mut ev_rows = String::new();
    for e in &b.events {
        let _ = write!(
            ev_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.index,
            if e.txid.is_empty() {
                "federation".into()
            } else {
                short_link(&html::tx_href(&e.txid), &e.txid)
            },
            event_summary(e)
        );
    }
    let body = format!(
        "<h1>Block {h}</h1><p class=\"nav\">{nav}</p>{}\
<h2>Transactions ({})</h2><table><thead><tr><th>#</th><th>Txid</th><th>Kind</th><th>From</th><th>To</th><th>Amount</th><th>Fee</th></tr></thead><tbody>{}</tbody></table>\
<h2>Federation transactions ({})</h2><table><thead><tr><th>Member</th><th>Kind</th><th>Summary</th></tr></thead><tbody>{fed_rows}</tbody></table>\
<h2>Events ({})</h2><table><thead><tr><th>#</th><th>Caused by</th><th>What</th></tr></thead><tbody>{ev_rows}</tbody></table>",
        facts(&[
            ("Hash", format!("<span class=\"mono\">{}</span>", esc(&b.hash))),
            (
                "Parent",
                if h > 1 {
                    short_link(&html::block_href(h - 1), &b.parent_hash)
                } else {
                    format!("<span class=\"mono\">{}</span> (genesis)", esc(&b.parent_hash))
                }
            ),
            ("Time", esc(&html::utc(b.time_ms))),
            ("Proposer", esc(&b.proposer_name)),
            ("State root", format!("<span class=\"mono\">{}</span>", esc(&b.state_root))),
            ("Finalized by", esc(&commit)),
            ("Confirmations", esc(&format!("final ({} blocks on top; fedpeg never reorgs)", tip.saturating_sub(h)))),
        ]),
        b.transactions.len(),
        tx_rows(&b),
        b.federation_transactions.len(),
        b.events.len(),
    );
    Ok(ok_page(api, &format!("Block {h}"), "", &body))
}

async fn tx_page(web: &Web, txid: &str) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let r = ExplorerService::get_transaction(
        api,
        Request::new(pb::GetTransactionRequest {
            txid: txid.to_string(),
        }),
    )
    .await?
    .into_inner();
    let v = r.transaction.clone().unwrap_or_default();
    let finalized = r.status == pb::TransactionStatus::Finalized as i32;
    let mut rows = vec![
        (
            "Txid",
            format!("<span class=\"mono\">{}</span>", esc(&v.txid)),
        ),
        (
            "Status",
            if finalized {
                format!(
                    "final in block {} (position {})",
                    link(
                        &html::block_href(r.block_height),
                        &r.block_height.to_string()
                    ),
                    r.index_in_block
                )
            } else {
                "pending (in the mempool)".into()
            },
        ),
        ("Kind", esc(kind_name(v.kind))),
        ("From", link(&html::account_href(&v.sender), &v.sender)),
    ];
    if v.kind == pb::TransactionKind::PegOut as i32 {
        rows.push((
            "To (Bitcoin)",
            format!("<span class=\"mono\">{}</span>", esc(&v.bitcoin_address)),
        ));
        if finalized {
            rows.push((
                "Peg-out",
                link(&html::track_href(&v.txid), "follow it on the peg tracker"),
            ));
        }
    } else {
        rows.push(("To", link(&html::account_href(&v.to), &v.to)));
    }
    rows.push(("Amount", esc(&html::btc(v.amount))));
    rows.push(("Fee", esc(&html::btc(v.fee))));
    rows.push(("Nonce", v.nonce.to_string()));
    let body = format!("<h1>Transaction</h1>{}", facts(&rows));
    Ok(ok_page(api, "Transaction", "", &body))
}

/// `bitcoin:<address>` as an SVG QR code.
fn qr_svg(address: &str) -> String {
    match qrcode::QrCode::new(format!("bitcoin:{}", address.to_uppercase()).as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(160, 160)
            .quiet_zone(true)
            .build(),
        // Cannot happen for an address (far below QR capacity); show nothing then.
        Err(_) => String::new(),
    }
}

async fn account_page(web: &Web, address: &str, p: &Params) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let a = WalletService::get_account(
        api,
        Request::new(pb::GetAccountRequest {
            address: address.to_string(),
        }),
    )
    .await?
    .into_inner();
    let id = api.parse_account(&a.address)?;
    let (deposit, descriptor) = api.deposit_address(&id)?;
    let registered = api.chain().with_state(|s| s.registered.contains(&id));
    let token = p.text("page_token")?;
    // An account nothing was ever sent to or from has no history: NOT_FOUND
    // from the explorer, an empty table here.
    let history = match api
        .feed()
        .list_account_transactions(&pb::ListAccountTransactionsRequest {
            address: a.address.clone(),
            page_size: HISTORY_PAGE,
            page_token: token.clone(),
        }) {
        Err(s) if s.code() == tonic::Code::NotFound => {
            pb::ListAccountTransactionsResponse::default()
        }
        r => r?,
    };
    let mut rows = String::new();
    for t in &history.transactions {
        let Some(v) = &t.transaction else { continue };
        let outgoing = v.sender == a.address;
        let other = match (outgoing, pb::TransactionKind::try_from(v.kind)) {
            (_, Ok(pb::TransactionKind::PegOut)) => format!(
                "<span class=\"mono\">{}</span> (Bitcoin)",
                esc(&v.bitcoin_address)
            ),
            (true, _) => short_link(&html::account_href(&v.to), &v.to),
            (false, _) => short_link(&html::account_href(&v.sender), &v.sender),
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}{}</td></tr>",
            link(&html::block_href(t.height), &t.height.to_string()),
            esc(&html::utc(t.time_ms)),
            short_link(&html::tx_href(&v.txid), &v.txid),
            esc(kind_name(v.kind)),
            other,
            if outgoing { "out" } else { "in" },
            if outgoing { "−" } else { "+" },
            esc(&html::btc(v.amount)),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"muted\">No transfers or peg-outs yet (minted peg-ins are listed above).</td></tr>");
    }
    let mut pager = String::new();
    if !token.is_empty() {
        pager.push_str(&link(&html::account_href(&a.address), "newest"));
    }
    if !history.next_page_token.is_empty() {
        pager.push(' ');
        pager.push_str(&link(
            &format!(
                "{}?page_token={}",
                html::account_href(&a.address),
                url(&history.next_page_token)
            ),
            "older →",
        ));
    }
    let track =
        tracker::resolve(web, &query::Query::Address(a.address.clone()), &a.address).await?;
    let body = format!(
        "<h1>Account</h1><p class=\"mono\">{addr}</p>{facts}\
<h2>Deposit address</h2><div class=\"deposit\"><div class=\"qr\">{qr}</div><div>{dfacts}</div></div>\
<h2>Peg-ins and peg-outs</h2><div id=\"track\" data-live=\"/live/track?q={qaddr}\" data-live-mode=\"replace\">{track}</div>\
<h2>History</h2><table><thead><tr><th>Block</th><th>Time</th><th>Txid</th><th>Kind</th><th>Counterparty</th><th>Amount</th></tr></thead><tbody id=\"history\">{rows}</tbody></table><p class=\"nav\">{pager}</p>",
        addr = esc(&a.address),
        facts = facts(&[
            ("Balance", format!("<span id=\"balance\" data-sats=\"{}\">{}</span>", a.balance, esc(&html::btc(a.balance)))),
            ("Spendable (counting pending)", esc(&html::btc(a.spendable))),
            ("Nonce", a.nonce.to_string()),
        ]),
        qr = qr_svg(&deposit),
        dfacts = facts(&[
            ("Address", format!("<span class=\"mono\" id=\"deposit-address\">{}</span>", esc(&deposit))),
            ("Descriptor", format!("<span class=\"mono small\">{}</span>", esc(&descriptor))),
            (
                "Watched",
                if registered {
                    "yes: every member watches it; deposits are minted at depth".into()
                } else {
                    "not yet: ask a member's wallet API (GetPegInAddress, `fedpeg deposit-address`) to register it before depositing".into()
                }
            ),
        ]),
        qaddr = url(&a.address),
        track = tracker::render(&track),
    );
    Ok(ok_page(api, "Account", "", &body))
}

async fn track_page(web: &Web, p: &Params) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let q = p.text("q")?;
    let form = format!(
        "<form action=\"/track\" method=\"get\" class=\"track-form\"><input name=\"q\" value=\"{}\" maxlength=\"{}\" placeholder=\"Bitcoin txid or txid:vout, sidechain txid, withdrawal id\" aria-label=\"Peg to track\"><button type=\"submit\">Track</button></form>",
        esc(&q),
        super::MAX_QUERY_CHARS
    );
    if q.is_empty() {
        let body = format!("<h1>Peg tracker</h1>{form}<p>Paste a Bitcoin deposit txid or outpoint (txid:vout) to follow a peg-in (CONFIRMING n/N → MINTED), or a sidechain txid or withdrawal id to follow a peg-out (QUEUED → SIGNING k/m → BROADCAST n/N → CONFIRMED). The page updates by itself.</p>");
        return Ok(ok_page(api, "Peg tracker", "", &body));
    }
    let parsed = query::classify(&q, api.chain().spec.hrp())?;
    if let query::Query::Address(a) = &parsed {
        return Ok(redirect(&html::account_href(a)));
    }
    let view = tracker::resolve(web, &parsed, &q).await?;
    let body = format!(
        "<h1>Peg tracker</h1>{form}<p class=\"muted\">Live: <span id=\"live-status\">connecting…</span></p><div id=\"track\" data-live=\"/live/track?q={}\" data-live-mode=\"replace\">{}</div>",
        url(&q),
        tracker::render(&view)
    );
    Ok(ok_page(api, "Peg tracker", &q, &body))
}

/// Signatures each member gave to peg-out batches (all versions of the newest batches).
/// Peg-out signatures each member (of `members`, the epoch in force: peg
/// keys in hex) gave in recent batches. Batches key signatures by the
/// signer's index among the peg descriptor's keys (genesis order).
fn peg_signatures(api: &Api, members: &[pb::FederationMember]) -> Result<Vec<u64>, WebError> {
    let mut counts = vec![0u64; members.len()];
    let member_of_peg_index: Vec<Option<usize>> = api
        .chain()
        .spec
        .peg_keys
        .iter()
        .map(|k| {
            let k = k.to_string();
            members.iter().position(|m| m.peg_key == k)
        })
        .collect();
    let batches = api
        .chain()
        .recent_batches(crate::federation::RECENT_BATCH_SCAN)
        .map_err(tonic::Status::from)?;
    let in_flight: Vec<_> = api
        .chain()
        .with_state(|s| s.batches.values().cloned().collect());
    let mut seen = std::collections::HashSet::new();
    for b in in_flight.iter().chain(&batches) {
        if !seen.insert(b.id.0) {
            continue;
        }
        for v in &b.versions {
            for m in v.signatures.keys() {
                let member = member_of_peg_index.get(m.0 as usize).copied().flatten();
                if let Some(c) = member.and_then(|i| counts.get_mut(i)) {
                    *c += 1;
                }
            }
        }
    }
    Ok(counts)
}

async fn audit_page(web: &Web) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let fed = federation(api).await?;
    let r = FederationService::get_reserves(api, Request::new(pb::GetReservesRequest {}))
        .await?
        .into_inner();
    let reserves = r.available.saturating_add(r.locked);
    let liabilities = r
        .supply
        .saturating_add(r.queued)
        .saturating_add(r.in_batches);
    let pct = charts::ratio_percent(reserves, liabilities);
    let dev: u64 = api
        .chain()
        .spec
        .genesis
        .dev_balances
        .iter()
        .map(|d| d.amount.to_sat())
        .sum();
    let warning = if pct < 100.0 {
        format!(
            "<p class=\"error\" id=\"coverage-warning\" role=\"alert\">Reserves cover {pct:.2} % of what the federation owes: {} short.{}</p>",
            esc(&html::btc(liabilities - reserves.min(liabilities))),
            if dev > 0 {
                format!(" This genesis created {} of development balances (regtest only) that no deposit backs.", esc(&html::btc(dev)))
            } else {
                String::new()
            }
        )
    } else {
        format!("<p class=\"ok\">Reserves cover {pct:.2} % of what the federation owes.</p>")
    };
    let cell = |id: &str, label: &str, sats: u64| {
        (
            label.to_string(),
            format!(
                "<span id=\"r-{id}\" data-sats=\"{sats}\">{}</span>",
                esc(&html::btc(sats))
            ),
        )
    };
    let summary: Vec<(String, String)> = vec![
        cell("available", "Confirmed UTXOs, free", r.available),
        cell(
            "locked",
            "Confirmed UTXOs, in unconfirmed batches",
            r.locked,
        ),
        cell(
            "pending-change",
            "Pending change (not counted until confirmed)",
            r.pending_change,
        ),
        cell("supply", "Pegged supply", r.supply),
        cell("queued", "Unpaid peg-outs, queued", r.queued),
        cell("in-batches", "Unpaid peg-outs, in batches", r.in_batches),
        cell("fee-pool", "Fee pool (part of the reserves)", r.fee_pool),
        (
            "Coverage".into(),
            format!("<span id=\"r-coverage\">{pct:.2} %</span>"),
        ),
    ];
    let mut summary = summary;
    if let Some(ms) = r.oldest_utxo_rollover_in_ms {
        summary.push((
            "Oldest UTXO (emergency timelock)".into(),
            format!(
                "<span class=\"mono\">{}</span>: {}; rolled over by the federation {}",
                esc(&r.oldest_utxo),
                match r.oldest_utxo_blocks_to_expiry {
                    Some(b) => format!("<span id=\"r-expiry\">{b}</span> Bitcoin blocks until the backup keys could spend it"),
                    None => "blocks to expiry unknown (this node watches no bitcoind)".into(),
                },
                if ms == 0 { "in the next batch".to_string() } else { format!("in {:.1} days", ms as f64 / 86_400_000.0) }
            ),
        ));
    }
    let summary: Vec<(&str, String)> = summary
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut utxo_rows = String::new();
    for u in r.utxos.iter().take(MAX_UTXO_ROWS) {
        let _ = write!(
            utxo_rows,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono small\">{}</td></tr>",
            esc(&u.outpoint),
            esc(&html::btc(u.amount)),
            esc(&u.kind),
            u.locked_by_batch
                .map(|b| format!("locked by batch {b}"))
                .unwrap_or_else(|| "free".into()),
            esc(&u.descriptor),
        );
    }
    let more = if r.utxos.len() > MAX_UTXO_ROWS {
        format!(
            "<p class=\"muted\">First {MAX_UTXO_ROWS} of {} UTXOs; all of them: {}.</p>",
            r.utxos.len(),
            link("/api/v1/reserves", "/api/v1/reserves")
        )
    } else {
        String::new()
    };
    let sigs = peg_signatures(api, &fed.members)?;
    let signed_tip: Vec<u32> = api
        .chain()
        .last_signed()
        .iter()
        .enumerate()
        .filter(|(_, h)| **h == Some(r.height))
        .map(|(i, _)| i as u32)
        .collect();
    let samples = api.telemetry().recent_blocks();
    let now = crate::driver::now_ms();
    let body = format!(
        "<h1>Federation audit</h1><p>At sidechain height {height}. Everything here can be checked: import each UTXO's descriptor into your own bitcoind (<code>importdescriptors</code>, or <code>scantxoutset start '[\"DESCRIPTOR\"]'</code>) and compare.</p>\
{warning}{summary}\
<h2>Federation</h2>{ffacts}\
<h2>Members</h2>{members}\
<h2>Confirmed federation UTXOs ({n})</h2><table><thead><tr><th>Outpoint</th><th>Amount</th><th>Kind</th><th>State</th><th>Descriptor</th></tr></thead><tbody id=\"utxos\">{utxo_rows}</tbody></table>{more}\
<h2>Over time</h2><div class=\"charts\">{cov}{vol}</div>",
        height = r.height,
        summary = facts(&summary),
        ffacts = facts(&[
            ("Peg descriptor", format!("<span class=\"mono small\">{}</span>", esc(&fed.peg_descriptor))),
            ("Change address", format!("<span class=\"mono\">{}</span>", esc(&fed.change_address))),
            ("Deposit derivation", esc(&fed.deposit_derivation)),
            ("Peg threshold", esc(&format!("{} of {}", fed.peg_threshold, fed.members.len()))),
            ("Consensus quorum", fed.consensus_quorum.to_string()),
            ("Peg-in confirmations", fed.pegin_confirmations.to_string()),
            (
                "Bitcoin tip (this node's bitcoind)",
                if fed.bitcoin_tip_height == 0 { "— (this node watches no bitcoind)".into() } else { fed.bitcoin_tip_height.to_string() }
            ),
        ]),
        members = members_table(api, &fed, &signed_tip, Some(&sigs)),
        n = r.utxos.len(),
        cov = charts::coverage(&api.telemetry().coverage()),
        vol = charts::peg_volume(&samples, now),
    );
    Ok(ok_page(api, "Federation audit", "", &body))
}

async fn search(web: &Web, p: &Params) -> Result<Response<Body>, WebError> {
    let api = &web.api;
    let q = p.text("q")?;
    let target = match query::classify(&q, api.chain().spec.hrp())? {
        query::Query::Number(h) => {
            block(api, &h.to_string()).await?;
            html::block_href(h)
        }
        query::Query::Address(a) => html::account_href(&a),
        query::Query::Outpoint(o) => html::track_href(&o),
        query::Query::Id(id) => {
            if let Ok(b) = block(api, &id).await {
                html::block_href(b.height)
            } else if ExplorerService::get_transaction(
                api,
                Request::new(pb::GetTransactionRequest { txid: id.clone() }),
            )
            .await
            .is_ok()
            {
                html::tx_href(&id)
            } else {
                // A Bitcoin txid of a deposit or a peg-out batch, or nothing.
                tracker::resolve(web, &query::Query::Id(id.clone()), &id)
                    .await
                    .map_err(|_| {
                        WebError::not_found(format!(
                            "nothing on this chain has id {id}: no block hash, no transaction, no peg-in or peg-out Bitcoin txid"
                        ))
                    })?;
                html::track_href(&id)
            }
        }
    };
    Ok(redirect(&target))
}
