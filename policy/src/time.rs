//! Time as the policies see it: a [`Time`] is a point on a monotonic clock that the caller
//! owns. The client maps tokio's clock onto it (the time since its network view began); tests
//! and the simulator count it themselves. Nothing in this crate reads a clock.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time: how long after the caller's origin. Only differences mean anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(Duration);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(Duration::ZERO);

    /// The point `since` after the origin.
    pub const fn after(since: Duration) -> Self {
        Time(since)
    }

    /// The point `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Time(Duration::from_millis(ms))
    }

    /// How long after the origin this is.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this is (zero if `earlier` is later: clocks the callers map
    /// from never run backwards, but a value carried between two clocks could).
    pub fn since(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_saturate_at_zero() {
        let (a, b) = (Time::from_millis(1500), Time::from_millis(2000));
        assert_eq!(b - a, Duration::from_millis(500));
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!(a + Duration::from_millis(500), b);
        assert_eq!(Time::ZERO.since_origin(), Duration::ZERO);
    }
}
