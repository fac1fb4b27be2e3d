//! Faults a request may meet on its way: scripted rules ([`crate::FaultRule`], first match
//! wins) and the random shares of the knobs.

use http::{Method, StatusCode};
use rand::Rng;

use super::pipeline::is_write;
use crate::Inner;
use crate::config::FaultStatus;
use crate::wire::GraphError;

/// Whether and when a request fails: before or after the tenant applied it, or by timing out.
pub(super) enum Fault {
    None,
    Before(u16, Option<f64>),
    After(u16, Option<f64>),
    Timeout,
}

pub(super) fn decide_fault(inner: &Inner, method: &Method, path: &str) -> Fault {
    {
        let mut rules = inner.lock_faults();
        if let Some(pos) = rules
            .iter()
            .position(|r| r.count > 0 && r.matches(method.as_str(), path))
        {
            let rule = rules[pos].clone();
            rules[pos].count -= 1;
            if rules[pos].count == 0 {
                rules.remove(pos);
            }
            return match rule.status {
                FaultStatus::Timeout(_) => Fault::Timeout,
                FaultStatus::Status(429) => Fault::Before(429, rule.retry_after),
                FaultStatus::Status(s) if rule.applied => Fault::After(s, rule.retry_after),
                FaultStatus::Status(s) => Fault::Before(s, rule.retry_after),
            };
        }
    }
    let knobs = inner.knobs();
    let f = &knobs.faults;
    let total = f.share_429 + f.share_500 + f.share_503 + f.share_timeout;
    if total <= 0.0 {
        return Fault::None;
    }
    let mut rng = inner.lock_rng();
    let roll: f64 = rng.random();
    let retry = Some(f.retry_after_secs);
    let after = is_write(method) && rng.random::<f64>() < f.after_write_share;
    if roll < f.share_429 {
        Fault::Before(429, retry)
    } else if roll < f.share_429 + f.share_500 {
        if after {
            Fault::After(500, None)
        } else {
            Fault::Before(500, None)
        }
    } else if roll < f.share_429 + f.share_500 + f.share_503 {
        if after {
            Fault::After(503, retry)
        } else {
            Fault::Before(503, retry)
        }
    } else if roll < total {
        Fault::Timeout
    } else {
        Fault::None
    }
}

fn fmt_secs(s: f64) -> String {
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub(super) fn fault_error(status: u16, retry_after: Option<f64>) -> GraphError {
    let mut e = match status {
        429 => {
            let mut e = GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry again later.",
            );
            e.inner_code = Some("429");
            e
        }
        503 => GraphError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        504 => GraphError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "The operation timed out.",
        ),
        _ => GraphError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Service_InternalServerError",
            "Encountered an internal server error.",
        ),
    };
    if let Some(r) = retry_after {
        e = e.with_header("Retry-After", fmt_secs(r));
    }
    e
}
