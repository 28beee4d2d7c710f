//! bitcoind's ZMQ block notifications (`-zmqpubhashblock`): a hint that
//! makes the watcher poll at once instead of at its next interval, so a
//! deposit reaching its depth is minted within milliseconds of the block.
//!
//! A notification is only ever a reason to poll: what the watcher believes
//! still comes from its own bitcoind's RPC, so a wrong, forged or flooded
//! notification can at most cause polls, and those are coalesced (one
//! pending poke at a time, [`MIN_POLL_GAP`] between pokes; the watcher also
//! spaces the polls themselves). Polling on the interval stays the
//! fallback: a dead, slow or absent endpoint only costs latency.
//!
//! The subscriber speaks the one corner of ZMTP 3.0 (RFC 23) that a SUB
//! socket needs against bitcoind's PUB socket: greeting, NULL handshake,
//! one subscription, then frames. It is written here rather than pulled in
//! as a general ZeroMQ library because that corner is ~150 lines whose every
//! input is bounded (frames of at most [`MAX_FRAME`] bytes, messages of at
//! most [`MAX_PARTS`] frames), while the pure-Rust ZeroMQ crate brings ~15
//! crates (a second `syn`, `regex`, ...) to a build that runs on 2 cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The topic bitcoind publishes new best-block hashes under.
pub const TOPIC: &[u8] = b"hashblock";
/// Largest frame accepted: bitcoind's frames are the topic (9 bytes), the
/// hash (32) and a sequence number (4); commands such as READY are small.
pub const MAX_FRAME: u64 = 1024;
/// Most frames in one message (bitcoind sends 3).
pub const MAX_PARTS: usize = 8;
/// Least time between two polls that notifications cause.
pub const MIN_POLL_GAP: Duration = Duration::from_millis(20);
/// Waiting for a connection or a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect after this long without any message (a half-open connection
/// would otherwise be waited on forever; the interval poll covers the gap).
/// Far above Bitcoin's block gaps, so a quiet hour is not a reconnect.
const IDLE_RECONNECT: Duration = Duration::from_secs(3 * 60 * 60);
/// First and longest wait before reconnecting after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

/// Why a connection to the notification endpoint ended.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("not a ZMTP 3 peer: {0}")]
    Greeting(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(u64),
    #[error("message of more than {MAX_PARTS} frames")]
    TooManyParts,
    #[error("no message for {0:?}")]
    Idle(Duration),
}

/// `tcp://host:port` → `host:port`; anything else is a configuration error.
pub fn parse_endpoint(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("tcp://") else {
        return Err(format!(
            "bitcoin.zmq_block {url:?} must be a tcp:// endpoint, e.g. tcp://127.0.0.1:28332 (bitcoind -zmqpubhashblock=tcp://127.0.0.1:28332)"
        ));
    };
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || rest.contains('/') || rest.contains('*') {
        return Err(format!(
            "bitcoin.zmq_block {url:?} needs a host and a port, e.g. tcp://127.0.0.1:28332"
        ));
    }
    Ok(rest.to_string())
}

/// Subscribes to `endpoint` (`host:port`) until `stop`, calling `on_block`
/// for every block notification (coalesced, at most once per
/// [`MIN_POLL_GAP`]) and once after every (re)connection, since blocks may
/// have come while it was away; counts the notifications in `seen`.
/// Reconnects with backoff, which restarts from its shortest only after a
/// connection that delivered a notification.
pub async fn run(
    endpoint: String,
    on_block: Arc<dyn Fn() + Send + Sync>,
    seen: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    // The poke task: a Notify holds at most one permit, so any number of
    // notifications while a poll is being asked for count as one.
    let poke = {
        let wake = wake.clone();
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                on_block();
                tokio::time::sleep(MIN_POLL_GAP).await;
            }
        })
    };
    let mut backoff = BACKOFF.0;
    let mut warned = false;
    loop {
        let session = subscribe(&endpoint, &wake, &seen);
        let result = tokio::select! {
            r = session => r,
            _ = stop.changed() => break,
        };
        if *stop.borrow() {
            break;
        }
        match result {
            Err((true, e @ NotifyError::Idle(_))) => {
                tracing::debug!(endpoint, error = %e, "bitcoind block notifications quiet; reconnecting");
                backoff = BACKOFF.0;
            }
            // It delivered notifications before it ended.
            Err((true, e)) => {
                tracing::warn!(endpoint, error = %e, "bitcoind block notifications interrupted; reconnecting (polling continues)");
                backoff = BACKOFF.0;
                warned = false;
            }
            Err((false, e)) if !warned => {
                tracing::warn!(endpoint, error = %e, "bitcoind block notifications unavailable; retrying with backoff (polling continues)");
                warned = true;
            }
            Err((false, e)) => {
                tracing::debug!(endpoint, error = %e, "bitcoind block notifications still unavailable")
            }
            Ok(never) => match never {},
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
    poke.abort();
}

/// One connection: handshake, subscribe, then read messages until an error.
/// The error says whether the connection delivered a block notification.
async fn subscribe(
    endpoint: &str,
    wake: &tokio::sync::Notify,
    seen: &AtomicU64,
) -> Result<std::convert::Infallible, (bool, NotifyError)> {
    let s = timed(TcpStream::connect(endpoint))
        .await
        .map_err(|e| (false, e))?;
    let mut s = BufReader::new(s);
    timed(handshake(&mut s)).await.map_err(|e| (false, e))?;
    tracing::info!(
        endpoint,
        "subscribed to bitcoind block notifications (ZMQ hashblock)"
    );
    // Blocks may have arrived while we were not subscribed.
    wake.notify_one();
    let mut delivered = false;
    loop {
        let msg = match tokio::time::timeout(IDLE_RECONNECT, read_message(&mut s)).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => return Err((delivered, e)),
            Err(_) => return Err((delivered, NotifyError::Idle(IDLE_RECONNECT))),
        };
        // bitcoind's hashblock: the topic, a 32-byte hash, a sequence number.
        if msg.first().is_some_and(|t| t.as_slice() == TOPIC)
            && msg.get(1).is_some_and(|h| h.len() == 32)
        {
            delivered = true;
            seen.fetch_add(1, Ordering::Relaxed);
            wake.notify_one();
        }
    }
}

async fn timed<T, E: Into<NotifyError>>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, NotifyError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(NotifyError::Timeout),
    }
}

/// Our greeting: signature, version 3.0, mechanism NULL, as-server 0.
pub fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[8] = 0x01;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A command frame: name (length-prefixed) then its body.
fn command(name: &[u8], body: &[u8]) -> Vec<u8> {
    let mut c = vec![name.len() as u8];
    c.extend_from_slice(name);
    c.extend_from_slice(body);
    frame(0x04, &c)
}

/// One frame with `flags` (MORE 0x01, COMMAND 0x04; LONG is set here).
fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 9);
    if body.len() < 256 {
        f.push(flags);
        f.push(body.len() as u8);
    } else {
        f.push(flags | 0x02);
        f.extend_from_slice(&(body.len() as u64).to_be_bytes());
    }
    f.extend_from_slice(body);
    f
}

/// Greeting, NULL-mechanism READY both ways, then the subscription (the
/// ZMTP 3.0 form: a message `0x01 topic`).
async fn handshake(s: &mut BufReader<TcpStream>) -> Result<(), NotifyError> {
    s.get_mut().write_all(&greeting()).await?;
    let mut peer = [0u8; 64];
    s.read_exact(&mut peer).await?;
    if peer[0] != 0xff || peer[9] != 0x7f {
        return Err(NotifyError::Greeting("bad signature".into()));
    }
    if peer[10] < 3 {
        return Err(NotifyError::Greeting(format!("version {}", peer[10])));
    }
    if &peer[12..16] != b"NULL" || peer[16..32].iter().any(|&b| b != 0) {
        return Err(NotifyError::Greeting(
            "mechanism is not NULL (bitcoind uses no ZMQ security)".into(),
        ));
    }
    let mut ready = Vec::new();
    let (name, value) = (b"Socket-Type", b"SUB");
    ready.push(name.len() as u8);
    ready.extend_from_slice(name);
    ready.extend_from_slice(&(value.len() as u32).to_be_bytes());
    ready.extend_from_slice(value);
    s.get_mut().write_all(&command(b"READY", &ready)).await?;
    let (flags, body) = read_frame(s).await?;
    if flags & 0x04 == 0
        || body.first().map(|&n| n as usize) != Some(5)
        || body.get(1..6) != Some(b"READY")
    {
        return Err(NotifyError::Handshake(
            "the peer did not answer READY".into(),
        ));
    }
    if !socket_type(&body[6..]).is_some_and(|t| t == b"PUB" || t == b"XPUB") {
        return Err(NotifyError::Handshake(
            "the peer is not a PUB socket (is this bitcoind's -zmqpubhashblock address?)".into(),
        ));
    }
    let mut sub = vec![0x01];
    sub.extend_from_slice(TOPIC);
    s.get_mut().write_all(&frame(0x00, &sub)).await?;
    Ok(())
}

/// The Socket-Type property of a READY command's metadata.
fn socket_type(mut meta: &[u8]) -> Option<&[u8]> {
    while let Some((&n, rest)) = meta.split_first() {
        let name = rest.get(..n as usize)?;
        let rest = &rest[n as usize..];
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let end = len.checked_add(4)?;
        let value = rest.get(4..end)?;
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            return Some(value);
        }
        meta = &rest[end..];
    }
    None
}

/// One frame: (flags, body), its size checked before anything is read.
async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> Result<(u8, Vec<u8>), NotifyError> {
    let flags = s.read_u8().await?;
    let size = if flags & 0x02 != 0 {
        s.read_u64().await?
    } else {
        u64::from(s.read_u8().await?)
    };
    if size > MAX_FRAME {
        return Err(NotifyError::FrameTooLarge(size));
    }
    let mut body = vec![0u8; size as usize];
    s.read_exact(&mut body).await?;
    Ok((flags, body))
}

/// One message (its frames); commands between messages are skipped.
async fn read_message(s: &mut (impl AsyncRead + Unpin)) -> Result<Vec<Vec<u8>>, NotifyError> {
    let mut parts = Vec::new();
    loop {
        let (flags, body) = read_frame(s).await?;
        if flags & 0x04 != 0 {
            continue;
        }
        if parts.len() == MAX_PARTS {
            return Err(NotifyError::TooManyParts);
        }
        parts.push(body);
        if flags & 0x01 == 0 {
            return Ok(parts);
        }
    }
}

#[cfg(test)]
mod tests;
