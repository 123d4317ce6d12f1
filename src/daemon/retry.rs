//! The retry schedule: a message whose relay failed for now waits with a
//! backoff of its own (5 s doubling to 10 min) while the rest go on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::relay::RelayError;

/// First retry delay after a temporary relay failure.
const RETRY_FIRST: Duration = Duration::from_secs(5);

/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// After this many failed attempts a retry is logged as an error.
const ATTEMPTS_BEFORE_ERROR: u32 = 10;

/// Per-message retry schedule, for the UIDs of one UIDVALIDITY.
#[derive(Debug, Default)]
pub(super) struct Retries {
    /// The UIDVALIDITY the UIDs belong to.
    uidvalidity: u32,
    /// UID → (failed attempts, when it is due again).
    due: HashMap<u32, (u32, Instant)>,
}

impl Retries {
    /// Forgets the schedule when the folder's UIDs changed meaning.
    pub(super) fn reset_for(&mut self, uidvalidity: u32) {
        if self.uidvalidity != uidvalidity {
            self.uidvalidity = uidvalidity;
            self.due.clear();
        }
    }

    pub(super) fn is_due(&self, uid: u32, now: Instant) -> bool {
        self.due.get(&uid).is_none_or(|(_, at)| *at <= now)
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }

    /// Drops UIDs no longer in the inbox.
    pub(super) fn keep_only(&mut self, present: &[u32]) {
        self.due.retain(|uid, _| present.binary_search(uid).is_ok());
    }

    /// How many messages wait for a retry or a second look.
    pub(super) fn waiting(&self) -> usize {
        self.due.len()
    }

    pub(super) fn forget(&mut self, uid: u32) {
        self.due.remove(&uid);
    }

    /// Looks at `uid` again after `delay`, without counting a failure.
    pub(super) fn later(&mut self, uid: u32, delay: Duration) {
        let attempts = self.due.get(&uid).map_or(0, |(n, _)| *n);
        self.due.insert(uid, (attempts, Instant::now() + delay));
    }

    /// Counts a failed attempt and schedules the next with backoff.
    pub(super) fn failed(&mut self, uid: u32, error: &RelayError, setup: bool) {
        let attempts = self.due.get(&uid).map_or(0, |(n, _)| *n) + 1;
        let delay = backoff(attempts);
        self.due.insert(uid, (attempts, Instant::now() + delay));
        let retry_in_s = delay.as_secs();
        let reply = error.reply();
        if setup || attempts >= ATTEMPTS_BEFORE_ERROR {
            tracing::error!(uid, attempts, retry_in_s, %reply, "relay failed; still in the inbox");
        } else {
            tracing::warn!(uid, attempts, retry_in_s, %reply, "relay failed for now; will retry");
        }
    }
}

/// The delay before attempt `attempts + 1`: 5 s doubling, at most 10 min.
fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff(1000), RETRY_MAX);
    }

    #[test]
    fn retries_skip_messages_until_due_and_forget_vanished_ones() {
        let mut r = Retries::default();
        r.reset_for(7);
        let now = Instant::now();
        r.later(3, Duration::from_secs(60));
        assert!(!r.is_due(3, now));
        assert!(r.is_due(4, now));
        assert!(r.next_due().is_some());
        r.keep_only(&[4, 5]);
        assert!(r.is_due(3, now));
        r.later(4, Duration::from_secs(60));
        r.reset_for(8);
        assert!(r.is_due(4, now));
    }
}
