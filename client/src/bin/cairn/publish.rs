//! `cairn put --bucket`: publishing an upload over S3 through the gateway's admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_chunker::Cid;
use cairn_client::devnet::DevnetState;
use serde_json::json;

use crate::cli::Global;

/// Where `cairn put --bucket` publishes.
pub(crate) struct Target {
    admin: std::net::SocketAddr,
    token: String,
    pub(crate) bucket: String,
}

/// The gateway to publish to: `admin` and `token` as given, else the devnet's gateway.
pub(crate) fn target(
    g: &Global,
    admin: Option<&str>,
    token: Option<&str>,
    bucket: &str,
) -> anyhow::Result<Target> {
    let devnet = g
        .devnet
        .as_ref()
        .and_then(|d| DevnetState::read(d).ok())
        .and_then(|s| s.gateway);
    let admin = match (admin, &devnet) {
        (Some(a), _) => a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| {
                format!("--gateway {a:?}: use the admin address, e.g. 127.0.0.1:9001")
            })?,
        (None, Some(d)) => d.admin,
        (None, None) => bail!(
            "--bucket needs a gateway: pass --gateway ADMIN_ADDR --gateway-token SECRET, or --devnet DIR of a devnet that runs one"
        ),
    };
    let token = match (token, &devnet) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.secret_key.clone(),
        (None, None) => bail!(
            "--bucket needs the gateway's secret key: pass --gateway-token or set CAIRN_GATEWAY_TOKEN"
        ),
    };
    Ok(Target {
        admin,
        token,
        bucket: bucket.to_string(),
    })
}

/// Asks the gateway to list `cid` in the bucket: an object as `PREFIX/NAME`, a dataset's files
/// under `PREFIX`, with `md5s` (by path; `""` for an object) as their ETags. Returns the
/// gateway's answer, with `bucket` and `first_key` added.
pub(crate) async fn import(
    t: &Target,
    prefix: &str,
    name: Option<&str>,
    cid: &Cid,
    md5s: &BTreeMap<String, [u8; 16]>,
) -> anyhow::Result<serde_json::Value> {
    let key = name.map(|n| {
        if prefix.is_empty() || prefix.ends_with('/') {
            format!("{prefix}{n}")
        } else {
            format!("{prefix}/{n}")
        }
    });
    let etags: BTreeMap<&str, String> = md5s
        .iter()
        .map(|(path, m)| (path.as_str(), cairn_chunker::manifest::hex(m)))
        .collect();
    let body = json!({"bucket": t.bucket, "prefix": prefix, "key": key, "cid": cid.to_string(),
                      "etags": etags});
    let (code, text) = cairn_wire::admin::http_request(
        t.admin,
        "POST",
        "/import",
        &[
            ("Authorization", &format!("Bearer {}", t.token)),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
        Duration::from_secs(120),
    )
    .await
    .with_context(|| format!("reaching the gateway at http://{}", t.admin))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text}));
    if code != 200 {
        bail!(
            "the upload ({cid}) succeeded, but the gateway refused to publish it: HTTP {code}: {}",
            v["error"].as_str().unwrap_or("")
        );
    }
    v["bucket"] = json!(t.bucket);
    v["first_key"] = json!(key.unwrap_or_else(|| prefix.to_string()));
    Ok(v)
}
