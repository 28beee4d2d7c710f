//! Waiting for a condition on real processes: poll, with a deadline and a
//! message that says what did not happen.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] polls.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` every [`POLL`] until it returns `Some(v)` and returns `v`;
/// fails with "`what` not within `timeout`" when the deadline passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
