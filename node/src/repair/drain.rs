//! Leaving the network: `cairn-node drain`.
//!
//! Draining is a file, `DATA_DIR/draining`, that `cairn-node drain` creates (so only someone
//! with the data directory can start it, and a restart keeps draining). A draining node says
//! so in its `Info`: clients place nothing new on it, and the keeper in charge of every object
//! with a shard on it copies that shard to the next-ranked live node (one read per shard, never
//! a delete). The node itself counts, each pass, how many of its shards and manifests some
//! other live node holds; when all are, it is safe to stop. Nothing is deleted, so a drain
//! killed half-way loses nothing: what was copied is copied, the rest is repaired like any
//! lost node's.
//!
//! A shard no keeper moves while the keepers make no progress for a few passes (one no manifest
//! names: an unfinished upload, a hedge's spare copy, or an object whose keepers are all gone)
//! is pushed by the draining node itself to the best-ranked node that takes data. While the
//! keepers are still moving shards (a large node takes them many passes, at their rate), the
//! node waits: pushing then would only copy what a keeper is about to move.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use cairn_chunker::cids::Cid;
use cairn_policy::placement;
use cairn_wire::protocol::MAX_DATA_HAS;
use serde::{Deserialize, Serialize};

use super::Repairer;
use super::view::View;

/// The file that marks a node as draining.
pub const DRAIN_FILE: &str = "draining";
/// Passes without progress (no more shards held elsewhere than at the pass before) a shard may
/// wait for a keeper to move it before the draining node pushes it itself.
pub const PUSH_AFTER_PASSES: u32 = 8;
/// Entries listed per store read.
const PAGE: usize = 1024;

/// Whether the node with data directory `dir` is draining.
pub fn is_draining(dir: &Path) -> bool {
    dir.join(DRAIN_FILE).exists()
}

/// The drain marker of a data directory.
pub fn marker(dir: &Path) -> PathBuf {
    dir.join(DRAIN_FILE)
}

/// How far a drain is (`GET /drain`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The node is draining.
    pub draining: bool,
    /// Shards it holds.
    pub shards: u64,
    /// Of those, held by another live node that takes data.
    pub shards_elsewhere: u64,
    /// Shards it pushed itself (no keeper moved them).
    pub shards_pushed: u64,
    /// Manifests it holds.
    pub manifests: u64,
    /// Of those, held by another live node that takes data.
    pub manifests_elsewhere: u64,
    /// Every shard and manifest is held elsewhere: stopping the node loses nothing.
    pub safe: bool,
    /// Repair passes counted since the drain began.
    pub passes: u64,
}

/// What a draining node remembers between passes.
#[derive(Debug, Default)]
pub struct DrainState {
    /// The last status.
    pub status: DrainStatus,
    /// Shards not held elsewhere, and for how many passes without progress.
    waiting: HashMap<Cid, u32>,
    /// The drain this state counts (the marker file's modification time): a drain cancelled
    /// and begun again starts from nothing.
    generation: Option<std::time::SystemTime>,
}

/// The drain marker's modification time, if the node is draining.
fn generation(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(marker(dir))
        .and_then(|m| m.modified())
        .ok()
}

impl Repairer {
    /// One drain pass: count what is held elsewhere, push what keepers left behind.
    pub(super) async fn drain_pass(&self, view: &View) {
        let others: Vec<usize> = (1..view.nodes.len())
            .filter(|&i| view.nodes[i].takes_data())
            .collect();
        let mut status = DrainStatus {
            draining: true,
            ..DrainStatus::default()
        };
        let now_generation = generation(&self.data_dir);
        if let Ok(mut d) = self.drain.lock()
            && d.generation != now_generation
        {
            *d = DrainState {
                generation: now_generation,
                ..DrainState::default()
            };
        }
        // A store that could not be read leaves the drain unfinished: never "safe" by
        // counting nothing.
        let mut complete = true;
        // Shards.
        let mut alone = HashSet::new();
        let mut after: Option<Cid> = None;
        loop {
            let store = self.store.clone();
            let page = tokio::task::spawn_blocking(move || store.list(after.as_ref(), PAGE))
                .await
                .ok()
                .and_then(Result::ok);
            let Some((entries, more)) = page else {
                complete = false;
                break;
            };
            let cids: Vec<Cid> = entries
                .iter()
                .filter(|(_, _, corrupt)| !corrupt)
                .map(|(c, _, _)| *c)
                .collect();
            after = entries.last().map(|(c, _, _)| *c);
            status.shards += cids.len() as u64;
            let held = self.held_elsewhere(view, &others, &cids).await;
            for c in cids {
                if held.contains_key(&c) {
                    status.shards_elsewhere += 1;
                } else {
                    alone.insert(c);
                }
            }
            if !more || after.is_none() {
                break;
            }
        }
        // Manifests.
        let mut after: Option<Cid> = None;
        loop {
            let store = self.store.clone();
            let Some(page) =
                tokio::task::spawn_blocking(move || store.manifests_after(after.as_ref(), PAGE))
                    .await
                    .ok()
                    .and_then(Result::ok)
            else {
                complete = false;
                break;
            };
            after = page.last().copied();
            status.manifests += page.len() as u64;
            let held = self.held_elsewhere(view, &others, &page).await;
            status.manifests_elsewhere += held.len() as u64;
            if page.len() < PAGE {
                break;
            }
        }
        // Shards waiting too long for a keeper: pushed to the best node that takes data.
        let push: Vec<Cid> = match self.drain.lock() {
            Ok(mut d) => {
                d.waiting.retain(|c, _| alone.contains(c));
                // Keepers moved something since the last pass: they are at work, wait for them.
                let progress = status.shards_elsewhere > d.status.shards_elsewhere;
                let mut push = Vec::new();
                for c in &alone {
                    let n = d.waiting.entry(*c).or_insert(0);
                    if !progress {
                        *n += 1;
                    }
                    if *n > PUSH_AFTER_PASSES {
                        push.push(*c);
                    }
                }
                status.passes = d.status.passes + 1;
                status.shards_pushed = d.status.shards_pushed;
                push
            }
            Err(_) => Vec::new(),
        };
        let candidates = view.candidates();
        for cid in push {
            let order = placement::rank(&cid.to_bytes(), &candidates);
            let Some(&n) = order.iter().find(|&&i| i != 0 && candidates[i].free > 0) else {
                continue;
            };
            let Some(t) = view.nodes[n].target else {
                continue;
            };
            let store = self.store.clone();
            let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || store.read_shard(&cid)).await
            else {
                continue;
            };
            match self.data.store(&t, &cid, bytes.into()).await {
                Ok(_) => {
                    status.shards_pushed += 1;
                    tracing::info!(
                        target: "cairn::_events::drain",
                        %cid,
                        to = %t.peer,
                        "no keeper moved a shard: pushed it to the best-ranked node"
                    );
                }
                Err(e) => tracing::info!(%cid, to = %t.peer, "drain: push failed: {e}"),
            }
        }
        status.safe = complete
            && status.shards_elsewhere == status.shards
            && status.manifests_elsewhere == status.manifests;
        if status.safe {
            tracing::info!(
                target: "cairn::_events::drain",
                shards = status.shards,
                manifests = status.manifests,
                "drained: every shard and manifest is held by another node; safe to stop"
            );
        } else {
            tracing::info!(
                target: "cairn::_events::drain",
                shards = status.shards,
                elsewhere = status.shards_elsewhere,
                manifests = status.manifests,
                manifests_elsewhere = status.manifests_elsewhere,
                "draining"
            );
        }
        if let Ok(mut d) = self.drain.lock() {
            d.status = status;
        }
    }

    /// Which of `cids` some node of `others` holds intact.
    async fn held_elsewhere(
        &self,
        view: &View,
        others: &[usize],
        cids: &[Cid],
    ) -> HashMap<Cid, usize> {
        let mut held = HashMap::new();
        if cids.is_empty() {
            return held;
        }
        let asks = others.iter().map(|&i| async move {
            let mut out = Vec::new();
            let Some(t) = view.nodes[i].target else {
                return out;
            };
            for chunk in cids.chunks(MAX_DATA_HAS) {
                match self.data.has(&t, chunk).await {
                    Ok(h) => out.extend(
                        chunk
                            .iter()
                            .zip(h)
                            .filter(|(_, h)| h.intact().is_some())
                            .map(|(c, _)| (*c, i)),
                    ),
                    Err(_) => break,
                }
            }
            out
        });
        for list in futures::future::join_all(asks).await {
            held.extend(list);
        }
        held
    }

    /// The drain's progress, as of the last pass.
    pub fn drain_status(&self) -> DrainStatus {
        let draining = is_draining(&self.data_dir);
        match self.drain.lock() {
            Ok(d) if draining => d.status.clone(),
            _ => DrainStatus::default(),
        }
    }
}
