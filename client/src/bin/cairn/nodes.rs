//! `cairn nodes`: the storage nodes this client sees, with their space.

use cairn_wire::protocol::NodeInfo;
use indicatif::HumanBytes;
use serde_json::json;

use crate::cli::Global;
use crate::ui::out;

pub(crate) async fn run(g: &Global) -> anyhow::Result<()> {
    let net = g.network().await?;
    let mut nodes: Vec<&NodeInfo> = net.nodes().iter().map(|n| &n.info).collect();
    nodes.sort_by(|a, b| (&a.label, &a.peer_id).cmp(&(&b.label, &b.peer_id)));
    let (shards, used, free) = nodes.iter().fold((0, 0, 0), |(s, u, f), n| {
        (s + n.shards, u + n.used, f + n.free())
    });
    let full = nodes.iter().filter(|n| n.free() == 0).count();
    if g.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "peer_id": n.peer_id,
                    "label": n.label,
                    "version": n.version,
                    "data_addrs": n.data_addrs,
                    "shards": n.shards,
                    "used": n.used,
                    "manifest_bytes": n.manifest_bytes,
                    "capacity": n.capacity,
                    "disk_room": n.disk_room,
                    "free": n.free(),
                })
            })
            .collect();
        out!(
            "{}",
            json!({"nodes": list, "shards": shards, "used": used, "free": free, "full": full})
        );
        return Ok(());
    }
    out!(
        "{:<52}  {:<12}  {:>8}  {:>11}  {:>11}  {:>11}  version",
        "node",
        "label",
        "shards",
        "used",
        "free",
        "capacity"
    );
    for n in &nodes {
        out!(
            "{:<52}  {:<12}  {:>8}  {:>11}  {:>11}  {:>11}  {}{}",
            n.peer_id,
            n.label.as_deref().unwrap_or("-"),
            n.shards,
            HumanBytes(n.used).to_string(),
            HumanBytes(n.free()).to_string(),
            HumanBytes(n.capacity).to_string(),
            n.version,
            match n.disk_room {
                Some(room) if room < n.capacity.saturating_sub(n.space().used) => {
                    "  (limited by its disk)"
                }
                _ => "",
            }
        );
    }
    out!(
        "{} nodes{}: {} shards, {} used, {} free",
        nodes.len(),
        if full > 0 {
            format!(" ({full} full)")
        } else {
            String::new()
        },
        shards,
        HumanBytes(used),
        HumanBytes(free)
    );
    Ok(())
}
