//! `cairn verify`: a full audit of an object or dataset.

use anyhow::bail;
use cairn_client::verify;

use crate::cli::{Global, parse_cid};
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Object or dataset CID.
    cid: String,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let cid = parse_cid(&args.cid)?;
    let net = g.network().await?;
    let report = verify::verify(&net, &cid).await;
    if g.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.problems {
            out!("PROBLEM: {p}");
        }
        out!(
            "{}: {} manifests, {} shard copies, {} stripes checked, {} problems",
            if report.ok() { "OK" } else { "FAILED" },
            report.manifests,
            report.shard_copies,
            report.stripes,
            report.problems.len()
        );
    }
    if !report.ok() {
        bail!(
            "{cid} failed verification ({} problems)",
            report.problems.len()
        );
    }
    Ok(())
}
