//! The invocation's deadline, and the guard that holds every claim and PUT to it.

use std::time::Duration;

pub(crate) use pipeline::ports::before;

/// When the invocation must have answered Lambda: claims and PUTs are not started, and those in
/// flight are given up (their records reported for redelivery), once too little time is left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// Claims end here, leaving time for the PUTs of what they claimed.
    pub(crate) claims_until: tokio::time::Instant,
    /// PUTs end here, leaving time to answer.
    pub(crate) writes_until: tokio::time::Instant,
}

impl Deadline {
    /// From the time left, with a margin of a tenth of it (at least 200 ms, at most 3 s): claims
    /// end three margins before the deadline, PUTs one margin before it, so the writes get two
    /// margins and the answer one.
    pub fn within(left: Duration) -> Deadline {
        let now = tokio::time::Instant::now();
        let margin = (left / 10).clamp(Duration::from_millis(200), Duration::from_secs(3));
        Deadline {
            claims_until: now + left.saturating_sub(margin * 3),
            writes_until: now + left.saturating_sub(margin),
        }
    }

    /// From the Runtime API's deadline (epoch milliseconds).
    pub fn at_epoch_ms(deadline_ms: u64) -> Deadline {
        let now_ms = (pipeline::time::now_micros() / 1000) as u64;
        Deadline::within(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }

    /// No deadline (tests, replays run by hand).
    pub fn none() -> Deadline {
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        Deadline {
            claims_until: far,
            writes_until: far,
        }
    }
}
