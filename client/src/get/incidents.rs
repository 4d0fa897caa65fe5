//! Nodes that failed or misbehaved during a read, and what happened, grouped per node for
//! reporting.

use std::sync::{Arc, Mutex};

use libp2p::PeerId;

/// Nodes that misbehaved or failed during a read, and what happened.
#[derive(Debug, Default, Clone)]
pub struct Incidents(Arc<Mutex<Vec<(PeerId, String)>>>);

impl Incidents {
    pub(crate) fn record(&self, peer: PeerId, what: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((peer, what));
        }
    }

    /// Everything recorded so far.
    pub fn list(&self) -> Vec<(PeerId, String)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// `incidents` grouped by node, in peer-id order: each node's first problem and how many it
/// had (a dead node can cost an upload hundreds of shards: one line per node is enough).
pub fn per_node(incidents: &[(PeerId, String)]) -> Vec<(PeerId, usize, &str)> {
    let mut by_node = std::collections::BTreeMap::<PeerId, (usize, &str)>::new();
    for (peer, what) in incidents {
        by_node.entry(*peer).or_insert((0, what)).0 += 1;
    }
    by_node
        .into_iter()
        .map(|(peer, (n, first))| (peer, n, first))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_are_grouped_by_node_with_the_first_problem() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let noted = vec![
            (a, "shard 1: silent".to_string()),
            (b, "manifest: refused".to_string()),
            (a, "shard 2: silent".to_string()),
            (a, "shard 3: timed out".to_string()),
        ];
        let mut grouped = per_node(&noted);
        grouped.sort_by_key(|g| g.1);
        assert_eq!(
            grouped,
            vec![(b, 1, "manifest: refused"), (a, 3, "shard 1: silent")]
        );
        assert_eq!(per_node(&[]), vec![]);
    }
}
