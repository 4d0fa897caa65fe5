//! Leases and garbage collection, as plain decisions: how long a shard or a manifest is held,
//! when it may be collected, how long a lease a duration buys.
//!
//! A shard holder keeps *holds* on each shard: one per (object, owner) that a lease statement
//! named, plus the *upload hold* the store itself took when the shard came in. A hold runs
//! through its `end` epoch; a released hold (statement `end` 0) counts as ended in the epoch
//! its release was signed ([`hold_end`]). The shard is kept through the latest end over its
//! holds ([`effective_end`]) and then `grace` epochs more ([`collectable`]), so a clock a little
//! off, a renewal a little late, or a release taken back in time loses nothing.
//!
//! A keeper (a node holding an object's manifest) keeps the owners' latest statements; the
//! manifest goes when every statement has ended and the grace has passed
//! ([`object_collectable`]). An object no statement was ever made for keeps its manifest.

/// The epoch a hold runs through: `end`, or for a release (`end` 0) the epoch it was signed
/// in (`signed_epoch`), so the grace after a release counts from the release.
pub fn hold_end(end: u64, signed_epoch: u64) -> u64 {
    if end == 0 { signed_epoch } else { end }
}

/// The epoch a shard is held through: the latest end over its holds (`None` with no hold).
pub fn effective_end(hold_ends: impl IntoIterator<Item = u64>) -> Option<u64> {
    hold_ends.into_iter().max()
}

/// Whether something held through epoch `end` may be collected in epoch `now`, `grace` epochs
/// after the end: `now > end + grace`.
pub fn collectable(end: u64, now: u64, grace: u64) -> bool {
    now > end.saturating_add(grace)
}

/// Whether a shard with holds ending at `hold_ends` may be collected in `now`: it has a hold,
/// and the latest has ended `grace` epochs ago. A shard with no hold is not collected here
/// (the caller decides from its lease).
pub fn shard_collectable(hold_ends: impl IntoIterator<Item = u64>, now: u64, grace: u64) -> bool {
    effective_end(hold_ends).is_some_and(|end| collectable(end, now, grace))
}

/// Whether a keeper may drop an object's manifest in `now`, given the ends of the owners'
/// standing statements on it (each through [`hold_end`]): at least one statement, and all
/// ended `grace` epochs ago. No statement at all keeps it (data from before leases, or whose
/// owner never said).
pub fn object_collectable(statement_ends: &[u64], now: u64, grace: u64) -> bool {
    !statement_ends.is_empty() && shard_collectable(statement_ends.iter().copied(), now, grace)
}

/// The last epoch of a lease of `duration_ms` taken in epoch `now` with epochs of `epoch_ms`:
/// `now + ceil(duration / epoch)`, at least `now + 1` (a lease always covers the next epoch),
/// saturating. `epoch_ms` 0 is taken as 1.
pub fn lease_end(now: u64, duration_ms: u64, epoch_ms: u64) -> u64 {
    let epochs = duration_ms.div_ceil(epoch_ms.max(1)).max(1);
    now.saturating_add(epochs)
}

/// How many of `candidates` a GC pass deletes at most: `batch`, so one pass never holds the
/// store (or a lock) for long; what is left waits for the next pass.
pub fn batch_len(candidates: usize, batch: usize) -> usize {
    candidates.min(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectable_only_after_the_grace_has_fully_passed() {
        assert!(!collectable(10, 10, 0));
        assert!(collectable(10, 11, 0));
        assert!(!collectable(10, 34, 24));
        assert!(collectable(10, 35, 24));
        // Held for ever: never.
        assert!(!collectable(u64::MAX, u64::MAX, 0));
        assert!(!collectable(u64::MAX - 1, u64::MAX, 5));
    }

    #[test]
    fn a_shard_is_held_through_its_latest_hold() {
        assert_eq!(effective_end([]), None);
        assert_eq!(effective_end([3, 90, 7]), Some(90));
        // The upload hold ended, a statement's runs on: kept.
        assert!(!shard_collectable([5, 90], 50, 2));
        assert!(!shard_collectable([5, 90], 92, 2));
        assert!(shard_collectable([5, 90], 93, 2));
        // No hold at all: not this rule's to collect.
        assert!(!shard_collectable([], 1_000, 0));
    }

    #[test]
    fn a_release_ends_its_hold_in_the_epoch_it_was_signed() {
        assert_eq!(hold_end(0, 40), 40);
        assert_eq!(hold_end(77, 40), 77);
        // A release by one owner leaves another's hold standing.
        let ends = [hold_end(0, 40), hold_end(100, 39)];
        assert!(!shard_collectable(ends, 60, 5));
        assert!(shard_collectable([hold_end(0, 40)], 46, 5));
        assert!(!shard_collectable([hold_end(0, 40)], 45, 5));
    }

    #[test]
    fn a_manifest_goes_only_when_every_statement_has_ended() {
        assert!(!object_collectable(&[], 1_000, 0), "no statement: kept");
        assert!(object_collectable(&[10, 20], 25, 4));
        assert!(!object_collectable(&[10, 20], 24, 4));
        assert!(!object_collectable(&[10, 2_000], 25, 4));
    }

    #[test]
    fn a_duration_buys_whole_epochs_rounded_up() {
        let hour = 3_600_000;
        assert_eq!(lease_end(100, 30 * 24 * hour, hour), 100 + 720);
        assert_eq!(lease_end(100, hour + 1, hour), 102);
        assert_eq!(lease_end(100, hour, hour), 101);
        assert_eq!(lease_end(100, 0, hour), 101, "at least the next epoch");
        assert_eq!(lease_end(u64::MAX - 1, 10 * hour, hour), u64::MAX);
        assert_eq!(lease_end(5, 3, 0), 8);
    }

    #[test]
    fn a_pass_deletes_at_most_a_batch() {
        assert_eq!(batch_len(10, 1_000), 10);
        assert_eq!(batch_len(5_000, 1_000), 1_000);
        assert_eq!(batch_len(0, 1_000), 0);
    }
}
