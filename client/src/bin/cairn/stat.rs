//! `cairn stat`: an object's layout and where every shard is.

use anyhow::bail;
use cairn_client::get::{Manifest, fetch_manifest};
use cairn_client::verify;

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
    let fetched = fetch_manifest(&net, &cid).await?;
    let mut signers: Vec<String> = fetched.provenance.iter().map(|p| p.signer_hex()).collect();
    signers.sort();
    signers.dedup();
    let Manifest::Object(m) = &fetched.manifest else {
        bail!("{cid} is a dataset: `cairn ls {cid}` lists its files; stat one of their objects");
    };
    let st = verify::stat_object(&net, &cid, m, signers).await;
    if g.json {
        out!("{}", serde_json::to_string(&st)?);
        return Ok(());
    }
    out!("object   {}", st.cid);
    out!("size     {} bytes, b3sum {}", st.size, st.blake3);
    out!(
        "code     {} {}+{}, shards up to {} bytes{}",
        st.code,
        st.k,
        st.m,
        st.shard_size,
        if st.inline { ", inline" } else { "" }
    );
    out!("signed   {}", st.signers.join(", "));
    out!(
        "manifest on {} node(s): {}",
        st.manifest_holders.len(),
        st.manifest_holders.join(", ")
    );
    for s in &st.stripes {
        out!(
            "stripe {} ({} of {} shards live, {} needed)",
            s.index,
            s.live,
            s.shards.len(),
            s.need
        );
        for sh in &s.shards {
            let holders = if sh.holders.is_empty() {
                "MISSING".to_string()
            } else {
                sh.holders.join(", ")
            };
            out!(
                "  [{:>2}] {} {:>8} B  {}",
                sh.index,
                sh.cid,
                sh.len,
                holders
            );
        }
    }
    Ok(())
}
