//! Limits on new deposit-address registrations. A registration is free to
//! ask for (`GetPegInAddress` on a member) but costs every member: a
//! federation transaction in a block and a script every watcher follows
//! from then on. So a member accepts few new ones per client and in all, and
//! holds a bounded number waiting for a block; an address already
//! registered or waiting costs nothing and is always answered.

use crate::network::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::time::Instant;
use tonic::Status;

/// New registrations per second (and burst) from one client address.
pub const PER_CLIENT_PER_SEC: u32 = 2;
/// New registrations per second (and burst) from all clients together.
pub const ALL_CLIENTS_PER_SEC: u32 = 20;
/// Most registrations this member holds waiting for a block.
pub const MAX_PENDING: usize = 200;
/// Most client addresses tracked; beyond it, idle ones are forgotten.
const MAX_CLIENTS: usize = 10_000;

/// Token buckets per client address and for all clients.
pub struct RegistrationLimits {
    clients: Mutex<HashMap<Option<IpAddr>, TokenBucket>>,
    all: Mutex<TokenBucket>,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        RegistrationLimits {
            clients: Mutex::new(HashMap::new()),
            all: Mutex::new(TokenBucket::full(ALL_CLIENTS_PER_SEC, Instant::now())),
        }
    }
}

impl RegistrationLimits {
    /// Admits one new registration from `client` while `pending` are
    /// waiting for a block, or says why not (RESOURCE_EXHAUSTED).
    pub fn admit(&self, client: Option<IpAddr>, pending: usize) -> Result<(), Status> {
        if pending >= MAX_PENDING {
            return Err(Status::resource_exhausted(format!(
                "{pending} deposit-address registrations are waiting for a block on this member; retry in a few seconds"
            )));
        }
        let now = Instant::now();
        {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
                // Forget clients whose bucket has refilled: they lose nothing.
                clients.retain(|_, b| {
                    now.duration_since(b.last).as_secs_f64() * f64::from(PER_CLIENT_PER_SEC)
                        + b.tokens
                        < f64::from(PER_CLIENT_PER_SEC)
                });
            }
            let bucket = clients
                .entry(client)
                .or_insert_with(|| TokenBucket::full(PER_CLIENT_PER_SEC, now));
            if !bucket.try_take(PER_CLIENT_PER_SEC, now) {
                return Err(Status::resource_exhausted(format!(
                    "too many new deposit addresses from this client (at most {PER_CLIENT_PER_SEC} per second); retry in a second"
                )));
            }
        }
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if !all.try_take(ALL_CLIENTS_PER_SEC, now) {
            return Err(Status::resource_exhausted(format!(
                "this member registers at most {ALL_CLIENTS_PER_SEC} new deposit addresses per second; retry in a second"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_its_burst_then_waits_and_others_are_not_blocked_by_it() {
        let l = RegistrationLimits::default();
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..PER_CLIENT_PER_SEC {
            l.admit(a, 0).unwrap();
        }
        let e = l.admit(a, 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("this client"), "{}", e.message());
        l.admit(b, 0).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        l.admit(a, 0).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn all_clients_together_and_the_pending_set_are_bounded() {
        let l = RegistrationLimits::default();
        let mut admitted = 0;
        for i in 0..1000u32 {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            if l.admit(ip, 0).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, ALL_CLIENTS_PER_SEC);
        let e = l
            .admit(Some(IpAddr::from([10, 0, 0, 1])), MAX_PENDING)
            .unwrap_err();
        assert!(
            e.message().contains("waiting for a block"),
            "{}",
            e.message()
        );
    }
}
