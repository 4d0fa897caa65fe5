//! Epochs and the knobs of the proof protocol.
//!
//! Epoch `e` covers wall-clock milliseconds `[e * length, (e + 1) * length)` since the Unix
//! epoch, so every node that agrees on the length and has a roughly set clock agrees on the
//! epoch without talking. The caller passes the time; nothing here reads a clock.

use std::time::Duration;

/// Epoch arithmetic for one epoch length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    length_ms: u64,
}

impl Epochs {
    /// Epochs of `length` (at least one second: shorter epochs leave no time to prove).
    pub fn new(length: Duration) -> Result<Self, ConfigError> {
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        if length_ms < 1000 {
            return Err(ConfigError(format!(
                "an epoch of {length_ms} ms is too short to prove in; use at least 1 s"
            )));
        }
        Ok(Epochs { length_ms })
    }

    /// Epoch length in milliseconds.
    pub fn length_ms(&self) -> u64 {
        self.length_ms
    }

    /// The epoch at wall-clock time `unix_ms`.
    pub fn at(&self, unix_ms: u64) -> u64 {
        unix_ms / self.length_ms
    }

    /// When `epoch` starts, in Unix milliseconds (saturating far in the future).
    pub fn start_ms(&self, epoch: u64) -> u64 {
        epoch.saturating_mul(self.length_ms)
    }

    /// How far into its epoch `unix_ms` is.
    pub fn into_epoch_ms(&self, unix_ms: u64) -> u64 {
        unix_ms % self.length_ms
    }
}

/// A configuration that cannot work, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proof configuration: {0}")]
pub struct ConfigError(pub String);

/// The proof protocol's parameters. Both sides of an audit must agree on `challenges` and
/// `target_chunks` (they decide what a valid proof contains); the rest is each auditor's and
/// each ledger's own policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofConfig {
    /// Epoch length.
    pub epochs: Epochs,
    /// Chunks challenged per proof, sampled uniformly over all committed bytes (`c`).
    pub challenges: u32,
    /// Chunks challenged in each shard an auditor names (targeted challenges).
    pub target_chunks: u32,
    /// Most shards one challenge names.
    pub max_targets: usize,
    /// Peers a node audits per epoch (beside the ones it holds in containment).
    pub audits_per_epoch: usize,
    /// Time an answer may take and still count.
    pub deadline: Duration,
    /// Time after the deadline in which an answer is late (earns nothing, is asked again) but
    /// is not a fault.
    pub grace: Duration,
    /// Unanswered challenges in a row (timeouts and late answers) after which a node is at
    /// fault for missing its proofs.
    pub max_contained: u32,
    /// Epochs a fault keeps a node faulty.
    pub fault_window: u64,
    /// Distinct auditors that must report a fault inside the window before the ledger calls a
    /// node faulty: one lying auditor cannot shut an honest node out.
    pub fault_quorum: usize,
    /// Epochs of commitments (and their trees) a prover keeps, so a node asked again under
    /// containment can still answer for the epoch of the first question.
    pub keep_epochs: u64,
}

impl ProofConfig {
    /// The production parameters: hour-long epochs, `c` = 32 (a node missing 1 % of its bytes
    /// fails an epoch with probability 27.5 % and a day with 99.95 %), ten minutes to answer,
    /// ten more of grace.
    pub fn production() -> Self {
        Self::with_epoch(Duration::from_secs(3600)).unwrap_or_else(|_| unreachable!("valid"))
    }

    /// Parameters for epochs of `length`: deadline and grace scale with the epoch (a sixth of
    /// it each, at most ten minutes), so a devnet with seconds-long epochs behaves like the
    /// real network, faster.
    pub fn with_epoch(length: Duration) -> Result<Self, ConfigError> {
        let epochs = Epochs::new(length)?;
        let sixth = (length / 6).min(Duration::from_secs(600));
        Ok(ProofConfig {
            epochs,
            challenges: 32,
            target_chunks: 2,
            max_targets: 16,
            audits_per_epoch: 3,
            deadline: sixth,
            grace: sixth,
            max_contained: 3,
            fault_window: 3,
            fault_quorum: 2,
            keep_epochs: 4,
        })
    }

    /// Checks the parameters for values that cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.challenges == 0 || self.challenges > crate::challenge::MAX_CHALLENGES {
            return bad(format!(
                "challenges = {} is outside 1..={}",
                self.challenges,
                crate::challenge::MAX_CHALLENGES
            ));
        }
        if self.target_chunks == 0 || self.target_chunks > 8 {
            return bad(format!(
                "target_chunks = {} is outside 1..=8",
                self.target_chunks
            ));
        }
        if self.max_targets > crate::challenge::MAX_TARGETS {
            return bad(format!(
                "max_targets = {} is over {}",
                self.max_targets,
                crate::challenge::MAX_TARGETS
            ));
        }
        let epoch = Duration::from_millis(self.epochs.length_ms());
        if self.deadline.is_zero() || self.deadline + self.grace >= epoch {
            return bad(format!(
                "deadline {:?} plus grace {:?} must be above zero and inside the {epoch:?} epoch",
                self.deadline, self.grace
            ));
        }
        if self.fault_quorum == 0 || self.max_contained == 0 || self.fault_window == 0 {
            return bad("fault_quorum, max_contained and fault_window must be at least 1".into());
        }
        if self.keep_epochs <= u64::from(self.max_contained) {
            return bad(format!(
                "keep_epochs ({}) must exceed max_contained ({}): a question asked again is \
                 about an epoch the prover must still keep",
                self.keep_epochs, self.max_contained
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cut_wall_clock_time() {
        let e = Epochs::new(Duration::from_secs(5)).unwrap();
        assert_eq!(e.at(0), 0);
        assert_eq!(e.at(4_999), 0);
        assert_eq!(e.at(5_000), 1);
        assert_eq!(e.start_ms(3), 15_000);
        assert_eq!(e.into_epoch_ms(16_250), 1_250);
        assert_eq!(e.start_ms(u64::MAX), u64::MAX);
        assert!(Epochs::new(Duration::from_millis(999)).is_err());
    }

    #[test]
    fn default_configs_check_and_bad_ones_do_not() {
        ProofConfig::production().check().unwrap();
        let p = ProofConfig::production();
        assert_eq!(p.deadline, Duration::from_secs(600));
        let dev = ProofConfig::with_epoch(Duration::from_secs(6)).unwrap();
        dev.check().unwrap();
        assert_eq!(dev.deadline, Duration::from_secs(1));
        let mut c = dev.clone();
        c.challenges = 0;
        assert!(c.check().is_err());
        let mut c = dev.clone();
        c.grace = Duration::from_secs(5);
        assert!(c.check().is_err());
        let mut c = dev;
        c.fault_quorum = 0;
        assert!(c.check().is_err());
    }
}
