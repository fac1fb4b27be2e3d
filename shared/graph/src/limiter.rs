//! How many requests a client keeps in flight: a fixed number, or one that adapts to Graph.
//!
//! When latency and not the quota is the limit, a fixed concurrency either leaves the quota idle
//! (too low) or queues requests inside Graph (too high). The adaptive limit starts low and grows
//! by one for each answer that came back in the usual time while every slot was in use (so it
//! doubles per round trip, as TCP's slow start); when answers slow down against their long-run
//! time while every slot is in use, it shrinks by a tenth, and when a throttling episode begins by
//! a quarter, at most once per round of answers.
//! Sporadic 429s (see `crate::pacing`) and late answers handled by hedging do not count.

use std::sync::Mutex;

use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

/// The adaptive limit starts here (or at the ceiling, if lower).
pub(crate) const ADAPTIVE_START: usize = 8;
/// An answer slower than this many times its class's long-run time means Graph is queueing.
const SLOWED_RATIO: f64 = 1.5;
/// Shrink factors.
const SLOWED_DECREASE: f64 = 0.9;
const THROTTLED_DECREASE: f64 = 0.75;

/// What one answer said about the load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// Answered; `ratio` is the class's recent answer time over its long-run one.
    Answered { ratio: f64 },
    /// The pacer saw a throttling episode begin.
    ThrottleEpisode,
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    /// Permits to forget as they come back (a shrink while they were in use).
    debt: usize,
    /// Answers since the last shrink: one shrink per round of answers.
    since_shrink: usize,
}

/// The requests in flight of one client and its clones.
#[derive(Debug)]
pub(crate) struct Limiter {
    semaphore: Semaphore,
    state: Mutex<LimitState>,
    ceiling: usize,
    adaptive: bool,
}

/// A slot; given back (or forgotten, after a shrink) when dropped.
pub(crate) struct Slot<'a> {
    permit: Option<SemaphorePermit<'a>>,
    limiter: &'a Limiter,
    /// Every slot was taken when this one was granted: the limit was what held requests back.
    pub(crate) saturated: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && self.limiter.take_debt()
        {
            permit.forget();
        }
    }
}

impl Limiter {
    /// `ceiling` requests in flight at most; `adaptive`: start at [`ADAPTIVE_START`] and adapt.
    pub(crate) fn new(ceiling: usize, adaptive: bool) -> Limiter {
        let ceiling = ceiling.max(1);
        let start = if adaptive {
            ADAPTIVE_START.min(ceiling)
        } else {
            ceiling
        };
        Limiter {
            semaphore: Semaphore::new(start),
            state: Mutex::new(LimitState {
                limit: start,
                debt: 0,
                since_shrink: 0,
            }),
            ceiling,
            adaptive,
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.state.lock().map(|s| s.limit).unwrap_or(self.ceiling)
    }

    pub(crate) async fn acquire(&self) -> Result<Slot<'_>, AcquireError> {
        let saturated = self.semaphore.available_permits() == 0;
        let permit = self.semaphore.acquire().await?;
        Ok(Slot {
            permit: Some(permit),
            limiter: self,
            saturated,
        })
    }

    fn take_debt(&self) -> bool {
        match self.state.lock() {
            Ok(mut s) if s.debt > 0 => {
                s.debt -= 1;
                true
            }
            _ => false,
        }
    }

    /// Learns from one answer (or episode) of a request that held a slot `saturated` or not.
    pub(crate) fn learn(&self, load: Load, saturated: bool) {
        if !self.adaptive {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.since_shrink += 1;
        let shrink_to = match load {
            Load::ThrottleEpisode => Some(THROTTLED_DECREASE),
            // Slower answers while slots were free are not ours to fix: fewer requests in flight
            // would not make them faster (and on a quiet client they are noise).
            Load::Answered { ratio } if ratio > SLOWED_RATIO && saturated => Some(SLOWED_DECREASE),
            Load::Answered { .. } => None,
        };
        match shrink_to {
            Some(factor) if s.since_shrink >= s.limit => {
                let new_limit = ((s.limit as f64 * factor).floor() as usize).max(1);
                let cut = s.limit - new_limit;
                s.limit = new_limit;
                s.since_shrink = 0;
                let forgotten = self.semaphore.forget_permits(cut);
                s.debt += cut - forgotten;
                tracing::debug!(limit = new_limit, ?load, "fewer Graph requests in flight");
            }
            Some(_) => {}
            None if saturated && s.limit < self.ceiling => {
                s.limit += 1;
                if s.debt > 0 {
                    s.debt -= 1;
                } else {
                    self.semaphore.add_permits(1);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat() -> Load {
        Load::Answered { ratio: 1.0 }
    }

    #[tokio::test]
    async fn grows_only_while_saturated_and_up_to_the_ceiling() {
        let l = Limiter::new(20, true);
        assert_eq!(l.limit(), ADAPTIVE_START);
        l.learn(flat(), false);
        assert_eq!(l.limit(), ADAPTIVE_START, "an idle limit does not grow");
        for _ in 0..100 {
            l.learn(flat(), true);
        }
        assert_eq!(l.limit(), 20);
        let slots: Vec<Slot<'_>> = futures::future::join_all((0..20).map(|_| l.acquire()))
            .await
            .into_iter()
            .map(|s| s.expect("slot"))
            .collect();
        assert!(!slots[0].saturated);
        assert_eq!(l.semaphore.available_permits(), 0);
    }

    #[tokio::test]
    async fn shrinks_once_per_round_and_forgets_slots_in_use() {
        let l = Limiter::new(64, true);
        for _ in 0..100 {
            l.learn(flat(), true);
        }
        assert_eq!(l.limit(), 64);
        let slots: Vec<Slot<'_>> = futures::future::join_all((0..64).map(|_| l.acquire()))
            .await
            .into_iter()
            .map(|s| s.expect("slot"))
            .collect();
        // The flat answers made a round already: the first slowed answer shrinks by a tenth.
        l.learn(Load::Answered { ratio: 3.0 }, true);
        assert_eq!(l.limit(), 57);
        // Then not before another round (57 answers).
        for _ in 0..56 {
            l.learn(Load::Answered { ratio: 3.0 }, true);
        }
        assert_eq!(l.limit(), 57, "one shrink per round");
        l.learn(Load::ThrottleEpisode, true);
        assert_eq!(l.limit(), 42);
        drop(slots);
        // The 22 slots cut while in use were forgotten as they came back.
        assert_eq!(l.semaphore.available_permits(), 42);
    }

    #[tokio::test]
    async fn slow_answers_with_slots_free_do_not_shrink_it() {
        let l = Limiter::new(64, true);
        for _ in 0..100 {
            l.learn(Load::Answered { ratio: 3.0 }, false);
        }
        assert_eq!(l.limit(), ADAPTIVE_START);
        l.learn(Load::ThrottleEpisode, false);
        assert_eq!(l.limit(), 6, "a throttling episode shrinks it all the same");
    }

    #[tokio::test]
    async fn a_fixed_limit_never_moves() {
        let l = Limiter::new(8, false);
        for _ in 0..100 {
            l.learn(flat(), true);
            l.learn(Load::ThrottleEpisode, true);
        }
        assert_eq!(l.limit(), 8);
        assert_eq!(l.semaphore.available_permits(), 8);
    }
}
