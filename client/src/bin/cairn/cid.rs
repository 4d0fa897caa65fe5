//! `cairn cid`: a file's raw CID, or the CID `cairn put` would give, without a network.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use cairn_chunker::cids;
use cairn_client::put::{Input, Progress, put_dir, put_object};
use serde_json::json;

use crate::cli::{Global, Shape};
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// File (or directory with --object).
    path: PathBuf,
    /// The manifest CID `cairn put` would produce (nothing is uploaded).
    #[arg(long)]
    object: bool,
    #[command(flatten)]
    shape: Shape,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let path = &args.path;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !args.object {
        if meta.is_dir() {
            bail!(
                "{} is a directory: add --object for the dataset CID `cairn put` would give",
                path.display()
            );
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        let cid = cids::from_hash(cids::Codec::Raw, &hasher.finalize());
        if g.json {
            out!(
                "{}",
                json!({"cid": cid.to_string(), "blake3": hasher.finalize().to_hex().to_string()})
            );
        } else {
            out!("{cid}");
        }
        return Ok(());
    }
    // The same code as `put`, without a network: the CIDs agree by construction.
    let key = ed25519_dalek::SigningKey::from_bytes(&[0u8; 32]);
    let opts = args.shape.options(0);
    let quiet: Progress = Arc::new(|_| {});
    let cid = if meta.is_dir() {
        put_dir(None, &key, path, &opts, quiet).await?.cid
    } else {
        let file = std::fs::File::open(path)?;
        put_object(None, &key, Input::Reader(Box::new(file)), &opts, quiet)
            .await
            .map_err(|e| e.reading_from(path))?
            .cid
    };
    if g.json {
        out!(
            "{}",
            json!({"cid": cid.to_string(), "k": opts.params.erasure.k, "m": opts.params.erasure.m})
        );
    } else {
        out!("{cid}");
    }
    Ok(())
}
