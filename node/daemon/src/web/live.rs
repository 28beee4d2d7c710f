//! Live updates as Server-Sent Events. Two kinds of stream, each either
//! JSON (`/api/v1/stream/…`) or ready-escaped HTML fragments
//! (`/live/…`, what the pages insert):
//!
//! - blocks: the explorer feed (`SubscribeBlocks`), one `block` event per
//!   finalized block with `id:` = its height. A browser that lost the
//!   connection (node restart) reconnects by itself and sends
//!   `Last-Event-ID`; the stream resumes at the next height, so nothing is
//!   missed or repeated.
//! - track: a peg tracker query re-evaluated every second on this node and
//!   sent only when it changed (the browser polls nothing).
//!
//! Each stream takes one of [`super::MAX_LIVE_STREAMS`] slots (and a feed
//! slot for blocks); more get 429. A client that stops reading is ended
//! by the feed's lag and stall limits.

use super::{query::Query, respond, Body, Params, Web, WebError};
use bytes::Bytes;
use fedpeg_proto::v1 as pb;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{header, Response, StatusCode};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// How a stream's events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The gRPC message as JSON.
    Json,
    /// An HTML fragment, as the page shows it.
    Html,
}

/// Reconnect delay the browser is told to use, ms.
const RETRY_MS: u64 = 2000;
/// A comment is sent this often so proxies keep an idle stream open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a tracker stream re-evaluates its query.
const TRACK_EVERY: Duration = Duration::from_secs(1);

/// One SSE event; `data` may span lines (each becomes a `data:` line).
pub(crate) fn event(id: Option<&str>, name: &str, data: &str) -> Bytes {
    let mut o = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        o.push_str("id: ");
        o.push_str(id);
        o.push('\n');
    }
    o.push_str("event: ");
    o.push_str(name);
    o.push('\n');
    // CR, LF and CRLF all end a line in SSE: each becomes its own data line.
    for line in data.replace("\r\n", "\n").split(['\r', '\n']) {
        o.push_str("data: ");
        o.push_str(line);
        o.push('\n');
    }
    o.push('\n');
    Bytes::from(o)
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let mut r = respond(StatusCode::OK, "text/event-stream", Bytes::new());
    *r.body_mut() = StreamBody::new(frames).boxed();
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    r
}

fn slot(web: &Web) -> Result<tokio::sync::OwnedSemaphorePermit, WebError> {
    web.streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| WebError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "RESOURCE_EXHAUSTED",
            message: format!(
                "this node serves at most {} live streams and all are taken; retry in a minute",
                super::MAX_LIVE_STREAMS
            ),
        })
}

/// Where a block stream starts: after `Last-Event-ID`, else `from_height`,
/// else at the next block.
pub(crate) fn start_height(
    web: &Web,
    p: &Params,
    last_event_id: Option<&str>,
) -> Result<u64, WebError> {
    if let Some(id) = last_event_id {
        let last: u64 = id.trim().parse().map_err(|_| {
            WebError::bad_request(format!(
                "Last-Event-ID {:?} is not a block height",
                super::query::clip(id)
            ))
        })?;
        return Ok(last.saturating_add(1));
    }
    match p.get("from_height") {
        Some(_) => p.u64("from_height", 0),
        None => Ok(web.api.chain().height().saturating_add(1)),
    }
}

/// A live stream of finalized blocks.
pub(crate) fn blocks(
    web: &Web,
    p: &Params,
    last_event_id: Option<&str>,
    format: Format,
) -> Result<Response<Body>, WebError> {
    let from = start_height(web, p, last_event_id)?;
    let from = i64::try_from(from)
        .map_err(|_| WebError::bad_request(format!("from_height {from} is too large")))?;
    let permit = slot(web)?;
    let mut feed = web
        .api
        .feed()
        .subscribe_blocks(pb::SubscribeBlocksRequest {
            from_height: Some(from),
            include_raw: false,
        })?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let web = web.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut stopping = web.stopping.subscribe();
        if tx
            .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let out = tokio::select! {
                _ = tx.closed() => return,
                _ = super::stopped(&mut stopping) => return,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                m = feed.next() => match m {
                    Some(Ok(b)) => {
                        let data = match format {
                            Format::Json => serde_json::to_string(&b).unwrap_or_default(),
                            Format::Html => super::pages::block_row(&b, Some(crate::driver::now_ms().saturating_sub(b.time_ms))),
                        };
                        event(Some(&b.height.to_string()), "block", &data)
                    }
                    // Cut off (too slow): the browser reconnects with
                    // Last-Event-ID and resumes where it was.
                    Some(Err(status)) => {
                        let _ = tx.send(event(None, "cut", status.message())).await;
                        return;
                    }
                    None => return,
                },
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(rx))
}

/// A live peg tracker for `q` (already classified as `parsed`).
pub(crate) fn track(web: &Web, parsed: Query, q: String, format: Format) -> Response<Body> {
    let permit = match slot(web) {
        Ok(p) => p,
        Err(e) => {
            return match format {
                Format::Json => super::json_api::error(&e),
                Format::Html => super::pages::error(web, &e),
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let web = web.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut stopping = web.stopping.subscribe();
        if tx
            .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let mut last: Option<String> = None;
        let mut quiet = Duration::ZERO;
        let mut n: u64 = 0;
        loop {
            let view = super::tracker::resolve(&web, &parsed, &q).await;
            let data = match (format, view) {
                (Format::Json, Ok(v)) => serde_json::to_string(&v).unwrap_or_default(),
                (Format::Html, Ok(v)) => super::tracker::render(&v),
                (Format::Json, Err(e)) => {
                    serde_json::json!({"error": {"code": e.code, "message": e.message}}).to_string()
                }
                (Format::Html, Err(e)) => super::pages::error_fragment(&e),
            };
            let out = if last.as_deref() != Some(data.as_str()) {
                n += 1;
                let ev = event(Some(&n.to_string()), "track", &data);
                last = Some(data);
                quiet = Duration::ZERO;
                Some(ev)
            } else if quiet >= KEEPALIVE {
                quiet = Duration::ZERO;
                Some(Bytes::from_static(b": keepalive\n\n"))
            } else {
                None
            };
            if let Some(out) = out {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = super::stopped(&mut stopping) => return,
                _ = tokio::time::sleep(TRACK_EVERY) => quiet += TRACK_EVERY,
            }
        }
    });
    stream_response(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            event(Some("7"), "block", "<tr>\r\n<td>1</td>\n</tr>"),
            Bytes::from("id: 7\nevent: block\ndata: <tr>\ndata: <td>1</td>\ndata: </tr>\n\n")
        );
        assert_eq!(event(None, "x", ""), Bytes::from("event: x\ndata: \n\n"));
    }
}
