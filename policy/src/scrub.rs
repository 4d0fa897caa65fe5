//! Pacing the scrub: a node re-reads and re-verifies everything it holds at a set rate, in
//! steps, so that it finds rot before a reader does without taking the disk from readers.

use std::time::Duration;

/// Rest after a step that failed (the store's error is logged; the scrub tries again).
pub const AFTER_ERROR: Duration = Duration::from_secs(60);
/// Rest after a full pass over a store with nothing in it.
pub const WHEN_EMPTY: Duration = Duration::from_secs(60);

/// How long to wait before the next step, after a step that read `bytes` and checked `checked`
/// shards in `took`, at `rate` bytes per second: the step's share of the rate, less the time it
/// took; at least [`WHEN_EMPTY`] when it checked nothing (an empty store is not scanned in a
/// spin). `rate` 0 means the scrub is off (see [`enabled`]); this then rests as if empty.
pub fn rest(bytes: u64, checked: u64, took: Duration, rate: u64) -> Duration {
    let budget = if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(bytes as f64 / rate as f64)
    };
    let floor = if checked == 0 || rate == 0 {
        WHEN_EMPTY
    } else {
        Duration::ZERO
    };
    budget.max(floor).saturating_sub(took)
}

/// Whether a scrub runs at all at `rate` bytes per second.
pub fn enabled(rate: u64) -> bool {
    rate > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn a_step_takes_its_share_of_the_rate() {
        // 64 MiB at 32 MiB/s: 2 s of budget, 0.5 s of it spent reading.
        assert_eq!(
            rest(64 * MB, 10, Duration::from_millis(500), 32 * MB),
            Duration::from_millis(1500)
        );
        // A step slower than its budget goes on at once.
        assert_eq!(
            rest(64 * MB, 10, Duration::from_secs(3), 32 * MB),
            Duration::ZERO
        );
    }

    #[test]
    fn over_a_pass_the_rate_holds() {
        // 1 GiB in 4 MiB steps at 16 MiB/s, each step reading for 50 ms: ~64 s in all.
        let (rate, step, took) = (16 * MB, 4 * MB, Duration::from_millis(50));
        let total: Duration = (0..256).map(|_| took + rest(step, 4, took, rate)).sum();
        assert_eq!(total, Duration::from_secs(64));
    }

    #[test]
    fn an_empty_store_is_not_scanned_in_a_spin() {
        assert_eq!(rest(0, 0, Duration::ZERO, 32 * MB), WHEN_EMPTY);
        assert!(!enabled(0));
        assert!(enabled(1));
    }
}
