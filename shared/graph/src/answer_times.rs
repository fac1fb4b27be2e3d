//! How long Graph takes to answer, and when an answer is late enough to act on.
//!
//! Graph now and then holds an answer back far longer than its usual time (the request may well
//! have been carried out: docs/graph-behaviour.md#uncertain-creates). Waiting the full request
//! timeout for it stalls everything that depends on the request. So each client keeps the times
//! of its recent answers per class of request, and an answer still missing after
//! [`AnswerTimes::slow_after`] is *late*: an idempotent request is then sent a second time and
//! the first answer of the two is taken (a hedged request); a create is given up and its outcome
//! looked up, as after any uncertain create. Hedges are budgeted so that a Graph that is slow
//! for everyone is not sent twice the load.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;

/// Answers remembered per class.
const WINDOW: usize = 64;
/// Until this many answers of a class are known, nothing is late before the request timeout.
const MIN_SAMPLES: usize = 16;
/// Late means slower than this many times a slow recent answer of the class, the slowest few
/// set aside (see [`AnswerTimes::late_after`]), so that one answer Graph held back and that was
/// waited for does not make every answer of the class wait as long …
const LATE_FACTOR: u32 = 4;
const OUTLIER_SHARE: usize = 16;
/// … and never sooner than this.
const LATE_FLOOR: Duration = Duration::from_secs(1);
/// At most one hedge per this many answers, plus a few.
const HEDGE_SHARE: u64 = 10;
const HEDGE_ALLOWANCE: u64 = 8;

/// Requests whose answer times are comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerClass {
    Read,
    Write,
    /// A `$batch` envelope of reads only.
    BatchOfReads,
    /// A `$batch` envelope holding a write: as slow as its slowest write.
    BatchOfWrites,
}

impl AnswerClass {
    /// The class of a single request (a `$batch` envelope is classed by its items: see
    /// [`AnswerClass::of_batch`]).
    pub(crate) fn of(method: &Method) -> AnswerClass {
        if *method == Method::GET {
            AnswerClass::Read
        } else {
            AnswerClass::Write
        }
    }

    pub(crate) fn of_batch(any_write: bool) -> AnswerClass {
        if any_write {
            AnswerClass::BatchOfWrites
        } else {
            AnswerClass::BatchOfReads
        }
    }

    /// The class whose answers stand in while too few of this one's are known: an envelope
    /// of writes is answered about when its slowest write is, since Graph may run a batch's
    /// independent items side by side (https://learn.microsoft.com/graph/json-batching).
    fn stand_in(self) -> Option<AnswerClass> {
        match self {
            AnswerClass::BatchOfWrites => Some(AnswerClass::Write),
            AnswerClass::BatchOfReads => Some(AnswerClass::Read),
            AnswerClass::Read | AnswerClass::Write => None,
        }
    }

    fn index(self) -> usize {
        match self {
            AnswerClass::Read => 0,
            AnswerClass::Write => 1,
            AnswerClass::BatchOfReads => 2,
            AnswerClass::BatchOfWrites => 3,
        }
    }
}

/// What to do when a request's answer is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenLate {
    /// Send the request again beside the first and take the first answer (idempotent
    /// requests).
    Hedge,
    /// Give the request up as a timeout: its caller looks the outcome up (creates).
    GiveUp,
    /// Give a `$batch` envelope of idempotent items up, when a hedge is left in the budget: its
    /// caller sends the items again in smaller envelopes, since Graph answers an envelope only
    /// once its slowest item is done and one held item holds them all. Without a hedge left,
    /// wait as [`WhenLate::Hedge`] does.
    Split,
    /// Wait up to the request timeout (a `$batch` holding creates: neither safe to re-send nor
    /// to look up as a whole).
    Wait,
}

/// Weights of the newest answer in the recent and the long-run answer time of a class.
const RECENT_WEIGHT: f64 = 1.0 / 16.0;
const LONG_RUN_WEIGHT: f64 = 1.0 / 512.0;

/// The answers of one class.
#[derive(Debug, Default)]
struct ClassTimes {
    window: VecDeque<Duration>,
    /// Exponentially weighted answer times (seconds); 0 before the first answer.
    recent: f64,
    long_run: f64,
}

/// Recent answer times of one client and its clones.
#[derive(Debug, Default)]
pub(crate) struct AnswerTimes {
    classes: [Mutex<ClassTimes>; 4],
    answers: AtomicU64,
    hedges: AtomicU64,
}

impl AnswerTimes {
    /// Remembers an answer; returns its class's recent answer time over the long-run one
    /// (about 1 while Graph answers as usual; higher when it starts queueing).
    pub(crate) fn record(&self, class: AnswerClass, took: Duration) -> f64 {
        self.answers.fetch_add(1, Ordering::Relaxed);
        let Ok(mut times) = self.classes[class.index()].lock() else {
            return 1.0;
        };
        if times.window.len() == WINDOW {
            times.window.pop_front();
        }
        times.window.push_back(took);
        let secs = took.as_secs_f64();
        if times.long_run <= 0.0 {
            times.recent = secs;
            times.long_run = secs;
        } else {
            times.recent += (secs - times.recent) * RECENT_WEIGHT;
            times.long_run += (secs - times.long_run) * LONG_RUN_WEIGHT;
        }
        if times.long_run > 0.0 {
            times.recent / times.long_run
        } else {
            1.0
        }
    }

    /// After how long an answer of `class` is late: [`LATE_FACTOR`] times the slowest of the
    /// last [`WINDOW`] answers once the slowest few are set aside (one fewer than 1 in
    /// [`OUTLIER_SHARE`]: 3 of 64), at least [`LATE_FLOOR`], at most `timeout` (also until
    /// [`MIN_SAMPLES`] answers are known).
    pub(crate) fn late_after(&self, class: AnswerClass, timeout: Duration) -> Duration {
        match self.late_after_of(class, timeout) {
            Some(late) => late,
            None => class
                .stand_in()
                .and_then(|other| self.late_after_of(other, timeout))
                .unwrap_or(timeout),
        }
    }

    /// [`Self::late_after`] from `class`'s own answers; `None` while too few are known.
    fn late_after_of(&self, class: AnswerClass, timeout: Duration) -> Option<Duration> {
        let Ok(times) = self.classes[class.index()].lock() else {
            return Some(timeout);
        };
        if times.window.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = times.window.iter().copied().collect();
        sorted.sort_unstable();
        let set_aside = (times.window.len() / OUTLIER_SHARE).saturating_sub(1);
        let slow = sorted
            .get(sorted.len().saturating_sub(1 + set_aside))
            .copied()
            .unwrap_or_default();
        Some(
            slow.saturating_mul(LATE_FACTOR)
                .max(LATE_FLOOR)
                .min(timeout),
        )
    }

    /// Takes a hedge from the budget, if one is left.
    pub(crate) fn take_hedge(&self) -> bool {
        let answers = self.answers.load(Ordering::Relaxed);
        let budget = answers / HEDGE_SHARE + HEDGE_ALLOWANCE;
        self.hedges
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h < budget).then_some(h + 1)
            })
            .is_ok()
    }

    pub(crate) fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_late_before_enough_answers_are_known() {
        let t = AnswerTimes::default();
        let timeout = Duration::from_secs(60);
        for _ in 0..MIN_SAMPLES - 1 {
            t.record(AnswerClass::Write, Duration::from_millis(100));
        }
        assert_eq!(t.late_after(AnswerClass::Write, timeout), timeout);
        t.record(AnswerClass::Write, Duration::from_millis(100));
        assert_eq!(t.late_after(AnswerClass::Write, timeout), LATE_FLOOR);
        // Classes are apart.
        assert_eq!(t.late_after(AnswerClass::Read, timeout), timeout);
        assert_eq!(t.late_after(AnswerClass::BatchOfReads, timeout), timeout);
        // An envelope of writes borrows from the writes until its own answers are known.
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, timeout),
            LATE_FLOOR
        );
        for _ in 0..MIN_SAMPLES {
            t.record(AnswerClass::BatchOfWrites, Duration::from_secs(1));
        }
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, timeout),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn late_follows_the_slowest_recent_answer_within_bounds() {
        let t = AnswerTimes::default();
        for i in 0..WINDOW as u64 {
            t.record(AnswerClass::BatchOfWrites, Duration::from_millis(500 + i));
        }
        // One answer held back does not move it; a few in the window do.
        t.record(AnswerClass::BatchOfWrites, Duration::from_secs(30));
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, Duration::from_secs(60)),
            Duration::from_millis(4 * 561)
        );
        for _ in 0..3 {
            t.record(AnswerClass::BatchOfWrites, Duration::from_secs(3));
        }
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, Duration::from_secs(60)),
            Duration::from_secs(12)
        );
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        // The slow answer leaves the window after WINDOW more.
        for _ in 0..WINDOW {
            t.record(AnswerClass::BatchOfWrites, Duration::from_millis(100));
        }
        assert_eq!(
            t.late_after(AnswerClass::BatchOfWrites, Duration::from_secs(60)),
            LATE_FLOOR
        );
    }

    #[test]
    fn hedges_are_budgeted() {
        let t = AnswerTimes::default();
        let granted = (0..100).filter(|_| t.take_hedge()).count() as u64;
        assert_eq!(granted, HEDGE_ALLOWANCE);
        for _ in 0..100 {
            t.record(AnswerClass::Read, Duration::from_millis(1));
        }
        let more = (0..100).filter(|_| t.take_hedge()).count() as u64;
        assert_eq!(more, 100 / HEDGE_SHARE);
        assert_eq!(t.hedges(), HEDGE_ALLOWANCE + 100 / HEDGE_SHARE);
        assert_eq!(AnswerClass::of_batch(false), AnswerClass::BatchOfReads);
        assert_eq!(AnswerClass::of(&Method::GET), AnswerClass::Read);
        assert_eq!(AnswerClass::of(&Method::PATCH), AnswerClass::Write);
    }

    #[test]
    fn the_ratio_rises_when_answers_slow_down() {
        let t = AnswerTimes::default();
        let mut ratio = 0.0;
        for _ in 0..1000 {
            ratio = t.record(AnswerClass::Write, Duration::from_millis(100));
        }
        assert!((ratio - 1.0).abs() < 1e-6, "{ratio}");
        for _ in 0..32 {
            ratio = t.record(AnswerClass::Write, Duration::from_millis(400));
        }
        assert!(ratio > 2.0, "{ratio}");
    }
}
