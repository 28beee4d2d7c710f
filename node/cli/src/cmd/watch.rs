//! `fedpeg watch`: tail finalized blocks, or one account's events; and how
//! a block of the feed and an event read.

use std::time::Duration;

use anyhow::Context as _;
use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::{pegout_status, tx, Context};
use crate::client::{status_error, Client};
use crate::report::{Printer, Report};

/// Where the tail is, and how far it has got.
struct Cursor {
    /// Next (height, event index) to show.
    next: (u64, u32),
    shown: u64,
    count: Option<u64>,
    /// Stream failures in a row since the last item.
    failures: u32,
}

impl Cursor {
    fn done(&self) -> bool {
        self.count.is_some_and(|n| self.shown >= n)
    }

    fn shown(&mut self, next: (u64, u32)) {
        self.next = next;
        self.shown += 1;
        self.failures = 0;
    }
}

/// Emits blocks from `from` (default: the next one), or `account`'s events,
/// until `count` are shown; reconnects from where it left off when the
/// stream ends (cut off as too slow, node restarted).
pub async fn run(
    ctx: &Context<'_>,
    out: &mut Printer,
    from: Option<u64>,
    account: Option<&str>,
    count: Option<u64>,
) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let next = match from {
        Some(h) => (h, 0),
        None => (c.status().await?.height.saturating_add(1), 0),
    };
    let mut cur = Cursor {
        next,
        shown: 0,
        count,
        failures: 0,
    };
    while !cur.done() {
        let from_height = i64::try_from(cur.next.0).context("--from is too large")?;
        let result = match account {
            Some(a) => events(&c, out, &mut cur, a, from_height).await,
            None => blocks(&c, out, &mut cur, from_height).await,
        };
        if let Err(e) = result {
            retry_or_fail(out, &mut cur, e).await?;
        }
    }
    Ok(Report::empty())
}

/// Waits before resuming after a stream failure the node may recover from;
/// any other error ends the watch.
async fn retry_or_fail(
    out: &mut Printer,
    cur: &mut Cursor,
    e: anyhow::Error,
) -> anyhow::Result<()> {
    let s = e.downcast::<tonic::Status>()?;
    let transient = matches!(
        s.code(),
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable | tonic::Code::Unknown
    );
    if !transient || cur.failures >= 30 {
        return Err(status_error("watch", s));
    }
    cur.failures += 1;
    out.warn(&format!(
        "watch: {}; resuming from height {} in 1 s",
        s.message(),
        cur.next.0
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Emits blocks until the stream ends or enough are shown. A node's error
/// comes back as a `tonic::Status`.
async fn blocks(
    c: &Client,
    out: &mut Printer,
    cur: &mut Cursor,
    from_height: i64,
) -> anyhow::Result<()> {
    let mut s = c
        .explorer()
        .subscribe_blocks(pb::SubscribeBlocksRequest {
            from_height: Some(from_height),
            include_raw: false,
        })
        .await?
        .into_inner();
    while let Some(b) = s.message().await? {
        out.emit(&feed_block_report(&b))?;
        cur.shown((b.height.saturating_add(1), 0));
        if cur.done() {
            break;
        }
    }
    Ok(())
}

/// Emits `account`'s events until the stream ends or enough are shown. A
/// node's error comes back as a `tonic::Status`.
async fn events(
    c: &Client,
    out: &mut Printer,
    cur: &mut Cursor,
    account: &str,
    from_height: i64,
) -> anyhow::Result<()> {
    let mut s = c
        .explorer()
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(from_height),
            from_index: cur.next.1,
            accounts: vec![account.to_string()],
            kinds: vec![],
        })
        .await?
        .into_inner();
    while let Some(e) = s.message().await? {
        let (text, j) = describe_event(&e);
        out.emit(&Report::new(text, j))?;
        cur.shown((e.height, e.index.saturating_add(1)));
        if cur.done() {
            break;
        }
    }
    Ok(())
}

/// A block of the feed: a line, then one per event.
fn feed_block_report(b: &pb::FeedBlock) -> Report {
    let signers = b
        .commit
        .as_ref()
        .map(|c| c.signer_names.join(","))
        .unwrap_or_default();
    let mut text = vec![format!(
        "block {} {} by {} signed by [{}]: {} transaction(s), {} event(s)",
        b.height,
        b.hash,
        b.proposer_name,
        signers,
        b.transactions.len(),
        b.events.len()
    )];
    text.extend(
        b.events
            .iter()
            .map(|e| format!("  {}", describe_event(e).0)),
    );
    Report::new(
        text.join("\n"),
        json!({ "height": b.height, "hash": b.hash, "parent_hash": b.parent_hash, "time_ms": b.time_ms,
            "proposer": b.proposer_name, "signers": signers,
            "transactions": b.transactions.iter().filter_map(|t| t.transaction.as_ref()).map(tx::json).collect::<Vec<_>>(),
            "events": b.events.iter().map(|e| describe_event(e).1).collect::<Vec<_>>() }),
    )
}

/// One event as text and JSON.
fn describe_event(e: &pb::ChainEvent) -> (String, serde_json::Value) {
    let kind = pb::EventKind::try_from(e.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN");
    let (text, detail) = match &e.event {
        Some(ev) => event_detail(ev),
        None => ("(empty event)".into(), json!({})),
    };
    (
        format!("{}.{} {text}", e.height, e.index),
        json!({ "height": e.height, "index": e.index, "kind": kind, "txid": e.txid, "detail": detail }),
    )
}

/// What happened in an event, as text and JSON.
fn event_detail(ev: &pb::chain_event::Event) -> (String, serde_json::Value) {
    use pb::chain_event::Event as Ev;
    match ev {
        Ev::Transfer(t) => (
            format!("transfer {} → {}: {} sats", t.from, t.to, t.amount),
            json!({ "from": t.from, "to": t.to, "amount": t.amount }),
        ),
        Ev::Fee(f) => (
            format!("fee {} sats from {}", f.amount, f.from),
            json!({ "from": f.from, "amount": f.amount }),
        ),
        Ev::Mint(m) => (
            format!(
                "mint {} sats to {} (deposit {})",
                m.amount, m.account, m.outpoint
            ),
            json!({ "account": m.account, "amount": m.amount, "outpoint": m.outpoint }),
        ),
        Ev::Burn(b) => (
            format!(
                "burn {} sats from {} → {} (withdrawal {})",
                b.amount, b.account, b.bitcoin_address, b.withdrawal_id
            ),
            json!({ "account": b.account, "amount": b.amount, "bitcoin_address": b.bitcoin_address,
                "withdrawal_id": b.withdrawal_id }),
        ),
        Ev::DepositAddressRegistered(d) => (
            format!(
                "deposit address of {} registered by member {}",
                d.account, d.member
            ),
            json!({ "account": d.account, "member": d.member }),
        ),
        Ev::PegOutStateChanged(p) => pegout_change(p),
    }
}

fn pegout_change(p: &pb::PegOutStateChanged) -> (String, serde_json::Value) {
    let state = pegout_status::state_name(p.state);
    let detail = match pb::PegOutState::try_from(p.state) {
        Ok(pb::PegOutState::Signing | pb::PegOutState::Broadcast) if p.signatures > 0 => format!(
            ", {} signature set(s), the last from member {}",
            p.signatures,
            p.member.unwrap_or_default()
        ),
        Ok(pb::PegOutState::Replaced) => format!(
            ", version {} at {} sat/vB",
            p.batch_version, p.fee_rate_sat_vb
        ),
        _ => String::new(),
    };
    (
        format!(
            "peg-out batch {} {state}: withdrawal(s) {:?}, bitcoin tx {}{detail}",
            p.batch, p.withdrawal_ids, p.bitcoin_txid
        ),
        json!({ "batch": p.batch, "state": state, "bitcoin_txid": p.bitcoin_txid,
            "batch_version": p.batch_version, "fee_rate_sat_vb": p.fee_rate_sat_vb,
            "signatures": p.signatures, "member": p.member,
            "withdrawal_ids": p.withdrawal_ids, "accounts": p.accounts }),
    )
}
