//! A run's lease, kept alive while the run works.
//!
//! A lease is short ([`LEASE_TTL_MS`]) and renewed by its holder every [`RENEW_EVERY_MS`] (a
//! heartbeat, as the DynamoDB lock client does:
//! <https://aws.amazon.com/blogs/database/building-distributed-locks-with-the-dynamodb-lock-client/>).
//! A holder that crashes, or a Lambda invocation killed at its timeout, stops renewing, and the
//! connection is free again within a minute instead of staying locked.
//!
//! A holder that cannot renew (the store is unreachable, or the lease was broken or taken over)
//! marks its lease lost; the run checks [`HeldLease::check`] before each of its writes and stops.
//! The store's fencing (every write carries the token) is the backstop for what a check cannot
//! see: a run that stalled past its expiry while another took over writes nothing more.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::state::{Lease, StateError, StateStore, UnixMillis};

/// How long a lease lasts without renewal: how long a crashed holder blocks others.
pub const LEASE_TTL_MS: i64 = 60_000;
/// How often the holder renews: three chances before the lease runs out.
pub const RENEW_EVERY_MS: i64 = 20_000;
/// A holder stops writing this long before its lease would run out unrenewed, leaving room
/// for a write in flight to finish before another run may take over.
const SAFETY_MARGIN_MS: i64 = 10_000;

/// The lease a run holds, renewed by [`HeldLease::keep_alive`] while the run works.
pub struct HeldLease<'a> {
    state: &'a dyn StateStore,
    clock: &'a dyn Clock,
    lease: Mutex<Lease>,
    lost: AtomicBool,
    ttl_ms: i64,
    renew_every: Duration,
}

impl<'a> HeldLease<'a> {
    pub fn new(state: &'a dyn StateStore, clock: &'a dyn Clock, lease: Lease) -> Self {
        Self::with_timing(state, clock, lease, LEASE_TTL_MS, RENEW_EVERY_MS)
    }

    /// A lease with other timings (tests).
    pub fn with_timing(
        state: &'a dyn StateStore,
        clock: &'a dyn Clock,
        lease: Lease,
        ttl_ms: i64,
        renew_every_ms: i64,
    ) -> Self {
        Self {
            state,
            clock,
            lease: Mutex::new(lease),
            lost: AtomicBool::new(false),
            ttl_ms,
            renew_every: Duration::from_millis(u64::try_from(renew_every_ms).unwrap_or(1).max(1)),
        }
    }

    /// The lease as last renewed: what every write of the run carries as its fence.
    pub fn lease(&self) -> Lease {
        match self.lease.lock() {
            Ok(lease) => lease.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, lease: Lease) {
        match self.lease.lock() {
            Ok(mut held) => *held = lease,
            Err(poisoned) => *poisoned.into_inner() = lease,
        }
    }

    /// `Ok` while the run may still write: the lease was not lost and does not run out (unless
    /// renewed) within the safety margin. Called before every write of the run.
    pub fn check(&self) -> Result<(), StateError> {
        let lease = self.lease();
        let now = self.clock.now();
        if self.lost.load(Ordering::SeqCst) || now >= lease.expires_at - SAFETY_MARGIN_MS {
            self.lost.store(true, Ordering::SeqCst);
            return Err(StateError::LeaseLost {
                connection: lease.connection,
                expired_at: lease.expires_at,
            });
        }
        Ok(())
    }

    /// Renews the lease now and says whether the run may go on writing: before a batch of
    /// tenant writes, so that a run whose lease was broken or taken over learns it before its
    /// next write, not at the next heartbeat. A store that cannot be reached is tolerated while
    /// the lease lasts ([`Self::check`]).
    pub async fn confirm(&self) -> Result<(), StateError> {
        self.check()?;
        let current = self.lease();
        match self
            .state
            .renew_lease(&current, self.clock.now(), self.ttl_ms)
            .await
        {
            Ok(Some(renewed)) => {
                self.set(renewed);
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(
                    connection = %current.connection,
                    token = current.token,
                    "the run lease was taken over or broken; the run stops before its next write"
                );
                self.lost.store(true, Ordering::SeqCst);
                self.check()
            }
            Err(error) => {
                tracing::warn!(connection = %current.connection, error = %error, "could not renew the run lease");
                self.check()
            }
        }
    }

    /// Whether the lease was lost (renewal refused or impossible in time).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Renews the lease every `renew_every` until it is lost; returns then. Run it beside the
    /// work ([`Self::run`]); a store error is retried at the next beat while the lease lasts.
    pub async fn keep_alive(&self) {
        loop {
            tokio::time::sleep(self.renew_every).await;
            let current = self.lease();
            let now = self.clock.now();
            match self.state.renew_lease(&current, now, self.ttl_ms).await {
                Ok(Some(renewed)) => self.set(renewed),
                Ok(None) => {
                    tracing::warn!(
                        connection = %current.connection,
                        token = current.token,
                        "the run lease was taken over or broken; the run stops before its next write"
                    );
                    self.lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(error) => {
                    tracing::warn!(connection = %current.connection, error = %error, "could not renew the run lease; trying again");
                    if self.expired(&current, self.clock.now()) {
                        self.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }

    fn expired(&self, lease: &Lease, now: UnixMillis) -> bool {
        now >= lease.expires_at - SAFETY_MARGIN_MS
    }

    /// Runs `work` while keeping the lease alive. When the lease is lost the work goes on until
    /// its next [`Self::check`] (or fenced write) stops it.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        let mut beat = std::pin::pin!(self.keep_alive());
        let mut beating = true;
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(out) = work.as_mut().poll(cx) {
                return std::task::Poll::Ready(out);
            }
            if beating && beat.as_mut().poll(cx).is_ready() {
                beating = false;
            }
            std::task::Poll::Pending
        })
        .await
    }
}
