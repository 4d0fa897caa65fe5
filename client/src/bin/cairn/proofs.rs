//! `cairn proofs`: every node's storage-proof record, as its peers' ledgers keep it.
//!
//! Each node's ledger folds in the audit receipts of every auditor it hears of; a node's own
//! ledger has no record of itself (no node audits itself), so a record is taken from the peer
//! that has heard the most about it.

use std::collections::BTreeMap;

use anyhow::bail;
use cairn_wire::protocol::RecordView;
use indicatif::HumanBytes;
use serde_json::json;

use crate::cli::Global;
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Show one node in detail (its peer id, as `cairn nodes` lists it).
    #[arg(long = "node")]
    node: Option<String>,
}

/// How much a record has seen: the better-informed reporter wins.
fn weight(r: &RecordView) -> (u64, u64) {
    (
        r.last_epoch,
        [r.faults, r.late, r.contained, r.offline, r.cleared]
            .iter()
            .fold(r.passes, |a, b| a.saturating_add(*b)),
    )
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let net = g.network().await?;
    if let Some(n) = &args.node
        && n.parse::<libp2p::PeerId>().is_err()
    {
        bail!("--node {n:?} is not a peer id (copy one from `cairn nodes`)");
    }
    let answers = net.records(args.node.as_deref()).await;
    if answers.is_empty() {
        bail!(
            "no node answered with proof records: are the nodes running a version with storage proofs (proofs.enabled = true)?"
        );
    }
    let epoch = answers.iter().map(|(_, e, _)| *e).max().unwrap_or(0);
    let mut best: BTreeMap<String, (String, RecordView)> = BTreeMap::new();
    for (reporter, _, records) in answers {
        for r in records {
            if r.peer_id == reporter {
                continue;
            }
            let better = best
                .get(&r.peer_id)
                .is_none_or(|(_, old)| weight(&r) > weight(old));
            if better {
                best.insert(r.peer_id.clone(), (reporter.clone(), r));
            }
        }
    }
    if let Some(n) = &args.node
        && !best.contains_key(n)
    {
        bail!(
            "no ledger has a record of {n} yet: it has not been audited (records start with the first epoch it is audited in; on a devnet, `--epoch 10s` makes that seconds)"
        );
    }
    let faulty = net.faulty();
    if g.json {
        let list: Vec<_> = best
            .values()
            .map(|(reporter, r)| {
                json!({
                    "record": r,
                    "reported_by": reporter,
                    "placement_excluded": faulty.contains(&r.peer_id),
                })
            })
            .collect();
        out!("{}", json!({ "epoch": epoch, "nodes": list }));
        return Ok(());
    }
    if let Some(n) = &args.node {
        let (reporter, r) = &best[n];
        detail(r, reporter, epoch, faulty.contains(n));
        return Ok(());
    }
    out!("epoch {epoch}");
    out!(
        "{:<52}  {:>6}  {:>6}  {:>7}  {:>6}  {:>5}  {:>6}  {:>6}  {:>8}  {:>6}  state",
        "node",
        "score",
        "passes",
        "proven",
        "faults",
        "late",
        "missed",
        "offl.",
        "declared",
        "probe"
    );
    for (reporter, r) in best.values() {
        let _ = reporter;
        out!(
            "{:<52}  {:>6}  {:>6}  {:>7}  {:>6}  {:>5}  {:>6}  {:>6}  {:>8}  {:>6}  {}",
            r.peer_id,
            format!("{:.3}", f64::from(r.score_milli) / 1000.0),
            r.passes,
            HumanBytes(r.proven_byte_epochs).to_string(),
            r.faults,
            r.late,
            r.contained,
            r.offline,
            r.declared,
            r.probe_median_ms
                .map_or("-".to_string(), |ms| format!("{ms}ms")),
            state(r)
        );
    }
    Ok(())
}

fn state(r: &RecordView) -> String {
    if r.faulty {
        format!("FAULTY ({} shards to repair)", r.repair_count)
    } else if r.faults > 0 {
        "ok (faults before)".into()
    } else {
        "ok".into()
    }
}

fn detail(r: &RecordView, reporter: &str, epoch: u64, excluded: bool) {
    out!("node        {}", r.peer_id);
    out!("as seen by  {reporter} (epoch {epoch})");
    out!(
        "state       {}{}",
        state(r),
        if excluded {
            "; clients place no new data on it"
        } else {
            ""
        }
    );
    out!(
        "score       {:.3} (0 to 1; a new node starts at 0.5)",
        f64::from(r.score_milli) / 1000.0
    );
    out!(
        "proven      {} byte-epochs over {} epochs ({} audits passed, last epoch heard of {})",
        HumanBytes(r.proven_byte_epochs),
        r.proven_epochs,
        r.passes,
        r.last_epoch
    );
    out!(
        "blips       {} late, {} unanswered (asked again), {} offline, {} answered when asked again",
        r.late,
        r.contained,
        r.offline,
        r.cleared
    );
    out!(
        "faults      {} reported, {} shards declared lost by the node itself, {} recovered",
        r.faults,
        r.declared,
        r.recoveries
    );
    match r.probe_median_ms {
        Some(ms) => {
            out!("probe       {ms} ms to the first verified byte of a random 64 KiB read (median)")
        }
        None => out!("probe       no service probe yet"),
    }
    for f in &r.recent_faults {
        out!(
            "  fault     epoch {}: {} ({} shards), reported by {}",
            f.epoch,
            f.kind,
            f.shards,
            f.auditor
        );
    }
    if r.repair_count > 0 {
        out!("repair      {} shards named for repair:", r.repair_count);
        for c in &r.repair {
            out!("  {c}");
        }
    }
}
