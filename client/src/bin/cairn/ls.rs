//! `cairn ls`: a dataset's files, or an object's size and hash.

use cairn_chunker::manifest::Location;
use cairn_client::get::{Manifest, fetch_manifest};
use serde_json::json;

use crate::cli::{Global, parse_cid};
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Dataset or object CID.
    cid: String,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let cid = parse_cid(&args.cid)?;
    let net = g.network().await?;
    let fetched = fetch_manifest(&net, &cid).await?;
    match fetched.manifest {
        Manifest::Dataset(d) => {
            if g.json {
                let entries: Vec<_> = d
                    .entries
                    .iter()
                    .map(|(p, e)| json!({"path": p, "size": e.size, "blake3": e.blake3.to_hex().to_string(), "location": location(&e.location)}))
                    .collect();
                out!(
                    "{}",
                    json!({"cid": cid.to_string(), "kind": "dataset", "entries": entries})
                );
            } else {
                for (p, e) in &d.entries {
                    out!("{:>12}  {}  {}", e.size, e.blake3.to_hex(), p);
                }
            }
        }
        Manifest::Object(m) => {
            if g.json {
                out!(
                    "{}",
                    json!({"cid": cid.to_string(), "kind": "object", "size": m.size, "blake3": m.blake3.to_hex().to_string(), "content_type": m.content_type})
                );
            } else {
                out!("{:>12}  {}  (object {})", m.size, m.blake3.to_hex(), cid);
            }
        }
    }
    Ok(())
}

/// Where a dataset entry's bytes are, as `--json` gives it.
fn location(l: &Location) -> serde_json::Value {
    match l {
        Location::Object(c) => json!({"object": c.to_string()}),
        Location::Packed { pack, offset } => json!({"pack": pack.to_string(), "offset": offset}),
        Location::Inline(b) => json!({"inline": b.len()}),
    }
}
