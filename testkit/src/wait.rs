//! Waiting for something that takes a while (a process to come up, a network to converge)
//! without waiting forever: a failing test fails, with what it was waiting for, instead of
//! hanging.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// A point in time after which a test stops waiting for `what` and fails.
///
/// Async tests poll with their runtime's sleep and call [`Deadline::check`] each round;
/// blocking code can use [`until`].
#[derive(Debug, Clone)]
pub struct Deadline {
    start: Instant,
    end: Instant,
    what: String,
}

impl Deadline {
    /// `timeout` from now, waiting for `what` (said in the failure: "the node starts").
    pub fn after(timeout: Duration, what: impl Into<String>) -> Self {
        let start = Instant::now();
        Self {
            start,
            end: start + timeout,
            what: what.into(),
        }
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Time left (zero once passed).
    pub fn left(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Panics once passed, saying what did not happen in time.
    #[track_caller]
    pub fn check(&self) {
        self.check_with("");
    }

    /// [`Deadline::check`], adding `detail` (the state last seen) to the failure.
    #[track_caller]
    pub fn check_with(&self, detail: impl Display) {
        if self.passed() {
            let detail = detail.to_string();
            let sep = if detail.is_empty() { "" } else { ": " };
            panic!(
                "gave up after {:.1?} waiting until {}{sep}{detail}",
                self.end - self.start,
                self.what
            );
        }
    }
}

/// Calls `f` every `every` until it returns `Some`, and returns that; panics, naming `what`,
/// when that takes longer than `timeout`. Blocks the thread: not for async code.
#[track_caller]
pub fn until<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Deadline::after(timeout, what);
    loop {
        if let Some(v) = f() {
            return v;
        }
        deadline.check();
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_arrives_in_time() {
        let mut n = 0;
        let got = until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            "n is 3",
            || {
                n += 1;
                (n == 3).then_some(n)
            },
        );
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting until pigs fly")]
    fn fails_naming_what_never_came() {
        until(
            Duration::from_millis(20),
            Duration::from_millis(1),
            "pigs fly",
            || None::<()>,
        );
    }

    #[test]
    fn a_deadline_says_the_last_state() {
        let d = Deadline::after(Duration::ZERO, "the nodes converge");
        assert!(d.passed() && d.left() == Duration::ZERO);
        let err = std::panic::catch_unwind(|| d.check_with("peers [1, 0, 2]")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("the nodes converge: peers [1, 0, 2]"), "{msg}");
    }
}
