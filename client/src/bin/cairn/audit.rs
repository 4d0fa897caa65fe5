//! `cairn audit`: challenge the nodes holding an object's shards to prove they still hold
//! them, by name, with the storage receipts kept beside its manifest.

use cairn_client::audit::audit_receipts;
use serde_json::json;

use crate::cli::{Global, parse_cid};
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Object CID.
    cid: String,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let cid = parse_cid(&args.cid)?;
    let net = g.network().await?;
    let receipts = net.receipts(&cid).await?;
    let audits = audit_receipts(&net, &receipts).await?;
    let failed = audits.iter().filter(|a| a.verdict == "fault").count();
    if g.json {
        out!(
            "{}",
            json!({"cid": cid.to_string(), "receipts": receipts.len(), "nodes": audits, "faults": failed})
        );
    } else {
        out!(
            "{} receipts for {cid}, held by {} nodes",
            receipts.len(),
            audits.len()
        );
        for a in &audits {
            let named = if a.due < a.receipts {
                format!(
                    "{} of {} shards named ({} taken too recently: named from the second epoch after)",
                    a.named,
                    a.receipts,
                    a.receipts - a.due
                )
            } else {
                format!("{} of {} shards named", a.named, a.receipts)
            };
            out!(
                "{:<52}  {:<9}  {:>5} ms  {named}{}{}",
                a.peer_id,
                a.verdict,
                a.latency_ms,
                if a.detail.is_empty() { "" } else { ": " },
                a.detail
            );
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} node(s) failed the audit: their shards are at risk; `cairn verify {cid}` checks every copy, and `cairn proofs` shows their records"
        );
    }
    Ok(())
}
