//! Several app registrations of one tenant behind one client.
//!
//! Graph's write quota is 3,000 writes per 150 s per (app, tenant) and 18,000 per 5 min per
//! tenant across apps (<https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits>):
//! one app reaches a third of what the tenant allows. A connection may therefore name several
//! app registrations of its tenant. Each is a lane: its own credentials, token and pacer, so
//! tokens, throttling and errors stay per app. Every request goes through the lane that admits
//! it first, and with more than one lane a shared tenant pacer keeps their sum under the
//! tenant's cap. A lane whose secret the tenant refuses is taken out with a warning naming its
//! app; its share moves to the others. The last lane is never taken out: its refusal is the
//! connection's error, as with a single app.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::{AuthError, GraphError};
use crate::pacing::{Cost, Pacer, PacerRegistry};
use crate::settings::{Credentials, PacingConfig};

/// What one app registration sent, for reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUsage {
    pub client_id: String,
    /// Write requests sent through this app (batch items counted one by one, retries too).
    pub writes: u64,
    /// Whether the tenant refused this app's credentials and it was taken out.
    pub refused: bool,
}

/// One app registration: credentials and the pacer of its (app, tenant) quota.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) credentials: Credentials,
    pub(crate) pacer: Arc<Pacer>,
    refused: AtomicBool,
    writes: AtomicU64,
}

impl Lane {
    pub(crate) fn count_writes(&self, writes: u64) {
        self.writes.fetch_add(writes, Ordering::Relaxed);
    }
}

/// The lanes of a client and the tenant's own write quota.
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    /// The tenant's quota across apps; only with several apps (one app's quota is below it).
    tenant: Option<Arc<Pacer>>,
    /// Where the next search for an admitting lane starts, so lanes take turns.
    next: AtomicUsize,
}

impl Lanes {
    /// Lanes for `apps`, every one of the same tenant; pacers come from `pacers`.
    pub(crate) fn new(
        apps: Vec<Credentials>,
        graph_host: &str,
        config: &PacingConfig,
        pacers: &PacerRegistry,
    ) -> Result<Lanes, GraphError> {
        let Some(first) = apps.first() else {
            return Err(GraphError::Config(
                "no app registration given; set client_id and client_secret".into(),
            ));
        };
        let tenant = first.tenant.trim().to_ascii_lowercase();
        let mut seen = std::collections::HashSet::new();
        for app in &apps {
            if app.tenant.trim().to_ascii_lowercase() != tenant {
                return Err(GraphError::Config(format!(
                    "app {} is given for tenant {}, the others for {}: every app registration of a \
                     connection must be in the connection's tenant",
                    app.client_id, app.tenant, first.tenant
                )));
            }
            if !seen.insert(app.client_id.trim().to_ascii_lowercase()) {
                return Err(GraphError::Config(format!(
                    "app {} is listed twice: list each app registration once (a second secret of \
                     the same app shares its quota and adds nothing)",
                    app.client_id
                )));
            }
        }
        let tenant_pacer =
            (apps.len() > 1).then(|| pacers.tenant_pacer(graph_host, &first.tenant, config));
        let lanes = apps
            .into_iter()
            .map(|credentials| Lane {
                pacer: pacers.pacer(
                    graph_host,
                    &credentials.client_id,
                    &credentials.tenant,
                    config,
                ),
                credentials,
                refused: AtomicBool::new(false),
                writes: AtomicU64::new(0),
            })
            .collect();
        Ok(Lanes {
            lanes,
            tenant: tenant_pacer,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn get(&self, index: usize) -> &Lane {
        &self.lanes[index.min(self.lanes.len() - 1)]
    }

    /// The first app: the one whose client id names the connection.
    pub(crate) fn primary(&self) -> &Lane {
        &self.lanes[0]
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Indexes of the lanes still in use.
    pub(crate) fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.lanes.len()).filter(|&i| !self.lanes[i].refused.load(Ordering::Relaxed))
    }

    /// The tenant pacer, when there is one.
    pub(crate) fn tenant_pacer(&self) -> Option<&Pacer> {
        self.tenant.as_deref()
    }

    /// Waits until the tenant's quota and one live lane admit `cost`, takes it from both and
    /// names the lane.
    pub(crate) async fn acquire(&self, cost: Cost) -> usize {
        if let Some(tenant) = &self.tenant {
            tenant.acquire(cost).await;
        }
        loop {
            let start = self.next.load(Ordering::Relaxed);
            let n = self.lanes.len();
            let mut soonest: Option<Duration> = None;
            let mut any_live = false;
            for step in 0..n {
                let i = (start + step) % n;
                let lane = &self.lanes[i];
                if lane.refused.load(Ordering::Relaxed) {
                    continue;
                }
                any_live = true;
                match lane.pacer.try_acquire(cost) {
                    None => {
                        self.next.store(i + 1, Ordering::Relaxed);
                        return i;
                    }
                    Some(wait) => soonest = Some(soonest.map_or(wait, |s| s.min(wait))),
                }
            }
            if !any_live {
                // Only reachable through a race with `refuse`, which keeps one lane: use it.
                return 0;
            }
            tokio::time::sleep(soonest.unwrap_or(Duration::from_millis(1))).await;
        }
    }

    /// The tenant refused lane `index`'s credentials with `error`. With another lane live it is
    /// taken out (true: send the request through another); the last live lane stays, and its
    /// error is the caller's.
    pub(crate) fn refuse(&self, index: usize, error: &GraphError) -> bool {
        if !refuses_the_app(error) || self.live().filter(|&i| i != index).count() == 0 {
            return false;
        }
        let lane = self.get(index);
        if !lane.refused.swap(true, Ordering::Relaxed) {
            let left: Vec<&str> = self
                .live()
                .map(|i| self.lanes[i].credentials.client_id.as_str())
                .collect();
            tracing::warn!(
                app = %lane.credentials.client_id,
                error = %error,
                apps_left = ?left,
                "the tenant refused this app registration's credentials; its writes move to the \
                 other apps until the credentials are fixed"
            );
        }
        true
    }

    /// What each app sent, in the order they were given.
    pub(crate) fn usage(&self) -> Vec<AppUsage> {
        self.lanes
            .iter()
            .map(|l| AppUsage {
                client_id: l.credentials.client_id.clone(),
                writes: l.writes.load(Ordering::Relaxed),
                refused: l.refused.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Whether `error` says the tenant will not let this app in (its secret is wrong or expired,
/// or it is not in the tenant), as opposed to a tenant-wide or passing failure.
fn refuses_the_app(error: &GraphError) -> bool {
    matches!(
        error,
        GraphError::Auth(
            AuthError::InvalidClientSecret { .. }
                | AuthError::ExpiredClientSecret { .. }
                | AuthError::UnknownApplication { .. }
                | AuthError::AssertionRejected { .. }
                | AuthError::Rejected { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn app(id: &str, tenant: &str) -> Credentials {
        Credentials::with_secret(tenant, id, SecretString::from("s"))
    }

    fn quota(writes: u32) -> PacingConfig {
        PacingConfig {
            write_quota: writes,
            write_window: Duration::from_secs(10),
            tenant_write_quota: writes * 2,
            tenant_write_window: Duration::from_secs(10),
            safety_factor: 1.0,
            ..PacingConfig::default()
        }
    }

    fn write() -> Cost {
        Cost {
            resource_units: 1,
            writes: 1,
        }
    }

    #[test]
    fn apps_of_another_tenant_or_listed_twice_are_refused_by_name() {
        let registry = PacerRegistry::new();
        let err = Lanes::new(
            vec![app("a", "contoso.com"), app("b", "fabrikam.com")],
            "h",
            &quota(10),
            &registry,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("app b is given for tenant fabrikam.com"),
            "{err}"
        );
        let err = Lanes::new(
            vec![app("a", "t"), app("A ", "t")],
            "h",
            &quota(10),
            &registry,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("app A  is listed twice"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_take_turns_and_the_tenant_quota_caps_their_sum() {
        let registry = PacerRegistry::new();
        let lanes = Lanes::new(
            vec![app("a", "t"), app("b", "t"), app("c", "t")],
            "h",
            &quota(10),
            &registry,
        )
        .unwrap();
        let start = tokio::time::Instant::now();
        let mut per_lane = [0u32; 3];
        for _ in 0..40 {
            per_lane[lanes.acquire(write()).await] += 1;
        }
        // The tenant's 20 in the first burst, then 20 more at its 2/s: 10 s. Three apps of
        // 10 each alone would have let 30 through at once.
        let took = start.elapsed().as_secs_f64();
        assert!((9.5..=10.5).contains(&took), "took {took} s");
        assert!(per_lane.iter().all(|&n| n >= 10), "{per_lane:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_app_is_taken_out_but_never_the_last_one() {
        let registry = PacerRegistry::new();
        let lanes = Lanes::new(
            vec![app("a", "t"), app("b", "t")],
            "h",
            &quota(10),
            &registry,
        )
        .unwrap();
        let refused = GraphError::Auth(AuthError::InvalidClientSecret {
            client_id: "a".into(),
        });
        let passing = GraphError::Auth(AuthError::Unavailable {
            detail: "down".into(),
        });
        assert!(
            !lanes.refuse(0, &passing),
            "a passing failure keeps the app"
        );
        assert!(lanes.refuse(0, &refused));
        assert!(!lanes.refuse(1, &refused), "the last app stays");
        for _ in 0..15 {
            assert_eq!(lanes.acquire(write()).await, 1);
        }
        let usage = lanes.usage();
        assert!(usage[0].refused && !usage[1].refused, "{usage:?}");
    }
}
