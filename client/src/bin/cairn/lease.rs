//! `cairn renew` and `cairn release`: an owner's lease on objects and datasets.

use cairn_client::keys;
use cairn_client::lease::{self, LeaseReport, parse_duration};
use serde_json::json;

use crate::cli::{Global, parse_cid};
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct RenewArgs {
    /// Object or dataset CIDs.
    #[arg(required = true)]
    cids: Vec<String>,
    /// How long from now the network is to hold them (`30d`, `12h`, `90m`).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    lease: std::time::Duration,
}

#[derive(clap::Args)]
pub(crate) struct ReleaseArgs {
    /// Object or dataset CIDs.
    #[arg(required = true)]
    cids: Vec<String>,
}

pub(crate) async fn renew(g: &Global, args: &RenewArgs) -> anyhow::Result<()> {
    let cids = args
        .cids
        .iter()
        .map(|c| parse_cid(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = keys::load(&g.key_path())?;
    let net = g.network().await?;
    let end = lease::end_epoch(&net, args.lease)?;
    let report = lease::renew(&net, &key, &cids, end).await?;
    show(g, "held through epoch", &report);
    Ok(())
}

pub(crate) async fn release(g: &Global, args: &ReleaseArgs) -> anyhow::Result<()> {
    let cids = args
        .cids
        .iter()
        .map(|c| parse_cid(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = keys::load(&g.key_path())?;
    let net = g.network().await?;
    let report = lease::release(&net, &key, &cids).await?;
    show(g, "released", &report);
    Ok(())
}

fn show(g: &Global, what: &str, report: &LeaseReport) {
    if g.json {
        out!("{}", json!(report));
        return;
    }
    for o in &report.objects {
        let problems = if o.problems.is_empty() {
            String::new()
        } else {
            format!(" ({} refused: {})", o.problems.len(), o.problems.join("; "))
        };
        if report.end_epoch == 0 {
            out!("{}  {what} on {} nodes{problems}", o.cid, o.keepers);
        } else {
            out!(
                "{}  {what} {} on {} nodes{problems}",
                o.cid,
                report.end_epoch,
                o.keepers
            );
        }
    }
    if report.end_epoch == 0 {
        eprintln!(
            "released: the nodes delete what no other lease holds once the uploads' own \
             holds and the grace have passed (docs/LEASES.md)"
        );
    }
}
