//! Leases: an owner's signed word on how long the network holds an object.
//!
//! [`renew`] signs a `cairn_proofs::lease::LeaseStatement` per object with the user's key
//! (the one `cairn put` signs provenance with) and gives it to the nodes keeping the object's
//! manifest; they keep it and carry it to the nodes holding the object's shards, which hold
//! the shards through its end. [`release`] signs a statement that ends the user's hold now:
//! once every owner's hold (and the upload's own, `proofs.lease_epochs` after the store) has
//! ended, plus a grace, the nodes delete the shards and the manifest. A release speaks only for
//! the key that signs it: another owner's lease on the same object, or another object sharing
//! a shard, keeps it. A dataset's lease covers the dataset manifest and every object or pack
//! manifest it lists.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_chunker::Cid;
use cairn_chunker::manifest::Location;
use cairn_proofs::lease::LeaseStatement;
use ed25519_dalek::SigningKey;

use crate::error::ClientError;
use crate::get::{Manifest, fetch_manifest};
use crate::network::Network;

/// What became of one object's statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectLease {
    /// The manifest the statement names.
    pub cid: String,
    /// Nodes that took it.
    pub keepers: usize,
    /// What nodes that did not take it said.
    pub problems: Vec<String>,
}

/// What a renewal or release did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseReport {
    /// The last epoch the objects are held through (0: released).
    pub end_epoch: u64,
    /// The epoch length, in milliseconds.
    pub epoch_ms: u64,
    /// Every object a statement was given for (datasets expanded).
    pub objects: Vec<ObjectLease>,
}

/// The network's epoch length in milliseconds, as its nodes report it.
pub fn epoch_ms(net: &Network) -> Result<u64, ClientError> {
    net.nodes()
        .iter()
        .find_map(|n| n.info.epoch_ms)
        .filter(|&ms| ms > 0)
        .ok_or(ClientError::NoEpoch)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The last epoch of a lease of `duration` from now: `now_epoch + ceil(duration / epoch)`.
pub fn end_epoch(net: &Network, duration: Duration) -> Result<u64, ClientError> {
    let epoch = epoch_ms(net)?;
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    Ok(cairn_policy::lease::lease_end(unix_ms() / epoch, ms, epoch))
}

/// Holds `cids` (object or dataset manifests) through epoch `end_epoch`, signed by `key`.
pub async fn renew(
    net: &Network,
    key: &SigningKey,
    cids: &[Cid],
    end_epoch: u64,
) -> Result<LeaseReport, ClientError> {
    state(net, key, cids, end_epoch.max(1)).await
}

/// Ends `key`'s hold on `cids` (object or dataset manifests) now.
pub async fn release(
    net: &Network,
    key: &SigningKey,
    cids: &[Cid],
) -> Result<LeaseReport, ClientError> {
    state(net, key, cids, 0).await
}

/// The manifests a lease on `cids` covers: each, and for a dataset every object and pack
/// manifest it lists.
pub async fn expand(net: &Network, cids: &[Cid]) -> Result<Vec<Cid>, ClientError> {
    let mut out = BTreeSet::new();
    for cid in cids {
        out.insert(*cid);
        if let Manifest::Dataset(d) = fetch_manifest(net, cid).await?.manifest {
            for entry in d.entries.values() {
                match &entry.location {
                    Location::Object(c) | Location::Packed { pack: c, .. } => {
                        out.insert(*c);
                    }
                    Location::Inline(_) => {}
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

async fn state(
    net: &Network,
    key: &SigningKey,
    cids: &[Cid],
    end: u64,
) -> Result<LeaseReport, ClientError> {
    let epoch_ms = epoch_ms(net).unwrap_or(0);
    let objects = expand(net, cids).await?;
    let signed_ms = unix_ms();
    let mut report = LeaseReport {
        end_epoch: end,
        epoch_ms,
        objects: Vec::new(),
    };
    for cid in objects {
        let statement = LeaseStatement::sign(key, &cid.to_bytes(), end, signed_ms).to_bytes();
        let keepers = net.locate(&[cid]).await.intact(&cid).to_vec();
        let sends = keepers.iter().map(|&i| {
            let target = net.nodes()[i].target;
            let statement = statement.clone();
            async move { (target, net.data().lease(&target, &[statement]).await) }
        });
        let (mut took, mut problems) = (0, Vec::new());
        for (target, answer) in futures::future::join_all(sends).await {
            match answer {
                Ok((accepted, _)) if accepted > 0 => took += 1,
                Ok((_, refused)) => {
                    problems.push(format!("{}: {}", target.peer, refused.join("; ")))
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if took == 0 {
            return Err(ClientError::LeaseNotTaken {
                cid: Box::new(cid),
                problems,
            });
        }
        report.objects.push(ObjectLease {
            cid: cid.to_string(),
            keepers: took,
            problems,
        });
    }
    Ok(report)
}

/// Parses a lease duration: a whole number and a unit, `s`, `m`, `h` or `d` (`30d`, `12h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write a number and a unit, like 30d"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "{other:?} is not a duration unit: use s, m, h or d (like 30d)"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text} is too long a lease"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("30").unwrap_err().contains("unit"));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
