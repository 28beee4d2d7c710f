//! The web app on `--http-listen`: server-rendered pages for people
//! (explorer, peg tracker, federation audit) and a read-only JSON +
//! Server-Sent-Events API under `/api/v1` (documented in `openapi.yaml`).
//!
//! It holds no logic of its own: every answer comes from the gRPC handlers
//! ([`crate::api::Api`], [`crate::feed`], [`crate::federation`],
//! [`crate::telemetry`]), so the JSON has the gRPC messages' field names
//! and the same validation and error messages. Nothing here changes state
//! (GET and HEAD only; the one gRPC call that writes, `GetPegInAddress`, is
//! not used: the account page derives the address).
//!
//! Everything a stranger can ask for is bounded: connections, open live
//! streams, request head size and time, URI and search lengths, page sizes.
//! Bad input gets a 4xx with a message a person can act on.

mod charts;
mod html;
mod json_api;
mod live;
mod pages;
mod query;
mod tracker;

use crate::api::Api;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{header, Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most open HTTP connections; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Most open live streams (Server-Sent Events); more get 429.
pub const MAX_LIVE_STREAMS: usize = 128;
/// Longest accepted URI (path and query), bytes; longer gets 414.
pub const MAX_URI_BYTES: usize = 2048;
/// Longest search or tracker query, characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Largest page of blocks or account transactions.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most query parameters in one request.
const MAX_PARAMS: usize = 16;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head hyper buffers, bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Response body: a whole page or an event stream.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Shared state of the web app.
#[derive(Clone)]
pub(crate) struct Web {
    pub(crate) api: Api,
    /// Live-stream slots ([`MAX_LIVE_STREAMS`]).
    pub(crate) streams: Arc<Semaphore>,
    /// Set when the node stops: live streams end cleanly (a browser then
    /// reconnects to the restarted node and resumes).
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Web {
    /// Web app state over `api` with at most `live_streams` live streams.
    pub(crate) fn new(api: Api, live_streams: usize) -> Web {
        Web {
            api,
            streams: Arc::new(Semaphore::new(live_streams)),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

/// Why a request got no page: an HTTP status and a message for a person.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebError {
    pub(crate) status: StatusCode,
    /// The gRPC code name it corresponds to (`INVALID_ARGUMENT`, …).
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl WebError {
    pub(crate) fn bad_request(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for WebError {
    fn from(s: tonic::Status) -> WebError {
        use tonic::Code;
        let (status, code) = match s.code() {
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        WebError {
            status,
            code,
            message: s.message().to_string(),
        }
    }
}

/// The decoded query string of a request.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `a=1&b=x`; more than [`MAX_PARAMS`] parameters is a bad request.
    pub(crate) fn parse(query: Option<&str>) -> Result<Params, WebError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .take(MAX_PARAMS + 1)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.len() > MAX_PARAMS {
            return Err(WebError::bad_request(format!(
                "too many query parameters (at most {MAX_PARAMS})"
            )));
        }
        Ok(Params(pairs))
    }

    /// A parameter's value, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric parameter (absent: `default`).
    pub(crate) fn u64(&self, name: &str, default: u64) -> Result<u64, WebError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                WebError::bad_request(format!(
                    "{name}={:?} is not a whole number ≥ 0",
                    query::clip(v)
                ))
            }),
        }
    }

    /// A page size: 0 or absent means `default`, at most [`MAX_PAGE_SIZE`].
    pub(crate) fn page_size(&self, default: u32) -> Result<u32, WebError> {
        match self.u64("page_size", u64::from(default))? {
            0 => Ok(default),
            n if n > u64::from(MAX_PAGE_SIZE) => Err(WebError::bad_request(format!(
                "page_size {n} is too large: at most {MAX_PAGE_SIZE}"
            ))),
            n => Ok(n as u32),
        }
    }

    /// A short text parameter (search, tracker, page token), trimmed.
    pub(crate) fn text(&self, name: &str) -> Result<String, WebError> {
        let v = self.get(name).unwrap_or("").trim();
        if v.chars().count() > MAX_QUERY_CHARS {
            return Err(WebError::bad_request(format!(
                "{name} is too long ({} characters; at most {MAX_QUERY_CHARS})",
                v.chars().count()
            )));
        }
        Ok(v.to_string())
    }
}

/// A complete response.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // Nothing here is to be framed, sniffed or loaded from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Routes one request. Never panics on input; every refusal is a 4xx.
pub(crate) async fn handle(web: &Web, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let api = req.uri().path().starts_with("/api/");
    let reply = |e: WebError| {
        if api {
            json_api::error(&e)
        } else {
            pages::error(web, &e)
        }
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(WebError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "UNIMPLEMENTED",
            message: format!(
                "{} is not served: this web app is read-only (GET and HEAD only)",
                req.method()
            ),
        });
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let uri_len = req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1);
    if uri_len > MAX_URI_BYTES {
        return reply(WebError {
            status: StatusCode::URI_TOO_LONG,
            code: "INVALID_ARGUMENT",
            message: format!("the address is {uri_len} bytes long; at most {MAX_URI_BYTES}"),
        });
    }
    let segments: Result<Vec<String>, WebError> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| WebError::bad_request("the address is not valid UTF-8"))
        })
        .collect();
    let result = match (segments, Params::parse(req.uri().query())) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(segments), Ok(params)) => {
            let path: Vec<&str> = segments.iter().map(String::as_str).collect();
            let last_event_id = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match path.as_slice() {
                ["api", "v1", rest @ ..] => {
                    json_api::route(web, rest, &params, last_event_id.as_deref()).await
                }
                _ => pages::route(web, &path, &params, last_event_id.as_deref()).await,
            }
        }
    };
    result.unwrap_or_else(reply)
}

/// Resolves once the node stops. (The guard `wait_for` returns is not
/// `Send`: it is dropped here, before any other await.)
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves the web app on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run(
        listener,
        Web::new(api, MAX_LIVE_STREAMS),
        MAX_CONNECTIONS,
        shutdown,
    )
    .await
}

/// [`serve`] with `web`'s limits and at most `max_connections` at once.
async fn run(
    listener: tokio::net::TcpListener,
    web: Web,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        // A free slot first: a flood of connections waits in the accept
        // queue instead of costing a task each.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "web app: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut stop = web.stopping.subscribe();
        let web = web.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let web = web.clone();
                async move {
                    let head = req.method() == Method::HEAD;
                    let mut r = handle(&web, &req).await;
                    if head {
                        *r.body_mut() = Full::new(Bytes::new()).boxed();
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "web app connection ended");
                    }
                }
                _ = stopped(&mut stop) => {
                    // Live streams end on the same signal; let their last
                    // chunk out so clients see a clean end, not a cut.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                }
            }
        });
    }
    web.stopping.send_replace(true);
}

#[cfg(test)]
mod tests;
