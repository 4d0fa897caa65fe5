//! `cairn put`: a file as an object, a directory as a dataset, optionally published over S3.

use std::path::PathBuf;

use anyhow::Context;
use cairn_chunker::manifest::Source;
use cairn_client::keys;
use cairn_client::put::{Input, put_dir, put_object};
use serde_json::json;

use crate::cli::{Global, Shape};
use crate::publish;
use crate::ui::{failed_nodes, out, progress_bar};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// File or directory.
    path: PathBuf,
    #[command(flatten)]
    shape: Shape,
    /// Content type of a single file.
    #[arg(long)]
    content_type: Option<String>,
    /// Where the data came from (URL, DOI...), recorded in the signed provenance.
    #[arg(long)]
    source: Option<String>,
    /// Licence of the data (SPDX id), recorded with --source.
    #[arg(long, requires = "source")]
    license: Option<String>,
    /// Also make the upload visible over S3 in this bucket (created if missing) through the
    /// gateway: a file as s3://BUCKET/PREFIX/NAME, a directory's files as s3://BUCKET/PREFIX/PATH.
    /// Their ETags are their MD5s, as S3 gives them, computed while uploading.
    #[arg(long)]
    bucket: Option<String>,
    /// Key prefix under --bucket.
    #[arg(long, default_value = "", requires = "bucket")]
    prefix: String,
    /// The gateway's admin address (default: the devnet's gateway).
    #[arg(long, env = "CAIRN_GATEWAY", requires = "bucket")]
    gateway: Option<String>,
    /// The gateway's admin token: its secret key (default: the devnet's).
    #[arg(
        long,
        env = "CAIRN_GATEWAY_TOKEN",
        hide_env_values = true,
        requires = "bucket"
    )]
    gateway_token: Option<String>,
    /// How long the network is to hold it under your key's lease (`30d`, `12h`); `cairn renew`
    /// extends it, `cairn release` ends it.
    #[arg(long, default_value = "30d", value_parser = cairn_client::lease::parse_duration)]
    lease: std::time::Duration,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let path = &args.path;
    let key = keys::load(&g.key_path())?;
    let net = g.network().await?;
    let mut opts = args.shape.options(net.nodes().len());
    opts.content_type = args.content_type.clone();
    // Files published over S3 get the ETag S3 clients expect: their MD5.
    opts.md5 = args.bucket.is_some();
    opts.source = args.source.as_ref().map(|uri| Source {
        uri: uri.clone(),
        license: args.license.clone(),
        digest: None,
        note: None,
    });
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The gateway to publish to is checked before uploading, not after.
    let target = match &args.bucket {
        Some(b) => Some(publish::target(
            g,
            args.gateway.as_deref(),
            args.gateway_token.as_deref(),
            b,
        )?),
        None => None,
    };
    let (cid, mut report, summary, md5s, incidents) = if meta.is_dir() {
        let total: u64 = cairn_client::put::walk(path)?.iter().map(|f| f.2).sum();
        let (bar, progress) = progress_bar(g, total, "uploading");
        let r = put_dir(Some(&net), &key, path, &opts, progress).await?;
        bar.finish_and_clear();
        (
            r.cid,
            json!({"cid": r.cid.to_string(), "kind": "dataset", "files": r.files, "bytes": r.bytes,
                   "packs": r.packs, "objects": r.objects, "shards": r.shards, "receipts": r.receipts,
                   "manifest_copies": r.manifest_copies}),
            format!(
                "dataset: {} files, {} bytes in {} packs + {} objects, {} shards ({} storage receipts), manifest on {} nodes",
                r.files, r.bytes, r.packs, r.objects, r.shards, r.receipts, r.manifest_copies
            ),
            r.md5,
            r.incidents,
        )
    } else {
        let (bar, progress) = progress_bar(g, meta.len(), "uploading");
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let r = put_object(
            Some(&net),
            &key,
            Input::Reader(Box::new(file)),
            &opts,
            progress,
        )
        .await
        .map_err(|e| e.reading_from(path))?;
        bar.finish_and_clear();
        (
            r.cid,
            json!({"cid": r.cid.to_string(), "kind": "object", "size": r.manifest.size,
                   "blake3": r.manifest.blake3.to_hex().to_string(), "k": r.manifest.erasure.k,
                   "m": r.manifest.erasure.m, "shards": r.shards, "receipts": r.receipts,
                   "receipt_copies": r.receipt_copies, "manifest_copies": r.manifest_copies}),
            format!(
                "object: {} bytes, {}+{}, {} shards ({} storage receipts), manifest on {} nodes ({} with the receipts)",
                r.manifest.size,
                r.manifest.erasure.k,
                r.manifest.erasure.m,
                r.shards,
                r.receipts,
                r.manifest_copies,
                r.receipt_copies
            ),
            r.md5.map(|m| (String::new(), m)).into_iter().collect(),
            r.incidents,
        )
    };
    // The upload succeeded; what went wrong on the way is worth an operator's look.
    for (peer, n, first) in cairn_client::get::per_node(&incidents) {
        match n {
            1 => eprintln!("warning: node {peer}: {first}"),
            n => eprintln!("warning: node {peer}: {first} (and {} more shards)", n - 1),
        }
    }
    report["failed_nodes"] = failed_nodes(&incidents);
    // The lease: the object is held past the upload's own hold while it runs.
    // A lease that cannot be taken does not undo the upload: it is held under the upload's
    // own hold (the nodes' proofs.lease_epochs) and `cairn renew` can take it later.
    let leased = match cairn_client::lease::end_epoch(&net, args.lease) {
        Ok(end) => cairn_client::lease::renew(&net, &key, &[cid], end).await,
        Err(e) => Err(e),
    };
    let lease_line = match &leased {
        Ok(l) => {
            report["lease"] = json!({"end_epoch": l.end_epoch, "epoch_ms": l.epoch_ms,
                "manifests": l.objects.len()});
            format!(
                "leased through epoch {} ({} manifests; `cairn renew {cid} --lease 30d` extends it)",
                l.end_epoch,
                l.objects.len()
            )
        }
        Err(e) => {
            let text = crate::errors::explain(e);
            report["lease"] = json!({"error": text});
            format!(
                "warning: stored, but not leased ({text}); it is held for the nodes' upload \
                 lease only: run `cairn renew {cid} --lease 30d`"
            )
        }
    };
    if let Some(target) = target {
        // A single file becomes PREFIX/NAME; a directory's files PREFIX/PATH.
        let name = (!meta.is_dir())
            .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten();
        let s3 = publish::import(&target, &args.prefix, name.as_deref(), &cid, &md5s).await?;
        if !g.json {
            eprintln!(
                "visible over S3 as s3://{}/{} ({} keys)",
                target.bucket,
                s3["first_key"].as_str().unwrap_or(&args.prefix),
                s3["objects"]
            );
        }
        report["s3"] = s3;
    }
    if g.json {
        if leased.is_err() {
            eprintln!("{lease_line}");
        }
        out!("{report}");
    } else {
        eprintln!("{summary}");
        eprintln!("{lease_line}");
        out!("{cid}");
    }
    Ok(())
}
